/* SPDX-License-Identifier: MIT */
/*
 * Tests for common/realip.c: the address rules (allow, deny,
 * set_real_ip_from) and the client a trusted proxy names in a request.
 *
 * Every header value the walk reads is placed right before a PROT_NONE
 * page (tests/guard.h), so a read past its end crashes the test. The
 * expected answers are Debian's nginx's (1.22), as tried by hand and as
 * test_proxy_core.py compares them: items split at commas and spaces,
 * empty ones skipped, an address with a port taken without it.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/un.h>

#include "guard.h"
#include "http_parse.h"
#include "realip.h"
#include "tap.h"
#include "util.h"

/* A peer from text: an IPv4 or IPv6 address, "unix" or "none" (peer_len 0). */
static struct sockaddr_storage peer_of(const char *text, socklen_t *ret_len)
{
        struct sockaddr_storage ss = {0};

        if (streq(text, "unix")) {
                ss.ss_family = AF_UNIX;
                *ret_len = sizeof(sa_family_t);
        } else if (streq(text, "none")) {
                *ret_len = 0;
        } else if (realip_addr_parse(text, strlen(text), &ss, ret_len) < 0) {
                fprintf(stderr, "bad test peer '%s'\n", text);
                abort();
        }
        return ss;
}

/* An address as text ("-" for none), IPv4-mapped addresses kept in their IPv6 form. */
static const char *addr_text(const struct sockaddr_storage *ss, socklen_t len, char *buf,
                             size_t size)
{
        struct sockaddr_in sin;
        struct sockaddr_in6 sin6;

        if (ss->ss_family == AF_INET && len == sizeof(sin)) {
                memcpy(&sin, ss, sizeof(sin));
                if (sin.sin_port != 0)
                        return "port set";
                return inet_ntop(AF_INET, &sin.sin_addr, buf, (socklen_t) size);
        }
        if (ss->ss_family == AF_INET6 && len == sizeof(sin6)) {
                memcpy(&sin6, ss, sizeof(sin6));
                if (sin6.sin6_port != 0 || sin6.sin6_scope_id != 0 || sin6.sin6_flowinfo != 0)
                        return "port, scope or flow set";
                return inet_ntop(AF_INET6, &sin6.sin6_addr, buf, (socklen_t) size);
        }
        return "bad family or length";
}

static bool listed(const struct realip_rule *rules, size_t n, const char *peer)
{
        socklen_t len;
        struct sockaddr_storage ss = peer_of(peer, &len);

        return realip_rules_contain(rules, n, &ss, len);
}

/* One rule from text, which must parse. */
static struct realip_rule rule(const char *text)
{
        struct realip_rule r;

        if (realip_rule_parse(text, true, &r) < 0) {
                fprintf(stderr, "bad test rule '%s'\n", text);
                abort();
        }
        return r;
}

static bool in(const char *rule_text, const char *peer)
{
        struct realip_rule r = rule(rule_text);

        return listed(&r, 1, peer);
}

