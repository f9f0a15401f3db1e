/* SPDX-License-Identifier: MIT */
/*
 * http_resp.c: response heads, the errno -> status table, reason phrases and
 * HTTP dates.
 *
 * Like the parser, this runs for every response: no stdio formatting, no
 * locale, no allocation. Numbers are written digit by digit and dates from
 * gmtime_r() by hand.
 */
#include <assert.h>
#include <errno.h>
#include <string.h>
#include <time.h>

#include "http_resp.h"

/*
 * Appends len bytes, or latches the overflow. Once latched, nothing more is
 * written, so the head never ends up with a hole in the middle.
 */
static void writer_put(struct http_writer *w, const void *data, size_t len)
{
        if (w->overflow)
                return;
        if (len > w->cap - w->len) {
                w->overflow = true;
                return;
        }
        if (len > 0)
                memcpy(w->buf + w->len, data, len);
        w->len += len;
}

static void writer_put_str(struct http_writer *w, const char *s)
{
        writer_put(w, s, strlen(s));
}

/* Decimal digits of v into out (at least 20 bytes); returns how many. */
static size_t format_u64(char *out, uint64_t v)
{
        char tmp[20];
        size_t n = 0;

        do {
                tmp[n++] = (char) ('0' + v % 10);
                v /= 10;
        } while (v > 0);
        for (size_t i = 0; i < n; i++)
                out[i] = tmp[n - 1 - i];
        return n;
}

/*
 * Bytes that may not appear in a field name or value we send: every control
 * character but HTAB (RFC 9110 5.5). A CR or LF would end the header line
 * and start one the caller never wrote, so a value carrying one (a decoded
 * "%0d%0a" in a path that ends up in Location, say) fails the whole head
 * instead: the writer latches, and http_write_end() returns -ENOBUFS.
 */
static bool field_is_safe(const char *p, size_t len)
{
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) p[i];

                if ((c < 0x20 && c != '\t') || c == 0x7f)
                        return false;
        }
        return true;
}

void http_write_status(struct http_writer *w, int minor_version, int status)
{
        char line[32]; /* "HTTP/1.1 " and up to 20 digits, even for a bogus status */
        size_t n;

        assert(minor_version == 0 || minor_version == 1);
        assert(status >= 100 && status <= 999);

        memcpy(line, "HTTP/1.", 7);
        line[7] = (char) ('0' + minor_version);
        line[8] = ' ';
        n = 9 + format_u64(line + 9, (uint64_t) status);
        line[n++] = ' ';
        writer_put(w, line, n);
        writer_put_str(w, http_status_reason(status));
        writer_put(w, "\r\n", 2);
}

void http_write_header(struct http_writer *w, const char *name, struct span value)
{
        size_t name_len = strlen(name);

        if (!field_is_safe(name, name_len) || !field_is_safe(value.ptr, value.len)) {
                w->overflow = true;
                return;
        }
        writer_put(w, name, name_len);
        writer_put(w, ": ", 2);
        writer_put(w, value.ptr, value.len);
        writer_put(w, "\r\n", 2);
}

void http_write_header_str(struct http_writer *w, const char *name, const char *value)
{
        http_write_header(w, name, span_from_str(value));
}

void http_write_header_u64(struct http_writer *w, const char *name, uint64_t value)
{
        char digits[20];

        http_write_header(w, name, (struct span){digits, format_u64(digits, value)});
}

void http_write_raw(struct http_writer *w, const void *data, size_t len)
{
        writer_put(w, data, len);
}

ssize_t http_write_end(struct http_writer *w)
{
        writer_put(w, "\r\n", 2);
        if (w->overflow)
                return -ENOBUFS;
        return (ssize_t) w->len;
}

/* The page is these pieces around "<status> <reason>", twice. */
static const char error_page_start[] = "<html><head><title>";
static const char error_page_middle[] = "</title></head><body><h1>";
static const char error_page_end[] = "</h1></body></html>\n";

