/* SPDX-License-Identifier: MIT */
/*
 * Tests for common/http_response.c: the framing rules of RFC 9112 6.3 one
 * by one, the refusals that keep two readers from disagreeing on where a
 * response ends, and every response split at every byte (a prefix of a
 * head is incomplete, never a different head). Inputs sit at the end of a
 * guard page so that a read past them faults.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "guard.h"
#include "http_response.h"
#include "tap.h"

static ssize_t parse(const char *text, bool head, struct http_response *resp)
{
        size_t len = strlen(text);
        char *buf = place(text, len);
        ssize_t r = http_parse_response(buf, len, 16384, head, resp);

        /* Every strict prefix of a complete head is only incomplete. */
        for (size_t cut = 0; r > 0 && cut < (size_t) r; cut++) {
                struct http_response tmp;
                char *p = place(text, cut);
                ssize_t rc = http_parse_response(p, cut, 16384, head, &tmp);
                if (rc != -EAGAIN) {
                        printf("# cut at %zu: %zd\n", cut, rc);
                        r = -1000;
                        break;
                }
        }
        if (r > 0)
                (void) http_parse_response(place(text, len), len, 16384, head, resp);
        return r;
}

static void test_framing(void)
{
        struct http_response r;
        static const char head_cl[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";

        ok(parse(head_cl, false, &r) == (ssize_t) strlen(head_cl), "length head parsed");
        ok(r.status == 200 && r.minor_version == 1 && r.body == HTTP_RESP_LENGTH &&
               r.content_length == 5 && r.keep_alive,
           "200 with Content-Length: length-framed, keep-alive");
        ok(r.reason.len == 2 && !memcmp(r.reason.ptr, "OK", 2), "reason phrase");

        ok(parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, &r) > 0 &&
               r.body == HTTP_RESP_NONE && r.content_length == 5,
           "answer to HEAD: no body, the length kept for the client");
        ok(parse("HTTP/1.1 204 No Content\r\n\r\n", false, &r) > 0 && r.body == HTTP_RESP_NONE,
           "204: no body");
        ok(parse("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", false, &r) > 0 &&
               r.body == HTTP_RESP_NONE,
           "304: no body whatever the length says");
        ok(parse("HTTP/1.1 100 Continue\r\n\r\n", false, &r) > 0 && r.status == 100 &&
               r.body == HTTP_RESP_NONE,
           "1xx: no body");
        ok(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, &r) > 0 &&
               r.body == HTTP_RESP_CHUNKED && r.keep_alive,
           "chunked");
        ok(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false, &r) > 0 &&
               r.body == HTTP_RESP_CHUNKED,
           "gzip, chunked: chunked is last");
        ok(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                 false, &r) > 0 &&
               r.body == HTTP_RESP_CHUNKED,
           "codings over two lines combine");
        ok(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, &r) > 0 &&
               r.body == HTTP_RESP_CLOSE && !r.keep_alive,
           "a coding other than chunked last: until close");
        ok(parse("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", false, &r) > 0 &&
               r.body == HTTP_RESP_CLOSE && !r.keep_alive,
           "neither length nor chunked: until close, not reusable");
        ok(parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, &r) > 0 &&
               r.body == HTTP_RESP_LENGTH && r.content_length == 0,
           "Content-Length: 0 is an empty body, not until close");
        ok(parse("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n", false,
                 &r) > 0 &&
               r.content_length == 7,
           "one length repeated is one length");
}

static void test_keep_alive(void)
{
        struct http_response r;

        ok(parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", false, &r) >
                   0 &&
               !r.keep_alive,
           "1.1 with Connection: close");
        ok(parse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, &r) > 0 && !r.keep_alive,
           "1.0 without keep-alive");
        ok(parse("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n", false,
                 &r) > 0 &&
               r.keep_alive && r.minor_version == 0,
           "1.0 with Connection: keep-alive");
        ok(parse("HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 1\r\n\r\n",
                 false, &r) > 0 &&
               !r.keep_alive,
           "close wins over keep-alive");
}

