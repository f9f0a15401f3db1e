/* SPDX-License-Identifier: MIT */
/*
 * http_parse.c: the strict HTTP/1.1 request parser (RFC 9112), the chunked
 * decoder and the path normaliser.
 *
 * Everything here sits on the path of every request, so the parser makes
 * one pass over the head: each byte is classified by one lookup in
 * char_class[] and looked at once, except that the few header values that
 * decide framing or routing (Host, Content-Length, Transfer-Encoding,
 * Connection, Expect) are read a second time when their line is complete.
 * Nothing allocates; nothing calls through a pointer.
 *
 * The rule for every choice below: when two readings of a message are
 * possible, refuse it. A message that a front and a back end could frame
 * differently is how requests get smuggled, and a 400 costs one client that
 * is already broken.
 */
#include <assert.h>
#include <errno.h>
#include <string.h>

#include "http_parse.h"

/*
 * Limits of the chunked decoder. They live here and not in the header
 * because nothing outside the decoder needs them: a size line (hex digits
 * and extensions) is at most HTTP_CHUNK_LINE_MAX bytes, the whole trailer
 * section at most HTTP_TRAILER_MAX, and a chunk-size has at most 16 hex
 * digits, so it always fits in 64 bits.
 */
#define HTTP_CHUNK_LINE_MAX 4096u
#define HTTP_TRAILER_MAX (16u * 1024u)
#define HTTP_CHUNK_SIZE_DIGITS_MAX 16u

/*
 * The largest Content-Length accepted. Bodies are handed to code that works
 * with off_t and ssize_t, so a length above INT64_MAX is refused as
 * malformed rather than wrapped somewhere later.
 */
#define HTTP_CONTENT_LENGTH_MAX ((uint64_t) INT64_MAX)

/* Character classes, one bit each, in char_class[]. */
enum {
        CC_TOKEN = 1u << 0,  /* tchar (RFC 9110 5.6.2): methods, field names */
        CC_TARGET = 1u << 1, /* request-target byte: VCHAR except '#' */
        CC_VALUE = 1u << 2,  /* field-value byte: HTAB, SP, VCHAR, obs-text */
        CC_HEX = 1u << 3,    /* HEXDIG, either case */
        CC_HOST = 1u << 4,   /* reg-name byte of a host (unreserved, sub-delims but ',') */
};

/*
 * Generated from the ABNF of RFC 9110/9112/3986 and checked byte by byte
 * against those definitions in tests/unit/test_http_parse.c.
 *
 * Deliberate choices: the request-target may not hold '#' (a fragment is
 * never part of a request-target, RFC 9112 3.2), and a host may not hold
 * ',' (it would make "Host: a,b" a list of two hosts) or '%' (no client
 * percent-encodes a host name; IDNs travel as punycode).
 */
static const uint8_t char_class[256] = {
    /* clang-format off */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 0x00 CTL */
        0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 0x08 CTL HT CTL */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 0x10 CTL */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 0x18 CTL */
        0x04, 0x17, 0x06, 0x05, 0x17, 0x07, 0x17, 0x17, /* 0x20 SP ! " # $ % & ' */
        0x16, 0x16, 0x17, 0x17, 0x06, 0x17, 0x17, 0x06, /* 0x28 ( ) * + , - . / */
        0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, /* 0x30 0 1 2 3 4 5 6 7 */
        0x1f, 0x1f, 0x06, 0x16, 0x06, 0x16, 0x06, 0x06, /* 0x38 8 9 : ; < = > ? */
        0x06, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x17, /* 0x40 @ A B C D E F G */
        0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, /* 0x48 H I J K L M N O */
        0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, /* 0x50 P Q R S T U V W */
        0x17, 0x17, 0x17, 0x06, 0x06, 0x06, 0x07, 0x17, /* 0x58 X Y Z [ \ ] ^ _ */
        0x07, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x17, /* 0x60 ` a b c d e f g */
        0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, /* 0x68 h i j k l m n o */
        0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, /* 0x70 p q r s t u v w */
        0x17, 0x17, 0x17, 0x06, 0x07, 0x06, 0x17, 0x00, /* 0x78 x y z { | } ~ DEL */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0x80 obs-text */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0x88 obs-text */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0x90 obs-text */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0x98 obs-text */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0xa0 obs-text */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0xa8 obs-text */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0xb0 obs-text */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0xb8 obs-text */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0xc0 obs-text */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0xc8 obs-text */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0xd0 obs-text */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0xd8 obs-text */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0xe0 obs-text */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0xe8 obs-text */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0xf0 obs-text */
        0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 0xf8 obs-text */
    /* clang-format on */
};

