/* SPDX-License-Identifier: MIT */
/*
 * Tests for common/handoff.c: the wire layout byte by byte, every way a
 * header can be malformed, and real connections passed over a
 * SOCK_SEQPACKET socketpair, including truncated datagrams, surplus fds and
 * the io_uring receive path, with the process's fd count checked so that no
 * path leaks a descriptor.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "handoff.h"
#include "tap.h"
#include "util.h"

static uint8_t rxbuf[HANDOFF_MAX_MSG + 1];

static int count_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        int n = 0;

        if (!d)
                return -1;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        (void) closedir(d);
        return n;
}

static struct handoff_info sample_info(const char *data)
{
        struct handoff_info info = {
            .kind = HANDOFF_CONN,
            .flags = HANDOFF_F_TLS,
            .requests = 0x01020304,
            .peer_len = sizeof(struct sockaddr_in),
            .data = data,
            .data_len = strlen(data),
        };
        struct sockaddr_in sin = {
            .sin_family = AF_INET,
            .sin_port = htons(54321),
            .sin_addr.s_addr = htonl(0xc0a80001),
        };

        memcpy(&info.peer, &sin, sizeof(sin));
        return info;
}

/* The header for info followed by its data, as one datagram would carry it; returns its length. */
static size_t build(const struct handoff_info *info, uint8_t *out)
{
        if (handoff_encode_header(info, out) != HANDOFF_HEADER_SIZE)
                return 0;
        if (info->data_len > 0)
                memcpy(out + HANDOFF_HEADER_SIZE, info->data, info->data_len);
        return HANDOFF_HEADER_SIZE + info->data_len;
}

static void test_layout(void)
{
        struct handoff_info info = sample_info("GET /");
        uint8_t h[HANDOFF_HEADER_SIZE];
        static const uint8_t fields[24] = {
            'W', 'H', 'R', 'F', /* magic */
            1,   0,             /* version */
            1,   0,             /* kind: HANDOFF_CONN */
            1,   0,   0,   0,   /* flags: HANDOFF_F_TLS */
            5,   0,   0,   0,   /* data_len */
            16,  0,             /* peer_len */
            0,   0,             /* reserved */
            4,   3,   2,   1,   /* requests */
        };
        bool tail_zero = true;

        memset(h, 0xa5, sizeof(h));
        ok(handoff_encode_header(&info, h) == HANDOFF_HEADER_SIZE,
           "encode returns the header size");
        ok(memcmp(h, fields, sizeof(fields)) == 0, "fields at their offsets, little-endian");
        ok(memcmp(h + 24, &info.peer, 16) == 0, "the peer address at offset 24");
        for (size_t i = 24 + 16; i < HANDOFF_HEADER_SIZE; i++)
                tail_zero = tail_zero && h[i] == 0;
        ok(tail_zero, "the rest of the peer field is zero");

        info.data_len = HANDOFF_MAX_DATA + 1;
        ok(handoff_encode_header(&info, h) == -EMSGSIZE,
           "data_len over HANDOFF_MAX_DATA: -EMSGSIZE");
}

