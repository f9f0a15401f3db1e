/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemons/proxy/proxy_limit.c: nginx's leaky bucket step by step
 * with explicit times (its numbers worked by hand from ngx_http_limit_req),
 * delays, several zones at once, the keys, and a full table.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_limit.h"
#include "tap.h"
#include "util.h"

static struct limit_zone zone(const char *name, uint64_t rate, uint64_t size)
{
        struct limit_zone z = {.name = (char *) name, .rate = rate, .size = size};

        if (limit_table_new(size, &z.table) < 0) {
                printf("Bail out! out of memory\n");
                exit(1);
        }
        return z;
}

static void key_of(const char *v4, uint8_t key[LIMIT_KEY])
{
        struct sockaddr_storage ss = {0};
        struct sockaddr_in *in = (struct sockaddr_in *) &ss;

        in->sin_family = AF_INET;
        inet_pton(AF_INET, v4, &in->sin_addr);
        limit_key(&ss, sizeof(*in), key);
}

static void test_bucket(void)
{
        struct limit_zone z = zone("one", 1000, 1024 * 1024); /* 1r/s */
        struct limit_req nodelay = {&z, 3000, UINT64_MAX};    /* burst=3 nodelay */
        uint8_t key[LIMIT_KEY];
        struct limit_outcome o;

        key_of("192.0.2.1", key);
        /* At once: the first leaves excess 0, then 1, 2, 3; the fifth would be 4 > 3. */
        for (int i = 0; i < 4; i++) {
                o = limit_check(&nodelay, 1, key, 10000);
                ok(o.verdict == LIMIT_PASS && o.excess == (uint64_t) i * 1000,
                   "request %d passes with excess %d", i + 1, i);
        }
        o = limit_check(&nodelay, 1, key, 10000);
        ok(o.verdict == LIMIT_REFUSE && o.excess == 4000 && o.zone == &z, "the fifth is refused");
        o = limit_check(&nodelay, 1, key, 10000);
        ok(o.verdict == LIMIT_REFUSE && o.excess == 4000, "a refusal costs nothing");
        /* 250 ms later 0.25 drained: 3 - 0.25 + 1 = 3.75 > 3. */
        o = limit_check(&nodelay, 1, key, 10250);
        ok(o.verdict == LIMIT_REFUSE && o.excess == 3750, "0.25 s later: still refused (3.750)");
        /* 1 s after the last charge: 3 - 1 + 1 = 3. */
        o = limit_check(&nodelay, 1, key, 11000);
        ok(o.verdict == LIMIT_PASS && o.excess == 3000, "1 s later: one more passes (3.000)");
        /* A long idle drains everything: nginx clamps at 0 before anything else. */
        o = limit_check(&nodelay, 1, key, 60000);
        ok(o.verdict == LIMIT_PASS && o.excess == 0, "after a long idle: excess 0");

        uint8_t other[LIMIT_KEY];
        key_of("192.0.2.2", other);
        o = limit_check(&nodelay, 1, other, 60000);
        ok(o.verdict == LIMIT_PASS && o.excess == 0, "another client has its own bucket");
        limit_table_unref(z.table);
}

static void test_delays(void)
{
        struct limit_zone z = zone("ten", 10000, 64 * 1024); /* 10r/s */
        struct limit_req delayed = {&z, 5000, 0};            /* burst=5 */
        struct limit_req partly = {&z, 5000, 2000};          /* burst=5 delay=2 */
        uint8_t key[LIMIT_KEY];
        struct limit_outcome o;

        key_of("198.51.100.7", key);
        o = limit_check(&delayed, 1, key, 0);
        ok(o.verdict == LIMIT_PASS && o.delay_ms == 0, "the first goes at once");
        o = limit_check(&delayed, 1, key, 0);
        ok(o.verdict == LIMIT_DELAY && o.delay_ms == 100, "the second waits 100 ms (excess 1)");
        o = limit_check(&delayed, 1, key, 0);
        ok(o.verdict == LIMIT_DELAY && o.delay_ms == 200, "the third 200 ms");
        o = limit_check(&delayed, 1, key, 50);
        ok(o.verdict == LIMIT_DELAY && o.delay_ms == 250, "50 ms later the fourth 250 ms (2.5)");

        uint8_t k2[LIMIT_KEY];
        key_of("198.51.100.8", k2);
        for (int i = 0; i < 3; i++)
                o = limit_check(&partly, 1, k2, 0);
        ok(o.verdict == LIMIT_PASS && o.excess == 2000, "delay=2: up to excess 2 at once");
        o = limit_check(&partly, 1, k2, 0);
        ok(o.verdict == LIMIT_DELAY && o.delay_ms == 100, "then the part above 2 waits");
        limit_table_unref(z.table);
}

