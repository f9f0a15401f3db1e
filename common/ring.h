/* SPDX-License-Identifier: MIT */
/*
 * ring: the io_uring event loop every wharf daemon runs, one per thread.
 *
 * Every submission carries a pointer to a struct ring_op that lives inside
 * the object the operation belongs to (a connection, a listener); the
 * completion calls op->handler, which recovers its owner with
 * container_of(). Never an fd in user_data, never state indexed by fd: fd
 * numbers are reused, late completions are not. Submissions whose
 * completion nobody needs (cancellations) carry NULL and are skipped.
 *
 * The ring is created with SINGLE_ISSUER|DEFER_TASKRUN (completions run
 * only when this thread waits, so they arrive in batches), falling back to
 * COOP_TASKRUN on kernels that refuse it; never SQPOLL. ring_init() probes
 * the opcodes wharf needs and names the first missing one, so a kernel or
 * seccomp policy without io_uring support is a clear error at start.
 *
 * Provided-buffer rings (struct ring_bufs) feed multishot receives: the
 * kernel picks a buffer when data arrives, so an idle connection holds no
 * receive memory. A buffer goes back with ring_bufs_recycle() once its
 * bytes have been consumed or copied.
 */
#ifndef WHARF_RING_H
#define WHARF_RING_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ring_op;
typedef void (*ring_handler)(struct ring_op *op, int res, unsigned cqe_flags);

struct ring_op {
        ring_handler handler;
};

struct ring {
        struct io_uring uring;
        bool defer_taskrun; /* SINGLE_ISSUER|DEFER_TASKRUN, else COOP_TASKRUN */
        unsigned pending;   /* SQEs prepared since the last submit */
};

/*
 * Creates a ring with room for entries submissions. Returns 0, or a
 * negative errno; on -EOPNOTSUPP, *ret_missing (when not NULL) names the
 * operation or feature the kernel lacks.
 */
int ring_init(struct ring *r, unsigned entries, const char **ret_missing);
void ring_done(struct ring *r);

/*
 * A submission slot, with user_data set to op (NULL: no completion
 * wanted). When the submission queue is full it submits what is queued
 * and tries again; NULL only if even that fails (the ring is broken).
 */
struct io_uring_sqe *ring_sqe(struct ring *r, struct ring_op *op);

/*
 * Submits what is queued, waits until at least one completion arrives or
 * timeout_usec passes, and runs the handlers of every completion that is
 * ready. Returns the number of completions handled (0 on timeout) or a
 * negative errno from the kernel (-EINTR is reported as 0).
 */
int ring_run(struct ring *r, uint64_t timeout_usec);

/* A ring of provided buffers of one size, registered under group id bgid. */
struct ring_bufs {
        struct io_uring_buf_ring *br;
        char *base;
        unsigned count; /* a power of two */
        unsigned size;
        uint16_t bgid;
};

/* Returns 0 or a negative errno (-EOPNOTSUPP when the kernel has no buffer rings). */
int ring_bufs_init(struct ring *r, struct ring_bufs *b, uint16_t bgid, unsigned count,
                   unsigned size);
void ring_bufs_done(struct ring *r, struct ring_bufs *b);

static inline char *ring_bufs_get(const struct ring_bufs *b, unsigned bid)
{
        return b->base + (size_t) bid * b->size;
}

/* Gives buffer bid back to the kernel. */
void ring_bufs_recycle(struct ring_bufs *b, unsigned bid);

/* The buffer id a completion with IORING_CQE_F_BUFFER used. */
static inline unsigned ring_cqe_bid(unsigned cqe_flags)
{
        return cqe_flags >> IORING_CQE_BUFFER_SHIFT;
}

#endif
