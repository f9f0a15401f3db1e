/* SPDX-License-Identifier: MIT */
/*
 * Tests for common/http_resp.c: the head writer, error pages, the errno ->
 * status table, reason phrases and HTTP dates.
 *
 * Writer buffers and date strings end right before a PROT_NONE page, so a
 * write or read one byte too far crashes the test.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "http_resp.h"
#include "guard.h"
#include "tap.h"

#define GUARD_AREA_SIZE (16 * 1024)

static void guard_setup(void)
{
        guard_setup_size(GUARD_AREA_SIZE);
}

static bool written_is(const struct http_writer *w, ssize_t r, const char *want)
{
        size_t n = strlen(want);

        if (r != (ssize_t) n || w->len != n || memcmp(w->buf, want, n) != 0) {
                printf("# got %zd: \"%.*s\"\n", r, (int) w->len, w->buf);
                return false;
        }
        return true;
}

static void test_writer(void)
{
        struct http_writer w;
        ssize_t r;

        http_writer_init(&w, guarded(256), 256);
        http_write_status(&w, 1, 200);
        http_write_header_str(&w, "Content-Type", "text/plain");
        http_write_header(&w, "X-Span", (struct span){"abcdef", 3});
        http_write_header_u64(&w, "Content-Length", 0);
        http_write_header_u64(&w, "X-Max", UINT64_MAX);
        http_write_header_str(&w, "X-Tab", "a\tb");
        r = http_write_end(&w);
        ok(written_is(&w, r,
                      "HTTP/1.1 200 OK\r\n"
                      "Content-Type: text/plain\r\n"
                      "X-Span: abc\r\n"
                      "Content-Length: 0\r\n"
                      "X-Max: 18446744073709551615\r\n"
                      "X-Tab: a\tb\r\n"
                      "\r\n"),
           "a complete head, byte for byte");

        http_writer_init(&w, guarded(64), 64);
        http_write_status(&w, 0, 404);
        http_write_raw(&w, "X: y\r\n", 6);
        r = http_write_end(&w);
        ok(written_is(&w, r, "HTTP/1.0 404 Not Found\r\nX: y\r\n\r\n"), "HTTP/1.0 status line");

        http_writer_init(&w, guarded(64), 64);
        http_write_status(&w, 1, 599);
        r = http_write_end(&w);
        ok(written_is(&w, r, "HTTP/1.1 599 Unknown\r\n\r\n"), "a code without a reason");

        /* Exactly full is fine; one byte short latches the overflow. */
        static const char want[] = "HTTP/1.1 204 No Content\r\nA: b\r\n\r\n";
        http_writer_init(&w, guarded(sizeof(want) - 1), sizeof(want) - 1);
        http_write_status(&w, 1, 204);
        http_write_header_str(&w, "A", "b");
        r = http_write_end(&w);
        ok(written_is(&w, r, want), "a head that exactly fills the buffer");

        http_writer_init(&w, guarded(sizeof(want) - 2), sizeof(want) - 2);
        http_write_status(&w, 1, 204);
        http_write_header_str(&w, "A", "b");
        r = http_write_end(&w);
        ok(r == -ENOBUFS && w.overflow, "one byte short: -ENOBUFS");

        http_writer_init(&w, guarded(20), 20);
        http_write_status(&w, 1, 200);
        http_write_header_str(&w, "A-Long-Header-Name", "that does not fit");
        http_write_header_str(&w, "B", "c");
        ok(w.overflow && w.len == strlen("HTTP/1.1 200 OK\r\n"),
           "after an overflow nothing more is written, not even what would fit");
        ok(http_write_end(&w) == -ENOBUFS, "and the end reports it");

        http_writer_init(&w, guarded(0), 0);
        http_write_raw(&w, "", 0);
        ok(!w.overflow && w.len == 0, "zero bytes fit in a zero-byte buffer");
        ok(http_write_end(&w) == -ENOBUFS, "the final CRLF does not");

        /* Header injection: a value may not end its line early. */
        http_writer_init(&w, guarded(256), 256);
        http_write_status(&w, 1, 301);
        http_write_header_str(&w, "Location", "/a\r\nSet-Cookie: x=y");
        ok(http_write_end(&w) == -ENOBUFS, "CR LF in a value fails the head");
        http_writer_init(&w, guarded(256), 256);
        http_write_header_str(&w, "Location", "/a\nb");
        ok(http_write_end(&w) == -ENOBUFS, "bare LF in a value fails the head");
        http_writer_init(&w, guarded(256), 256);
        http_write_header(&w, "X", (struct span){"a\0b", 3});
        ok(http_write_end(&w) == -ENOBUFS, "NUL in a value fails the head");
        http_writer_init(&w, guarded(256), 256);
        http_write_header_str(&w, "X\r\nY", "z");
        ok(http_write_end(&w) == -ENOBUFS, "CR LF in a name fails the head");
        http_writer_init(&w, guarded(256), 256);
        http_write_header_str(&w, "X", "caf\xc3\xa9");
        ok(http_write_end(&w) > 0, "non-ASCII value bytes are fine");
}

