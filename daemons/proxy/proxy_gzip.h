/* SPDX-License-Identifier: MIT */
/*
 * proxy_gzip: nginx's gzip filter for the responses wharf-proxy relays.
 *
 * Whether a response is compressed is decided as nginx decides it: the
 * response must be a 200, 403 or 404 with a body, no Content-Encoding of its
 * own, a Content-Type among gzip_types, and not be known to be shorter than
 * gzip_min_length (gzip_response_wanted); such a response gets Vary:
 * Accept-Encoding with gzip_vary, whoever asked. It is compressed when the
 * request accepts gzip (Accept-Encoding, q > 0), is at least
 * gzip_http_version, and carries no Via unless gzip_proxied is any
 * (gzip_request_accepts). A HEAD gets the head a GET would get: gzip, no
 * Content-Length.
 *
 * The body is compressed as it arrives and each piece is flushed at once
 * (Z_SYNC_FLUSH): a response the application streams reaches the client as
 * it is produced, for a few bytes per piece.
 */
#ifndef WHARF_PROXY_GZIP_H
#define WHARF_PROXY_GZIP_H

#include <stdbool.h>
#include <stddef.h>

#include "http_parse.h"
#include "http_response.h"
#include "proxy.h"

struct gzstream;

/* Idle deflate streams of one worker, reset for their next response. */
struct gzip_pool {
        struct gzstream *free;
        unsigned n_free;
};

bool gzip_request_accepts(const struct gzip_conf *g, const struct http_request *req);
/* head_request: resp answers a HEAD, whose head must still say what a GET would get. */
bool gzip_response_wanted(const struct gzip_conf *g, const struct http_response *resp,
                          bool head_request);
/* Is the type of a Content-Type value (parameters ignored) in types (gzip_conf.types)? */
bool gzip_type_listed(const char *types, struct span content_type);

/* A stream at level, or NULL when out of memory (the response then goes as it is). */
struct gzstream *gzip_take(struct gzip_pool *pool, int level);
/* Gives *z back (NULL: nothing to do) and sets it NULL. */
void gzip_give(struct gzip_pool *pool, struct gzstream **z);
void gzip_pool_done(struct gzip_pool *pool);

/*
 * Compresses n bytes and flushes them, or with finish ends the stream (the
 * gzip trailer); the output goes to out(arg, bytes, len) in pieces, which
 * returns false when it cannot take them. 0, or -ENOMEM, -EIO.
 */
typedef bool (*gzip_out_fn)(void *arg, const char *p, size_t n);
int gzip_deflate(struct gzstream *z, const char *p, size_t n, bool finish, gzip_out_fn out,
                 void *arg);

#endif
