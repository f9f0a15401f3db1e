/* SPDX-License-Identifier: MIT */
/*
 * realip: address rules, and the client a trusted proxy names.
 *
 * Two nginx modules match a client's address against a list of networks:
 * the access module (allow, deny: the first rule that matches decides) and
 * the realip module (set_real_ip_from: is the peer a proxy we trust?).
 * Both use struct realip_rule. A rule is "all", "unix:", an address, or
 * address/prefix, IPv4 or IPv6. An IPv4 client on a dual-stack socket
 * (::ffff:a.b.c.d) is matched as the IPv4 address it is.
 *
 * The realip part (realip_from_request()) reads, for a request whose peer
 * is trusted, the address of the client from real_ip_header, as nginx's
 * ngx_http_get_forwarded_addr() does (a test runs Debian's nginx beside it):
 *
 *   - only the header's last line counts: the nearest proxy wrote it;
 *   - its value is a list of items separated by commas or spaces, empty
 *     ones skipped (whatever the header: X-Real-IP too), read from the
 *     right: its last item, or with real_ip_recursive the last one that is
 *     not trusted itself (the first, when all of them are);
 *   - an item is IPv4 or IPv6, or IPv4:port or [IPv6]:port (the port is
 *     dropped). Anything else (a name, "unknown", [IPv6] without a port)
 *     ends the walk: the last good address found is the client, and when
 *     there is none the peer stays the client.
 *
 * The decision is per request: one keep-alive connection from a load
 * balancer carries the requests of many clients.
 *
 * Ownership: a struct realip_conf owns its rules and its header name
 * (realip_conf_done() frees them). Nothing here keeps a pointer into a
 * request. Nothing here logs or blocks; everything is safe to call from
 * any thread on a conf that no one modifies.
 */
#ifndef WHARF_REALIP_H
#define WHARF_REALIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define REALIP_DEFAULT_HEADER "X-Real-IP" /* nginx's default real_ip_header */
#define REALIP_LIST_HEADER "X-Forwarded-For"

struct http_request;

/* One allow / deny / set_real_ip_from line. */
struct realip_rule {
        bool allow;       /* allow or deny; set_real_ip_from does not look at it */
        int family;       /* AF_INET, AF_INET6, AF_UNIX ("unix:"), or 0 ("all") */
        uint8_t addr[16]; /* the network, its host bits cleared */
        unsigned prefix;  /* leading bits of addr that must match */
};

/*
 * Parses value: "all", "unix:", an address or address/prefix (IPv4 or
 * IPv6; 10.1.2.3/8 means 10.0.0.0/8, as nginx takes it). Returns 0 with
 * *ret_rule set, or -EINVAL (ret_rule untouched).
 */
int realip_rule_parse(const char *value, bool allow, struct realip_rule *ret_rule);

/*
 * Parses value and appends it to the array *rules of *n (realloc'd).
 * Returns 0, -EINVAL (nothing changed) or -ENOMEM.
 */
int realip_rules_add(struct realip_rule **rules, size_t *n, const char *value, bool allow);

/*
 * Whether peer (peer_len bytes of it; 0: unknown, which only "all" matches)
 * is in any of the n rules. Their allow flags are not looked at.
 */
bool realip_rules_contain(const struct realip_rule *rules, size_t n,
                          const struct sockaddr_storage *peer, socklen_t peer_len);

/* Whether the first of the n rules that peer matches allows it; no match: true. */
bool realip_rules_allow(const struct realip_rule *rules, size_t n,
                        const struct sockaddr_storage *peer, socklen_t peer_len);

/*
 * Parses one address, p[0..len) (not NUL-terminated), spaces and tabs
 * around it allowed: IPv4 or IPv6, or as nginx also takes them IPv4:port
 * and [IPv6]:port. Returns 0 with *ret_addr (port 0: a port given is
 * dropped) and *ret_len, or -EINVAL (outputs untouched).
 */
int realip_addr_parse(const char *p, size_t len, struct sockaddr_storage *ret_addr,
                      socklen_t *ret_len);

/*
 * Checks a real_ip_header value. Returns 0, -EOPNOTSUPP for nginx's
 * "proxy_protocol" (not implemented), or -EINVAL for anything that is not
 * a header name (an RFC 9110 token).
 */
int realip_header_check(const char *name);

/* nginx's set_real_ip_from, real_ip_header and real_ip_recursive. */
struct realip_conf {
        struct realip_rule *from; /* set_real_ip_from, in order; none: realip is off */
        size_t n_from;
        char *header; /* real_ip_header; NULL: REALIP_DEFAULT_HEADER */
        bool recursive;
};

/* A set_real_ip_from line. Returns 0, -EINVAL (conf unchanged) or -ENOMEM. */
int realip_conf_add_from(struct realip_conf *conf, const char *value);
/* real_ip_header. Returns 0, or -EINVAL, -EOPNOTSUPP (see realip_header_check()), -ENOMEM. */
int realip_conf_set_header(struct realip_conf *conf, const char *name);
/* Frees the rules and the header name; conf is empty (realip off) after. */
void realip_conf_done(struct realip_conf *conf);

/*
 * The client of req, which came from peer: when the peer is trusted and
 * the header names one (see the top of this file), returns true with
 * *ret_addr (port 0) and *ret_len. Otherwise returns false and leaves the
 * outputs untouched: the peer is the client.
 */
bool realip_from_request(const struct realip_conf *conf, const struct http_request *req,
                         const struct sockaddr_storage *peer, socklen_t peer_len,
                         struct sockaddr_storage *ret_addr, socklen_t *ret_len);

#endif