static void test_rule_parse(void)
{
        struct realip_rule r, untouched;
        static const uint8_t net10[16] = {10};

        ok(realip_rule_parse("10.1.2.3", true, &r) == 0 && r.family == AF_INET && r.prefix == 32 &&
               r.allow && memcmp(r.addr, "\x0a\x01\x02\x03", 4) == 0,
           "an IPv4 address is a /32");
        ok(realip_rule_parse("10.1.2.3/8", false, &r) == 0 && r.prefix == 8 && !r.allow &&
               memcmp(r.addr, net10, 16) == 0,
           "10.1.2.3/8 is 10.0.0.0/8 (host bits cleared)");
        ok(realip_rule_parse("10.255.255.255/9", true, &r) == 0 &&
               memcmp(r.addr, "\x0a\x80\x00\x00", 4) == 0,
           "a prefix inside a byte clears the low bits of that byte");
        ok(realip_rule_parse("2001:db8::1/32", true, &r) == 0 && r.family == AF_INET6 &&
               r.prefix == 32 && memcmp(r.addr, "\x20\x01\x0d\xb8", 4) == 0 &&
               memcmp(r.addr + 4, net10 + 4, 12) == 0,
           "an IPv6 prefix");
        ok(realip_rule_parse("::1", true, &r) == 0 && r.family == AF_INET6 && r.prefix == 128,
           "an IPv6 address is a /128");
        ok(realip_rule_parse("0.0.0.0/0", true, &r) == 0 && r.prefix == 0, "/0 for IPv4");
        ok(realip_rule_parse("1.2.3.4/0", true, &r) == 0 && memcmp(r.addr, net10 + 4, 4) == 0,
           "/0 clears every bit");
        ok(realip_rule_parse("::/0", true, &r) == 0 && r.prefix == 0, "/0 for IPv6");
        ok(realip_rule_parse("1.2.3.4/32", true, &r) == 0 && r.prefix == 32, "/32");
        ok(realip_rule_parse("::1/128", true, &r) == 0 && r.prefix == 128, "/128");
        ok(realip_rule_parse("10.0.0.0/008", true, &r) == 0 && r.prefix == 8,
           "a prefix with leading zeros");
        ok(realip_rule_parse("all", false, &r) == 0 && r.family == 0 && !r.allow, "all");
        ok(realip_rule_parse("unix:", true, &r) == 0 && r.family == AF_UNIX, "unix:");
        ok(realip_rule_parse("::ffff:10.0.0.1", true, &r) == 0 && r.family == AF_INET6,
           "an IPv4-mapped rule is an IPv6 rule, as nginx's");

        static const char *const bad[] = {
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/1x",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/0008",
            "10.0.0.0/8/8",
            "example.com",
            "ALL",
            "unix",
            "unix:/run/x",
            "[::1]",
            "[::1]/128",
            "1.2.3.4:80",
            " 1.2.3.4",
            "1.2.3.4 ",
            "1.2.3",
            "01.2.3.4",
            "1.2.3.256",
            "fe80::1%lo",
            "1::2::3",
            "10.0.0.0 /8",
            "0000:0000:0000:0000:0000:0000:0000:0000:0000:0001", /* too long for any address */
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                memset(&r, 0x5a, sizeof(r));
                untouched = r;
                ok(realip_rule_parse(bad[i], true, &r) == -EINVAL &&
                       memcmp(&r, &untouched, sizeof(r)) == 0,
                   "'%s' refused, the output untouched", bad[i]);
        }
}

