/* SPDX-License-Identifier: MIT */
#include "ring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "util.h"

/* What every daemon uses; a kernel without one of these cannot run wharf. */
static const struct {
        int opcode;
        const char *name;
} required_ops[] = {
    {IORING_OP_ACCEPT, "accept"},
    {IORING_OP_RECV, "recv"},
    {IORING_OP_SEND, "send"},
    {IORING_OP_SENDMSG, "sendmsg"},
    {IORING_OP_RECVMSG, "recvmsg"},
    {IORING_OP_SPLICE, "splice"},
    {IORING_OP_READ, "read"},
    {IORING_OP_TIMEOUT, "timeout"},
    {IORING_OP_LINK_TIMEOUT, "link_timeout"},
    {IORING_OP_ASYNC_CANCEL, "async_cancel"},
    {IORING_OP_CONNECT, "connect"},
    {IORING_OP_SHUTDOWN, "shutdown"},
};

static int probe_ops(struct ring *r, const char **ret_missing)
{
        struct io_uring_probe *probe = io_uring_get_probe_ring(&r->uring);

        if (!probe) {
                if (ret_missing)
                        *ret_missing = "IORING_REGISTER_PROBE";
                return -EOPNOTSUPP;
        }
        for (size_t i = 0; i < ARRAY_SIZE(required_ops); i++) {
                if (!io_uring_opcode_supported(probe, required_ops[i].opcode)) {
                        io_uring_free_probe(probe);
                        if (ret_missing)
                                *ret_missing = required_ops[i].name;
                        return -EOPNOTSUPP;
                }
        }
        io_uring_free_probe(probe);
        return 0;
}

int ring_init(struct ring *r, unsigned entries, const char **ret_missing)
{
        struct io_uring_params p = {0};
        int ret;

        memset(r, 0, sizeof(*r));

        /*
         * The completion queue is sized well above the submission queue:
         * multishot accept and recv post many completions per submission,
         * and an overflowing CQ costs the kernel a slow path.
         */
        p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER |
                  IORING_SETUP_DEFER_TASKRUN;
        p.cq_entries = entries * 4;
        ret = io_uring_queue_init_params(entries, &r->uring, &p);
        if (ret == -EINVAL) {
                memset(&p, 0, sizeof(p));
                p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN;
                p.cq_entries = entries * 4;
                ret = io_uring_queue_init_params(entries, &r->uring, &p);
        } else if (ret == 0) {
                r->defer_taskrun = true;
        }
        if (ret < 0) {
                if (ret_missing)
                        *ret_missing = "io_uring_setup";
                return ret == -EPERM || ret == -ENOSYS ? -EOPNOTSUPP : ret;
        }
        if (!(p.features & IORING_FEAT_EXT_ARG) || !(p.features & IORING_FEAT_NODROP)) {
                io_uring_queue_exit(&r->uring);
                if (ret_missing)
                        *ret_missing = !(p.features & IORING_FEAT_EXT_ARG) ? "IORING_FEAT_EXT_ARG"
                                                                           : "IORING_FEAT_NODROP";
                return -EOPNOTSUPP;
        }
        ret = probe_ops(r, ret_missing);
        if (ret < 0) {
                io_uring_queue_exit(&r->uring);
                return ret;
        }
        return 0;
}

void ring_done(struct ring *r)
{
        io_uring_queue_exit(&r->uring);
}

struct io_uring_sqe *ring_sqe(struct ring *r, struct ring_op *op)
{
        struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);

        if (!sqe) {
                /* Full: hand the queued ones to the kernel and retry once. */
                if (io_uring_submit(&r->uring) < 0)
                        return NULL;
                r->pending = 0;
                sqe = io_uring_get_sqe(&r->uring);
                if (!sqe)
                        return NULL;
        }
        io_uring_sqe_set_data(sqe, op);
        r->pending++;
        return sqe;
}

int ring_run(struct ring *r, uint64_t timeout_usec)
{
        struct __kernel_timespec ts = {
            .tv_sec = (long long) (timeout_usec / 1000000u),
            .tv_nsec = (long long) (timeout_usec % 1000000u) * 1000,
        };
        struct io_uring_cqe *cqe;
        unsigned head, handled = 0;
        int ret;

        /* One system call submits everything and waits for the next event. */
        ret = io_uring_submit_and_wait_timeout(&r->uring, &cqe, 1, &ts, NULL);
        r->pending = 0;
        if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY)
                return ret;

        /*
         * Handlers may queue new submissions, which is fine: they go out
         * with the next ring_run(). They may not wait on the ring.
         */
        io_uring_for_each_cqe(&r->uring, head, cqe)
        {
                struct ring_op *op = io_uring_cqe_get_data(cqe);

                if (op)
                        op->handler(op, cqe->res, cqe->flags);
                handled++;
        }
        io_uring_cq_advance(&r->uring, handled);
        return (int) handled;
}

int ring_bufs_init(struct ring *r, struct ring_bufs *b, uint16_t bgid, unsigned count,
                   unsigned size)
{
        int ret;

        if (count == 0 || (count & (count - 1)) != 0 || count > 32768)
                return -EINVAL;

        memset(b, 0, sizeof(*b));
        b->base = mmap(NULL, (size_t) count * size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (b->base == MAP_FAILED) {
                b->base = NULL;
                return -errno;
        }
        /*
         * Set up by hand rather than with io_uring_setup_buf_ring(), which
         * liburing only has from 2.4 on (Debian 12 ships 2.3).
         */
        b->br = mmap(NULL, (size_t) count * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (b->br == MAP_FAILED) {
                ret = -errno;
                b->br = NULL;
                munmap(b->base, (size_t) count * size);
                b->base = NULL;
                return ret;
        }
        io_uring_buf_ring_init(b->br);
        struct io_uring_buf_reg reg = {
            .ring_addr = (uintptr_t) b->br,
            .ring_entries = count,
            .bgid = bgid,
        };
        ret = io_uring_register_buf_ring(&r->uring, &reg, 0);
        if (ret < 0) {
                munmap(b->br, (size_t) count * sizeof(struct io_uring_buf));
                munmap(b->base, (size_t) count * size);
                b->br = NULL;
                b->base = NULL;
                return ret == -EINVAL ? -EOPNOTSUPP : ret;
        }
        b->count = count;
        b->size = size;
        b->bgid = bgid;
        for (unsigned i = 0; i < count; i++)
                io_uring_buf_ring_add(b->br, ring_bufs_get(b, i), size, (unsigned short) i,
                                      io_uring_buf_ring_mask(count), (int) i);
        io_uring_buf_ring_advance(b->br, (int) count);
        return 0;
}

void ring_bufs_done(struct ring *r, struct ring_bufs *b)
{
        if (b->br) {
                (void) io_uring_unregister_buf_ring(&r->uring, b->bgid);
                munmap(b->br, (size_t) b->count * sizeof(struct io_uring_buf));
        }
        if (b->base)
                munmap(b->base, (size_t) b->count * b->size);
        memset(b, 0, sizeof(*b));
}

void ring_bufs_recycle(struct ring_bufs *b, unsigned bid)
{
        io_uring_buf_ring_add(b->br, ring_bufs_get(b, bid), b->size, (unsigned short) bid,
                              io_uring_buf_ring_mask(b->count), 0);
        io_uring_buf_ring_advance(b->br, 1);
}