static void test_round_trip(void)
{
        struct handoff_info in = sample_info("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), out;
        static uint8_t msg[HANDOFF_MAX_MSG + 1];
        size_t len = build(&in, msg);
        uint8_t h[HANDOFF_HEADER_SIZE];

        ok(len == HANDOFF_HEADER_SIZE + in.data_len, "built a %zu-byte message", len);
        ok(handoff_decode(msg, len, &out) == 0, "it decodes");
        ok(out.kind == HANDOFF_CONN && out.flags == HANDOFF_F_TLS && out.requests == 0x01020304,
           "kind, flags and requests survive");
        ok(out.peer_len == in.peer_len && memcmp(&out.peer, &in.peer, sizeof(out.peer)) == 0,
           "the peer address survives");
        ok(out.data == (const char *) msg + HANDOFF_HEADER_SIZE && out.data_len == in.data_len,
           "data points into the message, after the header");
        ok(handoff_encode_header(&out, h) == HANDOFF_HEADER_SIZE &&
               memcmp(h, msg, HANDOFF_HEADER_SIZE) == 0,
           "re-encoding gives the same bytes");

        /* At an odd address: a struct cast would be a misaligned read under UBSan. */
        memmove(msg + 1, msg, len);
        ok(handoff_decode(msg + 1, len, &out) == 0 && out.requests == 0x01020304 &&
               out.data == (const char *) msg + 1 + HANDOFF_HEADER_SIZE,
           "decodes at an unaligned address");

        in.data = "";
        in.data_len = 0;
        in.peer_len = 0;
        memset(&in.peer, 0, sizeof(in.peer));
        in.flags = 0;
        len = build(&in, msg);
        ok(handoff_decode(msg, len, &out) == 0 && out.data_len == 0 && out.peer_len == 0 &&
               out.flags == 0,
           "no data, no peer, no flags");

        in.peer_len = sizeof(struct sockaddr_storage);
        memset(&in.peer, 0x11, sizeof(in.peer));
        len = build(&in, msg);
        ok(handoff_decode(msg, len, &out) == 0 && out.peer_len == sizeof(struct sockaddr_storage),
           "a peer filling all 128 bytes");

        {
                char *big = malloc(HANDOFF_MAX_DATA + 1);

                memset(big, 'x', HANDOFF_MAX_DATA);
                big[HANDOFF_MAX_DATA] = '\0';
                in = sample_info(big);
                len = build(&in, msg);
                ok(len == HANDOFF_MAX_MSG && handoff_decode(msg, len, &out) == 0 &&
                       out.data_len == HANDOFF_MAX_DATA,
                   "exactly HANDOFF_MAX_DATA bytes of data");
                free(big);
        }
}

struct patch {
        const char *what;
        size_t off;
        uint8_t bytes[4];
        size_t n;
        int want;
};

static void test_acknowledgements(void)
{
        struct handoff_info hello = {.kind = HANDOFF_HELLO}, ack = {.kind = HANDOFF_ACK, .id = 513};
        struct handoff_info marked = sample_info("GET / HTTP/1.1\r\n\r\n"), out;
        uint8_t msg[HANDOFF_HEADER_SIZE + 64];
        size_t len;

        len = build(&hello, msg);
        ok(len == HANDOFF_HEADER_SIZE && handoff_decode(msg, len, &out) == 0 &&
               out.kind == HANDOFF_HELLO && out.id == 0 && out.data_len == 0,
           "a HELLO round-trips");
        len = build(&ack, msg);
        ok(msg[18] == 1 && msg[19] == 2, "the id is little-endian at offset 18");
        ok(handoff_decode(msg, len, &out) == 0 && out.kind == HANDOFF_ACK && out.id == 513,
           "an ACK round-trips with its id");
        marked.flags |= HANDOFF_F_ACK;
        marked.id = 7;
        len = build(&marked, msg);
        ok(handoff_decode(msg, len, &out) == 0 && out.id == 7 && (out.flags & HANDOFF_F_ACK),
           "a marked CONN round-trips with its id");

        msg[18] = 0;
        ok(handoff_decode(msg, len, &out) == -EBADMSG, "a marked CONN without an id is refused");
        len = build(&ack, msg);
        msg[18] = msg[19] = 0;
        ok(handoff_decode(msg, len, &out) == -EBADMSG, "an ACK without an id is refused");
        len = build(&hello, msg);
        msg[18] = 1;
        ok(handoff_decode(msg, len, &out) == -EBADMSG, "a HELLO with an id is refused");
        len = build(&hello, msg);
        msg[8] = HANDOFF_F_TLS;
        ok(handoff_decode(msg, len, &out) == -EBADMSG, "a HELLO with flags is refused");
        len = build(&ack, msg);
        msg[20] = 1;
        ok(handoff_decode(msg, len, &out) == -EBADMSG, "an ACK with a request count is refused");
        len = build(&hello, msg);
        msg[6] = _HANDOFF_KIND_MAX;
        ok(handoff_decode(msg, len, &out) == -EBADMSG, "a kind past the known ones is refused");
}

static void test_malformed(void)
{
        static const struct patch patches[] = {
            {"wrong magic", 0, {'w'}, 1, -EBADMSG},
            {"magic of another program", 3, {'G'}, 1, -EBADMSG},
            {"version 2", 4, {2, 0}, 2, -EPROTONOSUPPORT},
            {"version 0", 4, {0, 0}, 2, -EPROTONOSUPPORT},
            {"version 1 big-endian", 4, {0, 1}, 2, -EPROTONOSUPPORT},
            {"kind 0", 6, {0, 0}, 2, -EBADMSG},
            {"kind 2", 6, {2, 0}, 2, -EBADMSG},
            {"kind 1 big-endian", 6, {0, 1}, 2, -EBADMSG},
            {"an unknown flag", 8, {7, 0, 0, 0}, 4, -EBADMSG},
            {"an unknown high flag", 11, {0x80}, 1, -EBADMSG},
            {"data_len one more", 12, {11, 0, 0, 0}, 4, -EBADMSG},
            {"data_len one less", 12, {9, 0, 0, 0}, 4, -EBADMSG},
            {"data_len huge", 12, {10, 0, 0, 0x80}, 4, -EBADMSG},
            {"peer_len 129", 16, {129, 0}, 2, -EBADMSG},
            {"peer_len 0xffff", 16, {0xff, 0xff}, 2, -EBADMSG},
            {"peer_len 1 (less than a family)", 16, {1, 0}, 2, -EBADMSG},
            {"peer_len 0 with a peer address left", 16, {0, 0}, 2, -EBADMSG},
            {"peer_len 2 with address bytes past it", 16, {2, 0}, 2, -EBADMSG},
            {"reserved low byte", 18, {1}, 1, -EBADMSG},
            {"reserved high byte", 19, {1}, 1, -EBADMSG},
            {"a byte in the peer field's tail", 151, {1}, 1, -EBADMSG},
            {"requests may be anything", 20, {0xff, 0xff, 0xff, 0xff}, 4, 0},
            {"peer_len 16 unchanged", 16, {16, 0}, 2, 0},
        };
        struct handoff_info in = sample_info("0123456789"), sentinel, out;
        uint8_t good[HANDOFF_HEADER_SIZE + 10], msg[HANDOFF_HEADER_SIZE + 10];
        size_t len = build(&in, good);
        int r;

        memset(&sentinel, 0x5a, sizeof(sentinel));
        ok(len == sizeof(good) && handoff_decode(good, len, &out) == 0, "the base message decodes");

        for (size_t i = 0; i < ARRAY_SIZE(patches); i++) {
                const struct patch *p = &patches[i];

                memcpy(msg, good, len);
                memcpy(msg + p->off, p->bytes, p->n);
                out = sentinel;
                r = handoff_decode(msg, len, &out);
                ok(r == p->want && (r == 0 || memcmp(&out, &sentinel, sizeof(out)) == 0),
                   "%s: %d%s", p->what, r, r == 0 ? "" : ", nothing written");
        }

        static const size_t short_lens[] = {
            0, 1, 5, 6, 7, 24, HANDOFF_HEADER_SIZE - 1, HANDOFF_HEADER_SIZE, sizeof(good) - 1};
        for (size_t i = 0; i < ARRAY_SIZE(short_lens); i++) {
                out = sentinel;
                ok(handoff_decode(good, short_lens[i], &out) == -EBADMSG &&
                       memcmp(&out, &sentinel, sizeof(out)) == 0,
                   "cut to %zu bytes: -EBADMSG", short_lens[i]);
        }

        /* The version is judged before the size: another version may have another header. */
        memcpy(msg, good, 8);
        msg[4] = 2;
        ok(handoff_decode(msg, 8, &out) == -EPROTONOSUPPORT, "an 8-byte version 2 message");

        {
                uint8_t *big = calloc(1, HANDOFF_MAX_MSG + 1);

                memcpy(big, good, HANDOFF_HEADER_SIZE);
                big[12] = (uint8_t) ((HANDOFF_MAX_DATA + 1) & 0xff);
                big[13] = (uint8_t) (((HANDOFF_MAX_DATA + 1) >> 8) & 0xff);
                big[14] = (uint8_t) (((HANDOFF_MAX_DATA + 1) >> 16) & 0xff);
                ok(handoff_decode(big, HANDOFF_MAX_MSG + 1, &out) == -EBADMSG,
                   "data_len HANDOFF_MAX_DATA + 1, matching the datagram: -EBADMSG");
                free(big);
        }
}

/* A TCP connection on loopback: *ret_client is the client's end, the return value the server's. */
static int tcp_pair(int *ret_client, struct sockaddr_storage *ret_peer, socklen_t *ret_peer_len)
{
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sin);
        int l, c, s;

        l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (l < 0 || bind(l, (struct sockaddr *) &sin, sizeof(sin)) < 0 || listen(l, 1) < 0 ||
            getsockname(l, (struct sockaddr *) &sin, &len) < 0)
                return safe_close(l);
        c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0 || connect(c, (struct sockaddr *) &sin, sizeof(sin)) < 0) {
                safe_close(c);
                return safe_close(l);
        }
        *ret_peer_len = sizeof(*ret_peer);
        s = accept4(l, (struct sockaddr *) ret_peer, ret_peer_len, SOCK_CLOEXEC);
        safe_close(l);
        if (s < 0)
                return safe_close(c);
        *ret_client = c;
        return s;
}

