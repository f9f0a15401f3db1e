/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for common/realip: the set_real_ip_from / allow / deny rule
 * parser, the address parser, and the walk of a request's real_ip_header
 * that a client controls entirely.
 *
 * Input: one option byte, then a rule up to the first '\n', then header
 * values, one per '\n'-separated line, each the value of one header line
 * of the request (so the "last line wins" rule is exercised too).
 *   option bit 0: real_ip_recursive
 *   option bit 1: real_ip_header X-Forwarded-For (else X-Real-IP)
 *   option bit 2: the peer is 192.0.2.1 (trusted only if the fuzzed rule
 *                 says so), else 10.0.0.1 (always trusted)
 *
 * Beyond "no crash, no over-read" (each value ends where the input does
 * or at a newline, never NUL-terminated), it checks:
 *   - a parsed rule has a prefix its family allows, no host bits set, and
 *     matches its own network address; a refused one leaves the output
 *     untouched;
 *   - an address that parses comes back the same through inet_ntop()
 *     (a port it had is dropped);
 *   - realip_from_request() agrees with a reference walk written
 *     differently (the value split into items left to right first, at
 *     commas and spaces but for the first byte, empty ones dropped), and
 *     leaves its outputs
 *     untouched when it finds nothing.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"
#include "realip.h"
#include "util.h"

#define MAX_ITEMS 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct sockaddr_storage v4_peer(const char *text, socklen_t *ret_len)
{
        struct sockaddr_storage ss;

        if (realip_addr_parse(text, strlen(text), &ss, ret_len) < 0)
                abort();
        return ss;
}

static void check_rule(const char *text)
{
        struct realip_rule r, untouched;
        unsigned max;

        memset(&r, 0xa5, sizeof(r));
        untouched = r;
        if (realip_rule_parse(text, true, &r) < 0) {
                if (memcmp(&r, &untouched, sizeof(r)) != 0)
                        abort();
                return;
        }
        if (r.family == 0 || r.family == AF_UNIX)
                return;
        if (r.family != AF_INET && r.family != AF_INET6)
                abort();
        max = r.family == AF_INET ? 32 : 128;
        if (r.prefix > max)
                abort();
        for (unsigned bit = r.prefix; bit < max; bit++)
                if (r.addr[bit / 8] & (0x80u >> (bit % 8)))
                        abort();

        /* The network's own address is in it, unless it is IPv4-mapped (then IPv4). */
        struct sockaddr_storage ss = {0};
        socklen_t len;
        if (r.family == AF_INET) {
                struct sockaddr_in sin = {.sin_family = AF_INET};
                memcpy(&sin.sin_addr, r.addr, 4);
                memcpy(&ss, &sin, sizeof(sin));
                len = sizeof(sin);
        } else {
                struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
                memcpy(&sin6.sin6_addr, r.addr, 16);
                if (IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr))
                        return;
                memcpy(&ss, &sin6, sizeof(sin6));
                len = sizeof(sin6);
        }
        if (!realip_rules_contain(&r, 1, &ss, len))
                abort();
}

static void check_addr(const char *p, size_t n)
{
        struct sockaddr_storage ss, again;
        socklen_t len = 0, again_len = 0;
        char text[INET6_ADDRSTRLEN];
        struct sockaddr_in sin;
        struct sockaddr_in6 sin6;

        if (realip_addr_parse(p, n, &ss, &len) < 0)
                return;
        if (ss.ss_family == AF_INET && len == sizeof(sin)) {
                memcpy(&sin, &ss, sizeof(sin));
                if (sin.sin_port || !inet_ntop(AF_INET, &sin.sin_addr, text, sizeof(text)))
                        abort();
        } else if (ss.ss_family == AF_INET6 && len == sizeof(sin6)) {
                memcpy(&sin6, &ss, sizeof(sin6));
                if (sin6.sin6_port || sin6.sin6_scope_id ||
                    !inet_ntop(AF_INET6, &sin6.sin6_addr, text, sizeof(text)))
                        abort();
        } else {
                abort();
        }
        if (realip_addr_parse(text, strlen(text), &again, &again_len) < 0 || again_len != len ||
            memcmp(&again, &ss, len) != 0)
                abort();
}