static void test_error_page(void)
{
        struct http_writer w;
        ssize_t r;
        static const char body404[] = "<html><head><title>404 Not Found</title></head><body>"
                                      "<h1>404 Not Found</h1></body></html>\n";
        char want[1024];

        snprintf(want, sizeof(want),
                 "HTTP/1.1 404 Not Found\r\n"
                 "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                 "Server: wharf\r\n"
                 "Content-Type: text/html\r\n"
                 "Content-Length: %zu\r\n"
                 "Connection: keep-alive\r\n"
                 "\r\n"
                 "%s",
                 strlen(body404), body404);
        http_writer_init(&w, guarded(1024), 1024);
        r = http_write_error(&w, 1, 404, true, "wharf", "Sun, 06 Nov 1994 08:49:37 GMT", NULL,
                             false);
        ok(written_is(&w, r, want), "404 page, byte for byte");

        snprintf(want, sizeof(want),
                 "HTTP/1.0 405 Method Not Allowed\r\n"
                 "Content-Type: text/html\r\n"
                 "Content-Length: %zu\r\n"
                 "Connection: close\r\n"
                 "Allow: GET, HEAD\r\n"
                 "\r\n",
                 strlen("<html><head><title>405 Method Not Allowed</title></head><body>"
                        "<h1>405 Method Not Allowed</h1></body></html>\n"));
        http_writer_init(&w, guarded(1024), 1024);
        r = http_write_error(&w, 0, 405, false, NULL, NULL, "Allow: GET, HEAD\r\n", true);
        ok(written_is(&w, r, want),
           "HEAD: the length of the page without the page; extra headers; no Server/Date");

        http_writer_init(&w, guarded(1024), 1024);
        r = http_write_error(&w, 1, 304, true, NULL, NULL, NULL, false);
        ok(written_is(&w, r, "HTTP/1.1 304 Not Modified\r\nConnection: keep-alive\r\n\r\n"),
           "304 has no content");

        http_writer_init(&w, guarded(1024), 1024);
        r = http_write_error(&w, 1, 431, false, NULL, NULL, NULL, false);
        ok(r > 0 &&
               memmem(w.buf, w.len, "<h1>431 Request Header Fields Too Large</h1>", 44) != NULL &&
               memmem(w.buf, w.len, "Connection: close\r\n", 19) != NULL,
           "the longest reason fits the page");

        /* Every status in the table: the Content-Length matches the page sent. */
        int bad = 0;
        for (int status = 200; status < 600; status++) {
                const char *cl, *body;

                if (streq(http_status_reason(status), "Unknown") || status == 204 || status == 304)
                        continue;
                http_writer_init(&w, guarded(1024), 1024);
                r = http_write_error(&w, 1, status, true, NULL, NULL, NULL, false);
                cl = memmem(w.buf, w.len, "Content-Length: ", 16);
                body = memmem(w.buf, w.len, "\r\n\r\n", 4);
                if (r < 0 || !cl || !body ||
                    strtoul(cl + 16, NULL, 10) != w.len - (size_t) (body + 4 - w.buf))
                        bad++;
        }
        ok(bad == 0, "Content-Length is the page length for every status (%d wrong)", bad);

        http_writer_init(&w, guarded(100), 100);
        ok(http_write_error(&w, 1, 404, true, "wharf", "Sun, 06 Nov 1994 08:49:37 GMT", NULL,
                            false) == -ENOBUFS,
           "a page that does not fit: -ENOBUFS");
}

