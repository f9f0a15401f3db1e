/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemons/proxy/proxy_body.c: a body that stays in memory, one that
 * moves to a file at the limit, sending it in pieces of any size (as short
 * sends come), a rewind for another upstream, and a directory that takes no
 * temporary file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "proxy_body.h"
#include "tap.h"
#include "util.h"

/* Everything the body gives, taking at most step bytes a time. */
static char *drain(struct reqbody *b, size_t step, size_t *len)
{
        char *out = malloc(b->len + 1);
        const char *p;
        ssize_t k;

        *len = 0;
        while ((k = reqbody_next(b, &p)) > 0) {
                size_t n = min_size((size_t) k, step);
                memcpy(out + *len, p, n);
                *len += n;
                reqbody_sent(b, n);
        }
        return k < 0 ? (free(out), NULL) : out;
}

static void pattern(char *p, size_t n, unsigned seed)
{
        for (size_t i = 0; i < n; i++)
                p[i] = (char) ((i * 31 + seed) & 0xff);
}

static void test_memory(void)
{
        struct reqbody b;
        size_t len;

        reqbody_init(&b);
        ok(reqbody_add(&b, "hello ", 6, 16, "/nonexistent") == 0 &&
               reqbody_add(&b, "world", 5, 16, "/nonexistent") == 0,
           "up to the limit it stays in memory (no directory needed)");
        ok(b.fd < 0 && b.len == 11, "11 bytes, no file");
        char *out = drain(&b, 3, &len);
        ok(out && len == 11 && !memcmp(out, "hello world", 11), "sent in pieces of 3");
        free(out);
        reqbody_rewind(&b);
        out = drain(&b, 100, &len);
        ok(out && len == 11, "again after a rewind");
        free(out);
        reqbody_free(&b);
        ok(b.fd == -1 && b.len == 0 && !b.mem, "freed: empty again");
}

static void test_file(void)
{
        const size_t n = 3 * REQBODY_CHUNK + 123;
        char *want = malloc(n);
        struct reqbody b;
        size_t len;

        pattern(want, n, 7);
        reqbody_init(&b);
        int r = 0;
        for (size_t off = 0; off < n && r == 0; off += 1000)
                r = reqbody_add(&b, want + off, min_size(1000, n - off), 4096, "/var/tmp");
        ok(r == 0 && b.fd >= 0 && b.len == n, "past 4096 bytes it moved to a file (%d)", r);
        struct stat st;
        ok(b.fd >= 0 && fstat(b.fd, &st) == 0 && st.st_nlink == 0 && (uint64_t) st.st_size == n,
           "an unlinked file with every byte");
        char *out = drain(&b, 7777, &len);
        ok(out && len == n && !memcmp(out, want, n), "read back whole, in odd pieces");
        free(out);
        reqbody_rewind(&b);
        out = drain(&b, SIZE_MAX, &len);
        ok(out && len == n && !memcmp(out, want, n), "and again after a rewind");
        free(out);
        reqbody_free(&b);
        free(want);

        reqbody_init(&b);
        ok(reqbody_add(&b, "x", 1, 0, "/var/tmp") == 0 && b.fd >= 0,
           "a limit of 0: straight to a file");
        reqbody_free(&b);
}

static void test_refusals(void)
{
        struct reqbody b;

        reqbody_init(&b);
        ok(reqbody_add(&b, "0123456789", 10, 4, "/nonexistent/dir") == -ENOENT,
           "a directory that is not there: -ENOENT");
        reqbody_free(&b);
        const char *p;
        ok(reqbody_next(&b, &p) == 0, "an empty body has nothing to send");
}

int main(void)
{
        subtest("in memory", test_memory);
        subtest("in a file", test_file);
        subtest("refusals", test_refusals);
        return done_testing();
}
