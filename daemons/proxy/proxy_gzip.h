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

#include <regex.h>
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

/*
 * gzip_disable, nginx's: its words (each may be quoted with " or ') are
 * regular expressions matched against the request's User-Agent, ignoring
 * case, or msie6 for Internet Explorer 4 to 6 as nginx tells it (not 6 with
 * SV1, not Opera). The expressions are POSIX extended ones; what only PCRE
 * has (\d, (?...)) is refused rather than read differently. Returns 0,
 * -EINVAL with why set to a message naming the bad word, or -ENOMEM.
 */
struct regex_list {
        size_t n;
        regex_t re[];
};

int gzip_disable_add(struct gzip_conf *g, const char *value, char *why, size_t why_size);
void gzip_disable_done(struct gzip_conf *g);
/* Does the request's User-Agent turn gzip off (gzip_disable)? */
bool gzip_disabled(const struct gzip_conf *g, const struct http_request *req);

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
