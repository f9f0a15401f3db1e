/* SPDX-License-Identifier: MIT */
/*
 * handoff: the connection handoff message (layout in handoff.h).
 *
 * Every field is written and read byte by byte in little-endian order, never
 * through a struct cast, so the format does not depend on the host's byte
 * order, padding or alignment, and a datagram can be parsed wherever it
 * sits in a receive buffer.
 *
 * The encoding is canonical: decoding accepts exactly the headers that
 * handoff_encode_header() produces (reserved bytes and the unused tail of
 * the peer address are zero, no unknown flag or kind), so one message has
 * one spelling and a re-encoded header equals the received one.
 *
 * Every fd that arrives is accounted for: the first SCM_RIGHTS fd is handed
 * to the caller and any other is closed here, including all of them when
 * the datagram or its control data was truncated.
 */
#include <assert.h>
#include <sys/socket.h>

#include "handoff.h"

#include "util.h"

#define HANDOFF_OFF_MAGIC 0
#define HANDOFF_OFF_VERSION 4
#define HANDOFF_OFF_KIND 6
#define HANDOFF_OFF_FLAGS 8
#define HANDOFF_OFF_DATA_LEN 12
#define HANDOFF_OFF_PEER_LEN 16
#define HANDOFF_OFF_ID 18
#define HANDOFF_OFF_REQUESTS 20
#define HANDOFF_OFF_PEER 24
#define HANDOFF_PEER_SIZE 128

_Static_assert(HANDOFF_CMSG_SPACE(1) == CMSG_SPACE(sizeof(int)), "control buffer for one fd");
_Static_assert(HANDOFF_CMSG_SPACE(4) == CMSG_SPACE(4 * sizeof(int)), "control buffer for 4 fds");
_Static_assert(sizeof(HANDOFF_MAGIC) - 1 == 4, "the magic is four bytes");
_Static_assert(sizeof(struct sockaddr_storage) == HANDOFF_PEER_SIZE,
               "the peer field holds a struct sockaddr_storage");
_Static_assert(HANDOFF_OFF_PEER + HANDOFF_PEER_SIZE == HANDOFF_HEADER_SIZE,
               "the data follows the peer address");
_Static_assert(HANDOFF_MAX_DATA <= UINT32_MAX, "data_len is a 32-bit field");

