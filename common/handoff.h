/* SPDX-License-Identifier: MIT */
/*
 * handoff: passing a whole client connection between two daemons.
 *
 * wharf-proxy sends a client socket to wharf-static over a SOCK_SEQPACKET
 * unix socket; wharf-static hands it back when a request on it is not
 * static. One message is one connection: the fd travels as SCM_RIGHTS, and
 * the payload is a fixed little-endian header followed by the bytes already
 * read from the client and not yet answered (the first of them start a
 * request).
 *
 *     offset size
 *     0      4    magic "WHRF"
 *     4      2    version (HANDOFF_VERSION)
 *     6      2    kind (enum handoff_kind)
 *     8      4    flags (HANDOFF_F_*)
 *     12     4    data_len: bytes after the header
 *     16     2    peer_len: valid bytes of peer (a struct sockaddr)
 *     18     2    id: with HANDOFF_F_ACK, and in an ACK; else 0
 *     20     4    requests already served on this connection
 *     24     128  peer address (struct sockaddr_storage, as the kernel gave it)
 *     152    ...  data_len bytes of client input
 *
 * A receiver refuses (closes the fd and logs) a message with another magic
 * or version, a length that does not match the datagram, or no fd.
 *
 * Acknowledgements, so that a receiver that dies cannot take connections
 * with it: a receiver that acknowledges says so with a HELLO as soon as it
 * accepts a channel. From then on the sender may mark a CONN with
 * HANDOFF_F_ACK and an id; the receiver answers ACK with that id before it
 * touches the connection, and the sender keeps its own copy of the
 * connection until then. When the channel ends first, the sender still has
 * the connection and hands it over again. A HELLO or ACK carries no fd, no
 * data, no peer, no flags (and a HELLO no id). A sender never marks a CONN
 * before it saw the HELLO, and a receiver of another version refuses only
 * the HELLO (a kind it does not know), so either side may be the older.
 */
#ifndef WHARF_HANDOFF_H
#define WHARF_HANDOFF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define HANDOFF_MAGIC "WHRF"
#define HANDOFF_VERSION 1
#define HANDOFF_HEADER_SIZE 152
#define HANDOFF_MAX_DATA (64 * 1024)
#define HANDOFF_MAX_MSG (HANDOFF_HEADER_SIZE + HANDOFF_MAX_DATA)

/*
 * CMSG_SPACE(n * sizeof(int)) spelled as a plain constant expression, for
 * control buffers inside structs: a union with struct cmsghdr (which ends
 * in a flexible array in glibc) would make the struct variable-sized.
 */
#define HANDOFF_CMSG_SPACE(n)                                                                      \
        ((sizeof(struct cmsghdr) + (n) * sizeof(int) + sizeof(size_t) - 1) & ~(sizeof(size_t) - 1))

enum handoff_kind {
        HANDOFF_CONN = 1,  /* serve this client connection */
        HANDOFF_HELLO = 2, /* the receiver acknowledges CONNs marked HANDOFF_F_ACK */
        HANDOFF_ACK = 3,   /* the CONN with this id was taken */
        _HANDOFF_KIND_MAX
};

#define HANDOFF_F_TLS 1u /* the client is behind TLS: the scheme is https */
/*
 * On a connection coming back: the receiver refused it (at its connection
 * limit, or stopping) without reading from it; the sender answers the
 * request itself (wharf-proxy: 502) rather than hand it over again.
 */
#define HANDOFF_F_REFUSED 2u
/* Answer with an ACK of this id before anything else (sent only after a HELLO). */
#define HANDOFF_F_ACK 4u
/*
 * The first request in the data is an internal redirect the sender made
 * (wharf-proxy's X-Accel-Redirect): the receiver serves it also where it
 * serves only such requests, and takes the response headers it names in
 * Wharf-Response-Header lines. Only that request: a receiver never echoes
 * this flag back. A receiver older than this flag refuses the message.
 */
#define HANDOFF_F_INTERNAL 8u
/* A message with any other flag is refused. */
#define HANDOFF_KNOWN_FLAGS (HANDOFF_F_TLS | HANDOFF_F_REFUSED | HANDOFF_F_ACK | HANDOFF_F_INTERNAL)

struct handoff_info {
        enum handoff_kind kind;
        uint32_t flags;
        uint32_t requests; /* already served on the connection */
        uint16_t id;       /* with HANDOFF_F_ACK, and of an ACK; else 0 */
        struct sockaddr_storage peer;
        socklen_t peer_len;
        const char *data; /* points into the message buffer */
        size_t data_len;
};

/*
 * Writes the header for info into out (HANDOFF_HEADER_SIZE bytes); the
 * caller sends it followed by info->data. Returns HANDOFF_HEADER_SIZE or
 * -EMSGSIZE when data_len > HANDOFF_MAX_DATA.
 */
ssize_t handoff_encode_header(const struct handoff_info *info, uint8_t out[HANDOFF_HEADER_SIZE]);

/*
 * Parses a received datagram msg[0..len). Returns 0 and *ret (data points
 * into msg), or -EBADMSG for a wrong magic, size or kind, -EPROTONOSUPPORT
 * for another version.
 */
int handoff_decode(const void *msg, size_t len, struct handoff_info *ret);

/*
 * Blocking-style helpers for one message with one fd (the socket may be
 * non-blocking: then -EAGAIN). handoff_send returns 0 or -errno;
 * handoff_recv returns the datagram length with *ret_fd (-1 if none came,
 * and any extra fds closed), 0 at EOF, or -errno. -EMSGSIZE when the
 * datagram was truncated.
 */
int handoff_send(int chan, int fd, const struct handoff_info *info);
ssize_t handoff_recv(int chan, void *buf, size_t size, int *ret_fd);

/* Fills the msghdr + control buffer to receive one datagram with one fd
 * (for io_uring's RECVMSG); returns the fd found after completion or -1. */
struct handoff_rx {
        struct msghdr msg;
        struct iovec iov;
        struct {
                _Alignas(struct cmsghdr) char buf[HANDOFF_CMSG_SPACE(4)];
        } control;
};
void handoff_rx_prepare(struct handoff_rx *rx, void *buf, size_t size);
int handoff_rx_take_fd(struct handoff_rx *rx);

#endif