static inline bool is_class(char c, unsigned cls)
{
        return (char_class[(unsigned char) c] & cls) != 0;
}

static inline bool is_digit(char c)
{
        return (unsigned char) (c - '0') < 10u;
}

static inline bool is_ows(char c)
{
        return c == ' ' || c == '\t';
}

/* Value of a hex digit, or -1. */
static inline int hex_value(char c)
{
        if (is_digit(c))
                return c - '0';
        if ((unsigned char) ((c | 0x20) - 'a') < 6u)
                return (c | 0x20) - 'a' + 10;
        return -1;
}

/* ASCII only: the C library's tolower() follows the locale. */
static inline char ascii_tolower(char c)
{
        return (unsigned char) (c - 'A') < 26u ? (char) (c | 0x20) : c;
}

static bool ascii_case_eq(const char *a, const char *b, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (ascii_tolower(a[i]) != ascii_tolower(b[i]))
                        return false;
        return true;
}

static inline bool span_case_eq(struct span s, const char *lit, size_t lit_len)
{
        return s.len == lit_len && ascii_case_eq(s.ptr, lit, lit_len);
}

static inline struct span make_span(const char *start, const char *end)
{
        return (struct span){start, (size_t) (end - start)};
}

static struct span trim_ows(const char *p, const char *end)
{
        while (p < end && is_ows(*p))
                p++;
        while (end > p && is_ows(end[-1]))
                end--;
        return make_span(p, end);
}

/*
 * Comma-separated lists (RFC 9110 5.6.1).
 *
 * list_element() scans the element that starts at p, stores it without its
 * surrounding OWS in *ret (possibly empty) and returns where it ended: at the
 * comma after it, or at end. A comma inside a quoted-string (a parameter
 * value) does not end an element.
 */
static const char *list_element(const char *p, const char *end, struct span *ret)
{
        const char *q = p;
        bool quoted = false;

        for (; q < end; q++) {
                if (quoted) {
                        if (*q == '\\' && q + 1 < end)
                                q++;
                        else if (*q == '"')
                                quoted = false;
                } else if (*q == '"')
                        quoted = true;
                else if (*q == ',')
                        break;
        }
        *ret = trim_ows(p, q);
        return q;
}

static const char *const method_names[_HTTP_METHOD_MAX] = {
    [HTTP_GET] = "GET",     [HTTP_HEAD] = "HEAD",     [HTTP_POST] = "POST",
    [HTTP_PUT] = "PUT",     [HTTP_DELETE] = "DELETE", [HTTP_OPTIONS] = "OPTIONS",
    [HTTP_PATCH] = "PATCH", [HTTP_TRACE] = "TRACE",   [HTTP_CONNECT] = "CONNECT",
    [HTTP_OTHER] = "OTHER",
};

const char *http_method_name(enum http_method m)
{
        if ((unsigned) m >= _HTTP_METHOD_MAX)
                return NULL;
        return method_names[m];
}

/* Methods are case-sensitive (RFC 9110 9.1): "get" is an unknown method. */
static enum http_method method_lookup(const char *p, size_t n)
{
        switch (n) {
        case 3:
                if (memcmp(p, "GET", 3) == 0)
                        return HTTP_GET;
                if (memcmp(p, "PUT", 3) == 0)
                        return HTTP_PUT;
                break;
        case 4:
                if (memcmp(p, "HEAD", 4) == 0)
                        return HTTP_HEAD;
                if (memcmp(p, "POST", 4) == 0)
                        return HTTP_POST;
                break;
        case 5:
                if (memcmp(p, "PATCH", 5) == 0)
                        return HTTP_PATCH;
                if (memcmp(p, "TRACE", 5) == 0)
                        return HTTP_TRACE;
                break;
        case 6:
                if (memcmp(p, "DELETE", 6) == 0)
                        return HTTP_DELETE;
                break;
        case 7:
                if (memcmp(p, "OPTIONS", 7) == 0)
                        return HTTP_OPTIONS;
                if (memcmp(p, "CONNECT", 7) == 0)
                        return HTTP_CONNECT;
                break;
        default:
                break;
        }
        return HTTP_OTHER;
}

/*
 * host [ ":" port ] as in Host and in an authority (RFC 9110 7.2, RFC 3986
 * 3.2.2): an IP-literal in brackets or a non-empty reg-name, then an
 * optional port of digits. Spaces, '/', '@' (userinfo), '\' and every other
 * byte that could make two servers see different hosts are refused.
 * need_port: the authority-form of CONNECT, where the port is mandatory.
 */