ssize_t http_write_error(struct http_writer *w, int minor_version, int status, bool keep_alive,
                         const char *server_name, const char *date, const char *extra_headers,
                         bool head_only)
{
        const char *reason = http_status_reason(status);
        char title[48];
        size_t title_len;
        /* RFC 9110 6.4.1: 1xx, 204 and 304 responses never have content. */
        bool has_content = status >= 200 && status != 204 && status != 304;

        title_len = format_u64(title, (uint64_t) status);
        title[title_len++] = ' ';
        assert(strlen(reason) < sizeof(title) - title_len);
        memcpy(title + title_len, reason, strlen(reason));
        title_len += strlen(reason);

        http_write_status(w, minor_version, status);
        if (date)
                http_write_header_str(w, "Date", date);
        if (server_name)
                http_write_header_str(w, "Server", server_name);
        if (has_content) {
                http_write_header_str(w, "Content-Type", "text/html");
                http_write_header_u64(w, "Content-Length",
                                      sizeof(error_page_start) - 1 + title_len +
                                          sizeof(error_page_middle) - 1 + title_len +
                                          sizeof(error_page_end) - 1);
        }
        http_write_header_str(w, "Connection", keep_alive ? "keep-alive" : "close");
        if (extra_headers)
                writer_put_str(w, extra_headers);
        (void) http_write_end(w);

        /* A response to HEAD says how long the page is, without it (RFC 9110 9.3.2). */
        if (has_content && !head_only) {
                writer_put(w, error_page_start, sizeof(error_page_start) - 1);
                writer_put(w, title, title_len);
                writer_put(w, error_page_middle, sizeof(error_page_middle) - 1);
                writer_put(w, title, title_len);
                writer_put(w, error_page_end, sizeof(error_page_end) - 1);
        }

        if (w->overflow)
                return -ENOBUFS;
        return (ssize_t) w->len;
}

/* The one table from an error to what the client is told. */
static const struct {
        int error;
        int status;
} errno_status[] = {
    {EBADMSG, 400},   /* malformed or ambiguous request */
    {E2BIG, 431},     /* head or header count over the limit */
    {EFBIG, 413},     /* body over the limit */
    {EMSGSIZE, 414},  /* request-target too long */
    {ENOSYS, 505},    /* HTTP version other than 1.0/1.1 */
    {ENOENT, 404},    /* no such file */
    {EACCES, 403},    /* permissions */
    {EPERM, 403},     /* permissions */
    {ETIMEDOUT, 408}, /* the client was too slow */
    {EMFILE, 503},    /* out of fds: may work again shortly */
    {ENFILE, 503},    /* out of fds: may work again shortly */
    {ENOMEM, 503},    /* out of memory: may work again shortly */
};

int http_status_from_errno(int neg_errno)
{
        for (size_t i = 0; i < ARRAY_SIZE(errno_status); i++)
                if (-errno_status[i].error == neg_errno)
                        return errno_status[i].status;
        return 500;
}

/* Reason phrases (RFC 9110 15, RFC 6585 for 428/429/431). */
static const char *const status_reasons[600] = {
    [100] = "Continue",
    [101] = "Switching Protocols",
    [200] = "OK",
    [201] = "Created",
    [202] = "Accepted",
    [203] = "Non-Authoritative Information",
    [204] = "No Content",
    [205] = "Reset Content",
    [206] = "Partial Content",
    [300] = "Multiple Choices",
    [301] = "Moved Permanently",
    [302] = "Found",
    [303] = "See Other",
    [304] = "Not Modified",
    [307] = "Temporary Redirect",
    [308] = "Permanent Redirect",
    [400] = "Bad Request",
    [401] = "Unauthorized",
    [402] = "Payment Required",
    [403] = "Forbidden",
    [404] = "Not Found",
    [405] = "Method Not Allowed",
    [406] = "Not Acceptable",
    [407] = "Proxy Authentication Required",
    [408] = "Request Timeout",
    [409] = "Conflict",
    [410] = "Gone",
    [411] = "Length Required",
    [412] = "Precondition Failed",
    [413] = "Content Too Large",
    [414] = "URI Too Long",
    [415] = "Unsupported Media Type",
    [416] = "Range Not Satisfiable",
    [417] = "Expectation Failed",
    [421] = "Misdirected Request",
    [422] = "Unprocessable Content",
    [426] = "Upgrade Required",
    [428] = "Precondition Required",
    [429] = "Too Many Requests",
    [431] = "Request Header Fields Too Large",
    [500] = "Internal Server Error",
    [501] = "Not Implemented",
    [502] = "Bad Gateway",
    [503] = "Service Unavailable",
    [504] = "Gateway Timeout",
    [505] = "HTTP Version Not Supported",
};