static void test_rules_match(void)
{
        ok(in("0.0.0.0/0", "203.0.113.7") && !in("0.0.0.0/0", "2001:db8::1"),
           "0.0.0.0/0: every IPv4 address, no IPv6 one");
        ok(in("::/0", "2001:db8::1") && !in("::/0", "203.0.113.7"),
           "::/0: every IPv6 address, no IPv4 one");
        ok(!in("::/0", "::ffff:203.0.113.7") && in("0.0.0.0/0", "::ffff:203.0.113.7"),
           "an IPv4-mapped peer is matched as IPv4");
        ok(in("10.0.0.0/8", "::ffff:10.9.9.9") && !in("10.0.0.0/8", "::ffff:11.0.0.1"),
           "an IPv4-mapped peer in an IPv4 network");
        ok(!in("::ffff:10.0.0.1", "::ffff:10.0.0.1"),
           "an IPv4-mapped rule never matches (the peer is IPv4 by then), as nginx's");
        ok(in("10.0.0.5/32", "10.0.0.5") && !in("10.0.0.5/32", "10.0.0.4") &&
               !in("10.0.0.5/32", "10.0.0.6"),
           "/32: that address only");
        ok(in("2001:db8::5/128", "2001:db8::5") && !in("2001:db8::5/128", "2001:db8::4"),
           "/128: that address only");
        ok(in("10.0.0.0/9", "10.127.255.255") && !in("10.0.0.0/9", "10.128.0.0"),
           "a prefix that ends inside a byte");
        ok(in("2001:db8::/33", "2001:db8:7fff::1") && !in("2001:db8::/33", "2001:db8:8000::1"),
           "an IPv6 prefix that ends inside a byte");
        ok(in("unix:", "unix") && !in("unix:", "127.0.0.1") && !in("127.0.0.1", "unix"),
           "unix: matches unix peers only");
        ok(in("all", "unix") && in("all", "::1") && in("all", "127.0.0.1") && in("all", "none"),
           "all matches everyone, an unknown peer too");
        ok(!in("0.0.0.0/0", "none") && !in("::/0", "none") && !in("unix:", "none"),
           "an unknown peer (length 0) is in no network");

        /* A peer whose length is too short for its family is unknown, never read past. */
        socklen_t len;
        struct sockaddr_storage ss = peer_of("10.0.0.1", &len);
        struct realip_rule r = rule("10.0.0.0/8");
        ok(realip_rules_contain(&r, 1, &ss, len) && !realip_rules_contain(&r, 1, &ss, len - 1) &&
               !realip_rules_contain(&r, 1, &ss, 1),
           "a truncated IPv4 peer is in no network");
        ss = peer_of("2001:db8::1", &len);
        r = rule("::/0");
        ok(realip_rules_contain(&r, 1, &ss, len) && !realip_rules_contain(&r, 1, &ss, len - 1),
           "a truncated IPv6 peer is in no network");
        ok(!realip_rules_contain(NULL, 0, &ss, len), "no rules: listed nowhere");

        /* allow / deny: the first rule that matches decides. */
        struct realip_rule rules[5];
        ok(realip_rule_parse("10.1.2.3/8", true, &rules[0]) == 0 &&
               realip_rule_parse("10.20.0.0/16", false, &rules[1]) == 0 &&
               realip_rule_parse("2001:db8::/32", true, &rules[2]) == 0 &&
               realip_rule_parse("unix:", true, &rules[3]) == 0 &&
               realip_rule_parse("all", false, &rules[4]) == 0,
           "five access rules");
        ss = peer_of("10.20.0.1", &len);
        ok(realip_rules_allow(rules, 5, &ss, len), "the first match decides: 10/8 before 10.20/16");
        ss = peer_of("11.0.0.1", &len);
        ok(!realip_rules_allow(rules, 5, &ss, len), "deny all ends the list");
        ss = peer_of("unix", &len);
        ok(realip_rules_allow(rules, 5, &ss, len), "unix: allowed");
        ss = peer_of("2001:db8:ffff::1", &len);
        ok(realip_rules_allow(rules, 5, &ss, len), "an IPv6 network allowed");
        ss = peer_of("203.0.113.1", &len);
        ok(realip_rules_allow(&rules[1], 1, &ss, len), "no rule matches: allowed");
        ok(realip_rules_allow(NULL, 0, NULL, 0), "no rules: allowed");

        struct realip_rule *list = NULL;
        size_t n = 0;
        ok(realip_rules_add(&list, &n, "10.0.0.0/8", true) == 0 &&
               realip_rules_add(&list, &n, "nonsense", true) == -EINVAL &&
               realip_rules_add(&list, &n, "::1", false) == 0 && n == 2 &&
               list[0].family == AF_INET && list[1].family == AF_INET6 && !list[1].allow,
           "realip_rules_add appends in order, and a bad value changes nothing");
        free(list);
}

/* realip_addr_parse of text placed right before the guard page. */
static const char *addr(const char *text, char *buf, size_t size)
{
        size_t len = strlen(text);
        struct sockaddr_storage ss;
        socklen_t ss_len = 12345;

        memset(&ss, 0x5a, sizeof(ss));
        if (realip_addr_parse(place(text, len), len, &ss, &ss_len) < 0)
                return ss_len == 12345 && ((uint8_t *) &ss)[0] == 0x5a ? "-" : "written on failure";
        return addr_text(&ss, ss_len, buf, size);
}