static bool host_is_valid(struct span s, bool need_port)
{
        const char *p = s.ptr, *end = s.ptr + s.len, *start;

        if (p == end)
                return false;
        if (*p == '[') {
                /* IPv6 (or IPv4-embedded) address; IPvFuture is not accepted. */
                start = ++p;
                while (p < end && (is_class(*p, CC_HEX) || *p == ':' || *p == '.'))
                        p++;
                if (p == end || *p != ']' || p == start)
                        return false;
                p++;
        } else {
                start = p;
                while (p < end && is_class(*p, CC_HOST))
                        p++;
                if (p == start)
                        return false;
        }
        if (p == end)
                return !need_port;
        if (*p != ':')
                return false;
        start = ++p;
        while (p < end && is_digit(*p))
                p++;
        if (p != end || p - start > 5)
                return false;
        /* RFC 3986 allows an empty port ("host:"); CONNECT needs a real one. */
        return !need_port || p > start;
}

/* The parts of a request-target (RFC 9112 3.2) that the request keeps. */
struct target_parts {
        struct span path;
        struct span query;
        bool has_query;
        struct span authority; /* absolute-form only */
};

/* path [ "?" query ] of an origin-form or absolute-form target. */
static void split_query(const char *p, const char *end, struct target_parts *t)
{
        const char *q = memchr(p, '?', (size_t) (end - p));

        if (q) {
                t->path = make_span(p, q);
                t->query = make_span(q + 1, end);
                t->has_query = true;
        } else
                t->path = make_span(p, end);
}

/*
 * Which of the four forms of RFC 9112 3.2 the target is, and whether the
 * method may use it: origin-form for everything but CONNECT, asterisk-form
 * for OPTIONS, authority-form for CONNECT only, absolute-form ("http://" or
 * "https://", which servers must accept) for everything but CONNECT.
 * The bytes were already checked against CC_TARGET.
 */
static int target_parse(enum http_method m, struct span target, struct target_parts *ret)
{
        const char *p = target.ptr, *end = target.ptr + target.len, *a;
        struct target_parts t = {0};

        if (m == HTTP_CONNECT) {
                if (!host_is_valid(target, true))
                        return -EBADMSG;
                t.authority = target;
        } else if (*p == '/')
                split_query(p, end, &t);
        else if (target.len == 1 && *p == '*') {
                if (m != HTTP_OPTIONS)
                        return -EBADMSG;
                t.path = target;
        } else {
                if (target.len >= 7 && ascii_case_eq(p, "http://", 7))
                        a = p + 7;
                else if (target.len >= 8 && ascii_case_eq(p, "https://", 8))
                        a = p + 8;
                else
                        return -EBADMSG;

                /* The authority ends at the path or the query. */
                p = a;
                while (p < end && *p != '/' && *p != '?')
                        p++;
                t.authority = make_span(a, p);
                if (!host_is_valid(t.authority, false))
                        return -EBADMSG;

                split_query(p, end, &t);
                /*
                 * "http://host" and "http://host?q" have an empty path, which
                 * means "/" (RFC 9110 4.2.3). The span then points at a string
                 * literal, which lives longer than any buffer.
                 */
                if (t.path.len == 0)
                        t.path = (struct span){"/", 1};
        }
        *ret = t;
        return 0;
}

/* What the headers say about framing and the connection, gathered line by line. */
struct head_info {
        int minor_version;
        unsigned n_host;
        struct span host;
        bool have_length;
        uint64_t content_length;
        bool have_te;
        bool conn_close;
        bool conn_keep_alive;
        bool expect_continue;
};

/*
 * Content-Length = 1*DIGIT, or a list of identical ones ("5, 5", which
 * RFC 9110 8.6 lets a recipient take as one). No sign, no inner
 * whitespace, no empty element, and nothing above HTTP_CONTENT_LENGTH_MAX.
 */
static int content_length_parse(struct span v, uint64_t *ret)
{
        const char *p = v.ptr, *end = v.ptr + v.len;
        bool have = false;
        uint64_t first = 0;

        for (;;) {
                struct span el;
                uint64_t x = 0;

                p = list_element(p, end, &el);
                if (el.len == 0)
                        return -EBADMSG;
                for (size_t i = 0; i < el.len; i++) {
                        unsigned d = (unsigned char) el.ptr[i] - '0';

                        if (d > 9 || x > (HTTP_CONTENT_LENGTH_MAX - d) / 10)
                                return -EBADMSG;
                        x = x * 10 + d;
                }
                if (have && x != first)
                        return -EBADMSG;
                first = x;
                have = true;

                if (p == end)
                        break;
                p++; /* the comma */
        }
        *ret = first;
        return 0;
}

