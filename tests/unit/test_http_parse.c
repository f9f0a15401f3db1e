/* SPDX-License-Identifier: MIT */
/*
 * Tests for common/http_parse.c: the request parser, the chunked decoder,
 * the path normaliser and the list helpers.
 *
 * As in picohttpparser's test.c, every input is copied so that it ends
 * right before a PROT_NONE page: reading one byte too far crashes the test
 * instead of passing by luck. Every valid request is also fed again cut at
 * every byte, the way a socket may deliver it.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "http_parse.h"
#include "guard.h"
#include "tap.h"

/* Inputs up to this size end right before the guard page. */
#define GUARD_AREA_SIZE (64 * 1024)

static void guard_setup(void)
{
        guard_setup_size(GUARD_AREA_SIZE);
}

static ssize_t parse_len(const char *s, size_t len, size_t max_head, struct http_request *req)
{
        return http_parse_request(place(s, len), len, max_head, req);
}

static ssize_t parse(const char *s, struct http_request *req)
{
        return parse_len(s, strlen(s), HTTP_DEFAULT_MAX_HEAD, req);
}

static bool span_is(struct span s, const char *lit)
{
        return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

static bool header_is(const struct http_header *h, const char *name, const char *value)
{
        return span_is(h->name, name) && span_is(h->value, value);
}

/* A span inside buf[0..len), or the one static "/" an absolute-form target may give. */
static bool span_inside(struct span s, const char *buf, size_t len)
{
        if (s.len == 0)
                return true;
        if (s.len == 1 && s.ptr[0] == '/' && (s.ptr < buf || s.ptr >= buf + len))
                return true;
        return s.ptr >= buf && s.ptr + s.len <= buf + len;
}

static bool spans_inside(const struct http_request *r, const char *buf, size_t len)
{
        if (!span_inside(r->method_name, buf, len) || !span_inside(r->target, buf, len) ||
            !span_inside(r->path, buf, len) || !span_inside(r->query, buf, len) ||
            !span_inside(r->host, buf, len))
                return false;
        for (size_t i = 0; i < r->n_headers; i++)
                if (!span_inside(r->headers[i].name, buf, len) ||
                    !span_inside(r->headers[i].value, buf, len))
                        return false;
        return true;
}

/* Same span, relative to the buffer each request was parsed from. */
static bool span_same(struct span a, const char *abuf, struct span b, const char *bbuf)
{
        if (a.len != b.len)
                return false;
        if (a.len == 0 || a.ptr == b.ptr)
                return true;
        return a.ptr - abuf == b.ptr - bbuf;
}

static bool req_same(const struct http_request *a, const char *abuf, const struct http_request *b,
                     const char *bbuf)
{
        if (a->method != b->method || a->has_query != b->has_query ||
            a->minor_version != b->minor_version || a->n_headers != b->n_headers ||
            a->body != b->body || a->content_length != b->content_length ||
            a->keep_alive != b->keep_alive || a->expect_continue != b->expect_continue ||
            a->head_len != b->head_len)
                return false;
        if (!span_same(a->method_name, abuf, b->method_name, bbuf) ||
            !span_same(a->target, abuf, b->target, bbuf) ||
            !span_same(a->path, abuf, b->path, bbuf) ||
            !span_same(a->query, abuf, b->query, bbuf) || !span_same(a->host, abuf, b->host, bbuf))
                return false;
        for (size_t i = 0; i < a->n_headers; i++)
                if (!span_same(a->headers[i].name, abuf, b->headers[i].name, bbuf) ||
                    !span_same(a->headers[i].value, abuf, b->headers[i].value, bbuf))
                        return false;
        return true;
}

/*
 * Parses s whole, then every prefix of it. For a valid request a prefix
 * shorter than the head must be -EAGAIN and a longer one must give exactly
 * the same result; for a bad one each prefix is -EAGAIN or the same error
 * (an error is never reported before the byte that causes it).
 * Returns the result for the whole input; *req is the parsed request.
 */
static ssize_t parse_all_splits(const char *s, size_t len, size_t max_head,
                                struct http_request *req, bool *splits_ok)
{
        static struct http_request full, part;
        const char *full_buf = place(s, len);
        ssize_t r = http_parse_request(full_buf, len, max_head, &full);

        *splits_ok = r < 0 || ((size_t) r <= len && full.head_len == (size_t) r &&
                               spans_inside(&full, full_buf, len));
        for (size_t k = 0; k < len && *splits_ok; k++) {
                const char *buf = place(s, k);
                ssize_t q = http_parse_request(buf, k, max_head, &part);

                if (r < 0)
                        *splits_ok = q == -EAGAIN || q == r;
                else if (k < (size_t) r)
                        *splits_ok = q == -EAGAIN;
                else
                        *splits_ok = q == r && req_same(&part, buf, &full, full_buf);
                if (!*splits_ok)
                        printf("# split at %zu of %zu: got %zd, whole gave %zd\n", k, len, q, r);
        }
        /* The spans of *req point into the guard area: parse it last. */
        full_buf = place(s, len);
        (void) http_parse_request(full_buf, len, max_head, req);
        return r;
}

static ssize_t parse_checked(const char *s, struct http_request *req)
{
        bool splits_ok;
        ssize_t r = parse_all_splits(s, strlen(s), HTTP_DEFAULT_MAX_HEAD, req, &splits_ok);

        ok(splits_ok, "every split of the request parses like the whole");
        return r;
}

static void test_simple(void)
{
        static const char s[] = "GET /index.html?x=1&y HTTP/1.1\r\n"
                                "Host: example.com\r\n"
                                "User-Agent: test/1.0\r\n"
                                "Accept: */*\r\n"
                                "\r\n";
        struct http_request r;

        ok(parse_checked(s, &r) == (ssize_t) strlen(s), "simple GET parses whole");
        ok(r.method == HTTP_GET && span_is(r.method_name, "GET"), "method GET");
        ok(span_is(r.target, "/index.html?x=1&y"), "raw target");
        ok(span_is(r.path, "/index.html"), "path before '?'");
        ok(r.has_query && span_is(r.query, "x=1&y"), "query after '?'");
        ok(r.minor_version == 1, "HTTP/1.1");
        ok(span_is(r.host, "example.com"), "host from Host");
        ok(r.n_headers == 3, "three headers");
        ok(header_is(&r.headers[0], "Host", "example.com") &&
               header_is(&r.headers[1], "User-Agent", "test/1.0") &&
               header_is(&r.headers[2], "Accept", "*/*"),
           "headers in order, as sent");
        ok(r.body == HTTP_BODY_NONE && r.content_length == 0, "no body");
        ok(r.keep_alive, "1.1 keeps the connection by default");
        ok(!r.expect_continue, "no Expect");
        ok(r.head_len == strlen(s), "head_len is the whole head");

        ok(parse("GET /? HTTP/1.1\r\nHost: a\r\n\r\n", &r) > 0 && r.has_query && r.query.len == 0 &&
               span_is(r.path, "/"),
           "empty query still has_query");
        ok(parse("GET /a HTTP/1.1\r\nHost: a\r\n\r\n", &r) > 0 && !r.has_query && r.query.len == 0,
           "no '?' means no query");
        ok(parse("GET /a?b?c HTTP/1.1\r\nHost: a\r\n\r\n", &r) > 0 && span_is(r.path, "/a") &&
               span_is(r.query, "b?c"),
           "the first '?' splits");
        ok(parse("PURGE /a HTTP/1.1\r\nHost: a\r\n\r\n", &r) > 0 && r.method == HTTP_OTHER &&
               span_is(r.method_name, "PURGE"),
           "unknown token method is HTTP_OTHER");
        ok(parse("get /a HTTP/1.1\r\nHost: a\r\n\r\n", &r) > 0 && r.method == HTTP_OTHER,
           "methods are case-sensitive");
        ok(parse("GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Ws: \t v a l \t \r\n\r\n", &r) > 0 &&
               header_is(&r.headers[1], "X-Empty", "") && header_is(&r.headers[2], "X-Ws", "v a l"),
           "values are OWS-trimmed, inner whitespace kept, empty allowed");
        ok(parse("GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n", &r) > 0 &&
               header_is(&r.headers[1], "X", "caf\xc3\xa9"),
           "obs-text allowed in values");
}

static void test_methods(void)
{
        static const struct {
                const char *name;
                enum http_method m;
        } methods[] = {
            {"GET", HTTP_GET},     {"HEAD", HTTP_HEAD},     {"POST", HTTP_POST},
            {"PUT", HTTP_PUT},     {"DELETE", HTTP_DELETE}, {"OPTIONS", HTTP_OPTIONS},
            {"PATCH", HTTP_PATCH}, {"TRACE", HTTP_TRACE},   {"GETS", HTTP_OTHER},
            {"POS", HTTP_OTHER},   {"OPTION", HTTP_OTHER},  {"M-SEARCH", HTTP_OTHER},
        };
        struct http_request r;
        char s[128];

        for (size_t i = 0; i < ARRAY_SIZE(methods); i++) {
                snprintf(s, sizeof(s), "%s /x HTTP/1.1\r\nHost: h\r\n\r\n", methods[i].name);
                ok(parse(s, &r) == (ssize_t) strlen(s) && r.method == methods[i].m &&
                       span_is(r.method_name, methods[i].name),
                   "method %s", methods[i].name);
        }
        for (int m = 0; m < _HTTP_METHOD_MAX; m++)
                ok(http_method_name(m) && strlen(http_method_name(m)) > 0, "method %d has a name",
                   m);
        ok(streq(http_method_name(HTTP_DELETE), "DELETE"), "DELETE is named DELETE");
        ok(http_method_name(_HTTP_METHOD_MAX) == NULL, "no name past the end");
}

static void test_pipelined(void)
{
        static const char s[] = "GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
                                "GET /second HTTP/1.1\r\nHost: b\r\n\r\n";
        size_t first_len = strlen("GET /first HTTP/1.1\r\nHost: a\r\n\r\n");
        struct http_request r;
        ssize_t n;

        n = parse_checked(s, &r);
        ok(n == (ssize_t) first_len, "first parse consumes exactly the first head");
        ok(span_is(r.path, "/first") && span_is(r.host, "a"), "first request's fields");
        n = parse(s + first_len, &r);
        ok(n == (ssize_t) (strlen(s) - first_len) && span_is(r.path, "/second") &&
               span_is(r.host, "b"),
           "second head parses from where the first ended");

        /* A body after the head is not the parser's business. */
        n = parse_checked("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET", &r);
        ok(n == (ssize_t) strlen("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n") &&
               r.body == HTTP_BODY_LENGTH && r.content_length == 5,
           "body bytes are left for the caller");
}

static void test_leading_crlf(void)
{
        static const char s[] = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        struct http_request r;

        ok(parse_checked(s, &r) == (ssize_t) strlen(s) && r.method == HTTP_GET &&
               r.head_len == strlen(s),
           "empty lines before the request line are skipped and consumed");
        ok(parse("\r\n", &r) == -EAGAIN, "only CRLF so far: more needed");
        ok(parse("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", &r) == -EBADMSG, "bare LF first");
        ok(parse("\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", &r) == -EBADMSG, "bare CR first");
        ok(parse(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", &r) == -EBADMSG, "leading space");
        ok(parse("\r\n\r\n\r\n\r\n", &r) == -EAGAIN, "several empty lines are still a prefix");
}

static void test_connection(void)
{
        struct http_request r;

        ok(parse_checked("GET / HTTP/1.0\r\n\r\n", &r) > 0 && r.minor_version == 0 &&
               !r.keep_alive && r.host.len == 0,
           "1.0 without Host, closes by default");
        ok(parse_checked("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r) > 0 &&
               r.keep_alive,
           "1.0 keep-alive");
        ok(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r) > 0 && r.keep_alive,
           "1.0 Keep-Alive, any case");
        ok(parse("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", &r) > 0 &&
               !r.keep_alive,
           "close wins over keep-alive");
        ok(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &r) > 0 && !r.keep_alive,
           "1.1 close");
        ok(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n", &r) > 0 &&
               !r.keep_alive,
           "close anywhere in the list");
        ok(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: te\r\nConnection: close\r\n\r\n", &r) >
                   0 &&
               !r.keep_alive,
           "close in a second Connection line");
        ok(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", &r) > 0 && r.keep_alive,
           "\"closed\" is not close");
        ok(parse("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", &r) > 0 &&
               r.expect_continue,
           "Expect: 100-continue");
        ok(parse("GET / HTTP/1.1\r\nHost: a\r\nexpect: 100-Continue\r\n\r\n", &r) > 0 &&
               r.expect_continue,
           "Expect is case-insensitive");
        ok(parse("GET / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n", &r) > 0 &&
               !r.expect_continue,
           "other expectations are ignored");
        ok(parse("GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", &r) > 0 && !r.expect_continue,
           "1.0 100-continue is ignored (RFC 9110 10.1.1)");
}

static void test_target_forms(void)
{
        struct http_request r;

        ok(parse_checked("GET http://example.org:8080/a/b?q=1 HTTP/1.1\r\nHost: other\r\n\r\n",
                         &r) > 0,
           "absolute-form parses");
        ok(span_is(r.host, "example.org:8080"), "absolute-form: the authority is the host");
        ok(span_is(r.path, "/a/b") && span_is(r.query, "q=1") && r.has_query,
           "absolute-form: path and query");
        ok(span_is(r.target, "http://example.org:8080/a/b?q=1"), "absolute-form: raw target");
        ok(parse_checked("GET http://example.org HTTP/1.1\r\nHost: example.org\r\n\r\n", &r) > 0 &&
               span_is(r.path, "/") && !r.has_query && span_is(r.host, "example.org"),
           "absolute-form without path means /");
        ok(parse("GET http://example.org?x HTTP/1.1\r\nHost: e\r\n\r\n", &r) > 0 &&
               span_is(r.path, "/") && span_is(r.query, "x"),
           "absolute-form with query and no path");
        ok(parse("GET HTTPS://[::1]:443/ HTTP/1.1\r\nHost: e\r\n\r\n", &r) > 0 &&
               span_is(r.host, "[::1]:443"),
           "https scheme, any case, IPv6 literal");
        ok(parse("GET http://example.org/ HTTP/1.1\r\n\r\n", &r) == -EBADMSG,
           "absolute-form still needs Host in 1.1");
        ok(parse("GET http://user@example.org/ HTTP/1.1\r\nHost: e\r\n\r\n", &r) == -EBADMSG,
           "userinfo refused");
        ok(parse("GET http:///a HTTP/1.1\r\nHost: e\r\n\r\n", &r) == -EBADMSG, "empty authority");
        ok(parse("GET ftp://example.org/ HTTP/1.1\r\nHost: e\r\n\r\n", &r) == -EBADMSG,
           "other schemes refused");
        ok(parse("GET http:/example.org/ HTTP/1.1\r\nHost: e\r\n\r\n", &r) == -EBADMSG,
           "not quite a scheme");
        ok(parse("GET index.html HTTP/1.1\r\nHost: e\r\n\r\n", &r) == -EBADMSG, "relative target");

        ok(parse_checked("OPTIONS * HTTP/1.1\r\nHost: e\r\n\r\n", &r) > 0 &&
               r.method == HTTP_OPTIONS && span_is(r.path, "*") && span_is(r.target, "*"),
           "OPTIONS *");
        ok(parse("GET * HTTP/1.1\r\nHost: e\r\n\r\n", &r) == -EBADMSG, "asterisk-form for GET");
        ok(parse("OPTIONS *x HTTP/1.1\r\nHost: e\r\n\r\n", &r) == -EBADMSG, "asterisk plus more");

        ok(parse_checked("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", &r) >
                   0 &&
               r.method == HTTP_CONNECT && span_is(r.target, "example.com:443") &&
               r.path.len == 0 && span_is(r.host, "example.com:443"),
           "CONNECT authority-form");
        ok(parse("CONNECT example.com HTTP/1.1\r\nHost: e\r\n\r\n", &r) == -EBADMSG,
           "CONNECT needs a port");
        ok(parse("CONNECT example.com: HTTP/1.1\r\nHost: e\r\n\r\n", &r) == -EBADMSG,
           "CONNECT needs a non-empty port");
        ok(parse("CONNECT / HTTP/1.1\r\nHost: e\r\n\r\n", &r) == -EBADMSG, "CONNECT origin-form");
        ok(parse("CONNECT http://e:1/ HTTP/1.1\r\nHost: e\r\n\r\n", &r) == -EBADMSG,
           "CONNECT absolute-form");
        ok(parse("GET example.com:443 HTTP/1.1\r\nHost: e\r\n\r\n", &r) == -EBADMSG,
           "authority-form for GET");
}

static void test_limits(void)
{
        static char s[GUARD_AREA_SIZE];
        struct http_request r;
        size_t n, head;
        bool splits_ok;

        /* HTTP_MAX_HEADERS header lines are fine, one more is 431. */
        n = (size_t) snprintf(s, sizeof(s), "GET / HTTP/1.1\r\nHost: a\r\n");
        for (int i = 1; i < HTTP_MAX_HEADERS; i++)
                n += (size_t) snprintf(s + n, sizeof(s) - n, "X-%d: v\r\n", i);
        memcpy(s + n, "\r\n", 3);
        ok(parse(s, &r) == (ssize_t) (n + 2) && r.n_headers == HTTP_MAX_HEADERS, "%d headers",
           HTTP_MAX_HEADERS);
        ok(span_is(r.headers[HTTP_MAX_HEADERS - 1].name, "X-99"), "the last header is kept");
        n += (size_t) snprintf(s + n, sizeof(s) - n, "X-more: v\r\n\r\n");
        ok(parse(s, &r) == -E2BIG, "%d headers is -E2BIG", HTTP_MAX_HEADERS + 1);
        s[n - 4] = '\0'; /* cut inside the 101st line */
        ok(parse(s, &r) == -E2BIG, "detected before the head is complete");

        /* max_head: exactly fits, one byte over, and incomplete heads. */
        snprintf(s, sizeof(s), "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        head = strlen(s);
        ok(parse_len(s, head, head, &r) == (ssize_t) head, "head of exactly max_head bytes");
        ok(parse_len(s, head, head - 1, &r) == -E2BIG, "head one byte over max_head");
        ok(parse_len(s, head - 1, head - 1, &r) == -E2BIG,
           "incomplete and already max_head long: -E2BIG");
        ok(parse_len(s, head - 2, head - 1, &r) == -EAGAIN, "incomplete and shorter: -EAGAIN");
        ok(parse_all_splits(s, head, head, &r, &splits_ok) == (ssize_t) head && splits_ok,
           "splits with max_head equal to the head");
        ok(parse_len(s, head, 0, &r) == -E2BIG, "max_head 0");

        /* The default limit, with one header larger than it. */
        n = (size_t) snprintf(s, sizeof(s), "GET / HTTP/1.1\r\nHost: a\r\nCookie: ");
        memset(s + n, 'c', HTTP_DEFAULT_MAX_HEAD);
        n += HTTP_DEFAULT_MAX_HEAD;
        memcpy(s + n, "\r\n\r\n", 5);
        ok(parse(s, &r) == -E2BIG, "header over the default head limit: 431");
        ok(http_parse_request(place(s, HTTP_DEFAULT_MAX_HEAD), HTTP_DEFAULT_MAX_HEAD,
                              HTTP_DEFAULT_MAX_HEAD, &r) == -E2BIG,
           "and already when only max_head bytes arrived");

        /* Leading empty lines count against max_head too. */
        memset(s, 0, sizeof(s));
        for (size_t i = 0; i < 64; i += 2)
                memcpy(s + i, "\r\n", 2);
        ok(parse_len(s, 64, 64, &r) == -E2BIG, "endless empty lines reach the head limit");

        /* Request-target: HTTP_MAX_TARGET bytes are fine, one more is 414. */
        n = (size_t) snprintf(s, sizeof(s), "GET /");
        memset(s + n, 'a', HTTP_MAX_TARGET - 1);
        n += HTTP_MAX_TARGET - 1;
        snprintf(s + n, sizeof(s) - n, " HTTP/1.1\r\nHost: a\r\n\r\n");
        ok(parse(s, &r) > 0 && r.target.len == HTTP_MAX_TARGET, "target of HTTP_MAX_TARGET");
        n = (size_t) snprintf(s, sizeof(s), "GET /");
        memset(s + n, 'a', HTTP_MAX_TARGET);
        n += HTTP_MAX_TARGET;
        snprintf(s + n, sizeof(s) - n, " HTTP/1.1\r\nHost: a\r\n\r\n");
        ok(parse(s, &r) == -EMSGSIZE, "target one byte longer: -EMSGSIZE");
        ok(parse_len(s, n, HTTP_DEFAULT_MAX_HEAD, &r) == -EMSGSIZE,
           "detected before the target ends");
        ok(parse_len(s, n - 1, HTTP_DEFAULT_MAX_HEAD, &r) == -EAGAIN,
           "one byte less is still a prefix");
        ok(parse_len(s, strlen(s), 1024, &r) == -E2BIG,
           "a smaller max_head is reached first: -E2BIG");
}

/* Inputs that must fail, with the error, whole and in every split. */
static const struct bad_case {
        const char *in;
        ssize_t err;
        const char *what;
} bad_cases[] = {
    /* request line */
    {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, "two spaces after the method"},
    {"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, "two spaces after the target"},
    {"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", -EBADMSG, "space after the version"},
    {"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, "tab as separator"},
    {"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, "'@' in the method"},
    {" / HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, "empty method"},
    {"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, "space inside the target"},
    {"GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, "DEL in the target"},
    {"GET /a\x80 HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, "byte >= 0x80 in the target"},
    {"GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, "control in the target"},
    {"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, "tab in the target"},
    {"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, "fragment in the target"},
    {"GET /\r\nHost: a\r\n\r\n", -EBADMSG, "HTTP/0.9 request line"},
    {"GET / HTTP/1.1\nHost: a\r\n\r\n", -EBADMSG, "bare LF after the request line"},
    {"GET / HTTP/1.1\rHost: a\r\n\r\n", -EBADMSG, "bare CR after the request line"},
    {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", -ENOSYS, "HTTP/2.0"},
    {"GET / HTTP/1.2\r\nHost: a\r\n\r\n", -ENOSYS, "HTTP/1.2"},
    {"GET / HTTP/0.9\r\nHost: a\r\n\r\n", -ENOSYS, "HTTP/0.9"},
    {"GET / HTTP/3.1\r\nHost: a\r\n\r\n", -ENOSYS, "HTTP/3.1"},
    {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", -EBADMSG, "HTTP/2 preface (asterisk for PRI)"},
    {"GET / HTTP/1.10\r\nHost: a\r\n\r\n", -EBADMSG, "two-digit minor"},
    {"GET / HTTP/11.1\r\nHost: a\r\n\r\n", -EBADMSG, "two-digit major"},
    {"GET / HTTP/1\r\nHost: a\r\n\r\n", -EBADMSG, "no minor"},
    {"GET / HTTP/2\r\nHost: a\r\n\r\n", -EBADMSG, "HTTP/2 without minor"},
    {"GET / http/1.1\r\nHost: a\r\n\r\n", -EBADMSG, "lowercase HTTP"},
    {"GET / HTTP/1.x\r\nHost: a\r\n\r\n", -EBADMSG, "letter as minor"},
    {"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", -EBADMSG, "junk after the version"},
    {"GET / HTTPS/1.1\r\nHost: a\r\n\r\n", -EBADMSG, "HTTPS/1.1"},
    /* header lines */
    {"GET / HTTP/1.1\r\n Host: a\r\n\r\n", -EBADMSG, "whitespace before the first header"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", -EBADMSG, "obs-fold with SP"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", -EBADMSG, "obs-fold with HTAB"},
    {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", -EBADMSG, "space before the colon"},
    {"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", -EBADMSG, "tab before the colon"},
    {"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", -EBADMSG, "empty field name"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n", -EBADMSG, "line without colon"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX(Y): b\r\n\r\n", -EBADMSG, "'(' in a field name"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: b\r\n\r\n", -EBADMSG, "non-ASCII field name"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01 b\r\n\r\n", -EBADMSG, "control in a value"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", -EBADMSG, "DEL in a value"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x0b"
     "b\r\n\r\n",
     -EBADMSG, "VT in a value"},
    {"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", -EBADMSG, "bare LF after a header"},
    {"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", -EBADMSG, "bare CR after a header"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", -EBADMSG, "bare CR inside a value"},
    {"GET / HTTP/1.1\r\nHost: a\r\n\n", -EBADMSG, "bare LF as the empty line"},
    {"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", -EBADMSG, "CR CR LF as the empty line"},
    /* Host */
    {"GET / HTTP/1.1\r\n\r\n", -EBADMSG, "1.1 without Host"},
    {"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", -EBADMSG, "Host twice, same value"},
    {"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", -EBADMSG, "Host twice, different"},
    {"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", -EBADMSG, "Host twice in 1.0"},
    {"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", -EBADMSG, "space in Host"},
    {"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", -EBADMSG, "'/' in Host"},
    {"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", -EBADMSG, "'@' in Host"},
    {"GET / HTTP/1.1\r\nHost: a\\b\r\n\r\n", -EBADMSG, "'\\' in Host"},
    {"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", -EBADMSG, "',' in Host"},
    {"GET / HTTP/1.1\r\nHost: a?b\r\n\r\n", -EBADMSG, "'?' in Host"},
    {"GET / HTTP/1.1\r\nHost: a#b\r\n\r\n", -EBADMSG, "'#' in Host"},
    {"GET / HTTP/1.1\r\nHost: a%41\r\n\r\n", -EBADMSG, "'%' in Host"},
    {"GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", -EBADMSG, "letters as port"},
    {"GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", -EBADMSG, "two ports"},
    {"GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n", -EBADMSG, "six-digit port"},
    {"GET / HTTP/1.1\r\nHost: :80\r\n\r\n", -EBADMSG, "port without host"},
    {"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", -EBADMSG, "unclosed IPv6 literal"},
    {"GET / HTTP/1.1\r\nHost: []\r\n\r\n", -EBADMSG, "empty IPv6 literal"},
    {"GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n", -EBADMSG, "bad IPv6 literal"},
    {"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", -EBADMSG, "junk after IPv6 literal"},
    {"GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", -EBADMSG, "non-ASCII Host"},
    /* Content-Length */
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", -EBADMSG, "CL +5"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", -EBADMSG, "CL -5"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", -EBADMSG, "CL 5 5"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", -EBADMSG, "CL 0x5"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5.0\r\n\r\n", -EBADMSG, "CL 5.0"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1e3\r\n\r\n", -EBADMSG, "CL 1e3"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", -EBADMSG, "CL empty"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n", -EBADMSG, "CL 5,"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ,5\r\n\r\n", -EBADMSG, "CL ,5"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", -EBADMSG, "CL 5, 6"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", -EBADMSG,
     "CL overflow"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", -EBADMSG,
     "CL 2^64"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", -EBADMSG,
     "CL 2^63"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", -EBADMSG,
     "two different CL lines"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5, 7\r\n\r\n", -EBADMSG,
     "CL line and CL list disagree"},
    /* Transfer-Encoding */
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", -EBADMSG,
     "TE gzip, chunked"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", -EBADMSG,
     "TE chunked, chunked"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
     "Transfer-Encoding: chunked\r\n\r\n",
     -EBADMSG, "two TE chunked lines"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
     "Transfer-Encoding: chunked\r\n\r\n",
     -EBADMSG, "TE gzip line, then chunked line"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", -EBADMSG,
     "TE chunked not last"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", -EBADMSG, "TE gzip"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", -EBADMSG, "TE identity"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", -EBADMSG, "TE xchunked"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n", -EBADMSG, "TE chunkedx"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x\r\n\r\n", -EBADMSG,
     "TE chunked;x"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", -EBADMSG, "TE chunked,"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", -EBADMSG, "TE quoted"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", -EBADMSG, "TE empty"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0b"
     "chunked\r\n\r\n",
     -EBADMSG, "TE \\x0bchunked"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n", -EBADMSG,
     "TE chunked\\x0b"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ch unked\r\n\r\n", -EBADMSG, "TE ch unked"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", -EBADMSG,
     "TE with space before colon"},
    {"POST / HTTP/1.1\r\nHost: a\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n", -EBADMSG,
     "TE folded into another header"},
    {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", -EBADMSG, "TE in 1.0"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
     -EBADMSG, "TE then CL"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
     -EBADMSG, "CL then TE"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
     -EBADMSG, "CL 0 then TE"},
};

static void test_bad(void)
{
        struct http_request r;

        for (size_t i = 0; i < ARRAY_SIZE(bad_cases); i++) {
                const struct bad_case *c = &bad_cases[i];
                bool splits_ok;
                ssize_t n;

                n = parse_all_splits(c->in, strlen(c->in), HTTP_DEFAULT_MAX_HEAD, &r, &splits_ok);
                if (!ok(n == c->err && splits_ok, "refused: %s", c->what))
                        printf("# got %zd, want %zd\n", n, c->err);
        }

        /* Inputs with NUL bytes need their length spelled out. */
        static const char nul_value[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
        static const char nul_name[] = "GET / HTTP/1.1\r\nHost: a\r\nX\0: b\r\n\r\n";
        static const char nul_target[] = "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n";
        static const char nul_method[] = "GE\0 / HTTP/1.1\r\nHost: a\r\n\r\n";
        static const char nul_end[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\0";
        ok(parse_len(nul_value, sizeof(nul_value) - 1, HTTP_DEFAULT_MAX_HEAD, &r) == -EBADMSG,
           "NUL in a value");
        ok(parse_len(nul_name, sizeof(nul_name) - 1, HTTP_DEFAULT_MAX_HEAD, &r) == -EBADMSG,
           "NUL in a name");
        ok(parse_len(nul_target, sizeof(nul_target) - 1, HTTP_DEFAULT_MAX_HEAD, &r) == -EBADMSG,
           "NUL in the target");
        ok(parse_len(nul_method, sizeof(nul_method) - 1, HTTP_DEFAULT_MAX_HEAD, &r) == -EBADMSG,
           "NUL in the method");
        ok(parse_len(nul_end, sizeof(nul_end) - 1, HTTP_DEFAULT_MAX_HEAD, &r) == -EBADMSG,
           "CR NUL as the empty line");

        /* Errors show before the head is complete. */
        ok(parse("G@", &r) == -EBADMSG, "bad method byte seen at once");
        ok(parse("GET /\x01", &r) == -EBADMSG, "bad target byte seen at once");
        ok(parse("GET / HTTP/1.1\r\nX : ", &r) == -EBADMSG, "space before colon seen at once");
        ok(parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n", &r) == -EBADMSG,
           "second Host seen at once");
        ok(parse("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x", &r) == -EAGAIN,
           "a value is judged when its line ends");
        ok(parse("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n", &r) == -EBADMSG,
           "bad Content-Length seen when its line ends");
        ok(parse("GET / HTTP/1.1\r\n", &r) == -EAGAIN, "a valid prefix is -EAGAIN");
        ok(parse("", &r) == -EAGAIN, "nothing yet is -EAGAIN");
}

static void test_valid_framing(void)
{
        struct http_request r;

        ok(parse_checked("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n", &r) > 0 &&
               r.body == HTTP_BODY_LENGTH && r.content_length == 42,
           "Content-Length 42");
        ok(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &r) > 0 &&
               r.body == HTTP_BODY_NONE && r.content_length == 0,
           "Content-Length 0 is no body");
        ok(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n", &r) > 0 &&
               r.body == HTTP_BODY_LENGTH && r.content_length == 7,
           "leading zeros");
        ok(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n", &r) >
                   0 &&
               r.content_length == INT64_MAX,
           "the largest Content-Length");
        ok(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  5 \t\r\n\r\n", &r) > 0 &&
               r.content_length == 5,
           "OWS around Content-Length");
        ok(parse_checked("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5,5\r\n\r\n", &r) > 0 &&
               r.content_length == 5,
           "a list of identical lengths is one");
        ok(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
                 &r) > 0 &&
               r.body == HTTP_BODY_LENGTH && r.content_length == 5,
           "two identical Content-Length lines are one");
        ok(parse_checked("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", &r) >
                   0 &&
               r.body == HTTP_BODY_CHUNKED,
           "chunked");
        ok(parse("POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: CHUNKED\r\n\r\n", &r) > 0 &&
               r.body == HTTP_BODY_CHUNKED,
           "chunked in any case");
        ok(parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\t chunked \r\n\r\n", &r) > 0 &&
               r.body == HTTP_BODY_CHUNKED,
           "OWS around chunked");
        ok(parse("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", &r) > 0 &&
               span_is(r.host, "[::1]:8080"),
           "IPv6 Host with port");
        ok(parse("GET / HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n", &r) > 0 &&
               span_is(r.host, "192.0.2.1"),
           "IPv4 Host");
        ok(parse("GET / HTTP/1.1\r\nHost: a.example:\r\n\r\n", &r) > 0 &&
               span_is(r.host, "a.example:"),
           "empty port is allowed (RFC 3986)");
        ok(parse("GET / HTTP/1.1\r\nHost:\r\n\r\n", &r) > 0 && r.host.len == 0,
           "empty Host is allowed");
        ok(parse("GET / HTTP/1.1\r\nHOST: Ex-am_ple.COM~\r\n\r\n", &r) > 0 &&
               span_is(r.host, "Ex-am_ple.COM~"),
           "Host name in any case");
}

/* What each byte may be, written from the RFCs rather than from the table. */
static bool rfc_tchar(int c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static void test_char_classes(void)
{
        struct http_request r;
        char s[128];
        size_t n;
        int bad_method = 0, bad_target = 0, bad_name = 0, bad_value = 0;

        for (int c = 0; c < 256; c++) {
                bool want;
                ssize_t got;

                n = (size_t) snprintf(s, sizeof(s), "G?T / HTTP/1.1\r\nHost: a\r\n\r\n");
                s[1] = (char) c;
                got = parse_len(s, n, HTTP_DEFAULT_MAX_HEAD, &r);
                want = rfc_tchar(c);
                bad_method += want ? got != (ssize_t) n : got != -EBADMSG;

                n = (size_t) snprintf(s, sizeof(s), "GET /?x HTTP/1.1\r\nHost: a\r\n\r\n");
                s[5] = (char) c;
                got = parse_len(s, n, HTTP_DEFAULT_MAX_HEAD, &r);
                want = c > 0x20 && c < 0x7f && c != '#';
                bad_target += want ? got != (ssize_t) n : got != -EBADMSG;

                n = (size_t) snprintf(s, sizeof(s), "GET / HTTP/1.1\r\nHost: a\r\nX?Y: v\r\n\r\n");
                s[26] = (char) c;
                got = parse_len(s, n, HTTP_DEFAULT_MAX_HEAD, &r);
                /* "X:Y: v" is the header X with the value "Y: v". */
                want = rfc_tchar(c) || c == ':';
                bad_name += want ? got != (ssize_t) n : got != -EBADMSG;

                n = (size_t) snprintf(s, sizeof(s), "GET / HTTP/1.1\r\nHost: a\r\nX: a?b\r\n\r\n");
                s[29] = (char) c;
                got = parse_len(s, n, HTTP_DEFAULT_MAX_HEAD, &r);
                want = c == '\t' || (c >= 0x20 && c != 0x7f);
                bad_value += want ? got != (ssize_t) n : got != -EBADMSG;
        }
        ok(bad_method == 0, "method bytes: exactly tchar (%d wrong)", bad_method);
        ok(bad_target == 0, "target bytes: exactly VCHAR but '#' (%d wrong)", bad_target);
        ok(bad_name == 0, "field-name bytes: exactly tchar (%d wrong)", bad_name);
        ok(bad_value == 0, "field-value bytes: HTAB, SP, VCHAR, obs-text (%d wrong)", bad_value);
}

static void test_find_header(void)
{
        struct http_request r;
        const struct http_header *h;

        ok(parse("GET / HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nx-one: 2\r\nAccept: b\r\n\r\n", &r) > 0,
           "request for http_find_header");
        h = http_find_header(&r, "x-ONE");
        ok(h && span_is(h->value, "1"), "first match, case-insensitive");
        h = http_find_header(&r, "Accept");
        ok(h && span_is(h->value, "b"), "last header found");
        ok(!http_find_header(&r, "X-On"), "prefix does not match");
        ok(!http_find_header(&r, "X-One-Two"), "longer name does not match");
        ok(!http_find_header(&r, "Accept-Encoding"), "absent header");
}

static void test_is_token(void)
{
        static const char *const good[] = {"X-Forwarded-For", "a", "!#$%&'*+-.^_`|~09Az"};
        static const char *const bad[] = {"",      "Bad Header",  "a:b", "a\tb", "x(y)",
                                          "\"q\"", "caf\xc3\xa9", "a/b", "[v6]"};

        for (size_t i = 0; i < ARRAY_SIZE(good); i++)
                ok(http_is_token(good[i], strlen(good[i])), "'%s' is a token", good[i]);
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
                ok(!http_is_token(bad[i], strlen(bad[i])), "'%s' is not", bad[i]);
        ok(!http_is_token("ab\0c", 4), "a NUL inside is not, though the length covers it");
        ok(http_is_token("ab:c", 2), "only len bytes are looked at");
}

static void test_list_has_token(void)
{
        static const struct {
                const char *list;
                const char *token;
                bool want;
        } cases[] = {
            {"gzip", "gzip", true},
            {"deflate, gzip", "gzip", true},
            {"deflate,gzip", "gzip", true},
            {"GZIP", "gzip", true},
            {"gzip", "GZip", true},
            {" \tgzip\t ", "gzip", true},
            {", ,gzip,", "gzip", true},
            {"gzip;q=0", "gzip", false},
            {"gzip; q=0", "gzip", false},
            {"gzip ; Q=0.000", "gzip", false},
            {"gzip;q=0.", "gzip", false},
            {"gzip;q=0.001", "gzip", true},
            {"gzip;q=0.5", "gzip", true},
            {"gzip;q=1", "gzip", true},
            {"gzip;q=1.000", "gzip", true},
            {"gzip;q=1.001", "gzip", false},
            {"gzip;q=2", "gzip", false},
            {"gzip;q=0.0000", "gzip", false},
            {"gzip;q=", "gzip", false},
            {"gzip;q", "gzip", false},
            {"gzip;level=9", "gzip", true},
            {"gzip;a=\"x,y\";q=1", "gzip", true},
            {"gzip;a=\"x,y\";q=0", "gzip", false},
            {"gzip;q=0, gzip", "gzip", true},
            {"br;x=\"a, gzip\"", "gzip", false},
            {"x-gzip", "gzip", false},
            {"gzip2", "gzip", false},
            {"gzi", "gzip", false},
            {"gzip x", "gzip", false},
            {"", "gzip", false},
            {"*", "gzip", false},
            {"keep-alive, Upgrade", "upgrade", true},
            {"close", "keep-alive", false},
        };

        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                const char *in = place(cases[i].list, strlen(cases[i].list));
                bool got =
                    http_list_has_token((struct span){in, strlen(cases[i].list)}, cases[i].token);

                ok(got == cases[i].want, "\"%s\" %s \"%s\"", cases[i].list,
                   cases[i].want ? "has" : "has no", cases[i].token);
        }
}

/*
 * Chunked decoding: feeds in[0..len) in pieces that end at cuts[] (each
 * placed before the guard page), collecting the data. Returns what the last
 * call returned; *ret_consumed is the offset in the input where the body
 * ended.
 */
static ssize_t chunked_pieces(const char *in, size_t len, const size_t *cuts, size_t n_cuts,
                              uint64_t max_total, char *data, size_t *ret_data_len,
                              size_t *ret_consumed)
{
        struct http_chunked c;
        size_t start = 0, data_len = 0;
        ssize_t r = -EAGAIN;

        http_chunked_init(&c, max_total);
        for (size_t i = 0; i <= n_cuts; i++) {
                size_t end = i < n_cuts ? cuts[i] : len;
                size_t got = (size_t) -1;
                char *buf = place(in + start, end - start);

                r = http_chunked_decode(&c, buf, end - start, &got);
                if (r == -EAGAIN || r >= 0) {
                        assert(got <= end - start);
                        memcpy(data + data_len, buf, got);
                        data_len += got;
                }
                if (r >= 0) {
                        *ret_consumed = start + (size_t) r;
                        break;
                }
                if (r != -EAGAIN)
                        break;
                start = end;
        }
        *ret_data_len = data_len;
        return r;
}

/* One piece, every split in two, and byte by byte: all must agree. */
static bool chunked_all_splits(const char *in, size_t len, uint64_t max_total, ssize_t *ret,
                               char *data, size_t *data_len, size_t *consumed)
{
        static char other[GUARD_AREA_SIZE];
        static size_t cuts[GUARD_AREA_SIZE];
        size_t other_len, other_consumed = 0;
        ssize_t r, q;

        *consumed = 0;
        r = chunked_pieces(in, len, NULL, 0, max_total, data, data_len, consumed);
        for (size_t k = 0; k <= len; k++) {
                other_consumed = 0;
                q = chunked_pieces(in, len, &k, 1, max_total, other, &other_len, &other_consumed);
                if (q < 0 && q != -EAGAIN) {
                        /* An error: the same one, wherever the cut was. */
                        if (q != r)
                                return false;
                        continue;
                }
                if ((q >= 0) != (r >= 0) || other_consumed != *consumed || other_len != *data_len ||
                    memcmp(other, data, other_len) != 0)
                        return false;
        }
        for (size_t k = 0; k < len; k++)
                cuts[k] = k + 1;
        other_consumed = 0;
        q = chunked_pieces(in, len, cuts, len > 0 ? len - 1 : 0, max_total, other, &other_len,
                           &other_consumed);
        if (q >= 0 || r >= 0) {
                if ((q >= 0) != (r >= 0) || other_consumed != *consumed || other_len != *data_len ||
                    memcmp(other, data, other_len) != 0)
                        return false;
        } else if (q != r)
                return false;
        *ret = r;
        return true;
}

/*
 * Checks one chunked input: want is 0 (the body ends and tail follows it),
 * -EAGAIN (the body goes on) or an error. data is what must be decoded.
 */
static void check_chunked(const char *in, size_t len, uint64_t max_total, ssize_t want,
                          const char *want_data, const char *tail, const char *what)
{
        static char data[GUARD_AREA_SIZE];
        size_t data_len = 0, consumed = 0;
        ssize_t r = 0;
        bool same = chunked_all_splits(in, len, max_total, &r, data, &data_len, &consumed);

        if (!same)
                printf("# splits disagree\n");
        if (want == 0)
                ok(same && r >= 0 && consumed == len - strlen(tail) &&
                       data_len == strlen(want_data) && memcmp(data, want_data, data_len) == 0,
                   "chunked: %s", what);
        else if (want == -EAGAIN)
                ok(same && r == -EAGAIN && data_len == strlen(want_data) &&
                       memcmp(data, want_data, data_len) == 0,
                   "chunked, incomplete: %s", what);
        else
                ok(same && r == want, "chunked refuses: %s", what);
}

static const struct chunked_case {
        const char *in;
        uint64_t max_total;
        ssize_t want;
        const char *data;
        const char *tail; /* what follows the body */
        const char *what;
} chunked_cases[] = {
    {"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 0, 0, "hello world", "", "two chunks"},
    {"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 0, 0, "hello", "GET / HTTP/1.1\r\n",
     "stops where the body ends"},
    {"0\r\n\r\n", 0, 0, "", "", "empty body"},
    {"000\r\n\r\n", 0, 0, "", "", "last-chunk with more zeros"},
    {"A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n", 0, 0, "01234567890123456789", "",
     "hex in either case"},
    {"0000000000000005\r\nhello\r\n0\r\n\r\n", 0, 0, "hello", "", "sixteen hex digits"},
    {"5;name=value;x=\"quoted; str\"\r\nhello\r\n0;last\r\n\r\n", 0, 0, "hello", "",
     "extensions are skipped"},
    {"5 ;a\r\nhello\r\n0\t; b\r\n\r\n", 0, 0, "hello", "", "BWS before ';'"},
    {"5\r\nhello\r\n0\r\nX-Trailer: v\r\nY:z\r\n\r\nnext", 0, 0, "hello", "next", "trailer fields"},
    {"5\r\nhe\r\nl\r\n0\r\n\r\n", 0, 0, "he\r\nl", "", "CRLF inside data is data"},
    {"5\r\nhello\r\n6\r\n wor", 0, -EAGAIN, "hello wor", "", "incomplete body"},
    {"5\r\nhello\r\n0\r\nX: y\r\n", 0, -EAGAIN, "hello", "", "inside the trailers"},
    {"ffffffffffffffff\r\nabc", 0, -EAGAIN, "abc", "", "the largest size, no limit"},

    {"\r\n", 0, -EBADMSG, "", "", "empty size"},
    {";x\r\n", 0, -EBADMSG, "", "", "extension without size"},
    {"g\r\n", 0, -EBADMSG, "", "", "non-hex size"},
    {"-1\r\n", 0, -EBADMSG, "", "", "negative size"},
    {"+5\r\nhello\r\n", 0, -EBADMSG, "", "", "signed size"},
    {"0x5\r\nhello\r\n", 0, -EBADMSG, "", "", "0x prefix"},
    {" 5\r\nhello\r\n", 0, -EBADMSG, "", "", "space before size"},
    {"5 \r\nhello\r\n", 0, -EBADMSG, "", "", "space after size without ';'"},
    {"5 5\r\nhello\r\n", 0, -EBADMSG, "", "", "two sizes"},
    {"00000000000000005\r\nhello\r\n", 0, -EBADMSG, "", "", "seventeen hex digits"},
    {"10000000000000000\r\n", 0, -EBADMSG, "", "", "2^64 overflows"},
    {"5\nhello\r\n0\r\n\r\n", 0, -EBADMSG, "", "", "bare LF after size"},
    {"5\rhello\r\n0\r\n\r\n", 0, -EBADMSG, "", "", "bare CR after size"},
    {"5;a\nhello\r\n0\r\n\r\n", 0, -EBADMSG, "", "", "bare LF after extension"},
    {"5;a\x01\r\nhello\r\n", 0, -EBADMSG, "", "", "control in extension"},
    {"5;a\x7f\r\nhello\r\n", 0, -EBADMSG, "", "", "DEL in extension"},
    {"5\r\nhelloXX0\r\n\r\n", 0, -EBADMSG, "", "", "no CRLF after data"},
    {"5\r\nhello\n0\r\n\r\n", 0, -EBADMSG, "", "", "bare LF after data"},
    {"5\r\nhello\r0\r\n\r\n", 0, -EBADMSG, "", "", "bare CR after data"},
    {"5\r\nhelloX\n0\r\n\r\n", 0, -EBADMSG, "", "", "LF after data without CR"},
    {"5\r\nhello!\r\n0\r\n\r\n", 0, -EBADMSG, "", "", "data longer than size"},
    {"0\r\n\n", 0, -EBADMSG, "", "", "bare LF at the end"},
    {"0\r\n\r\r", 0, -EBADMSG, "", "", "CR CR at the end"},
    {"0\r\n X: y\r\n\r\n", 0, -EBADMSG, "", "", "obs-fold in trailers"},
    {"0\r\nX : y\r\n\r\n", 0, -EBADMSG, "", "", "space before colon in trailer"},
    {"0\r\n: y\r\n\r\n", 0, -EBADMSG, "", "", "empty trailer name"},
    {"0\r\nX\r\n\r\n", 0, -EBADMSG, "", "", "trailer without colon"},
    {"0\r\nX: a\x01\r\n\r\n", 0, -EBADMSG, "", "", "control in trailer value"},
    {"0\r\nX: a\nY: b\r\n\r\n", 0, -EBADMSG, "", "", "bare LF in trailers"},
    {"0\r\nX: a\r\n\nabc", 0, -EBADMSG, "", "", "bare LF ending the trailers"},

    {"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 11, 0, "hello world", "", "exactly max_total"},
    {"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 10, -EFBIG, "", "", "one byte over max_total"},
    {"b\r\n", 10, -EFBIG, "", "", "a single chunk over max_total"},
    {"ffffffffffffffff\r\n", 1000, -EFBIG, "", "", "a huge size with a limit"},
    {"0\r\n\r\n", 1, 0, "", "", "empty body under a limit"},
};

static void test_chunked(void)
{
        static char big[GUARD_AREA_SIZE];
        struct http_chunked c;
        size_t n, got;
        char *buf;
        ssize_t r;

        for (size_t i = 0; i < ARRAY_SIZE(chunked_cases); i++) {
                const struct chunked_case *cc = &chunked_cases[i];

                check_chunked(cc->in, strlen(cc->in), cc->max_total, cc->want, cc->data, cc->tail,
                              cc->what);
        }

        /* A size line of 4096 bytes (CRLF not counted) is fine, one more is not. */
        n = (size_t) snprintf(big, sizeof(big), "5;");
        memset(big + n, 'x', 4096 - n);
        n = 4096;
        memcpy(big + n, "\r\nhello\r\n0\r\n\r\n", 15);
        check_chunked(big, n + 14, 0, 0, "hello", "", "size line of 4096 bytes");
        memmove(big + 1, big, n + 15);
        check_chunked(big, n + 15, 0, -EBADMSG, "", "", "size line of 4097 bytes");

        /* The trailer section may hold 16 KiB, the final CRLF included. */
        n = (size_t) snprintf(big, sizeof(big), "0\r\nX: ");
        memset(big + n, 'v', 16 * 1024 - 7);
        n += 16 * 1024 - 7;
        memcpy(big + n, "\r\n\r\n", 5);
        n += 4;
        check_chunked(big, n, 0, 0, "", "", "16 KiB of trailers");
        memmove(big + 7, big + 6, n - 6 + 1);
        n++;
        check_chunked(big, n, 0, -EBADMSG, "", "", "one byte more of trailers");

        /* In place: the data moves to the front and nothing past the body changes. */
        static const char inplace[] = "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nNEXT";
        buf = place(inplace, sizeof(inplace) - 1);
        http_chunked_init(&c, 0);
        r = http_chunked_decode(&c, buf, sizeof(inplace) - 1, &got);
        ok(r == 20 && got == 5 && memcmp(buf, "abcde", 5) == 0 && memcmp(buf + r, "NEXT", 4) == 0,
           "decoded in place, the rest left intact");
        ok(c.total == 5, "total counts the data");
        ok(http_chunked_decode(&c, buf + r, 4, &got) == 0 && got == 0,
           "after the end: nothing more is consumed");

        http_chunked_init(&c, 0);
        ok(http_chunked_decode(&c, buf, 0, &got) == -EAGAIN && got == 0, "empty input");
}

static const struct path_case {
        const char *in;
        const char *out;    /* NULL: -EBADMSG */
        const char *strict; /* with HTTP_PATH_REJECT_ENCODED_SLASH; NULL: -EBADMSG */
} path_cases[] = {
    {"/", "/", "/"},
    {"/a/b", "/a/b", "/a/b"},
    {"/a/b/", "/a/b/", "/a/b/"},
    {"/../a", NULL, NULL},
    {"/..", NULL, NULL},
    {"/a/../../b", NULL, NULL},
    {"/a/b/../../../c", NULL, NULL},
    {"/a/../b", "/b", "/b"},
    {"/a/..", "/", "/"},
    {"/a/b/..", "/a/", "/a/"},
    {"/a/b/.", "/a/b/", "/a/b/"},
    {"/.", "/", "/"},
    {"/./", "/", "/"},
    {"/a/./b/", "/a/b/", "/a/b/"},
    {"/a/././b", "/a/b", "/a/b"},
    {"//a//b", "/a/b", "/a/b"},
    {"///", "/", "/"},
    {"/a//../b", "/b", "/b"},
    {"/%2e%2e/x", NULL, NULL},
    {"/a/%2E%2e/x", "/x", "/x"},
    {"/a/.%2e/x", "/x", "/x"},
    {"/a/%2e/b", "/a/b", "/a/b"},
    {"/a/%2e%2e", "/", "/"},
    {"/a%2Fb", "/a%2Fb", NULL},
    {"/a%2fb", "/a%2Fb", NULL},
    {"/a%2F..%2F..%2Fetc", "/a%2F..%2F..%2Fetc", NULL},
    {"/a/..%2F", "/a/..%2F", NULL},
    {"/%2F", "/%2F", NULL},
    {"/a%00b", NULL, NULL},
    {"/%41", "/A", "/A"},
    {"/%7e%7E", "/~~", "/~~"},
    {"/caf%C3%A9", "/caf\xc3\xa9", "/caf\xc3\xa9"},
    {"/%252e%252e", "/%2e%2e", "/%2e%2e"},
    {"/%25", "/%", "/%"},
    {"/%", NULL, NULL},
    {"/%2", NULL, NULL},
    {"/a%2", NULL, NULL},
    {"/%zz", NULL, NULL},
    {"/%g0", NULL, NULL},
    {"/%0g", NULL, NULL},
    {"/% 1", NULL, NULL},
    {"/a\\..\\b", "/a\\..\\b", "/a\\..\\b"},
    {"/a/%5c..%5cb", "/a/\\..\\b", "/a/\\..\\b"},
    {"/...", "/...", "/..."},
    {"/.a/..b/a.", "/.a/..b/a.", "/.a/..b/a."},
    {"/a?b", "/a?b", "/a?b"},
    {"/a%20b", "/a b", "/a b"},
    {"/a%0d%0ab", "/a\r\nb", "/a\r\nb"},
    {"", NULL, NULL},
    {"a/b", NULL, NULL},
    {"*", NULL, NULL},
    {"%2F", NULL, NULL},
};

static void test_path(void)
{
        char out[256];
        ssize_t r;

        for (size_t i = 0; i < ARRAY_SIZE(path_cases); i++) {
                const struct path_case *c = &path_cases[i];
                size_t len = strlen(c->in);
                const char *in = place(c->in, len);

                for (int strict = 0; strict <= 1; strict++) {
                        const char *want = strict ? c->strict : c->out;

                        memset(out, 'X', sizeof(out));
                        r = http_path_normalize(in, len, out, sizeof(out),
                                                strict ? HTTP_PATH_REJECT_ENCODED_SLASH : 0);
                        /* Control bytes in the expected output would break the TAP line. */
                        char shown[64];
                        size_t o = 0;
                        for (const char *p = want ? want : ""; *p && o + 5 < sizeof(shown); p++) {
                                if ((unsigned char) *p < 0x20)
                                        o += (size_t) snprintf(shown + o, sizeof(shown) - o,
                                                               "\\x%02x", (unsigned char) *p);
                                else
                                        shown[o++] = *p;
                        }
                        shown[o] = '\0';
                        if (want)
                                ok(r == (ssize_t) strlen(want) && streq(out, want),
                                   "%s\"%s\" -> \"%s\"", strict ? "strict: " : "", c->in, shown);
                        else
                                ok(r == -EBADMSG, "%s\"%s\" refused", strict ? "strict: " : "",
                                   c->in);
                }
        }

        /* The output buffer: len + 1 is always enough, less is -ENOBUFS. */
        r = http_path_normalize(place("/abc", 4), 4, out, 5, 0);
        ok(r == 4 && streq(out, "/abc"), "out of len + 1 bytes");
        ok(http_path_normalize(place("/abc", 4), 4, out, 4, 0) == -ENOBUFS,
           "out of len bytes: -ENOBUFS");
        ok(http_path_normalize(place("/./", 3), 3, out, 3, 0) == -ENOBUFS,
           "checked before looking at the path");

        /* A raw NUL is refused like an encoded one. */
        ok(http_path_normalize(place("/a\0b", 4), 4, out, sizeof(out), 0) == -EBADMSG,
           "raw NUL refused");
}

int main(void)
{
        guard_setup();

        subtest("simple request", test_simple);
        subtest("methods", test_methods);
        subtest("pipelining", test_pipelined);
        subtest("leading empty lines", test_leading_crlf);
        subtest("connection, expect", test_connection);
        subtest("request-target forms", test_target_forms);
        subtest("limits", test_limits);
        subtest("malformed and ambiguous requests", test_bad);
        subtest("framing", test_valid_framing);
        subtest("character classes", test_char_classes);
        subtest("http_find_header", test_find_header);
        subtest("http_is_token", test_is_token);
        subtest("http_list_has_token", test_list_has_token);
        subtest("chunked", test_chunked);
        subtest("path normalisation", test_path);

        return done_testing();
}
