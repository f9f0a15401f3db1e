/* SPDX-License-Identifier: MIT */
/*
 * static_worker.h: the inside of a wharf-static worker, shared by
 * static_conn.c (the connection state machine) and static_worker.c (the
 * loop, listeners and handoff channels). Everything here belongs to one
 * worker thread; nothing is shared with other workers.
 */
#ifndef WHARF_STATIC_WORKER_H
#define WHARF_STATIC_WORKER_H

#include "static.h"

#define RECV_BUF_SIZE 4096
#define RECV_BUF_COUNT 512
#define RECV_BGID 1
#define HEAD_BUF (16 * 1024) /* response heads of one batch */
#define MAX_BATCH 16         /* pipelined responses per sendmsg */
#define PIPE_POOL 4
#define PIPE_SIZE (1024 * 1024)
#define COPY_CHUNK (256 * 1024)
#define SENDFILE_BURST (1024 * 1024) /* bytes per turn before yielding to others */
#define COPY_POOL 8
#define TICK_USEC 200000
#define STOP_GRACE_MS 30000
#define STOP_FIRST_REQUEST_MS 1000 /* at stop, for a connection yet to send one */
#define RING_ENTRIES 1024
/*
 * A multishot accept may deliver a few more connections after the limit,
 * before its cancellation takes effect; the pool has room for them so that
 * none of them is dropped.
 */
#define POOL_SLACK 128
/*
 * A body sent with GET or HEAD means nothing to a file server, but it must
 * be read past to find the next request. Up to this size it is skipped and
 * the connection stays; a larger one closes the connection after the answer.
 */
#define DISCARD_MAX (1024 * 1024)

enum conn_state {
        CONN_IDLE,       /* no response in flight; waiting for (more of) a request */
        CONN_SENDING,    /* a batch of heads and cached bodies is being sent */
        CONN_FILE_READ,  /* large body, copy path: reading a chunk */
        CONN_FILE_SEND,  /* large body, copy path: sending the chunk */
        CONN_SENDFILE,   /* large body: sendfile(2) whenever the socket is writable */
        CONN_SPLICE_IN,  /* large body: file -> pipe */
        CONN_SPLICE_OUT, /* large body: pipe -> socket */
        CONN_HANDBACK,   /* handing the connection back to the proxy */
        CONN_CLOSING,    /* waiting for in-flight operations, then freed */
        _CONN_STATE_MAX
};

/* Per-connection buffers, taken from a free list only while needed. */
struct iobuf {
        struct iobuf *next_free;
        size_t in_cap;
        size_t in_start, in_len; /* unprocessed input: in[in_start .. +in_len) */
        size_t out_len;
        char out[HEAD_BUF];
        char in[];
};

struct splice_pipe {
        int rfd, wfd;
        bool busy;
};

struct chan;

/* Timer lists: all members share one timeout, so appending keeps them sorted. */
struct tlist {
        struct conn *head, *tail;
};

struct conn {
        struct worker *w;
        int fd;
        enum conn_state state;
        unsigned inflight; /* operations submitted and not yet finally completed */
        bool recv_armed;
        bool peer_closed; /* EOF seen: answer what we have, then close */
        bool close_after; /* close once the output in flight is sent */
        bool handback_after;
        bool handed_off;        /* came through a handoff channel */
        uint32_t handoff_flags; /* as received, returned unchanged on handback */
        bool internal_first;    /* HANDOFF_F_INTERNAL: the first request is an internal redirect */
        bool shut;              /* shutdown() already done */
        bool handed_back;       /* the proxy has it now: close our copy, never shut it down */
        bool hb_sent;           /* the handback message is in flight */
        unsigned requests;
        uint64_t discard;     /* request body bytes still to skip */
        bool discard_chunked; /* a chunked request body is being skipped */
        struct http_chunked chunk;

        struct ring_op op_recv, op_send, op_read, op_splice_in, op_splice_out, op_handback, op_poll;

        struct iobuf *io;
        struct chan *chan;
        struct sockaddr_storage peer;
        socklen_t peer_len;

        /* The batch in flight: heads in io->out, cached bodies by reference. */
        struct iovec iov[2 * MAX_BATCH];
        unsigned iov_n, iov_i;
        struct file_entry *batch[MAX_BATCH];
        unsigned n_batch;
        struct msghdr msg;

        /* A large body after the batch. */
        struct body file;
        struct splice_pipe *pipe;
        size_t pipe_bytes;
        char *copy_buf;
        size_t copy_len, copy_off;

        /* Handback message. */
        uint8_t hb_header[HANDOFF_HEADER_SIZE];
        struct iovec hb_iov[2];
        struct {
                _Alignas(struct cmsghdr) char buf[HANDOFF_CMSG_SPACE(1)];
        } hb_control;

        /* Timers. */
        struct tlist *tl;
        struct conn *tprev, *tnext;
        uint64_t deadline;

        struct conn *next_free;
};

struct chan {
        struct worker *w;
        int fd;
        unsigned refs; /* the channel's own while open + one per connection from it */
        bool open;
        struct ring_op op_recv;
        struct handoff_rx rx;
        struct chan *prev, *next;
        char buf[HANDOFF_MAX_MSG];
};

struct listen_op {
        struct ring_op op;
        struct worker *w;
        int fd;
        bool handoff;
        bool armed;
};

struct worker {
        struct server *srv;
        unsigned id;
        pthread_t thread;
        struct worker_stats stats;

        struct ring ring;
        struct ring_bufs bufs;
        const struct static_config *cfg;
        struct file_cache *cache;
        struct access_log alog;

        struct conn *conns;
        unsigned pool_size;
        unsigned pool_used; /* conns[0..pool_used) were handed out: the rest is untouched */
        struct conn *free_conns;
        unsigned n_conns;
        struct chan *chans;
        unsigned n_chans;

        struct listen_op accepts[LISTEN_MAX];
        unsigned n_accepts;
        bool accept_paused;

        int efd;
        uint64_t efd_val;
        struct ring_op op_efd;

        struct iobuf *free_io;
        struct splice_pipe pipes[PIPE_POOL];
        char *copy_free[COPY_POOL];
        unsigned n_copy_free;

        struct tlist t_header, t_idle, t_send, t_stop;
        uint64_t now;
        char date[HTTP_DATE_LEN + 1];
        time_t date_sec;
        bool stopping;
        uint64_t stop_deadline;
};

/* static_conn.c */
struct conn *conn_new(struct worker *w, int fd);
/* Arms the receive and the first timer; answers input already there. */
void conn_start(struct conn *c);
/* Input bytes from the client. 0, -ENOMEM or -E2BIG (more than we buffer). */
int conn_input(struct conn *c, const char *data, size_t len);
/* The connection has nothing in flight: wait for the next request, or end. */
void conn_idle(struct conn *c);
void conn_close(struct conn *c);
/* Closes connections whose deadline passed. */
void timers_expire(struct worker *w);

/* static_worker.c */
void chan_put(struct chan *ch);
void accept_arm(struct listen_op *l);

#endif