static void put_le16(uint8_t *p, uint16_t v)
{
        p[0] = (uint8_t) v;
        p[1] = (uint8_t) (v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
        p[0] = (uint8_t) v;
        p[1] = (uint8_t) (v >> 8);
        p[2] = (uint8_t) (v >> 16);
        p[3] = (uint8_t) (v >> 24);
}

static uint16_t get_le16(const uint8_t *p)
{
        return (uint16_t) (p[0] | (unsigned) p[1] << 8);
}

static uint32_t get_le32(const uint8_t *p)
{
        return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
               (uint32_t) p[3] << 24;
}

static bool bytes_are_zero(const uint8_t *p, size_t len)
{
        for (size_t i = 0; i < len; i++)
                if (p[i] != 0)
                        return false;
        return true;
}

/*
 * An invalid kind, unknown flag or impossible peer_len here is a bug in the
 * sending daemon (peer and peer_len come from accept()), hence asserts; the
 * only condition a client can cause, too much buffered input, is an error.
 */
ssize_t handoff_encode_header(const struct handoff_info *info, uint8_t out[HANDOFF_HEADER_SIZE])
{
        assert(info);
        assert(out);
        assert(info->kind > 0 && info->kind < _HANDOFF_KIND_MAX);
        assert((info->flags & ~HANDOFF_KNOWN_FLAGS) == 0);
        assert(info->kind == HANDOFF_CONN || (info->flags == 0 && info->peer_len == 0 &&
                                              info->data_len == 0 && info->requests == 0));
        assert((info->id != 0) == (info->kind == HANDOFF_ACK ||
                                   (info->kind == HANDOFF_CONN && (info->flags & HANDOFF_F_ACK))));
        assert(info->peer_len == 0 ||
               (info->peer_len >= sizeof(sa_family_t) && info->peer_len <= HANDOFF_PEER_SIZE));
        assert(info->data || info->data_len == 0);

        if (info->data_len > HANDOFF_MAX_DATA)
                return -EMSGSIZE;

        memset(out, 0, HANDOFF_HEADER_SIZE);
        memcpy(out + HANDOFF_OFF_MAGIC, HANDOFF_MAGIC, 4);
        put_le16(out + HANDOFF_OFF_VERSION, HANDOFF_VERSION);
        put_le16(out + HANDOFF_OFF_KIND, (uint16_t) info->kind);
        put_le32(out + HANDOFF_OFF_FLAGS, info->flags);
        put_le32(out + HANDOFF_OFF_DATA_LEN, (uint32_t) info->data_len);
        put_le16(out + HANDOFF_OFF_PEER_LEN, (uint16_t) info->peer_len);
        put_le16(out + HANDOFF_OFF_ID, info->id);
        put_le32(out + HANDOFF_OFF_REQUESTS, info->requests);
        /* Only peer_len bytes: the rest stays zero, so no stack garbage leaves the process. */
        memcpy(out + HANDOFF_OFF_PEER, &info->peer, info->peer_len);

        return HANDOFF_HEADER_SIZE;
}

int handoff_decode(const void *msg, size_t len, struct handoff_info *ret)
{
        const uint8_t *p = msg;
        struct handoff_info info = {0};
        uint16_t version, kind, peer_len;
        uint32_t flags, data_len;

        assert(msg || len == 0);
        assert(ret);

        /* Magic and version first: a message of another version may have another size. */
        if (len < HANDOFF_OFF_VERSION + 2 || memcmp(p + HANDOFF_OFF_MAGIC, HANDOFF_MAGIC, 4) != 0)
                return -EBADMSG;
        version = get_le16(p + HANDOFF_OFF_VERSION);
        if (version != HANDOFF_VERSION)
                return -EPROTONOSUPPORT;
        if (len < HANDOFF_HEADER_SIZE)
                return -EBADMSG;

        kind = get_le16(p + HANDOFF_OFF_KIND);
        if (kind == 0 || kind >= _HANDOFF_KIND_MAX)
                return -EBADMSG;

        /* A flag we do not know changes the meaning of the connection: refuse it. */
        flags = get_le32(p + HANDOFF_OFF_FLAGS);
        if (flags & ~HANDOFF_KNOWN_FLAGS)
                return -EBADMSG;

        data_len = get_le32(p + HANDOFF_OFF_DATA_LEN);
        if (data_len > HANDOFF_MAX_DATA || data_len != len - HANDOFF_HEADER_SIZE)
                return -EBADMSG;

        peer_len = get_le16(p + HANDOFF_OFF_PEER_LEN);
        if (peer_len > HANDOFF_PEER_SIZE || (peer_len > 0 && peer_len < sizeof(sa_family_t)))
                return -EBADMSG;
        if (!bytes_are_zero(p + HANDOFF_OFF_PEER + peer_len, HANDOFF_PEER_SIZE - peer_len))
                return -EBADMSG;

        info.id = get_le16(p + HANDOFF_OFF_ID);
        if ((info.id != 0) !=
            (kind == HANDOFF_ACK || (kind == HANDOFF_CONN && (flags & HANDOFF_F_ACK))))
                return -EBADMSG;
        if (kind != HANDOFF_CONN &&
            (flags || data_len || peer_len || get_le32(p + HANDOFF_OFF_REQUESTS)))
                return -EBADMSG;

        info.kind = (enum handoff_kind) kind;
        info.flags = flags;
        info.requests = get_le32(p + HANDOFF_OFF_REQUESTS);
        /* info.peer is zeroed above, so the bytes past peer_len are zero here too. */
        memcpy(&info.peer, p + HANDOFF_OFF_PEER, peer_len);
        info.peer_len = peer_len;
        info.data = (const char *) p + HANDOFF_HEADER_SIZE;
        info.data_len = data_len;

        *ret = info;
        return 0;
}

/*
 * A CONN message is a connection: without its fd it means nothing, so it
 * is refused here rather than by the receiver. The whole message is one
 * datagram (SOCK_SEQPACKET sends it whole or not at all); MSG_NOSIGNAL
 * turns a gone receiver into -EPIPE instead of SIGPIPE.
 */
int handoff_send(int chan, int fd, const struct handoff_info *info)
{
        uint8_t header[HANDOFF_HEADER_SIZE];
        struct {
                _Alignas(struct cmsghdr) char buf[HANDOFF_CMSG_SPACE(1)];
        } control;
        struct iovec iov[2];
        struct msghdr msg = {.msg_iov = iov};
        ssize_t r, n;

        assert(info);

        if (info->kind == HANDOFF_CONN && fd < 0)
                return -EINVAL;

        r = handoff_encode_header(info, header);
        if (r < 0)
                return (int) r;

        iov[0] = (struct iovec){.iov_base = header, .iov_len = sizeof(header)};
        msg.msg_iovlen = 1;
        if (info->data_len > 0) {
                iov[1] = (struct iovec){.iov_base = (void *) info->data, .iov_len = info->data_len};
                msg.msg_iovlen = 2;
        }

        if (fd >= 0) {
                struct cmsghdr *cmsg;

                memset(&control, 0, sizeof(control));
                msg.msg_control = control.buf;
                msg.msg_controllen = CMSG_SPACE(sizeof(int));
                cmsg = CMSG_FIRSTHDR(&msg);
                cmsg->cmsg_level = SOL_SOCKET;
                cmsg->cmsg_type = SCM_RIGHTS;
                cmsg->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
        }

        n = sendmsg(chan, &msg, MSG_NOSIGNAL);
        if (n < 0)
                return -errno;
        /* Cannot happen on SOCK_SEQPACKET; on a stream socket it would split the message. */
        if ((size_t) n != HANDOFF_HEADER_SIZE + info->data_len)
                return -EIO;
        return 0;
}

/*
 * Built on the io_uring helpers, so both paths treat fds and truncation
 * identically. A zero-length datagram reads as EOF, as it does on any
 * SOCK_SEQPACKET socket; a real message is never shorter than its header.
 */
ssize_t handoff_recv(int chan, void *buf, size_t size, int *ret_fd)
{
        struct handoff_rx rx;
        ssize_t n;
        int fd;

        assert(buf || size == 0);
        assert(ret_fd);

        handoff_rx_prepare(&rx, buf, size);
        n = recvmsg(chan, &rx.msg, MSG_CMSG_CLOEXEC);
        if (n < 0)
                return -errno;

        fd = handoff_rx_take_fd(&rx);
        if (rx.msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
                return -EMSGSIZE; /* take_fd closed every fd */

        if (n == 0) {
                *ret_fd = safe_close(fd);
                return 0;
        }
        *ret_fd = fd;
        return n;
}

/*
 * rx points into itself (msg at iov and control), so it must not be copied
 * or moved between prepare and take_fd. The caller submits
 * io_uring_prep_recvmsg(sqe, chan, &rx->msg, MSG_CMSG_CLOEXEC) and calls
 * prepare again before every submission: the kernel rewrites msg_controllen
 * and msg_flags on completion.
 */
void handoff_rx_prepare(struct handoff_rx *rx, void *buf, size_t size)
{
        assert(rx);
        assert(buf || size == 0);

        memset(rx, 0, sizeof(*rx));
        rx->iov = (struct iovec){.iov_base = buf, .iov_len = size};
        rx->msg.msg_iov = &rx->iov;
        rx->msg.msg_iovlen = 1;
        rx->msg.msg_control = rx->control.buf;
        rx->msg.msg_controllen = sizeof(rx->control.buf);
}

/*
 * Call once the RECVMSG completed with res >= 0 (a failed receive installs
 * no fds; calling anyway finds the zeroed control buffer and returns -1).
 * Returns the first SCM_RIGHTS fd and closes every other one, or returns -1
 * when none came. When msg_flags has MSG_TRUNC (the datagram did not fit:
 * res is then the truncated length) or MSG_CTRUNC (more fds than the
 * control buffer holds), every fd is closed and -1 returned: the caller
 * checks rx->msg.msg_flags to tell that from "no fd" and drops the message.
 * The control data is consumed, so a second call returns -1.
 */
int handoff_rx_take_fd(struct handoff_rx *rx)
{
        struct cmsghdr *cmsg;
        int fd = -1;

        assert(rx);

        for (cmsg = CMSG_FIRSTHDR(&rx->msg); cmsg; cmsg = CMSG_NXTHDR(&rx->msg, cmsg)) {
                size_t n;

                if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS ||
                    cmsg->cmsg_len < CMSG_LEN(0))
                        continue;

                n = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < n; i++) {
                        int x;

                        /* CMSG_DATA is not necessarily int-aligned: copy, do not cast. */
                        memcpy(&x, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
                        if (fd < 0)
                                fd = x;
                        else
                                (void) close(x);
                }
        }
        rx->msg.msg_controllen = 0;

        if (rx->msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
                fd = safe_close(fd);
        return fd;
}