static void test_status_line(void)
{
        struct http_response r;

        ok(parse("HTTP/1.1 200 \r\n\r\n", false, &r) > 0 && r.reason.len == 0, "empty reason");
        ok(parse("HTTP/1.1 200\r\n\r\n", false, &r) > 0 && r.status == 200,
           "no SP and no reason (common in practice)");
        ok(parse("HTTP/1.1 404 Nicht gefunden \xe2\x9c\x97\r\n\r\n", false, &r) > 0 &&
               r.status == 404,
           "obs-text in the reason");
        ok(parse("HTTP/1.1 099 Low\r\n\r\n", false, &r) == -EBADMSG, "status below 100");
        ok(parse("HTTP/1.1 2000 OK\r\n\r\n", false, &r) == -EBADMSG, "four digits");
        ok(parse("HTTP/1.1 20 OK\r\n\r\n", false, &r) == -EBADMSG, "two digits");
        ok(parse("HTTP/2.0 200 OK\r\n\r\n", false, &r) == -ENOSYS, "HTTP/2.0: 505 territory");
        ok(parse("HTTP/1.2 200 OK\r\n\r\n", false, &r) == -ENOSYS, "HTTP/1.2");
        ok(parse("http/1.1 200 OK\r\n\r\n", false, &r) == -EBADMSG, "lower-case name");
        ok(parse("ICY 200 OK\r\n\r\n", false, &r) == -EBADMSG, "not HTTP at all");
        ok(parse("HTTP/1.1 200 OK\n\r\n", false, &r) == -EBADMSG, "bare LF after the status");
        ok(parse("HTTP/1.1 200 O\x01K\r\n\r\n", false, &r) == -EBADMSG, "control byte in reason");
}

static void test_refusals(void)
{
        struct http_response r;
        static const struct {
                const char *text;
                const char *what;
        } bad[] = {
            {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
             "Content-Length with Transfer-Encoding"},
            {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
             "Transfer-Encoding with Content-Length (other order)"},
            {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
             "two different lengths"},
            {"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n", "a list of different lengths"},
            {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "negative length"},
            {"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", "signed length"},
            {"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", "hex length"},
            {"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", "empty length"},
            {"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", "length past 2^63"},
            {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
             "a coding after chunked"},
            {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
             "chunked twice"},
            {"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "chunked in HTTP/1.0"},
            {"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n", "space before the colon"},
            {"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n", "obs-fold"},
            {"HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n", "bare LF between headers"},
            {"HTTP/1.1 200 OK\r\nX: a\rY: b\r\n\r\n", "bare CR in a value"},
            {"HTTP/1.1 200 OK\r\n: empty\r\n\r\n", "empty header name"},
            {"HTTP/1.1 200 OK\r\nX(y): z\r\n\r\n", "separator in a header name"},
            {"HTTP/1.1 200 OK\r\n\n", "LF-only end of head"},
        };

        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                size_t len = strlen(bad[i].text);
                ssize_t rc = http_parse_response(place(bad[i].text, len), len, 16384, false, &r);
                ok(rc == -EBADMSG, "refused: %s (%zd)", bad[i].what, rc);
        }
        static const char nul[] = "HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n";
        ok(http_parse_response(place(nul, sizeof(nul) - 1), sizeof(nul) - 1, 16384, false, &r) ==
               -EBADMSG,
           "refused: NUL in a value");
}

static void test_limits(void)
{
        struct http_response r;
        char big[20000];
        size_t n = 0;

        n += (size_t) snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\n");
        while (n < 9000)
                n += (size_t) snprintf(big + n, sizeof(big) - n, "X-Long: %0100d\r\n", 0);
        memcpy(big + n, "\r\n", 3);
        ok(http_parse_response(big, n + 2, 8192, false, &r) == -E2BIG, "over max_head: -E2BIG");
        ok(http_parse_response(big, 5000, 8192, false, &r) == -EAGAIN,
           "under max_head, incomplete: -EAGAIN");

        n = (size_t) snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\n");
        for (int i = 0; i <= HTTP_MAX_HEADERS; i++)
                n += (size_t) snprintf(big + n, sizeof(big) - n, "H%d: v\r\n", i);
        memcpy(big + n, "\r\n", 3);
        ok(http_parse_response(big, n + 2, sizeof(big), false, &r) == -E2BIG,
           "more than HTTP_MAX_HEADERS lines: -E2BIG");
}

static void test_body_offset(void)
{
        struct http_response r;
        static const char text[] = "HTTP/1.1 200 OK\r\nX-A:  spaced value \t\r\n"
                                   "Content-Length: 5\r\n\r\nhelloHTTP/1.1";
        ssize_t n = http_parse_response(text, sizeof(text) - 1, 16384, false, &r);

        ok(n > 0 && !memcmp(text + n, "hello", 5), "the body starts after the head");
        const struct http_header *h = http_response_header(&r, "x-a");
        ok(h && h->value.len == 12 && !memcmp(h->value.ptr, "spaced value", 12),
           "value trimmed, name case-insensitive");
        ok(!http_response_header(&r, "X-Missing"), "missing header: NULL");
}

int main(void)
{
        guard_setup_size(64 * 1024);
        subtest("framing (RFC 9112 6.3)", test_framing);
        subtest("keep-alive", test_keep_alive);
        subtest("status line", test_status_line);
        subtest("refusals", test_refusals);
        subtest("limits", test_limits);
        subtest("body offset and lookup", test_body_offset);
        return done_testing();
}
