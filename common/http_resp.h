/* SPDX-License-Identifier: MIT */
/*
 * http_resp: writing HTTP/1.1 response heads, the single errno -> status
 * table, reason phrases and HTTP dates.
 *
 * struct http_writer appends into a caller-owned buffer and never
 * allocates. It latches the first overflow, so a sequence of writes needs
 * one check at the end: http_write_end() returns -ENOBUFS then.
 */
#ifndef WHARF_HTTP_RESP_H
#define WHARF_HTTP_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "util.h"

#define HTTP_DATE_LEN 29 /* "Sun, 06 Nov 1994 08:49:37 GMT" */

struct http_writer {
        char *buf;
        size_t len;
        size_t cap;
        bool overflow;
};

static inline void http_writer_init(struct http_writer *w, char *buf, size_t cap)
{
        w->buf = buf;
        w->len = 0;
        w->cap = cap;
        w->overflow = false;
}

/* "HTTP/1.<minor> <status> <reason>\r\n" */
void http_write_status(struct http_writer *w, int minor_version, int status);
void http_write_header(struct http_writer *w, const char *name, struct span value);
void http_write_header_str(struct http_writer *w, const char *name, const char *value);
void http_write_header_u64(struct http_writer *w, const char *name, uint64_t value);
/* Raw bytes (for a body or a prebuilt header block). */
void http_write_raw(struct http_writer *w, const void *data, size_t len);
/* Ends the head with CRLF. Returns the total length, or -ENOBUFS on overflow. */
ssize_t http_write_end(struct http_writer *w);

/*
 * A complete small error response: status line, Date, Server (when
 * server_name is not NULL), Content-Type text/html, Content-Length,
 * Connection: close|keep-alive, and a short HTML page naming the status.
 * extra_headers, when not NULL, is inserted verbatim (each line ending in
 * CRLF), e.g. "Allow: GET, HEAD\r\n". head_only omits the body (HEAD).
 * Returns the length or -ENOBUFS.
 */
ssize_t http_write_error(struct http_writer *w, int minor_version, int status, bool keep_alive,
                         const char *server_name, const char *date, const char *extra_headers,
                         bool head_only);

/*
 * Maps a parser or I/O errno to the status a client should see:
 * -EBADMSG 400, -E2BIG 431, -EFBIG 413, -EMSGSIZE 414, -ENOSYS 505,
 * -ENOENT 404, -EACCES/-EPERM 403, -ETIMEDOUT 408, -EMFILE/-ENFILE/-ENOMEM 503,
 * anything else 500.
 */
int http_status_from_errno(int neg_errno);

/* "OK", "Not Found", ...; "Unknown" for a code without a table entry. */
const char *http_status_reason(int status);

/* IMF-fixdate of t into out (HTTP_DATE_LEN + 1 bytes, NUL-terminated). */
void http_date_format(time_t t, char out[HTTP_DATE_LEN + 1]);

/*
 * Parses an HTTP-date in any of the three forms RFC 9110 5.6.7 requires
 * recipients to accept (IMF-fixdate, RFC 850, asctime).
 * Returns 0 and *ret, or -EINVAL.
 */
int http_date_parse(struct span s, time_t *ret);

#endif
