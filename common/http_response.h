/* SPDX-License-Identifier: MIT */
/*
 * http_response: the strict, incremental parser of an HTTP/1.x response
 * head, for what upstreams send back to wharf-proxy (an HTTP server, or a
 * uwsgi server, which answers with a raw HTTP head too).
 *
 * It follows the rules of the request parser (http_parse.h): no allocation,
 * spans into the caller's buffer, CRLF line ends only, no obs-fold, no
 * whitespace before a colon, no control characters in values, and any
 * framing two readers could disagree on is refused (Content-Length with
 * Transfer-Encoding, differing lengths). The framing of the body follows
 * RFC 9112 6.3.
 */
#ifndef WHARF_HTTP_RESPONSE_H
#define WHARF_HTTP_RESPONSE_H

#include "http_parse.h"

enum http_resp_body {
        HTTP_RESP_NONE,    /* no body: HEAD, 1xx, 204, 304 */
        HTTP_RESP_LENGTH,  /* content_length bytes */
        HTTP_RESP_CHUNKED, /* chunked coding: http_chunked_decode() */
        HTTP_RESP_CLOSE,   /* the body runs until the upstream closes */
        _HTTP_RESP_BODY_MAX
};

struct http_response {
        int minor_version;
        int status;         /* 100..999 */
        struct span reason; /* may be empty */
        struct http_header headers[HTTP_MAX_HEADERS];
        size_t n_headers;
        enum http_resp_body body;
        uint64_t content_length; /* with HTTP_RESP_LENGTH */
        bool keep_alive;         /* the connection may carry another exchange */
        size_t head_len;
};

/*
 * Parses one response head from buf[0..len). head_request: the request was
 * HEAD, so no body follows whatever the head says.
 *
 * Returns the head's length, -EAGAIN when it is not complete yet, -EBADMSG
 * when it is malformed or its framing ambiguous, -E2BIG past max_head bytes
 * or HTTP_MAX_HEADERS lines, -ENOSYS for a version other than HTTP/1.0 and
 * HTTP/1.1. ret holds a result only when it succeeds.
 */
ssize_t http_parse_response(const char *buf, size_t len, size_t max_head, bool head_request,
                            struct http_response *ret);

/* The first header with that name (case-insensitive), or NULL. */
const struct http_header *http_response_header(const struct http_response *resp, const char *name);

#endif