static void test_addr_parse(void)
{
        char b[INET6_ADDRSTRLEN];

        ok(streq(addr("203.0.113.7", b, sizeof(b)), "203.0.113.7"), "IPv4");
        ok(streq(addr(" \t203.0.113.7\t ", b, sizeof(b)), "203.0.113.7"),
           "spaces and tabs around it");
        ok(streq(addr("2001:db8::1", b, sizeof(b)), "2001:db8::1"), "IPv6, plain");
        ok(streq(addr("  ::1 ", b, sizeof(b)), "::1"), "IPv6 with spaces");
        ok(streq(addr("::ffff:192.0.2.1", b, sizeof(b)), "::ffff:192.0.2.1"),
           "IPv4-mapped stays IPv6 (the log writes it as IPv4)");
        ok(streq(addr("1.2.3.4:80", b, sizeof(b)), "1.2.3.4"), "IPv4:port, the port dropped");
        ok(streq(addr("[2001:db8::1]:65535", b, sizeof(b)), "2001:db8::1"),
           "[IPv6]:port, the port dropped");
        ok(streq(addr("2001:db8::1:80", b, sizeof(b)), "2001:db8::1:80"),
           "IPv6 that looks like one with a port is IPv6");
        ok(streq(addr("0000:0000:0000:0000:0000:ffff:255.255.255.255", b, sizeof(b)),
                 "::ffff:255.255.255.255"),
           "the longest text form of an address");

        static const char *const bad[] = {
            "",
            " ",
            "\t \t",
            "unknown",
            "[2001:db8::1]",
            "[2001:db8::1]:0",
            "[2001:db8::1]:65536",
            "[1.2.3.4]:80",
            "1.2.3.4:",
            "1.2.3.4:x",
            "1.2.3.4:80:80",
            "2001:db8::1]:443",
            "1.2.3.4 5.6.7.8",
            "1.2.3.4,",
            "fe80::1%eth0",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.",
            "localhost",
            "0x7f.0.0.1",
            "1.2.3.4\r",
            "00000:0000:0000:0000:0000:ffff:255.255.255.255",
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
                ok(streq(addr(bad[i], b, sizeof(b)), "-"), "'%s' is no address", bad[i]);

        /* Not NUL-terminated, and a NUL inside does not end it early. */
        struct sockaddr_storage ss;
        socklen_t len;
        ok(realip_addr_parse("1.2.3.4\0garbage", 15, &ss, &len) == -EINVAL,
           "a NUL inside: refused, not cut short");
        ok(realip_addr_parse("1.2.3.45", 7, &ss, &len) == 0 && len == sizeof(struct sockaddr_in),
           "only len bytes are read");
        ok(realip_addr_parse(NULL, 0, &ss, &len) == -EINVAL, "nothing at all");
}

static void test_header_check(void)
{
        struct realip_conf conf = {0};

        ok(realip_header_check("X-Forwarded-For") == 0, "X-Forwarded-For");
        ok(realip_header_check("CF-Connecting-IP") == 0, "CF-Connecting-IP");
        ok(realip_header_check("proxy_protocol") == -EOPNOTSUPP, "proxy_protocol: not implemented");
        ok(realip_header_check("") == -EINVAL, "empty");
        ok(realip_header_check("Bad Header") == -EINVAL, "a space");
        ok(realip_header_check("X-Real-IP:") == -EINVAL, "a colon");
        ok(realip_header_check("X-\xc3\xa9") == -EINVAL, "a byte above 127");

        ok(realip_conf_set_header(&conf, "x-forwarded-for") == 0 &&
               streq(conf.header, "x-forwarded-for"),
           "set_header");
        ok(realip_conf_set_header(&conf, "Bad Header") == -EINVAL &&
               streq(conf.header, "x-forwarded-for"),
           "a bad header changes nothing");
        ok(realip_conf_add_from(&conf, "10.0.0.0/8") == 0 &&
               realip_conf_add_from(&conf, "lb.example") == -EINVAL && conf.n_from == 1,
           "add_from");
        realip_conf_done(&conf);
        ok(!conf.from && !conf.n_from && !conf.header && !conf.recursive, "done empties it");
        realip_conf_done(&conf);
        realip_conf_done(NULL);
        ok(true, "done twice, and on NULL");
}

/*
 * The client realip_from_request() finds for peer: "-" for none (and then
 * the outputs must be untouched). With one header line, its value is placed
 * right before the guard page; several lines ("Name: value\r\n" each) go
 * through the request parser.
 */
static const char *client_of(const struct realip_conf *conf, const char *peer, const char *name,
                             const char *value, char *buf, size_t size)
{
        struct http_request req = {0};
        struct sockaddr_storage got, untouched;
        socklen_t peer_len, got_len = 4321;
        struct sockaddr_storage from = peer_of(peer, &peer_len);

        if (name) {
                req.n_headers = 1;
                req.headers[0].name = span_from_str(name);
                req.headers[0].value = (struct span){place(value, strlen(value)), strlen(value)};
        }
        memset(&got, 0x77, sizeof(got));
        untouched = got;
        if (!realip_from_request(conf, &req, &from, peer_len, &got, &got_len))
                return got_len == 4321 && memcmp(&got, &untouched, sizeof(got)) == 0
                           ? "-"
                           : "written on failure";
        return addr_text(&got, got_len, buf, size);
}

static const char *client_lines(const struct realip_conf *conf, const char *peer, const char *lines,
                                char *buf, size_t size)
{
        static char raw[1024];
        struct http_request req;
        struct sockaddr_storage got;
        socklen_t peer_len, got_len;
        struct sockaddr_storage from = peer_of(peer, &peer_len);

        snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\n%s\r\n", lines);
        if (http_parse_request(raw, strlen(raw), sizeof(raw), &req) <= 0)
                return "unparsed";
        if (!realip_from_request(conf, &req, &from, peer_len, &got, &got_len))
                return "-";
        return addr_text(&got, got_len, buf, size);
}

/* A conf from set_real_ip_from values (NULL-terminated), a header and the recursive flag. */
static struct realip_conf conf_of(const char *const *from, const char *header, bool recursive)
{
        struct realip_conf c = {.recursive = recursive};

        for (; *from; from++)
                if (realip_conf_add_from(&c, *from) < 0)
                        abort();
        if (header && realip_conf_set_header(&c, header) < 0)
                abort();
        return c;
}

#define XFF "X-Forwarded-For"

static void test_x_forwarded_for(void)
{
        static const char *const lb[] = {"10.0.0.0/8", "192.0.2.1", "2001:db8::/32", NULL};
        struct realip_conf one = conf_of(lb, XFF, false);
        struct realip_conf rec = conf_of(lb, "x-forwarded-for", true);
        char b[INET6_ADDRSTRLEN];

        ok(streq(client_of(&one, "10.0.0.5", XFF, "203.0.113.7", b, sizeof(b)), "203.0.113.7"),
           "a trusted peer's X-Forwarded-For");
        ok(streq(client_of(&one, "198.51.100.1", XFF, "203.0.113.7", b, sizeof(b)), "-"),
           "an untrusted peer's header is ignored");
        ok(streq(client_of(&one, "10.0.0.5", "X-Real-IP", "203.0.113.7", b, sizeof(b)), "-"),
           "another header than real_ip_header is ignored");
        ok(streq(client_of(&one, "10.0.0.5", NULL, NULL, b, sizeof(b)), "-"),
           "header absent: the peer stays");
        ok(streq(client_of(&one, "10.0.0.5", "x-FORWARDED-for", "203.0.113.7", b, sizeof(b)),
                 "203.0.113.7"),
           "the header's name in any case");
        ok(streq(client_of(&one, "10.0.0.5", XFF, "203.0.113.7, 10.0.0.9", b, sizeof(b)),
                 "10.0.0.9"),
           "not recursive: the last address, trusted or not");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, "203.0.113.7, 10.0.0.9", b, sizeof(b)),
                 "203.0.113.7"),
           "recursive: the last one that is not trusted");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, "198.51.100.3, 203.0.113.7, 10.0.0.9, 10.0.0.8",
                           b, sizeof(b)),
                 "203.0.113.7"),
           "recursion stops at the first untrusted address from the right");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, "10.0.0.1, 192.0.2.1, 10.0.0.2", b, sizeof(b)),
                 "10.0.0.1"),
           "all trusted: the leftmost, as nginx");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, "10.0.0.1", b, sizeof(b)), "10.0.0.1"),
           "one trusted address alone: it");
        ok(streq(client_of(&rec, "198.51.100.1", XFF, "203.0.113.7", b, sizeof(b)), "-"),
           "recursive, untrusted peer: ignored");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, "  203.0.113.7 ,\t10.0.0.9\t ", b, sizeof(b)),
                 "203.0.113.7"),
           "spaces and tabs around the items");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, "203.0.113.7,10.0.0.9", b, sizeof(b)),
                 "203.0.113.7"),
           "no space after the comma");

        /* nginx's: empty items are skipped. */
        ok(streq(client_of(&one, "10.0.0.5", XFF, "203.0.113.7,", b, sizeof(b)), "203.0.113.7"),
           "a trailing comma: skipped");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, "203.0.113.7,,10.0.0.9", b, sizeof(b)),
                 "203.0.113.7"),
           "an empty item is skipped in the recursion");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, "203.0.113.7, , 10.0.0.9", b, sizeof(b)),
                 "203.0.113.7"),
           "and a blank one");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, ",10.0.0.9", b, sizeof(b)), "-"),
           "a comma first is part of the first item, as nginx reads it: no address");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, ",,203.0.113.7, 10.0.0.9", b, sizeof(b)),
                 "203.0.113.7"),
           "but not of a later one");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, ",", b, sizeof(b)), "-"), "a comma alone");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, " , , ", b, sizeof(b)), "-"), "empty items only");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, "", b, sizeof(b)), "-"), "an empty value");

        ok(streq(client_of(&one, "10.0.0.5", XFF, "unknown", b, sizeof(b)), "-"),
           "garbage: the peer stays");
        ok(streq(client_of(&one, "10.0.0.5", XFF, "203.0.113.7, garbage", b, sizeof(b)), "-"),
           "garbage last: the peer stays");
        ok(streq(client_of(&one, "10.0.0.5", XFF, "garbage, 203.0.113.7", b, sizeof(b)),
                 "203.0.113.7"),
           "garbage before the last address does not matter");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, "garbage, 10.0.0.9", b, sizeof(b)), "10.0.0.9"),
           "recursive: garbage stops the walk at the last good address");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, "203.0.113.7 10.0.0.9", b, sizeof(b)),
                 "203.0.113.7"),
           "items separated by a space only, as nginx splits them");
        ok(streq(client_of(&one, "10.0.0.5", XFF, "203.0.113.7 198.51.100.2", b, sizeof(b)),
                 "198.51.100.2"),
           "not recursive: the last of them");

        ok(streq(client_of(&one, "10.0.0.5", XFF, "2001:db8:1::7", b, sizeof(b)), "2001:db8:1::7"),
           "a plain IPv6 address, as nginx accepts it");
        ok(streq(client_of(&one, "10.0.0.5", XFF, "[2001:db8:1::7]", b, sizeof(b)), "-"),
           "an IPv6 address in brackets without a port is none, as in nginx");
        ok(streq(client_of(&one, "10.0.0.5", XFF, "[2001:db8:1::7]:443", b, sizeof(b)),
                 "2001:db8:1::7"),
           "brackets and a port: the address");
        ok(streq(client_of(&one, "10.0.0.5", XFF, "203.0.113.7:5555", b, sizeof(b)), "203.0.113.7"),
           "an address with a port: the address, as nginx strips the port");
        ok(streq(
               client_of(&rec, "10.0.0.5", XFF, "2001:db9::7, 2001:db8::1, 10.0.0.9", b, sizeof(b)),
               "2001:db9::7"),
           "recursion through IPv4 and IPv6 proxies");
        ok(streq(client_of(&one, "10.0.0.5", XFF, "::ffff:203.0.113.7", b, sizeof(b)),
                 "::ffff:203.0.113.7"),
           "an IPv4-mapped client is kept as sent");
        ok(streq(client_of(&rec, "10.0.0.5", XFF, "203.0.113.7, ::ffff:10.0.0.9", b, sizeof(b)),
                 "203.0.113.7"),
           "an IPv4-mapped proxy is trusted as the IPv4 address it is");
        ok(streq(client_of(&one, "::ffff:192.0.2.1", XFF, "203.0.113.7", b, sizeof(b)),
                 "203.0.113.7"),
           "a trusted IPv4 peer on a dual-stack socket");
        ok(streq(client_of(&one, "2001:db8::99", XFF, "203.0.113.7", b, sizeof(b)), "203.0.113.7"),
           "a trusted IPv6 peer");
        ok(streq(client_of(&one, "192.0.2.2", XFF, "203.0.113.7", b, sizeof(b)), "-"),
           "the /32 next to a trusted one is not trusted");
        ok(streq(client_of(&one, "unix", XFF, "203.0.113.7", b, sizeof(b)), "-"),
           "a unix peer without unix:");
        ok(streq(client_of(&one, "none", XFF, "203.0.113.7", b, sizeof(b)), "-"),
           "an unknown peer");

        /* Several lines: the last one, the nearest proxy's, wins. */
        ok(streq(client_lines(&one, "10.0.0.5", XFF ": 198.51.100.1\r\n" XFF ": 203.0.113.7\r\n", b,
                              sizeof(b)),
                 "203.0.113.7"),
           "header repeated: the last line wins");
        ok(streq(client_lines(&rec, "10.0.0.5",
                              XFF ": 198.51.100.1\r\nX-Other: 1\r\n" XFF ": 10.0.0.1, 10.0.0.2\r\n",
                              b, sizeof(b)),
                 "10.0.0.1"),
           "recursive, all of the last line trusted: its leftmost, not the line before");
        ok(streq(client_lines(&one, "10.0.0.5", XFF ": 203.0.113.7\r\n" XFF ": garbage\r\n", b,
                              sizeof(b)),
                 "-"),
           "a bad last line is not made up for by an earlier one");

        /* A long list from trusted proxies: the walk takes each item once. */
        static char list[8192];
        size_t len = 0;
        list[0] = '\0';
        for (unsigned i = 0; len + 16 < sizeof(list); i++)
                len += (size_t) snprintf(list + len, sizeof(list) - len, "%s10.%u.%u.%u",
                                         i ? "," : "", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        ok(streq(client_of(&rec, "10.0.0.5", XFF, list, b, sizeof(b)), "10.0.0.0"),
           "a long list of trusted proxies: the leftmost");

        realip_conf_done(&one);
        realip_conf_done(&rec);
}