/* sendmsg() of data with any number of fds, bypassing handoff_send()'s rules. */
static int send_raw(int chan, const void *data, size_t len, const int *fds, size_t n_fds)
{
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * 8)];
        } control;
        struct iovec iov = {.iov_base = (void *) data, .iov_len = len};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

        if (n_fds > 0) {
                struct cmsghdr *cmsg;

                memset(&control, 0, sizeof(control));
                msg.msg_control = control.buf;
                msg.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
                cmsg = CMSG_FIRSTHDR(&msg);
                cmsg->cmsg_level = SOL_SOCKET;
                cmsg->cmsg_type = SCM_RIGHTS;
                cmsg->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
                memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * n_fds);
        }
        return sendmsg(chan, &msg, MSG_NOSIGNAL) == (ssize_t) len ? 0 : -errno;
}

static void test_pass_connection(void)
{
        const char *req = "GET /static/app.css HTTP/1.1\r\nHost: example.com\r\n\r\n";
        struct handoff_info info = sample_info(req), got;
        struct sockaddr_storage peer, client_addr;
        socklen_t peer_len, client_len = sizeof(client_addr);
        int sp[2], client = -1, conn, fd = -1;
        char reply[16] = {0};
        ssize_t n;

        conn = tcp_pair(&client, &peer, &peer_len);
        ok(conn >= 0, "a TCP connection on loopback");
        ok(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == 0, "a SEQPACKET pair");
        if (conn < 0)
                return;

        info.flags = 0;
        info.requests = 2;
        memcpy(&info.peer, &peer, peer_len);
        info.peer_len = peer_len;
        ok(handoff_send(sp[0], conn, &info) == 0, "handoff_send");
        safe_close(conn); /* the receiver owns the connection now */

        n = handoff_recv(sp[1], rxbuf, sizeof(rxbuf), &fd);
        ok(n == (ssize_t) (HANDOFF_HEADER_SIZE + strlen(req)), "one datagram of %zd bytes", n);
        ok(fd >= 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC), "an fd arrived, close-on-exec");
        ok(n > 0 && handoff_decode(rxbuf, (size_t) n, &got) == 0, "it decodes");
        ok(got.requests == 2 && got.flags == 0 && got.data_len == strlen(req) &&
               memcmp(got.data, req, got.data_len) == 0,
           "the request bytes and counters arrived");
        ok(got.peer_len == peer_len && memcmp(&got.peer, &peer, peer_len) == 0 &&
               getsockname(client, (struct sockaddr *) &client_addr, &client_len) == 0 &&
               memcmp(&got.peer, &client_addr, client_len) == 0,
           "the peer is the client's address");

        ok(write(fd, "hello", 5) == 5 && read(client, reply, sizeof(reply)) == 5 &&
               streq(reply, "hello"),
           "writing through the received fd reaches the client");

        ok(handoff_send(sp[0], -1, &info) == -EINVAL, "a CONN without an fd is -EINVAL");
        info.data_len = HANDOFF_MAX_DATA + 1;
        info.data = (const char *) rxbuf;
        ok(handoff_send(sp[0], fd, &info) == -EMSGSIZE, "too much data is -EMSGSIZE");

        {
                int fl = fcntl(sp[1], F_GETFL), keep = 12345;

                (void) fcntl(sp[1], F_SETFL, fl | O_NONBLOCK);
                ok(handoff_recv(sp[1], rxbuf, sizeof(rxbuf), &keep) == -EAGAIN && keep == 12345,
                   "nothing waiting on a non-blocking socket: -EAGAIN, fd untouched");
                (void) fcntl(sp[1], F_SETFL, fl);
        }

        safe_close(sp[0]);
        {
                int eof_fd = 12345;

                ok(handoff_recv(sp[1], rxbuf, sizeof(rxbuf), &eof_fd) == 0 && eof_fd == -1,
                   "the sender closed: 0 and no fd");
        }
        safe_close(sp[1]);
        safe_close(fd);
        safe_close(client);
}

