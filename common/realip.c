/* SPDX-License-Identifier: MIT */
/*
 * realip: address rules (allow, deny, set_real_ip_from) and the client a
 * trusted proxy names in a request header, as nginx's access and realip
 * modules find them. The rules for what counts are in realip.h.
 */
#include "realip.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>

#include "http_parse.h"
#include "util.h"

/* An address as the rules compare it: its family and its bytes. */
struct addr_key {
        int family; /* AF_INET, AF_INET6, AF_UNIX; AF_UNSPEC when unknown */
        uint8_t addr[16];
};

static struct addr_key addr_key(const struct sockaddr_storage *peer, socklen_t peer_len)
{
        struct addr_key k = {.family = AF_UNSPEC};
        struct sockaddr_in sin;
        struct sockaddr_in6 sin6;

        if (!peer || peer_len < (socklen_t) sizeof(sa_family_t))
                return k;
        switch (peer->ss_family) {
        case AF_INET:
                if (peer_len < (socklen_t) sizeof(sin))
                        break;
                memcpy(&sin, peer, sizeof(sin));
                k.family = AF_INET;
                memcpy(k.addr, &sin.sin_addr, 4);
                break;
        case AF_INET6:
                if (peer_len < (socklen_t) sizeof(sin6))
                        break;
                memcpy(&sin6, peer, sizeof(sin6));
                if (IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr)) {
                        /* An IPv4 client on a dual-stack socket is the IPv4 address it is. */
                        k.family = AF_INET;
                        memcpy(k.addr, &sin6.sin6_addr.s6_addr[12], 4);
                } else {
                        k.family = AF_INET6;
                        memcpy(k.addr, &sin6.sin6_addr, 16);
                }
                break;
        case AF_UNIX:
                k.family = AF_UNIX;
                break;
        default:
                break;
        }
        return k;
}

static bool rule_matches(const struct realip_rule *r, const struct addr_key *k)
{
        unsigned whole, bits;

        if (r->family == 0)
                return true; /* all */
        if (r->family != k->family)
                return false;
        if (r->family == AF_UNIX)
                return true;
        assert(r->prefix <= 8 * sizeof(r->addr));
        whole = r->prefix / 8;
        bits = r->prefix % 8;
        if (memcmp(r->addr, k->addr, whole) != 0)
                return false;
        /* The top bits of the byte the prefix ends in. */
        return bits == 0 || ((r->addr[whole] ^ k->addr[whole]) & (uint8_t) (0xff00u >> bits)) == 0;
}

static const struct realip_rule *rules_first_match(const struct realip_rule *rules, size_t n,
                                                   const struct sockaddr_storage *peer,
                                                   socklen_t peer_len)
{
        struct addr_key k = addr_key(peer, peer_len);

        for (size_t i = 0; i < n; i++)
                if (rule_matches(&rules[i], &k))
                        return &rules[i];
        return NULL;
}

bool realip_rules_contain(const struct realip_rule *rules, size_t n,
                          const struct sockaddr_storage *peer, socklen_t peer_len)
{
        return rules_first_match(rules, n, peer, peer_len) != NULL;
}

bool realip_rules_allow(const struct realip_rule *rules, size_t n,
                        const struct sockaddr_storage *peer, socklen_t peer_len)
{
        const struct realip_rule *r = rules_first_match(rules, n, peer, peer_len);

        return !r || r->allow;
}

/* A prefix length: one to three decimal digits, at most max. 0 or -EINVAL. */
static int prefix_parse(const char *s, unsigned max, unsigned *ret)
{
        size_t len = strlen(s);
        unsigned n = 0;

        if (len == 0 || len > 3)
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                n = n * 10 + (unsigned) (s[i] - '0');
        }
        if (n > max)
                return -EINVAL;
        *ret = n;
        return 0;
}

int realip_rule_parse(const char *value, bool allow, struct realip_rule *ret_rule)
{
        struct realip_rule r = {.allow = allow};
        char text[INET6_ADDRSTRLEN];
        const char *slash;
        size_t len;
        unsigned max;

        assert(value && ret_rule);
        if (streq(value, "all")) {
                *ret_rule = r;
                return 0;
        }
        if (streq(value, "unix:")) {
                r.family = AF_UNIX;
                *ret_rule = r;
                return 0;
        }

        slash = strchr(value, '/');
        len = slash ? (size_t) (slash - value) : strlen(value);
        if (len == 0 || len >= sizeof(text))
                return -EINVAL;
        memcpy(text, value, len);
        text[len] = '\0';
        if (inet_pton(AF_INET, text, r.addr) == 1) {
                r.family = AF_INET;
                max = 32;
        } else if (inet_pton(AF_INET6, text, r.addr) == 1) {
                r.family = AF_INET6;
                max = 128;
        } else {
                return -EINVAL;
        }
        r.prefix = max;
        if (slash && prefix_parse(slash + 1, max, &r.prefix) < 0)
                return -EINVAL;

        /* Host bits cleared, so that matching compares only the network. */
        for (unsigned bit = r.prefix; bit < max; bit++)
                r.addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
        *ret_rule = r;
        return 0;
}

int realip_rules_add(struct realip_rule **rules, size_t *n, const char *value, bool allow)
{
        struct realip_rule rule, *p;
        int r;

        assert(rules && n);
        r = realip_rule_parse(value, allow, &rule);
        if (r < 0)
                return r;
        p = reallocarray(*rules, *n + 1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p[(*n)++] = rule;
        *rules = p;
        return 0;
}

/* An address alone, text NUL-terminated: 0 with the sockaddr, or -EINVAL. */
static int addr_only(const char *text, struct sockaddr_storage *ret, socklen_t *ret_len)
{
        struct sockaddr_in sin = {.sin_family = AF_INET};
        struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};

        memset(ret, 0, sizeof(*ret));
        if (inet_pton(AF_INET, text, &sin.sin_addr) == 1) {
                memcpy(ret, &sin, sizeof(sin));
                *ret_len = sizeof(sin);
                return 0;
        }
        if (inet_pton(AF_INET6, text, &sin6.sin6_addr) == 1) {
                memcpy(ret, &sin6, sizeof(sin6));
                *ret_len = sizeof(sin6);
                return 0;
        }
        return -EINVAL;
}

