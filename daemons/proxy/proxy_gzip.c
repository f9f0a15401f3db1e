/* SPDX-License-Identifier: MIT */
/*
 * proxy_gzip.c: on-the-fly gzip of relayed response bodies (see proxy_gzip.h).
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "proxy_gzip.h"
#include "util.h"

/*
 * zlib's largest window (32 KiB) and its default memLevel: about 256 KiB
 * of state per stream, which is why streams are pooled and reset rather
 * than made for each response.
 */
#define GZIP_WINDOW_BITS (15 + 16) /* + 16: a gzip header and trailer, not zlib's */
#define GZIP_MEM_LEVEL 8
#define GZIP_POOL_MAX 8
#define GZIP_OUT_CHUNK 16384

struct gzstream {
        z_stream z;
        int level;
        struct gzstream *next;
};

bool gzip_request_accepts(const struct gzip_conf *g, const struct http_request *req)
{
        const struct http_header *ae;

        if (req->minor_version < g->min_minor)
                return false;
        if (!g->proxied && http_find_header(req, "Via"))
                return false;
        ae = http_find_header(req, "Accept-Encoding");
        return ae && http_list_has_token(ae->value, "gzip");
}

bool gzip_type_listed(const char *types, struct span content_type)
{
        const char *t = content_type.ptr, *end = t + content_type.len;
        size_t len;

        while (t < end && (*t == ' ' || *t == '\t'))
                t++;
        len = 0;
        while (t + len < end && t[len] != ';' && t[len] != ' ' && t[len] != '\t')
                len++;
        if (len == 0 || !types)
                return false;
        for (const char *p = types; *p;) {
                size_t n = strcspn(p, " ");
                if ((n == 1 && *p == '*') || (n == len && strncasecmp(p, t, len) == 0))
                        return true;
                p += n;
                if (*p == ' ')
                        p++;
        }
        return false;
}

bool gzip_response_wanted(const struct gzip_conf *g, const struct http_response *resp,
                          bool head_request)
{
        const struct http_header *ct;

        if (resp->status != 200 && resp->status != 403 && resp->status != 404)
                return false;
        if (head_request) {
                /* No body follows, but the head says what a GET would get. */
                if (http_response_header(resp, "Content-Length") &&
                    resp->content_length < g->min_length)
                        return false;
        } else if (resp->body == HTTP_RESP_NONE ||
                   (resp->body == HTTP_RESP_LENGTH && resp->content_length < g->min_length)) {
                return false;
        }
        /* Already encoded by the application: never twice. */
        if (http_response_header(resp, "Content-Encoding"))
                return false;
        ct = http_response_header(resp, "Content-Type");
        return ct && gzip_type_listed(g->types, ct->value);
}

struct gzstream *gzip_take(struct gzip_pool *pool, int level)
{
        struct gzstream *z = pool->free;

        if (z) {
                pool->free = z->next;
                pool->n_free--;
                /* A fresh stream may change its level before its first byte. */
                if (z->level != level && deflateParams(&z->z, level, Z_DEFAULT_STRATEGY) != Z_OK) {
                        deflateEnd(&z->z);
                        free(z);
                        z = NULL;
                } else {
                        z->level = level;
                        return z;
                }
        }
        z = calloc(1, sizeof(*z));
        if (!z)
                return NULL;
        if (deflateInit2(&z->z, level, Z_DEFLATED, GZIP_WINDOW_BITS, GZIP_MEM_LEVEL,
                         Z_DEFAULT_STRATEGY) != Z_OK) {
                free(z);
                return NULL;
        }
        z->level = level;
        return z;
}

void gzip_give(struct gzip_pool *pool, struct gzstream **zp)
{
        struct gzstream *z = *zp;

        if (!z)
                return;
        *zp = NULL;
        if (pool->n_free < GZIP_POOL_MAX && deflateReset(&z->z) == Z_OK) {
                z->next = pool->free;
                pool->free = z;
                pool->n_free++;
                return;
        }
        deflateEnd(&z->z);
        free(z);
}

void gzip_pool_done(struct gzip_pool *pool)
{
        while (pool->free) {
                struct gzstream *z = pool->free;
                pool->free = z->next;
                deflateEnd(&z->z);
                free(z);
        }
        pool->n_free = 0;
}

int gzip_deflate(struct gzstream *z, const char *p, size_t n, bool finish, gzip_out_fn out,
                 void *arg)
{
        char buf[GZIP_OUT_CHUNK];
        int flush = finish ? Z_FINISH : Z_SYNC_FLUSH;

        if (n == 0 && !finish)
                return 0; /* a flush of nothing would still cost an empty block */
        z->z.next_in = (Bytef *) (uintptr_t) p;
        z->z.avail_in = 0;
        for (;;) {
                /* avail_in is 32 bits wide: a larger piece goes in turns. */
                if (z->z.avail_in == 0 && n > 0) {
                        z->z.avail_in = (uInt) min_size(n, 1u << 30);
                        n -= z->z.avail_in;
                }
                z->z.next_out = (Bytef *) buf;
                z->z.avail_out = sizeof(buf);
                int r = deflate(&z->z, n > 0 ? Z_NO_FLUSH : flush);
                if (r == Z_STREAM_ERROR)
                        return -EIO;
                size_t have = sizeof(buf) - z->z.avail_out;
                if (have > 0 && !out(arg, buf, have))
                        return -ENOMEM;
                if (r == Z_BUF_ERROR && have == 0)
                        return -EIO; /* no progress possible: never spin */
                if (n > 0)
                        continue;
                /* Done when the stream ended, or a flush left room (all of it is out). */
                if (finish ? r == Z_STREAM_END : z->z.avail_out > 0)
                        return 0;
        }
}
