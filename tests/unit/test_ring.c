/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "ring.h"
#include "tap.h"
#include "util.h"

static struct ring r;

struct probe_op {
        struct ring_op op;
        int res;
        unsigned flags;
        int calls;
};

static void probe_handler(struct ring_op *op, int res, unsigned flags)
{
        struct probe_op *p = container_of(op, struct probe_op, op);

        p->res = res;
        p->flags = flags;
        p->calls++;
}

static void test_read_completion(void)
{
        struct probe_op p = {.op.handler = probe_handler};
        char buf[8];
        int fds[2];

        ok(pipe(fds) == 0, "pipe");
        ok(write(fds[1], "hello", 5) == 5, "write");
        struct io_uring_sqe *sqe = ring_sqe(&r, &p.op);
        ok(sqe != NULL, "sqe");
        io_uring_prep_read(sqe, fds[0], buf, sizeof(buf), 0);
        int n = ring_run(&r, 1000000);
        ok(n == 1, "one completion handled (%d)", n);
        ok(p.calls == 1 && p.res == 5 && memcmp(buf, "hello", 5) == 0,
           "handler got the read result");

        /* A NULL op is submitted but nobody is called. */
        sqe = ring_sqe(&r, NULL);
        io_uring_prep_nop(sqe);
        n = ring_run(&r, 1000000);
        ok(n == 1 && p.calls == 1, "completion without op is skipped");

        /* Timeout with nothing to do returns 0. */
        uint64_t t0 = now_ms();
        n = ring_run(&r, 50000);
        ok(n == 0 && now_ms() - t0 >= 40, "timeout: 0 completions after ~50 ms");
        close(fds[0]);
        close(fds[1]);
}

static void test_sqe_overflow(void)
{
        struct probe_op p = {.op.handler = probe_handler};

        /* More submissions than the queue holds: ring_sqe submits and goes on. */
        for (int i = 0; i < 200; i++) {
                struct io_uring_sqe *sqe = ring_sqe(&r, &p.op);
                ok(sqe != NULL || i < 0, "sqe %d", i);
                if (!sqe)
                        return;
                io_uring_prep_nop(sqe);
        }
        int total = 0;
        while (total < 200) {
                int n = ring_run(&r, 100000);
                if (n <= 0)
                        break;
                total += n;
        }
        ok(p.calls == 200, "all 200 completions arrived (%d)", p.calls);
}

static void test_multishot_recv_bufs(void)
{
        struct ring_bufs b;
        struct probe_op p = {.op.handler = probe_handler};
        int sv[2];

        int ret = ring_bufs_init(&r, &b, 7, 8, 64);
        ok(ret == 0, "ring_bufs_init: %s", ret ? strerror(-ret) : "ok");
        ok(ring_bufs_init(&r, &b, 8, 6, 64) == -EINVAL, "count must be a power of two");
        if (ret)
                return;
        ok(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
        struct io_uring_sqe *sqe = ring_sqe(&r, &p.op);
        io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = 7;
        ring_run(&r, 0);

        ok(write(sv[1], "abc", 3) == 3, "write 1");
        ring_run(&r, 1000000);
        ok(p.calls == 1 && p.res == 3 && (p.flags & IORING_CQE_F_BUFFER) &&
               (p.flags & IORING_CQE_F_MORE),
           "multishot recv delivered into a provided buffer and stays armed");
        unsigned bid = ring_cqe_bid(p.flags);
        ok(bid < 8 && memcmp(ring_bufs_get(&b, bid), "abc", 3) == 0, "data in buffer %u", bid);
        ring_bufs_recycle(&b, bid);

        ok(write(sv[1], "defg", 4) == 4, "write 2");
        ring_run(&r, 1000000);
        ok(p.calls == 2 && p.res == 4, "second completion from the same submission");

        close(sv[1]);
        ring_run(&r, 1000000);
        ok(p.calls == 3 && p.res == 0 && !(p.flags & IORING_CQE_F_MORE),
           "EOF ends the multishot receive");
        close(sv[0]);
        ring_bufs_done(&r, &b);
}

static void test_multishot_accept(void)
{
        struct probe_op p = {.op.handler = probe_handler};
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sa);
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

        ok(lfd >= 0 && bind(lfd, (struct sockaddr *) &sa, sizeof(sa)) == 0 && listen(lfd, 8) == 0 &&
               getsockname(lfd, (struct sockaddr *) &sa, &len) == 0,
           "listener");
        struct io_uring_sqe *sqe = ring_sqe(&r, &p.op);
        io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_CLOEXEC);
        ring_run(&r, 0);
        for (int i = 0; i < 3; i++) {
                int cfd = socket(AF_INET, SOCK_STREAM, 0);
                ok(connect(cfd, (struct sockaddr *) &sa, sizeof(sa)) == 0, "connect %d", i);
                ring_run(&r, 1000000);
                ok(p.calls == i + 1 && p.res >= 0 && (p.flags & IORING_CQE_F_MORE),
                   "accept %d from one submission", i);
                close(p.res);
                close(cfd);
        }
        /* Cancel by op pointer, as a paused listener does. */
        sqe = ring_sqe(&r, NULL);
        io_uring_prep_cancel(sqe, &p.op, 0);
        ring_run(&r, 1000000);
        if (p.calls < 4)
                ring_run(&r, 1000000);
        ok(p.calls == 4 && p.res == -ECANCELED, "cancelled accept completes with -ECANCELED");
        close(lfd);
}

int main(void)
{
        const char *missing = NULL;
        int ret = ring_init(&r, 64, &missing);

        if (ret == -EOPNOTSUPP) {
                /* A kernel or seccomp policy without io_uring: say so, do not fail. */
                printf("1..0 # SKIP io_uring lacks %s here\n", missing ? missing : "?");
                return 0;
        }
        ok(ret == 0, "ring_init: %s", ret ? strerror(-ret) : "ok");
        if (ret)
                return done_testing();
        subtest("read completion", test_read_completion);
        subtest("sqe overflow", test_sqe_overflow);
        subtest("multishot recv with provided buffers", test_multishot_recv_bufs);
        subtest("multishot accept", test_multishot_accept);
        ring_done(&r);
        return done_testing();
}