static void test_other_headers(void)
{
        static const char *const lb[] = {"::1", "127.0.0.0/8", NULL};
        static const char *const none[] = {NULL};
        static const char *const everyone[] = {"0.0.0.0/0", "::/0", "unix:", NULL};
        struct realip_conf xri = conf_of(lb, NULL, true);
        struct realip_conf cf = conf_of(lb, "CF-Connecting-IP", false);
        struct realip_conf off = conf_of(none, XFF, true);
        struct realip_conf all = conf_of(everyone, XFF, false);
        char b[INET6_ADDRSTRLEN];

        ok(streq(client_of(&xri, "::1", "X-Real-IP", "  2001:db8::5 ", b, sizeof(b)),
                 "2001:db8::5"),
           "X-Real-IP by default, IPv6");
        ok(streq(client_of(&xri, "127.0.0.1", "x-real-ip", "203.0.113.7", b, sizeof(b)),
                 "203.0.113.7"),
           "X-Real-IP, any case");
        ok(streq(client_of(&xri, "127.0.0.1", XFF, "203.0.113.7", b, sizeof(b)), "-"),
           "X-Forwarded-For is not read when real_ip_header is X-Real-IP");
        ok(streq(client_of(&xri, "127.0.0.1", "X-Real-IP", "203.0.113.7, 127.0.0.2", b, sizeof(b)),
                 "203.0.113.7"),
           "X-Real-IP is read as a list too, recursively, as nginx reads every real_ip_header");
        ok(streq(client_of(&xri, "127.0.0.1", "X-Real-IP", "127.0.0.2", b, sizeof(b)), "127.0.0.2"),
           "X-Real-IP naming a trusted address alone: it");
        ok(streq(client_of(&cf, "127.0.0.1", "CF-Connecting-IP", "203.0.113.7", b, sizeof(b)),
                 "203.0.113.7"),
           "a header of one's own");
        ok(streq(client_of(&cf, "127.0.0.1", "CF-Connecting-IP", "bogus", b, sizeof(b)), "-"),
           "a header of one's own with no address");
        ok(streq(client_of(&off, "127.0.0.1", XFF, "203.0.113.7", b, sizeof(b)), "-"),
           "no set_real_ip_from: never");
        ok(streq(client_of(&all, "198.51.100.1", XFF, "203.0.113.7", b, sizeof(b)),
                 "203.0.113.7") &&
               streq(client_of(&all, "2001:db8::1", XFF, "203.0.113.7", b, sizeof(b)),
                     "203.0.113.7") &&
               streq(client_of(&all, "unix", XFF, "203.0.113.7", b, sizeof(b)), "203.0.113.7"),
           "/0 of both families and unix: trust every peer");

        realip_conf_done(&xri);
        realip_conf_done(&cf);
        realip_conf_done(&off);
        realip_conf_done(&all);
}

int main(void)
{
        guard_setup_size(16 * 1024);
        subtest("rule parse", test_rule_parse);
        subtest("rules match", test_rules_match);
        subtest("address parse", test_addr_parse);
        subtest("header check and conf", test_header_check);
        subtest("X-Forwarded-For", test_x_forwarded_for);
        subtest("other headers", test_other_headers);
        return done_testing();
}
