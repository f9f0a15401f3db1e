/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemons/proxy/proxy_gzip.c: which requests and responses are
 * compressed (nginx's rules), gzip_types matching, and the stream itself:
 * pieces flushed as they come, the whole inflating back to the input, a
 * pooled stream reused at another level.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "proxy_gzip.h"
#include "tap.h"
#include "util.h"

static const struct gzip_conf conf = {
    .on = true,
    .types = "text/html text/css application/json",
    .min_length = 20,
    .level = 1,
    .min_minor = 1,
};

static bool request_accepts(const struct gzip_conf *g, const char *raw)
{
        struct http_request req;

        if (http_parse_request(raw, strlen(raw), strlen(raw), &req) <= 0)
                return false;
        return gzip_request_accepts(g, &req);
}

static void test_requests(void)
{
        struct gzip_conf proxied = conf, old = conf;
        proxied.proxied = true;
        old.min_minor = 0;

        ok(request_accepts(&conf, "GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip, br\r\n\r\n"),
           "gzip among others");
        ok(request_accepts(&conf,
                           "GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: GZip;q=0.5\r\n\r\n"),
           "any case, q > 0");
        ok(!request_accepts(&conf,
                            "GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip;q=0\r\n\r\n"),
           "q=0 refuses it");
        ok(!request_accepts(&conf, "GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzipx\r\n\r\n"),
           "a longer token is another coding");
        ok(!request_accepts(&conf, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"), "no Accept-Encoding");
        ok(request_accepts(&conf, "HEAD / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n"),
           "HEAD: the head a GET would get");
        ok(!request_accepts(&conf, "GET / HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n"),
           "HTTP/1.0 below gzip_http_version 1.1");
        ok(request_accepts(&old, "GET / HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n"),
           "HTTP/1.0 with gzip_http_version 1.0");
        ok(!request_accepts(&conf, "GET / HTTP/1.1\r\nHost: a\r\nVia: 1.1 cache\r\n"
                                   "Accept-Encoding: gzip\r\n\r\n"),
           "Via with gzip_proxied off");
        ok(request_accepts(&proxied, "GET / HTTP/1.1\r\nHost: a\r\nVia: 1.1 cache\r\n"
                                     "Accept-Encoding: gzip\r\n\r\n"),
           "Via with gzip_proxied any");
}

/* Does a request with this User-Agent (NULL: none) still get gzip under g? */
static bool ua_accepted(const struct gzip_conf *g, const char *ua)
{
        char raw[512];

        snprintf(raw, sizeof(raw),
                 "GET / HTTP/1.1\r\nHost: a\r\n%s%s%sAccept-Encoding: gzip\r\n\r\n",
                 ua ? "User-Agent: " : "", ua ? ua : "", ua ? "\r\n" : "");
        return request_accepts(g, raw);
}

static void test_disable(void)
{
        struct gzip_conf g = conf;
        char why[256];

        ok(ua_accepted(&g, "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)"),
           "without gzip_disable, MSIE 6 gets gzip");
        ok(gzip_disable_add(&g, "msie6", why, sizeof(why)) == 0 && g.disable_msie6 && !g.disable,
           "msie6 is nginx's mask, not an expression");
        ok(!ua_accepted(&g, "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)"), "MSIE 6.0: off");
        ok(!ua_accepted(&g, "Mozilla/4.0 (compatible; MSIE 5.5; Windows 98)"), "MSIE 5.5: off");
        ok(!ua_accepted(&g, "Mozilla/2.0 (compatible; MSIE 4.01; Windows 95)"), "MSIE 4.01: off");
        ok(ua_accepted(&g, "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1)"),
           "MSIE 6.0 with SV1 (XP SP2) keeps gzip");
        ok(ua_accepted(&g, "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.0)"),
           "MSIE 7 keeps it");
        ok(ua_accepted(&g, "Opera/9.0 (compatible; MSIE 6.0; Windows NT 5.1)"),
           "Opera saying MSIE 6 keeps it");
        ok(ua_accepted(&g, "x MSIE 6."), "MSIE 6. at the very end is not enough for nginx");
        ok(!ua_accepted(&g, "x MSIE 6.0"), "one byte more is");
        ok(ua_accepted(&g, "msie 6.0; windows"), "the mask is case-sensitive, as nginx's");
        ok(ua_accepted(&g, NULL), "no User-Agent: gzip");

        ok(gzip_disable_add(&g, "\"BadBot/[0-9]+\" 'Old Crawler'", why, sizeof(why)) == 0 &&
               g.disable && g.disable->n == 2,
           "two quoted expressions (one with a space) on one line");
        ok(!ua_accepted(&g, "badbot/12 (+http://example.com)"), "an expression ignores case");
        ok(!ua_accepted(&g, "Mozilla/5.0 OLD CRAWLER"), "the quoted space is part of it");
        ok(ua_accepted(&g, "BadBot/x"), "a User-Agent the expressions miss keeps gzip");
        ok(ua_accepted(&g, "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0"), "a browser keeps it");
        ok(gzip_disable_add(&g, "^curl/", why, sizeof(why)) == 0 && g.disable->n == 3,
           "a further line adds to the list");
        ok(!ua_accepted(&g, "curl/8.0"), "anchored at the start");
        ok(ua_accepted(&g, "xcurl/8.0"), "and only there");
        gzip_disable_done(&g);
        ok(!g.disable && !g.disable_msie6 && ua_accepted(&g, "curl/8.0"), "done frees it all");

        static const char *const bad[] = {"",
                                          "  ",
                                          "\"open",
                                          "'open",
                                          "a(b",
                                          "[z-a]",
                                          "\\d+",
                                          "(?i)bot",
                                          "x \\D",
                                          "(a)\\1",
                                          "((a{255}){255}){255}",
                                          "x{40000}"};
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                why[0] = '\0';
                ok(gzip_disable_add(&g, bad[i], why, sizeof(why)) == -EINVAL && why[0],
                   "'%s' refused: %s", bad[i], why);
                gzip_disable_done(&g);
        }
        ok(gzip_disable_add(&g, "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3} a{2,}", why, sizeof(why)) ==
               0,
           "counts that stay small are taken");
        gzip_disable_done(&g);
        ok(gzip_disable_add(&g, "\\.exe$ [[:digit:]]", why, sizeof(why)) == 0,
           "POSIX escapes and classes are taken");
        gzip_disable_done(&g);
}

static bool response_wanted_to(const char *raw, bool head)
{
        struct http_response resp;

        if (http_parse_response(raw, strlen(raw), strlen(raw), head, &resp) <= 0)
                return false;
        return gzip_response_wanted(&conf, &resp, head);
}

static bool response_wanted(const char *raw)
{
        return response_wanted_to(raw, false);
}

static void test_responses(void)
{
        ok(response_wanted("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                           "Content-Length: 100\r\n\r\n"),
           "text/html with a charset");
        ok(response_wanted("HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n"),
           "404, a listed type, no length");
        ok(response_wanted("HTTP/1.1 403 Forbidden\r\nContent-Type: TEXT/CSS\r\n"
                           "Connection: close\r\n\r\n"),
           "403, type in another case, length unknown");
        ok(!response_wanted("HTTP/1.1 500 Oops\r\nContent-Type: text/html\r\n"
                            "Content-Length: 100\r\n\r\n"),
           "not for a 500");
        ok(!response_wanted("HTTP/1.1 206 Partial\r\nContent-Type: text/html\r\n"
                            "Content-Range: bytes 0-99/200\r\nContent-Length: 100\r\n\r\n"),
           "not for a range");
        ok(!response_wanted("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                            "Content-Length: 19\r\n\r\n"),
           "shorter than gzip_min_length");
        ok(response_wanted("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                           "Content-Length: 20\r\n\r\n"),
           "exactly gzip_min_length");
        ok(!response_wanted("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                            "Content-Encoding: br\r\nContent-Length: 100\r\n\r\n"),
           "already encoded");
        ok(!response_wanted("HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
                            "Content-Length: 100\r\n\r\n"),
           "a type not listed");
        ok(!response_wanted("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"), "no Content-Type");
        ok(!response_wanted("HTTP/1.1 204 No Content\r\nContent-Type: text/html\r\n\r\n"),
           "no body");
        ok(response_wanted_to("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                              "Content-Length: 100\r\n\r\n",
                              true),
           "HEAD: as its GET");
        ok(response_wanted_to("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", true),
           "HEAD without a length");
        ok(!response_wanted_to("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                               "Content-Length: 19\r\n\r\n",
                               true),
           "HEAD of a short one");
        ok(!response_wanted_to("HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n", true),
           "HEAD of a type not listed");
}

static void test_types(void)
{
        ok(gzip_type_listed("text/html", span_from_str("text/html")), "the type itself");
        ok(gzip_type_listed("text/html", span_from_str("  text/html ;charset=x")),
           "spaces and parameters around it");
        ok(!gzip_type_listed("text/html", span_from_str("text/htmlx")), "no prefix match");
        ok(!gzip_type_listed("text/html", span_from_str("text/htm")), "no shorter match");
        ok(!gzip_type_listed("text/html", span_from_str("")), "empty");
        ok(!gzip_type_listed("text/html", span_from_str("; charset=x")), "parameters only");
        ok(gzip_type_listed("text/html *", span_from_str("image/png")), "* takes any");
        ok(gzip_type_listed("text/html text/css application/json",
                            span_from_str("application/json")),
           "the last of several");
}

struct sink {
        char *buf;
        size_t len, cap;
        unsigned pieces;
};

static bool sink_out(void *arg, const char *p, size_t n)
{
        struct sink *s = arg;

        if (s->len + n > s->cap)
                return false;
        memcpy(s->buf + s->len, p, n);
        s->len += n;
        s->pieces++;
        return true;
}

/* Inflates a gzip stream whole; returns its length or -1. */
static long inflate_all(const char *in, size_t n, char *out, size_t cap, bool *ended)
{
        z_stream z = {0};
        int r;

        if (inflateInit2(&z, 15 + 16) != Z_OK)
                return -1;
        z.next_in = (Bytef *) (uintptr_t) in;
        z.avail_in = (uInt) n;
        z.next_out = (Bytef *) out;
        z.avail_out = (uInt) cap;
        r = inflate(&z, Z_FINISH);
        *ended = r == Z_STREAM_END;
        long got = (long) (cap - z.avail_out);
        inflateEnd(&z);
        return r == Z_STREAM_END || r == Z_BUF_ERROR ? got : -1;
}

static void test_stream(void)
{
        struct gzip_pool pool = {0};
        size_t n = 300000;
        char *input = malloc(n), *back = malloc(n + 1);
        struct sink s = {.buf = malloc(2 * n), .cap = 2 * n};
        bool ended;
        long got;

        /* Compressible but not trivially: a line with a counter. */
        for (size_t i = 0; i < n; i++)
                input[i] = (char) ("<p>hello, wharf</p>\n"[i % 20] + (i / 4096 % 3));

        struct gzstream *z = gzip_take(&pool, 1);
        ok(z != NULL, "a stream");
        ok(gzip_deflate(z, input, 1000, false, sink_out, &s) == 0, "first piece");
        size_t after_first = s.len;
        got = inflate_all(s.buf, s.len, back, n, &ended);
        ok(got == 1000 && !ended && memcmp(back, input, 1000) == 0,
           "a flushed piece inflates whole before the end");
        ok(gzip_deflate(z, input + 1000, 0, false, sink_out, &s) == 0 && s.len == after_first,
           "an empty piece adds nothing");
        ok(gzip_deflate(z, input + 1000, n - 1000, false, sink_out, &s) == 0, "the rest");
        ok(gzip_deflate(z, NULL, 0, true, sink_out, &s) == 0, "the end");
        got = inflate_all(s.buf, s.len, back, n + 1, &ended);
        ok(got == (long) n && ended && memcmp(back, input, n) == 0,
           "all of it, intact (%zu -> %zu)", n, s.len);
        ok(s.len < n / 4, "and smaller");
        gzip_give(&pool, &z);
        ok(z == NULL && pool.n_free == 1, "given back to the pool");

        /* The pooled stream again, at another level: a new gzip member from its start. */
        z = gzip_take(&pool, 9);
        ok(z != NULL && pool.n_free == 0, "taken from the pool");
        s.len = 0;
        ok(gzip_deflate(z, input, 5000, false, sink_out, &s) == 0 &&
               gzip_deflate(z, NULL, 0, true, sink_out, &s) == 0,
           "compressed at level 9");
        got = inflate_all(s.buf, s.len, back, n, &ended);
        ok(got == 5000 && ended && memcmp(back, input, 5000) == 0, "a reused stream starts afresh");

        /* A sink that refuses: the error comes back, nothing spins. */
        struct sink tiny = {.buf = s.buf, .cap = 8};
        gzip_give(&pool, &z);
        z = gzip_take(&pool, 1);
        ok(gzip_deflate(z, input, n, false, sink_out, &tiny) == -ENOMEM, "a full sink: -ENOMEM");
        gzip_give(&pool, &z);
        gzip_give(&pool, &z);
        ok(pool.n_free == 1, "giving NULL is nothing");
        gzip_pool_done(&pool);
        ok(pool.free == NULL && pool.n_free == 0, "the pool emptied");
        free(input);
        free(back);
        free(s.buf);
}

int main(void)
{
        subtest("requests", test_requests);
        subtest("gzip_disable", test_disable);
        subtest("responses", test_responses);
        subtest("gzip_types", test_types);
        subtest("the stream", test_stream);
        return done_testing();
}