/*
 * Transfer-Encoding: the only coding wharf decodes is chunked, and chunked
 * must be the last one and may appear once (RFC 9112 6.1, 6.3). So the
 * combined list of all Transfer-Encoding lines must be exactly one element,
 * "chunked" in any case, without parameters. Anything else ("gzip, chunked",
 * "chunked, chunked", "xchunked", "chunked;x", an empty element) would be a
 * coding we cannot decode or a framing someone else may read differently.
 */
static int transfer_encoding_add(struct head_info *h, struct span v)
{
        const char *p = v.ptr, *end = v.ptr + v.len;

        for (;;) {
                struct span el;

                p = list_element(p, end, &el);
                if (h->have_te || !span_case_eq(el, "chunked", 7))
                        return -EBADMSG;
                h->have_te = true;

                if (p == end)
                        return 0;
                p++;
        }
}

/*
 * Gathers what one header line means for the request as a whole. Names are
 * compared by length first: most headers fail that test at once.
 */
static int header_derive(struct head_info *h, const struct http_header *hdr)
{
        struct span n = hdr->name, v = hdr->value;
        uint64_t cl;
        int r;

        switch (n.len) {
        case 4:
                if (!span_case_eq(n, "host", 4))
                        break;
                /* RFC 9112 3.2: more than one Host, or an invalid one, is a 400. */
                if (h->n_host++ > 0)
                        return -EBADMSG;
                /* An empty Host is allowed: the target has no authority then. */
                if (v.len > 0 && !host_is_valid(v, false))
                        return -EBADMSG;
                h->host = v;
                break;
        case 6:
                /* RFC 9110 10.1.1: a 1.0 request's 100-continue is ignored. */
                if (span_case_eq(n, "expect", 6) && h->minor_version >= 1 &&
                    http_list_has_token(v, "100-continue"))
                        h->expect_continue = true;
                break;
        case 10:
                if (!span_case_eq(n, "connection", 10))
                        break;
                if (http_list_has_token(v, "close"))
                        h->conn_close = true;
                if (http_list_has_token(v, "keep-alive"))
                        h->conn_keep_alive = true;
                break;
        case 14:
                if (!span_case_eq(n, "content-length", 14))
                        break;
                r = content_length_parse(v, &cl);
                if (r < 0)
                        return r;
                /* Several lines are one length only if they all agree. */
                if (h->have_length && cl != h->content_length)
                        return -EBADMSG;
                /* RFC 9112 6.3: with Transfer-Encoding the framing is ambiguous. */
                if (h->have_te)
                        return -EBADMSG;
                h->have_length = true;
                h->content_length = cl;
                break;
        case 17:
                if (!span_case_eq(n, "transfer-encoding", 17))
                        break;
                /* HTTP/1.0 has no transfer codings: its framing would be faulty (6.1). */
                if (h->minor_version == 0 || h->have_length)
                        return -EBADMSG;
                return transfer_encoding_add(h, v);
        default:
                break;
        }
        return 0;
}

/*
 * Out of bytes before the head ended: if the head already reaches max_head,
 * more input can only make it longer.
 */
static inline ssize_t head_incomplete(size_t len, size_t max_head)
{
        return len >= max_head ? -E2BIG : -EAGAIN;
}

ssize_t http_parse_request(const char *buf, size_t len, size_t max_head,
                           struct http_request *ret_req)
{
        /*
         * Never look past max_head bytes: a head that has not ended by then
         * is -E2BIG however it goes on.
         */
        const char *p = buf, *end = buf + min_size(len, max_head);
        const char *start, *name_end, *value_start, *target_end;
        struct http_header headers[HTTP_MAX_HEADERS];
        struct target_parts t;
        struct head_info h = {0};
        struct span method_name, target;
        enum http_method method;
        size_t n_headers = 0;
        int r;

        /* RFC 9112 2.2: empty lines (CRLF only) before the request line are skipped. */
        for (;;) {
                if (p == end)
                        return head_incomplete(len, max_head);
                if (*p != '\r')
                        break;
                if (p + 1 == end)
                        return head_incomplete(len, max_head);
                if (p[1] != '\n')
                        return -EBADMSG;
                p += 2;
        }

        /* method SP: a token, followed by exactly one space. */
        start = p;
        while (p < end && is_class(*p, CC_TOKEN))
                p++;
        if (p == end)
                return head_incomplete(len, max_head);
        if (*p != ' ' || p == start)
                return -EBADMSG;
        method_name = make_span(start, p);
        method = method_lookup(method_name.ptr, method_name.len);
        p++;