static void test_status(void)
{
        static const struct {
                int err;
                int status;
        } map[] = {
            {-EBADMSG, 400},   {-E2BIG, 431},  {-EFBIG, 413},  {-EMSGSIZE, 414},
            {-ENOSYS, 505},    {-ENOENT, 404}, {-EACCES, 403}, {-EPERM, 403},
            {-ETIMEDOUT, 408}, {-EMFILE, 503}, {-ENFILE, 503}, {-ENOMEM, 503},
            {-EIO, 500},       {-EINVAL, 500}, {0, 500},       {EBADMSG, 500},
        };
        static const struct {
                int status;
                const char *reason;
        } reasons[] = {
            {100, "Continue"},
            {101, "Switching Protocols"},
            {200, "OK"},
            {201, "Created"},
            {202, "Accepted"},
            {204, "No Content"},
            {206, "Partial Content"},
            {301, "Moved Permanently"},
            {302, "Found"},
            {303, "See Other"},
            {304, "Not Modified"},
            {307, "Temporary Redirect"},
            {308, "Permanent Redirect"},
            {400, "Bad Request"},
            {401, "Unauthorized"},
            {403, "Forbidden"},
            {404, "Not Found"},
            {405, "Method Not Allowed"},
            {408, "Request Timeout"},
            {411, "Length Required"},
            {412, "Precondition Failed"},
            {413, "Content Too Large"},
            {414, "URI Too Long"},
            {415, "Unsupported Media Type"},
            {416, "Range Not Satisfiable"},
            {417, "Expectation Failed"},
            {421, "Misdirected Request"},
            {426, "Upgrade Required"},
            {429, "Too Many Requests"},
            {431, "Request Header Fields Too Large"},
            {500, "Internal Server Error"},
            {501, "Not Implemented"},
            {502, "Bad Gateway"},
            {503, "Service Unavailable"},
            {504, "Gateway Timeout"},
            {505, "HTTP Version Not Supported"},
        };

        for (size_t i = 0; i < ARRAY_SIZE(map); i++)
                ok(http_status_from_errno(map[i].err) == map[i].status, "errno %d -> %d",
                   map[i].err, map[i].status);
        for (size_t i = 0; i < ARRAY_SIZE(reasons); i++)
                ok(streq(http_status_reason(reasons[i].status), reasons[i].reason), "%d %s",
                   reasons[i].status, reasons[i].reason);
        ok(streq(http_status_reason(299), "Unknown"), "299 is unknown");
        ok(streq(http_status_reason(600), "Unknown"), "600 is unknown");
        ok(streq(http_status_reason(-1), "Unknown"), "-1 is unknown");
        ok(streq(http_status_reason(0), "Unknown"), "0 is unknown");
        ok(streq(http_status_reason(100000), "Unknown"), "100000 is unknown");
}

static int parse_date(const char *s, time_t *t)
{
        size_t n = strlen(s);
        char *p = guarded(n);

        memcpy(p, s, n);
        return http_date_parse((struct span){p, n}, t);
}