/* A port of 1 to 65535, all of text[0..len) in decimal. */
static bool port_valid(const char *text, size_t len)
{
        unsigned n = 0;

        if (len == 0 || len > 5)
                return false;
        for (size_t i = 0; i < len; i++) {
                if (text[i] < '0' || text[i] > '9')
                        return false;
                n = n * 10 + (unsigned) (text[i] - '0');
        }
        return n >= 1 && n <= 65535;
}

int realip_addr_parse(const char *p, size_t len, struct sockaddr_storage *ret_addr,
                      socklen_t *ret_len)
{
        char text[INET6_ADDRSTRLEN + 8];
        struct sockaddr_storage ss;
        socklen_t ss_len;
        char *colon;

        while (len > 0 && (p[0] == ' ' || p[0] == '\t')) {
                p++;
                len--;
        }
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
                len--;
        /* Empty, too long for an address, or with a NUL that would end it early for inet_pton. */
        if (len == 0 || len >= sizeof(text) || memchr(p, '\0', len))
                return -EINVAL;
        memcpy(text, p, len);
        text[len] = '\0';

        if (addr_only(text, &ss, &ss_len) < 0) {
                /* nginx's ngx_parse_addr_port(): [IPv6]:port, or IPv4:port; the port is dropped. */
                if (text[0] == '[') {
                        char *close = strchr(text, ']');
                        if (!close || close[1] != ':' || !port_valid(close + 2, strlen(close + 2)))
                                return -EINVAL;
                        *close = '\0';
                        if (addr_only(text + 1, &ss, &ss_len) < 0 || ss.ss_family != AF_INET6)
                                return -EINVAL;
                } else {
                        colon = strchr(text, ':');
                        if (!colon || !port_valid(colon + 1, strlen(colon + 1)))
                                return -EINVAL;
                        *colon = '\0';
                        if (addr_only(text, &ss, &ss_len) < 0 || ss.ss_family != AF_INET)
                                return -EINVAL;
                }
        }
        *ret_addr = ss;
        *ret_len = ss_len;
        return 0;
}

int realip_header_check(const char *name)
{
        assert(name);
        if (streq(name, "proxy_protocol"))
                return -EOPNOTSUPP;
        return http_is_token(name, strlen(name)) ? 0 : -EINVAL;
}

int realip_conf_add_from(struct realip_conf *conf, const char *value)
{
        return realip_rules_add(&conf->from, &conf->n_from, value, true);
}

int realip_conf_set_header(struct realip_conf *conf, const char *name)
{
        char *copy;
        int r;

        r = realip_header_check(name);
        if (r < 0)
                return r;
        copy = strdup(name);
        if (!copy)
                return -ENOMEM;
        free(conf->header);
        conf->header = copy;
        return 0;
}

void realip_conf_done(struct realip_conf *conf)
{
        if (!conf)
                return;
        free(conf->from);
        free(conf->header);
        *conf = (struct realip_conf){0};
}

/* The header's last line: the one the nearest proxy wrote. NULL when there is none. */
static const struct http_header *last_header(const struct http_request *req, const char *name)
{
        const struct http_header *h = NULL;

        for (size_t i = 0; i < req->n_headers; i++)
                if (span_eq_case(req->headers[i].name, name))
                        h = &req->headers[i];
        return h;
}

static bool is_separator(char c)
{
        return c == ',' || c == ' ';
}

bool realip_from_request(const struct realip_conf *conf, const struct http_request *req,
                         const struct sockaddr_storage *peer, socklen_t peer_len,
                         struct sockaddr_storage *ret_addr, socklen_t *ret_len)
{
        const char *name = conf->header ? conf->header : REALIP_DEFAULT_HEADER;
        const struct http_header *h;
        struct sockaddr_storage found, a;
        socklen_t found_len = 0, a_len;

        if (conf->n_from == 0 || !realip_rules_contain(conf->from, conf->n_from, peer, peer_len))
                return false;
        h = last_header(req, name);
        if (!h)
                return false;
        /*
         * The items from the right. Each proxy appended the address it saw,
         * so an item is the client of the proxy after it: that is the client
         * when that proxy is not trusted (or when we are not asked to look
         * further), else the walk goes on to the item before.
         */
        const char *v = h->value.ptr;
        size_t end = h->value.len;
        for (;;) {
                while (end > 0 && is_separator(v[end - 1]))
                        end--;
                if (end == 0)
                        break;
                /*
                 * The item starts after the last separator, as nginx finds
                 * it: a separator at the very start of the value is not
                 * looked at, so it stays part of the first item (",1.2.3.4"
                 * names nobody).
                 */
                size_t start = end;
                while (start > 1 && !is_separator(v[start - 1]))
                        start--;
                if (start == 1)
                        start = 0;
                if (realip_addr_parse(v + start, end - start, &a, &a_len) < 0)
                        break;
                found = a;
                found_len = a_len;
                if (!conf->recursive || !realip_rules_contain(conf->from, conf->n_from, &a, a_len))
                        break;
                end = start;
        }
        if (found_len == 0)
                return false;
        *ret_addr = found;
        *ret_len = found_len;
        return true;
}