        /*
         * request-target SP. The scan stops one byte past HTTP_MAX_TARGET so
         * that an over-long target is refused as soon as it is one.
         */
        start = p;
        target_end = (size_t) (end - p) > HTTP_MAX_TARGET ? p + HTTP_MAX_TARGET + 1 : end;
        while (p < target_end && is_class(*p, CC_TARGET))
                p++;
        if (p - start > HTTP_MAX_TARGET)
                return -EMSGSIZE;
        if (p == end)
                return head_incomplete(len, max_head);
        if (*p != ' ' || p == start)
                return -EBADMSG;
        target = make_span(start, p);
        r = target_parse(method, target, &t);
        if (r < 0)
                return r;
        p++;

        /*
         * HTTP-version CRLF: "HTTP/" DIGIT "." DIGIT, case-sensitive
         * (RFC 9112 2.3). Well-formed but not 1.0 or 1.1 is 505; anything
         * else is malformed. Checked byte by byte so a wrong byte is
         * reported before the line is complete.
         */
        for (size_t i = 0; i < 10; i++) {
                static const char version[] = "HTTP/1.1\r\n";
                bool good;

                if (p + i == end)
                        return head_incomplete(len, max_head);
                if (i == 5 || i == 7)
                        good = is_digit(p[i]);
                else
                        good = p[i] == version[i];
                if (!good)
                        return -EBADMSG;
        }
        if (p[5] != '1' || p[7] > '1')
                return -ENOSYS;
        h.minor_version = p[7] - '0';
        p += 10;

        /*
         * field-line CRLF until an empty line. Each line is
         *   field-name ":" OWS field-value OWS CRLF
         * A line that starts with SP or HTAB (obs-fold), whitespace before
         * the colon, an empty name, a control character in the value and a
         * bare CR or LF all fail the same test: the byte is not what the
         * grammar allows next.
         */
        for (;;) {
                struct http_header *hdr;

                if (p == end)
                        return head_incomplete(len, max_head);
                if (*p == '\r') {
                        if (p + 1 == end)
                                return head_incomplete(len, max_head);
                        if (p[1] != '\n')
                                return -EBADMSG;
                        p += 2;
                        break;
                }
                if (n_headers == HTTP_MAX_HEADERS)
                        return -E2BIG;

                start = p;
                while (p < end && is_class(*p, CC_TOKEN))
                        p++;
                if (p == end)
                        return head_incomplete(len, max_head);
                if (*p != ':' || p == start)
                        return -EBADMSG;
                name_end = p++;

                /* OWS around the value is part of this scan; trim_ows() drops it. */
                value_start = p;
                while (p < end && is_class(*p, CC_VALUE))
                        p++;
                if (p == end)
                        return head_incomplete(len, max_head);
                if (*p != '\r')
                        return -EBADMSG;
                if (p + 1 == end)
                        return head_incomplete(len, max_head);
                if (p[1] != '\n')
                        return -EBADMSG;

                hdr = &headers[n_headers++];
                hdr->name = make_span(start, name_end);
                hdr->value = trim_ows(value_start, p);
                p += 2;

                r = header_derive(&h, hdr);
                if (r < 0)
                        return r;
        }

        /* RFC 9112 3.2: every HTTP/1.1 request carries exactly one Host. */
        if (h.minor_version == 1 && h.n_host == 0)
                return -EBADMSG;

        ret_req->method = method;
        ret_req->method_name = method_name;
        ret_req->target = target;
        ret_req->path = t.path;
        ret_req->query = t.query;
        ret_req->has_query = t.has_query;
        ret_req->minor_version = h.minor_version;
        memcpy(ret_req->headers, headers, n_headers * sizeof(headers[0]));
        ret_req->n_headers = n_headers;

        /*
         * RFC 9112 3.2.2: with an absolute-form target the Host header is
         * ignored and the target's authority names the host, so that no
         * two parties route one request to different hosts.
         */
        ret_req->host = t.authority.len > 0 && method != HTTP_CONNECT ? t.authority : h.host;

        /*
         * "Content-Length: 0" is reported as no body at all: that is what it
         * means, and it spares every caller a zero-byte body read.
         */
        if (h.have_te)
                ret_req->body = HTTP_BODY_CHUNKED;
        else if (h.have_length && h.content_length > 0)
                ret_req->body = HTTP_BODY_LENGTH;
        else
                ret_req->body = HTTP_BODY_NONE;
        ret_req->content_length = h.content_length;