static void test_several_zones(void)
{
        struct limit_zone a = zone("a", 1000, 64 * 1024), b = zone("b", 1000, 64 * 1024);
        struct limit_req both[2] = {{&a, 5000, UINT64_MAX}, {&b, 1000, UINT64_MAX}};
        uint8_t key[LIMIT_KEY];
        struct limit_outcome o;

        key_of("203.0.113.1", key);
        ok(limit_check(both, 2, key, 0).verdict == LIMIT_PASS, "first passes both");
        ok(limit_check(both, 2, key, 0).verdict == LIMIT_PASS, "second: b's burst 1");
        o = limit_check(both, 2, key, 0);
        ok(o.verdict == LIMIT_REFUSE && o.zone == &b, "third: b refuses");
        /* a was not charged by the refusal: alone, it has excess 1 -> 2 now. */
        o = limit_check(&both[0], 1, key, 0);
        ok(o.verdict == LIMIT_PASS && o.excess == 2000, "a refused request charges no zone");
        limit_table_unref(a.table);
        limit_table_unref(b.table);
}

static void test_keys(void)
{
        struct sockaddr_storage ss = {0};
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &ss;
        uint8_t mapped[LIMIT_KEY], plain[LIMIT_KEY], v6[LIMIT_KEY];

        in6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, "::ffff:192.0.2.1", &in6->sin6_addr);
        ok(limit_key(&ss, sizeof(*in6), mapped), "a v4-mapped address has a key");
        key_of("192.0.2.1", plain);
        ok(!memcmp(mapped, plain, LIMIT_KEY), "the same as the IPv4 address");
        inet_pton(AF_INET6, "2001:db8::1", &in6->sin6_addr);
        ok(limit_key(&ss, sizeof(*in6), v6) && v6[0] == 6 && memcmp(v6, plain, LIMIT_KEY),
           "an IPv6 address has its own");
        ss.ss_family = AF_UNIX;
        ok(!limit_key(&ss, sizeof(ss), v6), "a unix socket client has none (no limit)");
}

static void test_full_table(void)
{
        struct limit_zone z = zone("small", 1000, 16 * LIMIT_ENTRY_BYTES);
        struct limit_req r = {&z, 0, UINT64_MAX}; /* burst 0: a second request at once fails */
        uint8_t key[LIMIT_KEY];
        char addr[32];

        ok(limit_table_capacity(z.table) == 16, "16 clients fit");
        for (int i = 0; i < 16; i++) {
                snprintf(addr, sizeof(addr), "10.0.0.%d", i);
                key_of(addr, key);
                limit_check(&r, 1, key, 0);
        }
        key_of("10.0.0.5", key);
        ok(limit_check(&r, 1, key, 0).verdict == LIMIT_REFUSE, "a remembered client is limited");
        key_of("10.0.1.1", key);
        ok(limit_check(&r, 1, key, 0).verdict == LIMIT_PASS, "a 17th client takes a place");
        key_of("10.0.0.0", key);
        ok(limit_check(&r, 1, key, 0).verdict == LIMIT_PASS,
           "the one seen least recently was forgotten");
        key_of("10.0.0.5", key);
        ok(limit_check(&r, 1, key, 0).verdict == LIMIT_REFUSE, "a recent one was not");
        for (int i = 0; i < 16; i++) {
                snprintf(addr, sizeof(addr), "10.0.2.%d", i);
                key_of(addr, key);
                ok(limit_check(&r, 1, key, 0).verdict == LIMIT_PASS &&
                       limit_check(&r, 1, key, 0).verdict == LIMIT_REFUSE,
                   "new client %d, then limited: chains stay whole", i);
        }
        limit_table_unref(z.table);
}

int main(void)
{
        subtest("the bucket", test_bucket);
        subtest("delays", test_delays);
        subtest("several zones", test_several_zones);
        subtest("keys", test_keys);
        subtest("a full table", test_full_table);
        return done_testing();
}
