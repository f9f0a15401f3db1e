/* SPDX-License-Identifier: MIT */
/*
 * proxy_gzip.c: on-the-fly gzip of relayed response bodies (see proxy_gzip.h).
 */
#include <ctype.h>
#include <errno.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
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

/*
 * The next word of a gzip_disable value into buf: up to a space, or between
 * quotes (" or ', nothing escaped inside). Returns its length, 0 at the end,
 * or -EINVAL for an open quote or a word that does not fit.
 */
static int next_word(const char **pp, char *buf, size_t size)
{
        const char *p = *pp;
        size_t len = 0;

        while (*p == ' ' || *p == '\t')
                p++;
        if (!*p) {
                *pp = p;
                return 0;
        }
        if (*p == '"' || *p == '\'') {
                const char *end = strchr(p + 1, *p);
                if (!end)
                        return -EINVAL;
                len = (size_t) (end - p - 1);
                if (len + 1 > size)
                        return -EINVAL;
                memcpy(buf, p + 1, len);
                p = end + 1;
        } else {
                len = strcspn(p, " \t");
                if (len + 1 > size)
                        return -EINVAL;
                memcpy(buf, p, len);
                p += len;
        }
        buf[len] = '\0';
        *pp = p;
        return (int) len;
}

/*
 * Why an expression is refused before regcomp() sees it, or NULL: what PCRE
 * reads and a POSIX expression would read otherwise (never silently), a
 * back-reference (which can make a match take exponential time, for each
 * request), or repetition counts that would compile to a huge automaton
 * (each {n} copies what it repeats; their product bounds the copies).
 */
static const char *expression_refused(const char *re)
{
        uint64_t copies = 1;

        if (strstr(re, "(?"))
                return "has (?...), which is PCRE's";
        for (const char *p = re; (p = strchr(p, '\\')) && p[1]; p += 2) {
                if (p[1] == 'd')
                        return "has \\d, which is PCRE's (write [0-9])";
                if (strchr("DhHvVRNXKQE", p[1]))
                        return "has an escape that is PCRE's";
                if (p[1] >= '1' && p[1] <= '9')
                        return "has a back-reference (a match could take exponential time)";
        }
        for (const char *p = re; (p = strchr(p, '{')); p++) {
                char *end;
                unsigned long n = strtoul(p + 1, &end, 10);
                if (end == p + 1)
                        continue;
                if (*end == ',' && end[1] != '}')
                        n = strtoul(end + 1, &end, 10);
                copies *= n > 0 ? (n < 65536 ? n : 65536) : 1;
                if (copies * strlen(re) > 65536)
                        return "repeats too much to compile (the product of its {n} counts "
                               "times its length is over 65536)";
        }
        return NULL;
}

int gzip_disable_add(struct gzip_conf *g, const char *value, char *why, size_t why_size)
{
        char word[1024];
        const char *p = value;
        int len, n_words = 0;

        while ((len = next_word(&p, word, sizeof(word))) > 0) {
                const char *refused;
                struct regex_list *l;
                int r;

                n_words++;
                if (streq(word, "msie6")) {
                        g->disable_msie6 = true;
                        continue;
                }
                refused = expression_refused(word);
                if (refused) {
                        snprintf(why, why_size,
                                 "'%s' %s; gzip_disable takes POSIX extended regular expressions",
                                 word, refused);
                        return -EINVAL;
                }
                size_t n = g->disable ? g->disable->n : 0;
                l = realloc(g->disable, sizeof(*l) + (n + 1) * sizeof(regex_t));
                if (!l)
                        return -ENOMEM;
                l->n = n;
                g->disable = l;
                r = regcomp(&l->re[n], word, REG_EXTENDED | REG_ICASE | REG_NOSUB);
                if (r == REG_ESPACE)
                        return -ENOMEM;
                if (r != 0) {
                        char err[128];
                        regerror(r, &l->re[n], err, sizeof(err));
                        snprintf(why, why_size, "'%s' is not a regular expression: %s", word, err);
                        return -EINVAL;
                }
                l->n = n + 1;
        }
        if (len < 0 || n_words == 0) {
                snprintf(why, why_size, "'%s' is not msie6 or regular expressions, %s", value,
                         len < 0 ? "a quote left open or a word over 1023 bytes" : "none given");
                return -EINVAL;
        }
        return 0;
}

void gzip_disable_done(struct gzip_conf *g)
{
        if (g->disable) {
                for (size_t i = 0; i < g->disable->n; i++)
                        regfree(&g->disable->re[i]);
                free(g->disable);
                g->disable = NULL;
        }
        g->disable_msie6 = false;
}

/* memmem for a span: where needle starts in [p, end), or NULL. */
static const char *span_find(const char *p, const char *end, const char *needle)
{
        return end > p ? memmem(p, (size_t) (end - p), needle, strlen(needle)) : NULL;
}

/*
 * nginx's msie6: "MSIE 4.", "MSIE 5." or "MSIE 6." with room for more after
 * it, except 6 with SV1 after the version (XP SP2, whose gzip works), and
 * except anything that says Opera (which once claimed to be MSIE).
 */
static bool ua_is_msie6(struct span ua)
{
        const char *end = ua.ptr + ua.len;
        const char *m = span_find(ua.ptr, end, "MSIE ");

        if (!m || m + 7 >= end || m[6] != '.' || span_find(ua.ptr, end, "Opera"))
                return false;
        if (m[5] == '4' || m[5] == '5')
                return true;
        return m[5] == '6' && !span_find(m + 8, end, "SV1");
}

bool gzip_disabled(const struct gzip_conf *g, const struct http_request *req)
{
        const struct http_header *h;

        if (!g->disable_msie6 && !g->disable)
                return false;
        /* The first User-Agent line, as nginx keeps it. */
        h = http_find_header(req, "User-Agent");
        if (!h)
                return false;
        if (g->disable_msie6 && ua_is_msie6(h->value))
                return true;
        for (size_t i = 0; g->disable && i < g->disable->n; i++) {
                /* glibc's REG_STARTEND: the value is matched where it lies, unterminated. */
                regmatch_t m = {.rm_so = 0, .rm_eo = (regoff_t) h->value.len};
                if (regexec(&g->disable->re[i], h->value.len ? h->value.ptr : "", 1, &m,
                            REG_STARTEND) == 0)
                        return true;
        }
        return false;
}

bool gzip_request_accepts(const struct gzip_conf *g, const struct http_request *req)
{
        const struct http_header *ae;

        if (req->minor_version < g->min_minor)
                return false;
        if (!g->proxied && http_find_header(req, "Via"))
                return false;
        ae = http_find_header(req, "Accept-Encoding");
        return ae && http_list_has_token(ae->value, "gzip") && !gzip_disabled(g, req);
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
