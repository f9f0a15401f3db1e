/* SPDX-License-Identifier: MIT */
/*
 * wsgi_body: the request body. It streams from the socket as wsgi.input
 * reads it, or it is read whole before the application runs (uWSGI's
 * post-buffering, and every chunked HTTP body, decoded): in memory up to a
 * threshold, beyond it in an unlinked temporary file, so that a large
 * upload costs disk instead of the worker's memory and no file is ever left
 * behind, whatever happens to the worker.
 */
#include <fcntl.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "http_parse.h"
#include "wsgi.h"

/* Bytes read from the socket at a time while a body is read whole. */
#define SPOOL_CHUNK 65536

void wsgi_spool_init(struct wsgi_spool *s, uint64_t threshold)
{
        *s = (struct wsgi_spool){.fd = -1, .threshold = threshold};
}

void wsgi_spool_done(struct wsgi_spool *s)
{
        free(s->mem);
        free(s->rbuf);
        if (s->fd >= 0)
                close(s->fd);
        wsgi_spool_init(s, s->threshold);
}

static const char *spool_dir(void)
{
        const char *d = getenv("TMPDIR");
        return d && d[0] == '/' ? d : "/tmp";
}

/* An unlinked file in TMPDIR (or /tmp). Returns the fd or -errno. */
static int open_unlinked(void)
{
        const char *dir = spool_dir();
        char path[PATH_MAX];
        int fd;

        fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0)
                return fd;
        /* File systems without O_TMPFILE: create, then unlink at once. */
        if (errno != EOPNOTSUPP && errno != EISDIR)
                return -errno;
        if (snprintf(path, sizeof(path), "%s/wharf-wsgi-body-XXXXXX", dir) >= (int) sizeof(path))
                return -ENAMETOOLONG;
        fd = mkostemp(path, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (unlink(path) < 0) {
                int e = -errno;
                close(fd);
                return e;
        }
        return fd;
}