const char *http_status_reason(int status)
{
        if (status < 0 || (size_t) status >= ARRAY_SIZE(status_reasons) || !status_reasons[status])
                return "Unknown";
        return status_reasons[status];
}

static const char day_names[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char day_names_long[7][10] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                           "Thursday", "Friday", "Saturday"};
static const char month_names[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* IMF-fixdate has a four-digit year: 0000-01-01 00:00:00 to 9999-12-31 23:59:59. */
#define HTTP_DATE_MIN INT64_C(-62167219200)
#define HTTP_DATE_MAX INT64_C(253402300799)

static void put_2digits(char *out, int v)
{
        out[0] = (char) ('0' + v / 10);
        out[1] = (char) ('0' + v % 10);
}

void http_date_format(time_t t, char out[HTTP_DATE_LEN + 1])
{
        int64_t v = (int64_t) t;
        struct tm tm;
        int year;

        /* Clamped, so that the result always has the fixed length. */
        if (v < HTTP_DATE_MIN)
                v = HTTP_DATE_MIN;
        if (v > HTTP_DATE_MAX)
                v = HTTP_DATE_MAX;
        t = (time_t) v;
        if (!gmtime_r(&t, &tm))
                /* Only on a 32-bit time_t can it fail, and not inside the range. */
                memset(&tm, 0, sizeof(tm));

        /* "Sun, 06 Nov 1994 08:49:37 GMT" */
        year = tm.tm_year + 1900;
        memcpy(out, day_names[tm.tm_wday], 3);
        memcpy(out + 3, ", ", 2);
        put_2digits(out + 5, tm.tm_mday);
        out[7] = ' ';
        memcpy(out + 8, month_names[tm.tm_mon], 3);
        out[11] = ' ';
        put_2digits(out + 12, year / 100);
        put_2digits(out + 14, year % 100);
        out[16] = ' ';
        put_2digits(out + 17, tm.tm_hour);
        out[19] = ':';
        put_2digits(out + 20, tm.tm_min);
        out[22] = ':';
        put_2digits(out + 23, tm.tm_sec);
        memcpy(out + 25, " GMT", 5);
}

/* Two digits, or -1. */
static int parse_2digits(const char *p)
{
        if ((unsigned char) (p[0] - '0') > 9 || (unsigned char) (p[1] - '0') > 9)
                return -1;
        return (p[0] - '0') * 10 + (p[1] - '0');
}

static int parse_month(const char *p)
{
        for (int i = 0; i < 12; i++)
                if (memcmp(p, month_names[i], 3) == 0)
                        return i;
        return -1;
}

static bool is_day_name(const char *p, size_t len, bool long_form)
{
        for (int i = 0; i < 7; i++) {
                const char *d = long_form ? day_names_long[i] : day_names[i];

                if (strlen(d) == len && memcmp(p, d, len) == 0)
                        return true;
        }
        return false;
}

/* time-of-day = hour ":" minute ":" second, 00:00:00 - 23:59:60 */
static bool parse_time_of_day(const char *p, struct tm *tm)
{
        tm->tm_hour = parse_2digits(p);
        tm->tm_min = parse_2digits(p + 3);
        tm->tm_sec = parse_2digits(p + 6);
        return p[2] == ':' && p[5] == ':' && tm->tm_hour >= 0 && tm->tm_hour <= 23 &&
               tm->tm_min >= 0 && tm->tm_min <= 59 && tm->tm_sec >= 0 && tm->tm_sec <= 60;
}

static int days_in_month(int year, int mon)
{
        static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

        return mon == 1 && leap ? 29 : days[mon];
}

/*
 * RFC 9110 5.6.7: a two-digit year more than 50 years in the future is the
 * most recent past year with those digits.
 */
static int rfc850_year(int yy)
{
        time_t now = time(NULL);
        struct tm tm;
        int this_year, year;

        this_year = gmtime_r(&now, &tm) ? tm.tm_year + 1900 : 1970;
        year = this_year / 100 * 100 + yy;
        if (year > this_year + 50)
                year -= 100;
        return year;
}

int http_date_parse(struct span s, time_t *ret)
{
        const char *p = s.ptr;
        struct tm tm = {0};
        int year, day, y1, y2;
        time_t t;

        /*
         * The three forms differ at the fourth byte: IMF-fixdate has
         * "Sun,", asctime "Sun ", and RFC 850 the rest of a long day name.
         * All of it is case-sensitive and fixed-width.
         */
        if (s.len < 4)
                return -EINVAL;
        if (p[3] == ',') {
                /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
                if (s.len != 29 || !is_day_name(p, 3, false) || p[4] != ' ' || p[7] != ' ' ||
                    p[11] != ' ' || p[16] != ' ' || memcmp(p + 25, " GMT", 4) != 0)
                        return -EINVAL;
                day = parse_2digits(p + 5);
                tm.tm_mon = parse_month(p + 8);
                y1 = parse_2digits(p + 12);
                y2 = parse_2digits(p + 14);
                if (y1 < 0 || y2 < 0)
                        return -EINVAL;
                year = y1 * 100 + y2;
                if (!parse_time_of_day(p + 17, &tm))
                        return -EINVAL;
        } else if (p[3] == ' ') {
                /* asctime: "Sun Nov  6 08:49:37 1994" */
                if (s.len != 24 || !is_day_name(p, 3, false) || p[7] != ' ' || p[10] != ' ' ||
                    p[19] != ' ')
                        return -EINVAL;
                tm.tm_mon = parse_month(p + 4);
                if (p[8] == ' ')
                        day = (unsigned char) (p[9] - '0') <= 9 ? p[9] - '0' : -1;
                else
                        day = parse_2digits(p + 8);
                y1 = parse_2digits(p + 20);
                y2 = parse_2digits(p + 22);
                if (y1 < 0 || y2 < 0)
                        return -EINVAL;
                year = y1 * 100 + y2;
                if (!parse_time_of_day(p + 11, &tm))
                        return -EINVAL;
        } else {
                /* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" */
                const char *comma = memchr(p, ',', s.len);
                size_t n;

                if (!comma)
                        return -EINVAL;
                n = (size_t) (comma - p);
                if (!is_day_name(p, n, true) || s.len != n + 24)
                        return -EINVAL;
                p = comma;
                if (p[1] != ' ' || p[4] != '-' || p[8] != '-' || p[11] != ' ' ||
                    memcmp(p + 20, " GMT", 4) != 0)
                        return -EINVAL;
                day = parse_2digits(p + 2);
                tm.tm_mon = parse_month(p + 5);
                y2 = parse_2digits(p + 9);
                if (y2 < 0)
                        return -EINVAL;
                year = rfc850_year(y2);
                if (!parse_time_of_day(p + 12, &tm))
                        return -EINVAL;
        }

        if (tm.tm_mon < 0 || day < 1 || day > days_in_month(year, tm.tm_mon))
                return -EINVAL;
        tm.tm_mday = day;
        tm.tm_year = year - 1900;

        /* A leap second (":60") is taken as the first second of the next minute. */
        t = timegm(&tm);
        *ret = t;
        return 0;
}
