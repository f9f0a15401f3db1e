/* SPDX-License-Identifier: MIT */
/*
 * proxy_body: a request body read whole before the upstream sees it, as
 * nginx buffers request bodies, so that a slow client never holds an
 * application worker: in memory up to a limit (client_body_buffer_size),
 * beyond it in an unlinked temporary file (O_TMPFILE) that goes with the
 * request. The file is written with plain pwrite: it lives in the page
 * cache, as nginx's client_body_temp_path does. The exchange sends it to the
 * upstream with sendfile(2) (proxy_upstream.c); reqbody_next() reads it
 * back with pread only where sendfile cannot.
 */
#ifndef WHARF_PROXY_BODY_H
#define WHARF_PROXY_BODY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define REQBODY_CHUNK (64 * 1024) /* read from the file per send */

struct reqbody {
        char *mem;         /* the body while it is in memory; then the chunk being sent */
        size_t mem_cap;    /* bytes allocated at mem */
        int fd;            /* the temporary file, or -1 */
        uint64_t len;      /* bytes stored */
        uint64_t sent;     /* bytes the upstream has taken */
        uint64_t chunk_at; /* with a file: the offset of what mem holds */
        size_t chunk_len;
};

/* An empty body (fd -1): what a zeroed one must be set to before use. */
void reqbody_init(struct reqbody *b);

/*
 * Appends p[0..n). Past mem_max bytes the body moves to a new temporary file
 * in dir. Returns 0, or -errno (the body is then unusable: answer 500).
 */
int reqbody_add(struct reqbody *b, const char *p, size_t n, size_t mem_max, const char *dir);

/*
 * The next bytes to send, from b->sent on: *ret points at them (valid until
 * the next call). Returns how many (0: all sent), or -errno from the file.
 */
ssize_t reqbody_next(struct reqbody *b, const char **ret);

/* The upstream took n bytes of what reqbody_next() gave. */
void reqbody_sent(struct reqbody *b, size_t n);

/* From the start again (another upstream server). */
void reqbody_rewind(struct reqbody *b);

/* Frees and closes; the body is empty again. */
void reqbody_free(struct reqbody *b);

#endif