static void test_dates(void)
{
        static const struct {
                time_t t;
                const char *s;
        } known[] = {
            {0, "Thu, 01 Jan 1970 00:00:00 GMT"},
            {784111777, "Sun, 06 Nov 1994 08:49:37 GMT"},
            {951782400, "Tue, 29 Feb 2000 00:00:00 GMT"},
            {2147483647, "Tue, 19 Jan 2038 03:14:07 GMT"},
            {4102444799, "Thu, 31 Dec 2099 23:59:59 GMT"},
            {-1, "Wed, 31 Dec 1969 23:59:59 GMT"},
            {253402300799, "Fri, 31 Dec 9999 23:59:59 GMT"},
            {(time_t) 1 << 60, "Fri, 31 Dec 9999 23:59:59 GMT"},
            {-62167219200, "Sat, 01 Jan 0000 00:00:00 GMT"},
            {-((time_t) 1 << 60), "Sat, 01 Jan 0000 00:00:00 GMT"},
        };
        static const char *const bad[] = {
            "",
            "Sun",
            "Sun,",
            "Sun, 06 Nov 1994 08:49:37 GMT ",
            " Sun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 gmt",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "sun, 06 Nov 1994 08:49:37 GMT",
            "Son, 06 Nov 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun,  6 Nov 1994 08:49:37 GMT",
            "Sun, 06 nov 1994 08:49:37 GMT",
            "Sun, 06 Nox 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37GMT",
            "Sun, 06 Nov 1994 08-49-37 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 32 Jan 1994 08:49:37 GMT",
            "Sun, 29 Feb 1900 08:49:37 GMT",
            "Sun, 29 Feb 2023 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49:61 GMT",
            "Sun, 06 Nov +994 08:49:37 GMT",
            "Sun, -6 Nov 1994 08:49:37 GMT",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 UTC",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sunday, 06 Nov 94 08:49:37 GMT",
            "Sunnday, 06-Nov-94 08:49:37 GMT",
            "sunday, 06-Nov-94 08:49:37 GMT",
            "Sunday, 6-Nov-94 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT ",
            "Sun Nov 6 08:49:37 1994",
            "Sun Nov  6 08:49:37 1994 ",
            "Sun Nov  6 08:49:37 94",
            "Sun Nov 6  08:49:37 1994",
            "Sun Nov  x 08:49:37 1994",
            "Sun Nov 31 08:49:37 1994",
            "Sun Nov  6 08:49:37 1994 GMT",
            "1994-11-06T08:49:37Z",
            "784111777",
        };
        char out[HTTP_DATE_LEN + 1];
        time_t t;

        for (size_t i = 0; i < ARRAY_SIZE(known); i++) {
                memset(out, 'X', sizeof(out));
                http_date_format(known[i].t, out);
                ok(streq(out, known[i].s), "format %lld: %s", (long long) known[i].t, out);
        }

        /* Round trips, against strftime() in the C locale as a second opinion. */
        int bad_format = 0, bad_trip = 0;
        uint64_t x = 88172645463325252u;
        for (int i = 0; i < 2000; i++) {
                char ref[64];
                struct tm tm;

                /* xorshift: any second from 1970 to 2106 */
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                time_t v = (time_t) (x % 4294967296u);
                http_date_format(v, out);
                gmtime_r(&v, &tm);
                strftime(ref, sizeof(ref), "%a, %d %b %Y %H:%M:%S GMT", &tm);
                bad_format += !streq(out, ref);
                bad_trip += parse_date(out, &t) != 0 || t != v;
        }
        ok(bad_format == 0, "format agrees with strftime (%d wrong)", bad_format);
        ok(bad_trip == 0, "parse(format(t)) == t (%d wrong)", bad_trip);

        ok(parse_date("Sun, 06 Nov 1994 08:49:37 GMT", &t) == 0 && t == 784111777, "IMF-fixdate");
        ok(parse_date("Sunday, 06-Nov-94 08:49:37 GMT", &t) == 0 && t == 784111777, "RFC 850");
        ok(parse_date("Sun Nov  6 08:49:37 1994", &t) == 0 && t == 784111777, "asctime");
        ok(parse_date("Sun Nov 06 08:49:37 1994", &t) == 0 && t == 784111777,
           "asctime with a two-digit day");
        ok(parse_date("Wednesday, 09-Nov-94 08:49:37 GMT", &t) == 0 && t == 784111777 + 3 * 86400,
           "RFC 850 with the longest day name");
        ok(parse_date("Tue, 29 Feb 2000 00:00:00 GMT", &t) == 0 && t == 951782400,
           "29 February of a leap year");
        ok(parse_date("Sun, 06 Nov 1994 08:49:60 GMT", &t) == 0 && t == 784111800,
           "a leap second is the next minute's first");
        ok(parse_date("Thu, 01 Jan 1970 00:00:00 GMT", &t) == 0 && t == 0, "the epoch");
        ok(parse_date("Fri, 31 Dec 9999 23:59:59 GMT", &t) == 0 && t == 253402300799,
           "the last IMF-fixdate");

        /* RFC 850 two-digit years: more than 50 years ahead means the past century. */
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        int year = tm.tm_year + 1900;
        char s[64];
        snprintf(s, sizeof(s), "Monday, 01-Jan-%02d 00:00:00 GMT", (year + 50) % 100);
        ok(parse_date(s, &t) == 0 && gmtime_r(&t, &tm) && tm.tm_year + 1900 == year + 50,
           "50 years ahead stays ahead");
        snprintf(s, sizeof(s), "Monday, 01-Jan-%02d 00:00:00 GMT", (year + 51) % 100);
        ok(parse_date(s, &t) == 0 && gmtime_r(&t, &tm) && tm.tm_year + 1900 == year + 51 - 100,
           "51 years ahead is a century ago");

        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                t = 12345;
                ok(parse_date(bad[i], &t) == -EINVAL && t == 12345, "refused: \"%s\"", bad[i]);
        }
}

int main(void)
{
        guard_setup();

        subtest("writer", test_writer);
        subtest("error page", test_error_page);
        subtest("status codes", test_status);
        subtest("dates", test_dates);

        return done_testing();
}
