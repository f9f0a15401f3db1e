/* SPDX-License-Identifier: MIT */
/*
 * guard.h: buffers that end right before a PROT_NONE page, so that a parser
 * or writer touching one byte too far crashes the test at once (as
 * picohttpparser's tests do). One area per test program, set up once.
 */
#ifndef WHARF_TEST_GUARD_H
#define WHARF_TEST_GUARD_H

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static char *guard_area;
static size_t guard_area_size;

/* Maps size usable bytes followed by an inaccessible page. */
static inline void guard_setup_size(size_t size)
{
        size_t page = (size_t) sysconf(_SC_PAGESIZE);
        size_t area = (size + page - 1) / page * page;
        char *m;

        m = mmap(NULL, area + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED || mprotect(m + area, page, PROT_NONE) < 0) {
                perror("guard page");
                exit(EXIT_FAILURE);
        }
        guard_area = m + area - size;
        guard_area_size = size;
}

/* cap bytes that end where the guard page begins. */
static inline char *guarded(size_t cap)
{
        assert(guard_area && cap <= guard_area_size);
        return guard_area + guard_area_size - cap;
}

/* A copy of data that ends where the guard page begins. */
static inline char *place(const void *data, size_t len)
{
        char *p = guarded(len);

        memmove(p, data, len);
        return p;
}

#endif