        if (h.minor_version == 1)
                ret_req->keep_alive = !h.conn_close;
        else
                ret_req->keep_alive = h.conn_keep_alive && !h.conn_close;
        ret_req->expect_continue = h.expect_continue;

        /* Any empty lines skipped before the request line are part of what was consumed. */
        ret_req->head_len = (size_t) (p - buf);
        return (ssize_t) ret_req->head_len;
}

const struct http_header *http_find_header(const struct http_request *req, const char *name)
{
        size_t n = strlen(name);

        for (size_t i = 0; i < req->n_headers; i++) {
                const struct http_header *h = &req->headers[i];

                if (h->name.len == n && ascii_case_eq(h->name.ptr, name, n))
                        return h;
        }
        return NULL;
}

/*
 * weight = "q=" qvalue, qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
 * (RFC 9110 12.4.2). True when v says "acceptable": a valid non-zero qvalue.
 * A malformed weight counts as a refusal: when in doubt, do not send a
 * coding the client may not understand.
 */
static bool qvalue_accepts(struct span v)
{
        bool nonzero;

        if (v.len == 0 || v.len > 5 || (v.ptr[0] != '0' && v.ptr[0] != '1'))
                return false;
        nonzero = v.ptr[0] == '1';
        if (v.len == 1)
                return nonzero;
        if (v.ptr[1] != '.')
                return false;
        for (size_t i = 2; i < v.len; i++) {
                if (!is_digit(v.ptr[i]) || (v.ptr[0] == '1' && v.ptr[i] != '0'))
                        return false;
                if (v.ptr[i] != '0')
                        nonzero = true;
        }
        return nonzero;
}

/*
 * Parameters of a list element, after its token:
 *   *( OWS ";" OWS name "=" ( token / quoted-string ) )
 * True unless a "q" parameter refuses the element or the parameters are
 * malformed.
 */
static bool params_accept(const char *p, const char *end)
{
        for (;;) {
                const char *name, *name_end, *value;

                while (p < end && is_ows(*p))
                        p++;
                if (p == end)
                        return true;
                if (*p != ';')
                        return false;
                p++;
                while (p < end && is_ows(*p))
                        p++;
                name = p;
                while (p < end && is_class(*p, CC_TOKEN))
                        p++;
                name_end = p;
                if (name == name_end || p == end || *p != '=')
                        return false;
                value = ++p;
                if (p < end && *p == '"') {
                        /* A quoted value; list_element() made sure it ends. */
                        for (p++; p < end && *p != '"'; p++)
                                if (*p == '\\')
                                        p++;
                        if (p >= end)
                                return false;
                        p++;
                } else
                        while (p < end && is_class(*p, CC_TOKEN))
                                p++;
                if (span_case_eq(make_span(name, name_end), "q", 1) &&
                    !qvalue_accepts(make_span(value, p)))
                        return false;
        }
}

bool http_list_has_token(struct span list, const char *token)
{
        const char *p = list.ptr, *end = list.ptr + list.len;
        size_t token_len = strlen(token);

        for (;;) {
                struct span el;
                const char *t;

                p = list_element(p, end, &el);

                /* The element's own token, then its parameters. */
                t = el.ptr;
                while (t < el.ptr + el.len && is_class(*t, CC_TOKEN))
                        t++;
                if (span_case_eq(make_span(el.ptr, t), token, token_len) &&
                    params_accept(t, el.ptr + el.len))
                        return true;

                if (p == end)
                        return false;
                p++;
        }
}

bool http_is_token(const char *p, size_t len)
{
        if (len == 0)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!is_class(p[i], CC_TOKEN))
                        return false;
        return true;
}

/*
 * The chunked decoder (RFC 9112 7.1):
 *
 *   chunked-body = *chunk last-chunk trailer-section CRLF
 *   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   last-chunk   = 1*("0") [ chunk-ext ] CRLF
 *
 * One state per position in that grammar, one byte at a time except inside
 * chunk-data, which is moved in one piece. Because the state after each byte
 * depends only on the state before it and the byte, any split of the input
 * decodes exactly as the whole. The trailer states are kept together, from
 * CHUNK_TRAILER_START to CHUNK_FINAL_LF: chunk_in_trailer() relies on it.
 */
