/* SPDX-License-Identifier: MIT */
/* proxy_body: a request body buffered whole, in memory or a temporary file (see proxy_body.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proxy_body.h"
#include "util.h"

void reqbody_init(struct reqbody *b)
{
        *b = (struct reqbody){.fd = -1};
}

static int write_all(int fd, const char *p, size_t n, uint64_t off)
{
        while (n > 0) {
                ssize_t k = pwrite(fd, p, n, (off_t) off);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                p += k;
                n -= (size_t) k;
                off += (uint64_t) k;
        }
        return 0;
}

/* Moves what is in memory to a new temporary file; mem becomes the send chunk. */
static int spill(struct reqbody *b, const char *dir)
{
        int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

        if (fd < 0)
                return -errno;
        int r = b->len ? write_all(fd, b->mem, (size_t) b->len, 0) : 0;
        if (r < 0) {
                (void) close(fd);
                return r;
        }
        b->fd = fd;
        b->chunk_at = 0;
        b->chunk_len = 0;
        return 0;
}

static int mem_reserve(struct reqbody *b, size_t need)
{
        if (need <= b->mem_cap)
                return 0;
        size_t cap = b->mem_cap ? b->mem_cap : 4096;
        while (cap < need)
                cap *= 2;
        char *m = realloc(b->mem, cap);
        if (!m)
                return -ENOMEM;
        b->mem = m;
        b->mem_cap = cap;
        return 0;
}

int reqbody_add(struct reqbody *b, const char *p, size_t n, size_t mem_max, const char *dir)
{
        int r;

        if (n == 0)
                return 0;
        if (b->fd < 0 && b->len + n > mem_max && (r = spill(b, dir)) < 0)
                return r;
        if (b->fd >= 0) {
                r = write_all(b->fd, p, n, b->len);
        } else {
                r = mem_reserve(b, (size_t) b->len + n);
                if (r == 0)
                        memcpy(b->mem + b->len, p, n);
        }
        if (r == 0)
                b->len += n;
        return r;
}

ssize_t reqbody_next(struct reqbody *b, const char **ret)
{
        if (b->sent >= b->len)
                return 0;
        if (b->fd < 0) {
                *ret = b->mem + b->sent;
                return (ssize_t) (b->len - b->sent);
        }
        if (b->sent < b->chunk_at || b->sent >= b->chunk_at + b->chunk_len) {
                size_t want = (size_t) min_u64(REQBODY_CHUNK, b->len - b->sent);
                ssize_t k;
                int r = mem_reserve(b, REQBODY_CHUNK);
                if (r < 0)
                        return r;
                do
                        k = pread(b->fd, b->mem, want, (off_t) b->sent);
                while (k < 0 && errno == EINTR);
                if (k < 0)
                        return -errno;
                if (k == 0)
                        return -EIO; /* shorter than what was written: cannot be */
                b->chunk_at = b->sent;
                b->chunk_len = (size_t) k;
        }
        size_t off = (size_t) (b->sent - b->chunk_at);
        *ret = b->mem + off;
        return (ssize_t) (b->chunk_len - off);
}

void reqbody_sent(struct reqbody *b, size_t n)
{
        b->sent += n;
}

void reqbody_rewind(struct reqbody *b)
{
        b->sent = 0;
}

void reqbody_free(struct reqbody *b)
{
        free(b->mem);
        if (b->fd >= 0)
                (void) close(b->fd);
        reqbody_init(b);
}
