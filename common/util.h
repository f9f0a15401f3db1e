/* SPDX-License-Identifier: MIT */
/*
 * util.h: the few macros and inline helpers every module uses.
 *
 * Only constants, container_of, ARRAY_SIZE, cleanup attributes and TAKE_*
 * live here as macros; everything else is a static inline function.
 * Cleanup attributes are for function-local resources only, never for
 * memory or fds that an in-flight io_uring operation still uses.
 */
#ifndef WHARF_UTIL_H
#define WHARF_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

#define container_of(ptr, type, member) ((type *) (void *) ((char *) (ptr) -offsetof(type, member)))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)

/* Hand ownership on: returns the value and clears the variable. */
#define TAKE_PTR(p)                                                                                \
        ({                                                                                         \
                __typeof__(p) _p_ = (p);                                                           \
                (p) = NULL;                                                                        \
                _p_;                                                                               \
        })
#define TAKE_FD(fd)                                                                                \
        ({                                                                                         \
                int _fd_ = (fd);                                                                   \
                (fd) = -1;                                                                         \
                _fd_;                                                                              \
        })

static inline void freep(void *p)
{
        free(*(void **) p);
}

static inline void closep(int *fd)
{
        if (*fd >= 0)
                (void) close(*fd);
}

/* Closes fd if it is valid and returns -1, for `c->fd = safe_close(c->fd);`. */
static inline int safe_close(int fd)
{
        if (fd >= 0)
                (void) close(fd);
        return -1;
}

/*
 * A byte range inside someone else's buffer. Spans never own memory: each
 * struct that holds one says how long the bytes it points at stay valid.
 */
struct span {
        const char *ptr;
        size_t len;
};

static inline struct span span_from_str(const char *s)
{
        return (struct span){s, s ? strlen(s) : 0};
}

static inline bool span_eq(struct span s, const char *lit)
{
        size_t n = strlen(lit);
        return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

static inline bool span_eq_case(struct span s, const char *lit)
{
        size_t n = strlen(lit);
        return s.len == n && strncasecmp(s.ptr, lit, n) == 0;
}

static inline bool streq(const char *a, const char *b)
{
        return strcmp(a, b) == 0;
}

/* Monotonic clock in milliseconds and microseconds. */
static inline uint64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static inline uint64_t now_us(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

static inline size_t min_size(size_t a, size_t b)
{
        return a < b ? a : b;
}

static inline size_t max_size(size_t a, size_t b)
{
        return a > b ? a : b;
}

static inline uint64_t min_u64(uint64_t a, uint64_t b)
{
        return a < b ? a : b;
}

/*
 * Skips done bytes of an iovec array after a short write: returns the first
 * vector not yet fully written (adjusted in place) and updates *n.
 */
static inline struct iovec *iov_advance(struct iovec *iov, int *n, size_t done)
{
        while (*n > 0 && done >= iov->iov_len) {
                done -= iov->iov_len;
                iov++;
                (*n)--;
        }
        if (*n > 0) {
                iov->iov_base = (char *) iov->iov_base + done;
                iov->iov_len -= done;
        }
        return iov;
}

#endif
