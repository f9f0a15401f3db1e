/* SPDX-License-Identifier: MIT */
/*
 * http_parse: the one strict, incremental HTTP/1.1 request parser (RFC 9112)
 * shared by every wharf daemon, plus the chunked body decoder and the
 * request-target normaliser.
 *
 * The parser never allocates and never copies: every span in a parsed
 * struct http_request points into the caller's buffer and stays valid for as
 * long as those bytes are neither moved nor reused. Call it again with more
 * bytes when it says -EAGAIN; it starts from the beginning each time, which
 * is bounded by the head limit.
 *
 * What it refuses (so that no two servers on the path read a message
 * differently): Content-Length together with Transfer-Encoding, two
 * different Content-Lengths, a Transfer-Encoding that is not exactly a final
 * "chunked" (also "chunked, chunked", "xchunked", " chunked" in disguise),
 * bare CR or bare LF as line ends, whitespace between a header name and the
 * colon, obs-fold continuation lines, control characters in values, a
 * request line that is not METHOD SP TARGET SP HTTP/1.x, and a missing
 * Host in HTTP/1.1.
 */
#ifndef WHARF_HTTP_PARSE_H
#define WHARF_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

/* Limits a client controls; every one is enforced in the parser. */
#define HTTP_MAX_HEADERS 100              /* header lines per request */
#define HTTP_DEFAULT_MAX_HEAD (16 * 1024) /* request line + headers, bytes */
#define HTTP_MAX_TARGET (8 * 1024)        /* request-target, bytes */

enum http_method {
        HTTP_GET,
        HTTP_HEAD,
        HTTP_POST,
        HTTP_PUT,
        HTTP_DELETE,
        HTTP_OPTIONS,
        HTTP_PATCH,
        HTTP_TRACE,
        HTTP_CONNECT,
        HTTP_OTHER, /* a valid token we do not know; method_name has it */
        _HTTP_METHOD_MAX
};

const char *http_method_name(enum http_method m);

enum http_body {
        HTTP_BODY_NONE,    /* no body follows the head */
        HTTP_BODY_LENGTH,  /* content_length bytes follow */
        HTTP_BODY_CHUNKED, /* chunked coding follows: use http_chunked_decode() */
        _HTTP_BODY_MAX
};

struct http_header {
        struct span name;  /* as sent, case preserved; a token */
        struct span value; /* leading and trailing whitespace removed */
};

struct http_request {
        enum http_method method;
        struct span method_name;
        struct span target; /* the raw request-target */
        struct span path;   /* raw path of an origin-form target (before '?'), or "*" */
        struct span query;  /* raw query after '?', without it; len 0 if none */
        bool has_query;     /* there was a '?' (possibly with an empty query) */
        int minor_version;  /* 0 or 1 */

        struct http_header headers[HTTP_MAX_HEADERS];
        size_t n_headers;

        /* Derived from the headers. */
        struct span host; /* Host header value (port included), len 0 if none */
        enum http_body body;
        uint64_t content_length; /* valid when body == HTTP_BODY_LENGTH */
        bool keep_alive;         /* after this response the connection may stay open */
        bool expect_continue;    /* "Expect: 100-continue" */
        size_t head_len;         /* bytes of request line + headers + final CRLF */
};

/*
 * Parses one request head from buf[0..len).
 *
 * Returns the number of bytes the head takes (the body, if any, starts
 * there), -EAGAIN when the head is not complete yet (and nothing seen so far
 * is wrong), -EBADMSG when the request is malformed or ambiguous (400),
 * -E2BIG when the head exceeds max_head bytes or HTTP_MAX_HEADERS (431),
 * -ENOSYS for an HTTP version other than 1.0/1.1 (505) and -EMSGSIZE
 * for a request-target longer than HTTP_MAX_TARGET (414).
 * ret_req is written only on success.
 */
ssize_t http_parse_request(const char *buf, size_t len, size_t max_head,
                           struct http_request *ret_req);

/* The first header with that name (case-insensitive), or NULL. */
const struct http_header *http_find_header(const struct http_request *req, const char *name);

/*
 * Does a comma-separated header list (e.g. Accept-Encoding, Connection)
 * contain token, ignoring case and parameters, and with q=0 meaning no?
 */
bool http_list_has_token(struct span list, const char *token);

/* Is p[0..len) a token (RFC 9110 5.6.2), as a field name or method must be? Empty is not. */
bool http_is_token(const char *p, size_t len);

/*
 * Chunked transfer coding, decoded in place.
 *
 * Feed the bytes that follow the head; the decoder keeps its position in
 * struct http_chunked between calls so the body may arrive in any split.
 */
struct http_chunked {
        int state;           /* internal */
        uint64_t remaining;  /* data bytes left in the current chunk */
        uint64_t total;      /* data bytes decoded so far */
        uint64_t max_total;  /* limit on total; 0 means no limit */
        unsigned line_bytes; /* bytes of the current size/trailer line, bounded */
};

void http_chunked_init(struct http_chunked *c, uint64_t max_total);

/*
 * Decodes buf[0..len) in place: on return the first *ret_data bytes of buf
 * are body data (always at most the bytes consumed, so nothing after them is
 * overwritten).
 *
 * Returns -EAGAIN when all of buf was consumed and the body goes on (the
 * caller passes those *ret_data bytes on and feeds the next input), a value
 * n >= 0 when the body ended: n bytes of buf were consumed (last-chunk,
 * trailers and final CRLF included) and buf[n..len) is what follows the body,
 * e.g. the next pipelined request. -EBADMSG for a malformed size, extension
 * or trailer, -EFBIG once total would pass max_total.
 */
ssize_t http_chunked_decode(struct http_chunked *c, char *buf, size_t len, size_t *ret_data);

/*
 * Request-target path to a clean absolute path: percent-decoding once,
 * dot-segment removal (RFC 3986 5.2.4) and merging of repeated slashes.
 *
 * flags: HTTP_PATH_REJECT_ENCODED_SLASH makes %2F an error (a file server
 * must not let "a%2Fb" name "a/b").
 * Returns the length written to out (out is NUL-terminated, so out_size must
 * be at least len + 1), -EBADMSG for a path not starting with '/', a bad or
 * truncated %-escape, an encoded NUL, an encoded slash when refused, or a
 * ".." that climbs above the root, and -ENOBUFS when out is too small.
 */
#define HTTP_PATH_REJECT_ENCODED_SLASH 1u
ssize_t http_path_normalize(const char *in, size_t len, char *out, size_t out_size, unsigned flags);

#endif