/* The reference walk: the value split into items first, then read from the right. */
static bool reference(const struct realip_conf *conf, struct span v, struct sockaddr_storage *ret,
                      socklen_t *ret_len)
{
        static struct span items[MAX_ITEMS];
        size_t n = 0, start = 0;
        bool found = false;

        for (size_t i = 0; i <= v.len; i++)
                /* As nginx, the first byte is never a separator (",1.2.3.4" is one item). */
                if (i == v.len || (i > 0 && (v.ptr[i] == ',' || v.ptr[i] == ' '))) {
                        if (n == MAX_ITEMS)
                                abort(); /* cannot happen: the input is smaller */
                        if (i > start)
                                items[n++] = (struct span){v.ptr + start, i - start};
                        start = i + 1;
                }
        for (size_t i = n; i-- > 0;) {
                struct sockaddr_storage a;
                socklen_t a_len;
                if (realip_addr_parse(items[i].ptr, items[i].len, &a, &a_len) < 0)
                        break;
                *ret = a;
                *ret_len = a_len;
                found = true;
                if (!conf->recursive || !realip_rules_contain(conf->from, conf->n_from, &a, a_len))
                        break;
        }
        return found;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static struct http_request req;
        static char rule_text[256];
        struct realip_conf conf = {0};
        const char *p = (const char *) data, *end = p + size, *nl;
        uint8_t opt;

        if (size < 1 || size > 16 * 1024)
                return 0;
        opt = data[0];
        p++;

        /* The rule: up to the first newline. */
        nl = memchr(p, '\n', (size_t) (end - p));
        size_t rule_len = (size_t) ((nl ? nl : end) - p);
        if (rule_len < sizeof(rule_text)) {
                memcpy(rule_text, p, rule_len);
                rule_text[rule_len] = '\0';
                check_rule(rule_text);
                (void) realip_conf_add_from(&conf, rule_text);
        }
        if (realip_conf_add_from(&conf, "10.0.0.0/8") < 0 ||
            realip_conf_add_from(&conf, "2001:db8::/32") < 0)
                abort();
        conf.recursive = opt & 1;
        const char *name = opt & 2 ? REALIP_LIST_HEADER : REALIP_DEFAULT_HEADER;
        if (realip_conf_set_header(&conf, name) < 0)
                abort();
        p = nl ? nl + 1 : end;

        /* Each line a header value, the bytes of the input itself. */
        memset(&req, 0, sizeof(req));
        while (nl && req.n_headers < HTTP_MAX_HEADERS) {
                nl = memchr(p, '\n', (size_t) (end - p));
                size_t len = (size_t) ((nl ? nl : end) - p);
                check_addr(p, len);
                req.headers[req.n_headers].name = span_from_str(name);
                req.headers[req.n_headers].value = (struct span){p, len};
                req.n_headers++;
                p = nl ? nl + 1 : end;
        }

        socklen_t peer_len;
        struct sockaddr_storage peer = v4_peer(opt & 4 ? "192.0.2.1" : "10.0.0.1", &peer_len);
        struct sockaddr_storage got, want, untouched;
        socklen_t got_len = 777, want_len = 0;
        memset(&got, 0x3c, sizeof(got));
        untouched = got;
        bool r = realip_from_request(&conf, &req, &peer, peer_len, &got, &got_len);

        bool trusted = realip_rules_contain(conf.from, conf.n_from, &peer, peer_len);
        bool expect = trusted && req.n_headers > 0 &&
                      reference(&conf, req.headers[req.n_headers - 1].value, &want, &want_len);
        if (r != expect)
                abort();
        if (r && (got_len != want_len || memcmp(&got, &want, got_len) != 0))
                abort();
        if (!r && (got_len != 777 || memcmp(&got, &untouched, sizeof(got)) != 0))
                abort();

        realip_conf_done(&conf);
        return 0;
}