static void test_truncation(void)
{
        struct handoff_info info = sample_info("0123456789012345678901234567890123456789");
        uint8_t msg[HANDOFF_HEADER_SIZE + 64];
        size_t len = build(&info, msg);
        int sp[2], pipefd[2], fds[5], fd, before, r;

        ok(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == 0 &&
               pipe2(pipefd, O_CLOEXEC) == 0,
           "a SEQPACKET pair and a pipe");

        /* The datagram does not fit the buffer. */
        ok(handoff_send(sp[0], pipefd[0], &info) == 0, "a message with an fd sent");
        before = count_fds();
        fd = 12345;
        r = (int) handoff_recv(sp[1], rxbuf, HANDOFF_HEADER_SIZE, &fd);
        ok(r == -EMSGSIZE && fd == 12345, "a buffer too small: -EMSGSIZE (%d)", r);
        ok(count_fds() == before, "and the fd that came with it is closed");

        /* Three fds: the first is kept, the others closed. */
        fds[0] = pipefd[0];
        fds[1] = pipefd[1];
        fds[2] = pipefd[1];
        ok(send_raw(sp[0], msg, len, fds, 3) == 0, "a message with three fds");
        before = count_fds();
        r = (int) handoff_recv(sp[1], rxbuf, sizeof(rxbuf), &fd);
        {
                struct stat a, b;

                ok(r == (int) len && fd >= 0 && fstat(fd, &a) == 0 && fstat(pipefd[0], &b) == 0 &&
                       a.st_ino == b.st_ino && (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY,
                   "the first fd (the pipe's read end) is returned");
        }
        ok(count_fds() == before + 1, "the two extra fds are closed");
        safe_close(fd);

        /* Five fds: more than the control buffer holds (MSG_CTRUNC). */
        for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
                fds[i] = pipefd[1];
        ok(send_raw(sp[0], msg, len, fds, 5) == 0, "a message with five fds");
        before = count_fds();
        fd = 12345;
        r = (int) handoff_recv(sp[1], rxbuf, sizeof(rxbuf), &fd);
        ok(r == -EMSGSIZE && fd == 12345, "control data truncated: -EMSGSIZE (%d)", r);
        ok(count_fds() == before, "and every fd that did arrive is closed");

        /* No fd at all: handoff_recv passes it on, the caller refuses it. */
        ok(send_raw(sp[0], msg, len, NULL, 0) == 0, "a message without an fd");
        r = (int) handoff_recv(sp[1], rxbuf, sizeof(rxbuf), &fd);
        ok(r == (int) len && fd == -1, "received, with fd -1");

        safe_close(sp[0]);
        safe_close(sp[1]);
        safe_close(pipefd[0]);
        safe_close(pipefd[1]);
}

static void test_rx(void)
{
        struct handoff_info info = sample_info("GET / HTTP/1.1\r\n\r\n"), got;
        struct handoff_rx rx;
        int sp[2], pipefd[2], fd, before;
        ssize_t n;

        ok(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == 0 &&
               pipe2(pipefd, O_CLOEXEC) == 0,
           "a SEQPACKET pair and a pipe");

        handoff_rx_prepare(&rx, rxbuf, sizeof(rxbuf));
        ok(rx.msg.msg_iov == &rx.iov && rx.msg.msg_iovlen == 1 && rx.iov.iov_base == rxbuf &&
               rx.iov.iov_len == sizeof(rxbuf) && rx.msg.msg_control == rx.control.buf &&
               rx.msg.msg_controllen == sizeof(rx.control.buf),
           "prepare points the msghdr at the buffer and the control space");

        ok(handoff_send(sp[0], pipefd[1], &info) == 0, "sent with an fd");
        n = recvmsg(sp[1], &rx.msg, MSG_CMSG_CLOEXEC);
        fd = handoff_rx_take_fd(&rx);
        ok(n == (ssize_t) (HANDOFF_HEADER_SIZE + info.data_len) && fd >= 0 &&
               (fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY,
           "take_fd returns the fd (the pipe's write end)");
        ok(handoff_rx_take_fd(&rx) == -1, "a second take_fd finds nothing");
        ok(n > 0 && handoff_decode(rxbuf, (size_t) n, &got) == 0 && got.data_len == info.data_len,
           "the message decodes");
        safe_close(fd);

        handoff_rx_prepare(&rx, rxbuf, 100);
        ok(handoff_send(sp[0], pipefd[1], &info) == 0, "sent again, into a 100-byte buffer");
        before = count_fds();
        n = recvmsg(sp[1], &rx.msg, MSG_CMSG_CLOEXEC);
        fd = handoff_rx_take_fd(&rx);
        ok(n == 100 && (rx.msg.msg_flags & MSG_TRUNC) && fd == -1,
           "truncated: MSG_TRUNC in msg_flags and take_fd returns -1");
        ok(count_fds() == before, "the fd that came with it is closed");

        handoff_rx_prepare(&rx, rxbuf, sizeof(rxbuf));
        ok(handoff_rx_take_fd(&rx) == -1, "take_fd before any completion finds nothing");

        safe_close(sp[0]);
        safe_close(sp[1]);
        safe_close(pipefd[0]);
        safe_close(pipefd[1]);
}

static void test_rx_uring(void)
{
        struct handoff_info info = sample_info("GET /a HTTP/1.1\r\n\r\n");
        struct io_uring ring;
        struct io_uring_sqe *sqe;
        struct io_uring_cqe *cqe;
        struct handoff_rx rx;
        int sp[2], pipefd[2], fd = -1, res = 0, r;

        r = io_uring_queue_init(4, &ring, 0);
        if (r < 0) {
                printf("# io_uring unavailable (%s): skipped\n", strerror(-r));
                return;
        }
        ok(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == 0 &&
               pipe2(pipefd, O_CLOEXEC) == 0,
           "a SEQPACKET pair and a pipe");
        ok(handoff_send(sp[0], pipefd[0], &info) == 0, "sent with an fd");

        handoff_rx_prepare(&rx, rxbuf, sizeof(rxbuf));
        sqe = io_uring_get_sqe(&ring);
        io_uring_prep_recvmsg(sqe, sp[1], &rx.msg, MSG_CMSG_CLOEXEC);
        r = io_uring_submit_and_wait(&ring, 1);
        if (r >= 0)
                r = io_uring_wait_cqe(&ring, &cqe);
        if (r >= 0) {
                res = cqe->res;
                io_uring_cqe_seen(&ring, cqe);
                fd = handoff_rx_take_fd(&rx);
        }
        ok(res == (int) (HANDOFF_HEADER_SIZE + info.data_len), "IORING_OP_RECVMSG got it (%d)",
           res);
        ok(fd >= 0 && (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY &&
               (fcntl(fd, F_GETFD) & FD_CLOEXEC),
           "take_fd finds the fd the kernel wrote back");

        safe_close(fd);
        safe_close(sp[0]);
        safe_close(sp[1]);
        safe_close(pipefd[0]);
        safe_close(pipefd[1]);
        io_uring_queue_exit(&ring);
}

int main(void)
{
        int before = count_fds();

        subtest("acknowledgements", test_acknowledgements);
        subtest("layout", test_layout);
        subtest("round trip", test_round_trip);
        subtest("malformed", test_malformed);
        subtest("pass a connection", test_pass_connection);
        subtest("truncation and surplus fds", test_truncation);
        subtest("io_uring receive helpers", test_rx);
        subtest("io_uring RECVMSG", test_rx_uring);

        ok(count_fds() == before, "no fd leaked by the whole test (%d -> %d)", before, count_fds());
        return done_testing();
}