static int write_all(int fd, const char *data, size_t len)
{
        while (len > 0) {
                ssize_t n = write(fd, data, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                data += n;
                len -= (size_t) n;
        }
        return 0;
}

int wsgi_spool_to_file(struct wsgi_spool *s)
{
        int fd, r;

        if (s->fd >= 0)
                return 0;
        s->rbuf = malloc(WSGI_SPOOL_RBUF);
        if (!s->rbuf)
                return -ENOMEM;
        fd = open_unlinked();
        if (fd < 0)
                return fd;
        r = write_all(fd, s->mem, s->mem_len);
        if (r < 0) {
                close(fd);
                return r;
        }
        s->fd = fd;
        free(s->mem);
        s->mem = NULL;
        s->mem_len = s->mem_cap = 0;
        return 0;
}

int wsgi_spool_append(struct wsgi_spool *s, const char *data, size_t len)
{
        int r;

        if (len == 0)
                return 0;
        if (s->fd < 0 && s->size + len > s->threshold) {
                r = wsgi_spool_to_file(s);
                if (r < 0)
                        return r;
        }
        if (s->fd >= 0) {
                r = write_all(s->fd, data, len);
                if (r < 0)
                        return r;
        } else {
                if (s->mem_len + len > s->mem_cap) {
                        size_t cap = s->mem_cap ? s->mem_cap : 16384;
                        while (cap < s->mem_len + len)
                                cap *= 2;
                        char *m = realloc(s->mem, min_size(cap, (size_t) s->threshold));
                        if (!m)
                                return -ENOMEM;
                        s->mem = m;
                        s->mem_cap = min_size(cap, (size_t) s->threshold);
                }
                memcpy(s->mem + s->mem_len, data, len);
                s->mem_len += len;
        }
        s->size += len;
        return 0;
}

ssize_t wsgi_spool_read(struct wsgi_spool *s, char *dst, size_t max)
{
        size_t n = (size_t) min_u64(max, s->size - s->read_pos);
        ssize_t k;

        if (n == 0)
                return 0;
        if (s->fd < 0) {
                memcpy(dst, s->mem + s->read_pos, n);
                k = (ssize_t) n;
        } else {
                do
                        k = pread(s->fd, dst, n, (off_t) s->read_pos);
                while (k < 0 && errno == EINTR);
                if (k < 0)
                        return -errno;
                if (k == 0)
                        return -EIO; /* the file is shorter than what was written */
        }
        s->read_pos += (uint64_t) k;
        return k;
}

/* ---- reading the body for wsgi.input ---- */

ssize_t wsgi_req_fill_body(struct wsgi_req *req)
{
        struct wsgi_conn *c = req->c;
        ssize_t n;

        if (req->body_pos < req->body_end)
                return (ssize_t) (req->body_end - req->body_pos);
        if (req->body_left == 0)
                return 0;
        if (req->spool) {
                /* Only a body in a file has bytes left here: one in memory is all in body_buf. */
                n = wsgi_spool_read(req->spool, req->spool->rbuf,
                                    min_size(WSGI_SPOOL_RBUF, req->body_left));
                if (n <= 0) {
                        req->body_error = true;
                        return n == 0 ? -EIO : n;
                }
                req->body_buf = req->spool->rbuf;
                req->body_pos = 0;
                req->body_end = (size_t) n;
                req->body_left -= (uint64_t) n;
                return n;
        }
        /* Nothing after the body is in the buffer while body_left > 0. */
        n = wsgi_conn_recv(c, c->buf, min_size(c->cap, req->body_left));
        if (n <= 0) {
                req->body_error = true;
                return n == 0 ? -ECONNRESET : n;
        }
        req->body_buf = c->buf;
        req->body_pos = 0;
        req->body_end = (size_t) n;
        req->body_left -= (uint64_t) n;
        c->len = (size_t) n;
        return n;
}

ssize_t wsgi_req_read_body(struct wsgi_req *req, char *dst, size_t max)
{
        size_t buffered = req->body_end - req->body_pos;
        ssize_t n;

        if (buffered > 0) {
                n = (ssize_t) min_size(buffered, max);
                memcpy(dst, req->body_buf + req->body_pos, (size_t) n);
                req->body_pos += (size_t) n;
                return n;
        }
        if (req->body_left == 0)
                return 0;
        /* Large reads go straight into the caller's bytes object. */
        if (req->spool)
                n = wsgi_spool_read(req->spool, dst, min_size(max, req->body_left));
        else
                n = wsgi_conn_recv(req->c, dst, min_size(max, req->body_left));
        if (n <= 0) {
                req->body_error = true;
                return n == 0 ? -ECONNRESET : n;
        }
        req->body_left -= (uint64_t) n;
        return n;
}

/* ---- reading the body whole ---- */

/* Nothing follows the body in c->buf: it goes on past what has arrived. */
int wsgi_spool_body(struct wsgi_conn *c, size_t head_len, uint64_t body_len, struct wsgi_spool *sp)
{
        char scratch[SPOOL_CHUNK];
        uint64_t left = body_len - (c->len - head_len);
        int r;

        if (body_len > sp->threshold) {
                r = wsgi_spool_to_file(sp);
                if (r < 0)
                        return r;
        }
        r = wsgi_spool_append(sp, c->buf + head_len, c->len - head_len);
        if (r < 0)
                return r;
        c->len = head_len;
        while (left > 0) {
                ssize_t n = wsgi_conn_recv(c, scratch, min_size(sizeof(scratch), left));
                if (n <= 0)
                        return n == 0 ? -ECONNRESET : (int) n;
                r = wsgi_spool_append(sp, scratch, (size_t) n);
                if (r < 0)
                        return r;
                left -= (uint64_t) n;
        }
        return 0;
}

/* The head's bytes in c->buf stay as they are: the request's spans point into them. */
ssize_t wsgi_read_chunked(struct wsgi_conn *c, size_t head, const struct wsgi_settings *s,
                          struct wsgi_spool *sp, bool *keep_alive)
{
        char scratch[SPOOL_CHUNK];
        struct http_chunked ch;
        char *in = c->buf + head;
        size_t len = c->len - head;
        int r;

        wsgi_spool_init(sp, s->post_buffering > 0 ? s->post_buffering : WSGI_CHUNKED_MEMORY);
        http_chunked_init(&ch, s->limit_post);
        c->len = head;
        for (;;) {
                size_t data = 0;
                ssize_t end = http_chunked_decode(&ch, in, len, &data);
                if (end < 0 && end != -EAGAIN)
                        return end;
                r = wsgi_spool_append(sp, in, data);
                if (r < 0)
                        return r;
                if (end >= 0) {
                        size_t rest = len - (size_t) end;
                        if (rest > c->cap - head) {
                                *keep_alive = false;
                                rest = 0;
                        }
                        memmove(c->buf + head, in + end, rest);
                        c->len = head + rest;
                        return 0;
                }
                ssize_t n = wsgi_conn_recv(c, scratch, sizeof(scratch));
                if (n <= 0)
                        return n == 0 ? -ECONNRESET : n;
                in = scratch;
                len = (size_t) n;
        }
}