enum chunked_state {
        CHUNK_SIZE_FIRST, /* the first hex digit of a chunk-size */
        CHUNK_SIZE,       /* further digits, BWS, ';' or CR */
        CHUNK_SIZE_BWS,   /* whitespace after the size: only more of it or ';' */
        CHUNK_EXT,        /* chunk-ext up to CR */
        CHUNK_SIZE_LF,    /* LF ending the size line */
        CHUNK_DATA,       /* remaining bytes of chunk-data */
        CHUNK_DATA_CR,    /* CRLF after chunk-data */
        CHUNK_DATA_LF,
        CHUNK_TRAILER_START, /* a trailer field line, or the final CRLF */
        CHUNK_TRAILER_NAME,
        CHUNK_TRAILER_VALUE,
        CHUNK_TRAILER_LF,
        CHUNK_FINAL_LF,
        CHUNK_DONE,
        _CHUNK_STATE_MAX
};

void http_chunked_init(struct http_chunked *c, uint64_t max_total)
{
        *c = (struct http_chunked){
            .state = CHUNK_SIZE_FIRST,
            .max_total = max_total,
        };
}

static inline bool chunk_in_trailer(int state)
{
        return state >= CHUNK_TRAILER_START && state <= CHUNK_FINAL_LF;
}

/* One more hex digit of the chunk size; the size is in c->remaining. */
static int chunk_size_digit(struct http_chunked *c, int d)
{
        /* In the size states line_bytes counts exactly the digits so far. */
        if (c->line_bytes >= HTTP_CHUNK_SIZE_DIGITS_MAX)
                return -EBADMSG;
        c->remaining = c->remaining << 4 | (uint64_t) d;
        c->line_bytes++;
        if (c->max_total > 0 && c->remaining > c->max_total - c->total)
                return -EFBIG;
        return 0;
}

ssize_t http_chunked_decode(struct http_chunked *c, char *buf, size_t len, size_t *ret_data)
{
        size_t pos = 0, out = 0;
        int d, r;

        while (pos < len) {
                char ch = buf[pos];

                /* Every byte after the last-chunk line counts against the trailer limit. */
                if (chunk_in_trailer(c->state) && ++c->line_bytes > HTTP_TRAILER_MAX)
                        return -EBADMSG;

                switch ((enum chunked_state) c->state) {
                case CHUNK_DATA: {
                        /* Data moves down over the framing already consumed. */
                        size_t n = (size_t) min_u64(c->remaining, len - pos);

                        memmove(buf + out, buf + pos, n);
                        out += n;
                        pos += n;
                        c->remaining -= n;
                        c->total += n;
                        if (c->remaining == 0)
                                c->state = CHUNK_DATA_CR;
                        continue;
                }
                case CHUNK_SIZE_FIRST:
                        d = hex_value(ch);
                        if (d < 0)
                                return -EBADMSG;
                        c->remaining = 0;
                        c->line_bytes = 0;
                        r = chunk_size_digit(c, d);
                        if (r < 0)
                                return r;
                        c->state = CHUNK_SIZE;
                        break;
                case CHUNK_SIZE:
                        d = hex_value(ch);
                        if (d >= 0) {
                                r = chunk_size_digit(c, d);
                                if (r < 0)
                                        return r;
                                break;
                        }
                        if (ch == '\r')
                                c->state = CHUNK_SIZE_LF;
                        else if (ch == ';')
                                c->state = CHUNK_EXT;
                        else if (is_ows(ch))
                                c->state = CHUNK_SIZE_BWS;
                        else
                                return -EBADMSG;
                        /* The digits end; line_bytes counts the rest of the line but CRLF. */
                        if (ch != '\r')
                                c->line_bytes++;
                        break;
                case CHUNK_SIZE_BWS:
                        if (ch == ';')
                                c->state = CHUNK_EXT;
                        else if (!is_ows(ch))
                                return -EBADMSG;
                        if (++c->line_bytes > HTTP_CHUNK_LINE_MAX)
                                return -EBADMSG;
                        break;
                case CHUNK_EXT:
                        /*
                         * Extensions are skipped, not interpreted: any
                         * field-value byte up to CR, so no control
                         * character but HTAB, and never a bare LF.
                         */
                        if (ch == '\r') {
                                c->state = CHUNK_SIZE_LF;
                                break;
                        }
                        if (!is_class(ch, CC_VALUE) || ++c->line_bytes > HTTP_CHUNK_LINE_MAX)
                                return -EBADMSG;
                        break;
                case CHUNK_SIZE_LF:
                        if (ch != '\n')
                                return -EBADMSG;
                        if (c->remaining > 0)
                                c->state = CHUNK_DATA;
                        else {
                                /* last-chunk: from here line_bytes counts the trailer section. */
                                c->state = CHUNK_TRAILER_START;
                                c->line_bytes = 0;
                        }
                        break;
                case CHUNK_DATA_CR:
                        if (ch != '\r')
                                return -EBADMSG;
                        c->state = CHUNK_DATA_LF;
                        break;
                case CHUNK_DATA_LF:
                        if (ch != '\n')
                                return -EBADMSG;
                        c->state = CHUNK_SIZE_FIRST;
                        break;
                case CHUNK_TRAILER_START:
                        /* No obs-fold, no empty name: the same rules as header lines. */
                        if (ch == '\r')
                                c->state = CHUNK_FINAL_LF;
                        else if (is_class(ch, CC_TOKEN))
                                c->state = CHUNK_TRAILER_NAME;
                        else
                                return -EBADMSG;
                        break;
                case CHUNK_TRAILER_NAME:
                        if (ch == ':')
                                c->state = CHUNK_TRAILER_VALUE;
                        else if (!is_class(ch, CC_TOKEN))
                                return -EBADMSG;
                        break;
                case CHUNK_TRAILER_VALUE:
                        if (ch == '\r')
                                c->state = CHUNK_TRAILER_LF;
                        else if (!is_class(ch, CC_VALUE))
                                return -EBADMSG;
                        break;
                case CHUNK_TRAILER_LF:
                        if (ch != '\n')
                                return -EBADMSG;
                        c->state = CHUNK_TRAILER_START;
                        break;
                case CHUNK_FINAL_LF:
                        if (ch != '\n')
                                return -EBADMSG;
                        c->state = CHUNK_DONE;
                        *ret_data = out;
                        return (ssize_t) pos + 1;
                case CHUNK_DONE:
                        *ret_data = out;
                        return (ssize_t) pos;
                case _CHUNK_STATE_MAX:
                default:
                        assert(!"unreachable chunked state");
                        return -EBADMSG;
                }

                pos++;
        }

        *ret_data = out;
        return c->state == CHUNK_DONE ? (ssize_t) pos : -EAGAIN;
}

