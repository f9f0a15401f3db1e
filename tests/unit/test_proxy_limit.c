/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemons/proxy/proxy_limit.c: nginx's leaky bucket step by step
 * with explicit times (its numbers worked by hand from ngx_http_limit_req),
 * delays, several zones at once, the keys, and a full table; limit_conn's
 * counts taken and given back, several lines, a full zone, and a zone that
 * outlives its configuration.
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

static struct limit_zone conn_zone(const char *name, uint64_t size)
{
        struct limit_zone z = zone(name, 0, size);

        z.conn = true;
        return z;
}

static void test_conn(void)
{
        struct limit_zone z = conn_zone("addr", 1024 * 1024);
        struct limit_conn two = {&z, 2};
        struct limit_conn_hold h[4] = {0};
        uint8_t a[LIMIT_KEY], b[LIMIT_KEY];

        key_of("192.0.2.1", a);
        key_of("192.0.2.2", b);
        ok(limit_conn_take(&two, 1, a, &h[0]) == NULL && h[0].n == 1, "the first request counts");
        ok(limit_conn_take(&two, 1, a, &h[1]) == NULL && limit_conn_count(z.table, a) == 2,
           "the second too: 2 at once");
        ok(limit_conn_take(&two, 1, a, &h[2]) == &two && h[2].n == 0 &&
               limit_conn_count(z.table, a) == 2,
           "a third is refused and holds nothing");
        ok(limit_conn_take(&two, 1, b, &h[3]) == NULL && limit_conn_count(z.table, b) == 1,
           "another client has its own count");
        limit_conn_release(&h[0]);
        ok(h[0].n == 0 && limit_conn_count(z.table, a) == 1, "a request that ends gives it back");
        limit_conn_release(&h[0]);
        ok(limit_conn_count(z.table, a) == 1, "giving back twice gives back once");
        ok(limit_conn_take(&two, 1, a, &h[0]) == NULL, "so the next one counts");
        limit_conn_release(&h[0]);
        limit_conn_release(&h[1]);
        limit_conn_release(&h[3]);
        ok(limit_conn_count(z.table, a) == 0 && limit_conn_count(z.table, b) == 0, "all back to 0");
        limit_table_unref(z.table);
}

static void test_conn_several(void)
{
        struct limit_zone per_client = conn_zone("addr", 1024 * 1024);
        struct limit_zone other = conn_zone("other", 1024 * 1024);
        struct limit_conn rules[] = {{&per_client, 3}, {&other, 1}};
        struct limit_conn_hold h[3] = {0};
        uint8_t a[LIMIT_KEY];

        key_of("198.51.100.7", a);
        ok(limit_conn_take(rules, 2, a, &h[0]) == NULL && h[0].n == 2, "counted in both zones");
        ok(limit_conn_take(rules, 2, a, &h[1]) == &rules[1], "the second line refuses the next");
        ok(limit_conn_count(per_client.table, a) == 1,
           "and the first line's count of it was taken back");
        /* A configuration reloaded without the zones: the hold keeps the tables alive. */
        limit_table_unref(per_client.table);
        limit_table_unref(other.table);
        limit_conn_release(&h[0]);
        ok(h[0].n == 0, "a request outliving its configuration still gives its counts back");

        struct limit_zone same = conn_zone("addr", 1024 * 1024);
        struct limit_conn twice[] = {{&same, 2}, {&same, 2}};
        ok(limit_conn_take(twice, 2, a, &h[2]) == NULL && limit_conn_count(same.table, a) == 2,
           "two lines of one zone count a request twice, as in nginx");
        limit_conn_release(&h[2]);
        ok(limit_conn_count(same.table, a) == 0, "and give both back");
        limit_table_unref(same.table);
}

static void test_conn_full(void)
{
        struct limit_zone z = conn_zone("small", 1024); /* 16 clients */
        struct limit_conn one = {&z, 1};
        struct limit_conn_hold h[17] = {0};
        uint8_t key[LIMIT_KEY];
        char addr[32];
        bool all = true;

        ok(limit_table_capacity(z.table) == 16, "1k holds 16 clients");
        for (int i = 0; i < 16; i++) {
                snprintf(addr, sizeof(addr), "10.0.0.%d", i + 1);
                key_of(addr, key);
                all &= limit_conn_take(&one, 1, key, &h[i]) == NULL;
        }
        ok(all, "16 clients with a request each");
        key_of("10.0.1.1", key);
        ok(limit_conn_take(&one, 1, key, &h[16]) == &one,
           "a 17th client is refused: a client with requests is never forgotten");
        limit_conn_release(&h[3]);
        ok(limit_conn_take(&one, 1, key, &h[16]) == NULL,
           "once one is back to 0 its place is free");
        for (int i = 0; i < 17; i++)
                limit_conn_release(&h[i]);
        all = true;
        for (int i = 0; i < 16; i++) {
                snprintf(addr, sizeof(addr), "10.0.2.%d", i + 1);
                key_of(addr, key);
                all &= limit_conn_take(&one, 1, key, &h[i]) == NULL;
        }
        ok(all, "emptied, the zone takes 16 new clients");
        for (int i = 0; i < 16; i++)
                limit_conn_release(&h[i]);
        limit_table_unref(z.table);
}

int main(void)
{
        subtest("the bucket", test_bucket);
        subtest("delays", test_delays);
        subtest("several zones", test_several_zones);
        subtest("keys", test_keys);
        subtest("a full table", test_full_table);
        subtest("limit_conn", test_conn);
        subtest("limit_conn, several lines", test_conn_several);
        subtest("limit_conn, a full zone", test_conn_full);
        return done_testing();
}