/*
 * Path normalisation, one segment at a time: each segment is percent-decoded
 * straight into out, and then judged. A decoded "." or ".." therefore counts
 * as a dot-segment however it was spelled ("%2e%2E").
 *
 * An encoded slash is never decoded into a '/': that would make one segment
 * of the request two segments on disk ("a%2F..%2F..%2Fetc" is a single
 * segment here, but "a/../../etc" to open()). Either it is refused
 * (HTTP_PATH_REJECT_ENCODED_SLASH) or it is kept as the three bytes "%2F"
 * (uppercase), so that every '/' in out is a separator this function has
 * already applied dot-segment removal to.
 */
ssize_t http_path_normalize(const char *in, size_t len, char *out, size_t out_size, unsigned flags)
{
        size_t i, o, seg;

        /* Nothing below makes the path longer: out never needs more than len + 1. */
        if (out_size <= len)
                return -ENOBUFS;
        if (len == 0 || in[0] != '/')
                return -EBADMSG;

        out[0] = '/';
        o = 1;
        i = 1;
        for (;;) {
                /* Invariant: out[0..o) is "/" or ends in '/', and has no dot-segment. */
                seg = o;
                while (i < len && in[i] != '/') {
                        char ch = in[i++];

                        if (ch == '%') {
                                int hi, lo;

                                if (len - i < 2)
                                        return -EBADMSG;
                                hi = hex_value(in[i]);
                                lo = hex_value(in[i + 1]);
                                if (hi < 0 || lo < 0)
                                        return -EBADMSG;
                                i += 2;
                                ch = (char) (hi << 4 | lo);
                                if (ch == '/') {
                                        if (flags & HTTP_PATH_REJECT_ENCODED_SLASH)
                                                return -EBADMSG;
                                        memcpy(out + o, "%2F", 3);
                                        o += 3;
                                        continue;
                                }
                        }
                        /* A NUL would end the path early for every C API that sees it. */
                        if (ch == '\0')
                                return -EBADMSG;
                        out[o++] = ch;
                }

                if (o == seg || (o - seg == 1 && out[seg] == '.')) {
                        /* "" (from "//" or a trailing '/') and "." add nothing. */
                        o = seg;
                } else if (o - seg == 2 && out[seg] == '.' && out[seg + 1] == '.') {
                        /* ".." removes the segment before it, and may not climb above "/". */
                        if (seg == 1)
                                return -EBADMSG;
                        o = seg - 1;
                        while (out[o - 1] != '/')
                                o--;
                } else if (i < len)
                        out[o++] = '/';

                /*
                 * At the end of the input: a path that ended in '/', "/." or
                 * "/.." leaves out ending in '/', any other path does not.
                 */
                if (i == len)
                        break;
                i++; /* the '/' */
        }

        out[o] = '\0';
        return (ssize_t) o;
}
