/* SPDX-License-Identifier: MIT */
/*
 * static_conn: one event loop per worker thread.
 *
 * Each worker owns an io_uring, a provided-buffer ring for receives, a pool
 * of connections sized at start, a few splice pipes and its own open-file
 * cache; workers share only the listening sockets and the immutable config.
 *
 * A connection keeps one multishot receive armed for its whole life. What
 * arrives is copied into the connection's input buffer and the provided
 * buffer goes straight back to the kernel, so receive memory is held only
 * for the instant between completion and copy. Responses go out in order:
 * while one is being sent, newly arrived (pipelined) requests wait in the
 * input buffer; when it is done, conn_process() answers as many as fit in
 * one batch, and the batch (heads plus cached bodies) leaves in a single
 * sendmsg. A large file body follows its head as file -> pipe -> socket
 * splices, or as read + send through a bounce buffer below splice_min.
 *
 * All transitions of a connection happen in conn_advance(), one switch on
 * the state; the completion handlers only translate which operation ended.
 * A connection is freed only when it is CONN_CLOSING and nothing of it is in
 * flight in the kernel any more (c->inflight == 0).
 */
#include "static.h"

#include <assert.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define RECV_BUF_SIZE 4096
#define RECV_BUF_COUNT 512
#define RECV_BGID 1
#define HEAD_BUF (16 * 1024)   /* response heads of one batch */
#define MAX_BATCH 16           /* pipelined responses per sendmsg */
#define PIPE_POOL 4
#define PIPE_SIZE (1024 * 1024)
#define COPY_CHUNK (256 * 1024)
#define COPY_POOL 8
#define TICK_USEC 200000
#define STOP_GRACE_MS 30000
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
        CONN_SPLICE_IN,  /* large body: file -> pipe */
        CONN_SPLICE_OUT, /* large body: pipe -> socket */
        CONN_HANDBACK,   /* handing the connection back to the proxy */
        CONN_CLOSING,    /* waiting for in-flight operations, then freed */
        _CONN_STATE_MAX
};

static const char *const conn_state_names[_CONN_STATE_MAX] = {
        [CONN_IDLE] = "idle",           [CONN_SENDING] = "sending",
        [CONN_FILE_READ] = "file-read", [CONN_FILE_SEND] = "file-send",
        [CONN_SPLICE_IN] = "splice-in", [CONN_SPLICE_OUT] = "splice-out",
        [CONN_HANDBACK] = "handback",   [CONN_CLOSING] = "closing",
};

/* Which operation completed, for conn_advance(). */
enum conn_event {
        EV_RECV,
        EV_SEND,
        EV_READ,
        EV_SPLICE_IN,
        EV_SPLICE_OUT,
        EV_HANDBACK,
        EV_WRITABLE, /* POLLOUT after a splice found the socket full */
        _EV_MAX
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
        bool peer_closed;  /* EOF seen: answer what we have, then close */
        bool close_after;  /* close once the output in flight is sent */
        bool handback_after;
        bool handed_off;   /* came through a handoff channel */
        uint32_t handoff_flags; /* as received, returned unchanged on handback */
        bool shut;         /* shutdown() already done */
        bool handed_back;  /* the proxy has it now: close our copy, never shut it down */
        bool hb_sent;      /* the handback message is in flight */
        unsigned requests;
        uint64_t discard;  /* request body bytes still to skip */
        bool discard_chunked; /* a chunked request body is being skipped */
        struct http_chunked chunk;

        struct ring_op op_recv, op_send, op_read, op_splice_in, op_splice_out, op_handback,
                op_poll;

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
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int))];
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
        const char *error_what;

        struct ring ring;
        struct ring_bufs bufs;
        const struct static_config *cfg;
        struct file_cache *cache;
        struct access_log alog;

        struct conn *conns;
        unsigned pool_size;
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

        struct tlist t_header, t_idle, t_send;
        uint64_t now;
        char date[HTTP_DATE_LEN + 1];
        time_t date_sec;
        bool stopping;
        uint64_t stop_deadline;
};

static void conn_advance(struct conn *c, enum conn_event ev, int res, unsigned flags);
static void conn_process(struct conn *c);
static void conn_close(struct conn *c);
static void conn_handback(struct conn *c);
static void chan_put(struct chan *ch);
static void accept_arm(struct listen_op *l);

/* ---- small pools ---- */

static struct iobuf *iobuf_get(struct worker *w)
{
        size_t cap = 2 * w->cfg->s.max_header_size;
        struct iobuf *b;

        while ((b = w->free_io)) {
                w->free_io = b->next_free;
                if (b->in_cap >= cap)
                        break;
                free(b); /* from before a reload that raised max_header_size */
        }
        if (!b) {
                b = malloc(sizeof(*b) + cap);
                if (!b)
                        return NULL;
                b->in_cap = cap;
        }
        b->in_start = b->in_len = b->out_len = 0;
        return b;
}

static void iobuf_put(struct worker *w, struct iobuf *b)
{
        b->next_free = w->free_io;
        w->free_io = b;
}

static struct splice_pipe *pipe_get(struct worker *w)
{
        for (unsigned i = 0; i < PIPE_POOL; i++) {
                struct splice_pipe *p = &w->pipes[i];
                if (p->busy)
                        continue;
                if (p->rfd < 0) {
                        int fds[2];
                        if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0)
                                return NULL;
                        /* Best effort: a bigger pipe means fewer splices per file. */
                        (void) fcntl(fds[1], F_SETPIPE_SZ, PIPE_SIZE);
                        p->rfd = fds[0];
                        p->wfd = fds[1];
                }
                p->busy = true;
                return p;
        }
        return NULL;
}

/* A pipe that may still hold bytes of an aborted body is replaced, not reused. */
static void pipe_put(struct splice_pipe *p, bool dirty)
{
        if (dirty) {
                p->rfd = safe_close(p->rfd);
                p->wfd = safe_close(p->wfd);
        }
        p->busy = false;
}

static char *copy_buf_get(struct worker *w)
{
        if (w->n_copy_free > 0)
                return w->copy_free[--w->n_copy_free];
        return malloc(COPY_CHUNK);
}

static void copy_buf_put(struct worker *w, char *b)
{
        if (w->n_copy_free < COPY_POOL)
                w->copy_free[w->n_copy_free++] = b;
        else
                free(b);
}

/* ---- timers ---- */

static void timer_stop(struct conn *c)
{
        struct tlist *l = c->tl;

        if (!l)
                return;
        if (c->tprev)
                c->tprev->tnext = c->tnext;
        else
                l->head = c->tnext;
        if (c->tnext)
                c->tnext->tprev = c->tprev;
        else
                l->tail = c->tprev;
        c->tprev = c->tnext = NULL;
        c->tl = NULL;
}

static void timer_start(struct conn *c, struct tlist *l, uint64_t timeout_ms)
{
        timer_stop(c);
        c->deadline = c->w->now + timeout_ms;
        c->tl = l;
        c->tprev = l->tail;
        c->tnext = NULL;
        if (l->tail)
                l->tail->tnext = c;
        else
                l->head = c;
        l->tail = c;
}

static void timers_expire(struct worker *w)
{
        struct tlist *lists[] = {&w->t_header, &w->t_idle, &w->t_send};

        for (size_t i = 0; i < ARRAY_SIZE(lists); i++) {
                struct conn *c;
                while ((c = lists[i]->head) && c->deadline <= w->now) {
                        timer_stop(c);
                        log_debug("connection timed out while %s", conn_state_names[c->state]);
                        conn_close(c);
                }
        }
}

/* ---- submissions ---- */

static struct io_uring_sqe *conn_sqe(struct conn *c, struct ring_op *op)
{
        struct io_uring_sqe *sqe = ring_sqe(&c->w->ring, op);

        if (sqe)
                c->inflight++;
        return sqe;
}

static int conn_arm_recv(struct conn *c)
{
        struct io_uring_sqe *sqe = conn_sqe(c, &c->op_recv);

        if (!sqe)
                return -EBUSY;
        io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = RECV_BGID;
        c->recv_armed = true;
        return 0;
}

static int conn_send_batch(struct conn *c)
{
        struct io_uring_sqe *sqe = conn_sqe(c, &c->op_send);

        if (!sqe)
                return -EBUSY;
        c->msg = (struct msghdr){
                .msg_iov = c->iov + c->iov_i,
                .msg_iovlen = c->iov_n - c->iov_i,
        };
        io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
        timer_start(c, &c->w->t_send, c->w->cfg->s.send_timeout);
        c->state = CONN_SENDING;
        return 0;
}

static int conn_splice_in(struct conn *c)
{
        struct io_uring_sqe *sqe = conn_sqe(c, &c->op_splice_in);

        if (!sqe)
                return -EBUSY;
        unsigned len = (unsigned)min_u64(c->file.length, PIPE_SIZE);
        io_uring_prep_splice(sqe, c->file.fd, (int64_t)c->file.offset, c->pipe->wfd, -1, len, 0);
        c->state = CONN_SPLICE_IN;
        return 0;
}

static int conn_splice_out(struct conn *c)
{
        struct io_uring_sqe *sqe = conn_sqe(c, &c->op_splice_out);

        if (!sqe)
                return -EBUSY;
        io_uring_prep_splice(sqe, c->pipe->rfd, -1, c->fd, -1, (unsigned)c->pipe_bytes, 0);
        timer_start(c, &c->w->t_send, c->w->cfg->s.send_timeout);
        c->state = CONN_SPLICE_OUT;
        return 0;
}

/*
 * splice(2) does not wait for a non-blocking socket to drain the way send
 * does inside io_uring: it fails with -EAGAIN. Wait for POLLOUT, then go on.
 */
static int conn_wait_writable(struct conn *c)
{
        struct io_uring_sqe *sqe = conn_sqe(c, &c->op_poll);

        if (!sqe)
                return -EBUSY;
        io_uring_prep_poll_add(sqe, c->fd, POLLOUT);
        timer_start(c, &c->w->t_send, c->w->cfg->s.send_timeout);
        return 0;
}

static int conn_file_read(struct conn *c)
{
        struct io_uring_sqe *sqe = conn_sqe(c, &c->op_read);

        if (!sqe)
                return -EBUSY;
        unsigned len = (unsigned)min_u64(c->file.length, COPY_CHUNK);
        io_uring_prep_read(sqe, c->file.fd, c->copy_buf, len, c->file.offset);
        c->state = CONN_FILE_READ;
        return 0;
}

static int conn_file_send(struct conn *c)
{
        struct io_uring_sqe *sqe = conn_sqe(c, &c->op_send);

        if (!sqe)
                return -EBUSY;
        io_uring_prep_send(sqe, c->fd, c->copy_buf + c->copy_off, c->copy_len - c->copy_off,
                           MSG_NOSIGNAL);
        timer_start(c, &c->w->t_send, c->w->cfg->s.send_timeout);
        c->state = CONN_FILE_SEND;
        return 0;
}

/* ---- connection life ---- */

static struct conn *conn_new(struct worker *w, int fd)
{
        struct conn *c = w->free_conns;

        if (!c)
                return NULL;
        w->free_conns = c->next_free;
        *c = (struct conn){.w = w, .fd = fd, .state = CONN_IDLE, .file.fd = -1};
        w->n_conns++;
        atomic_store_explicit(&w->stats.connections, w->n_conns, memory_order_relaxed);
        atomic_fetch_add_explicit(&w->stats.accepted, 1, memory_order_relaxed);
        return c;
}

static void release_batch(struct conn *c)
{
        for (unsigned i = 0; i < c->n_batch; i++)
                file_entry_release(c->w->cache, c->batch[i]);
        c->n_batch = 0;
        c->iov_n = c->iov_i = 0;
        if (c->io)
                c->io->out_len = 0;
}

static void release_file_body(struct conn *c, bool dirty)
{
        if (c->file.entry)
                file_entry_release(c->w->cache, c->file.entry);
        c->file = (struct body){.kind = BODY_NONE, .fd = -1};
        if (c->pipe) {
                pipe_put(c->pipe, dirty || c->pipe_bytes > 0);
                c->pipe = NULL;
                c->pipe_bytes = 0;
        }
        if (c->copy_buf) {
                copy_buf_put(c->w, c->copy_buf);
                c->copy_buf = NULL;
        }
}

/* Returns the connection to the pool; everything in flight has completed. */
static void conn_free(struct conn *c)
{
        struct worker *w = c->w;

        timer_stop(c);
        release_batch(c);
        release_file_body(c, true);
        if (c->io) {
                iobuf_put(w, c->io);
                c->io = NULL;
        }
        if (c->chan) {
                chan_put(c->chan);
                c->chan = NULL;
        }
        c->fd = safe_close(c->fd);
        c->next_free = w->free_conns;
        w->free_conns = c;
        w->n_conns--;
        atomic_store_explicit(&w->stats.connections, w->n_conns, memory_order_relaxed);

        /* Accepting paused at the limit resumes as soon as there is room. */
        if (w->accept_paused && !w->stopping && w->n_conns < w->cfg->s.max_connections) {
                w->accept_paused = false;
                for (unsigned i = 0; i < w->n_accepts; i++)
                        if (!w->accepts[i].armed)
                                accept_arm(&w->accepts[i]);
        }
}

/*
 * Starts closing: everything of ours still in the kernel is cancelled and
 * the fd is closed when the last completion is in. A connection handed back
 * is not shut down: the other daemon owns it now.
 */
static void conn_close(struct conn *c)
{
        if (c->state == CONN_CLOSING)
                return;
        c->state = CONN_CLOSING;
        timer_stop(c);
        if (!c->handed_back && !c->shut) {
                (void) shutdown(c->fd, SHUT_RDWR);
                c->shut = true;
        }
        if (c->inflight > 0) {
                struct io_uring_sqe *sqe = ring_sqe(&c->w->ring, NULL);
                if (sqe)
                        io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
                if (c->pipe) {
                        sqe = ring_sqe(&c->w->ring, NULL);
                        if (sqe)
                                io_uring_prep_cancel_fd(sqe, c->pipe->rfd,
                                                        IORING_ASYNC_CANCEL_ALL);
                }
                return;
        }
        conn_free(c);
}

static void conn_abort(struct conn *c, int res, const char *what)
{
        if (res != -ECONNRESET && res != -EPIPE && res != -ECANCELED && res != 0)
                log_debug("closing connection: %s: %s", what, strerror(-res));
        conn_close(c);
}

/* Bytes from the client (a receive, or a handoff message) into the input. */
static int conn_input(struct conn *c, const char *data, size_t len)
{
        struct iobuf *io = c->io;

        if (!io) {
                io = c->io = iobuf_get(c->w);
                if (!io)
                        return -ENOMEM;
        }
        if (io->in_start > 0 && io->in_start + io->in_len + len > io->in_cap) {
                memmove(io->in, io->in + io->in_start, io->in_len);
                io->in_start = 0;
        }
        if (io->in_start + io->in_len + len > io->in_cap)
                return -E2BIG;
        memcpy(io->in + io->in_start + io->in_len, data, len);
        io->in_len += len;
        return 0;
}

static void consume_input(struct iobuf *io, size_t n)
{
        io->in_start += n;
        io->in_len -= n;
        if (io->in_len == 0)
                io->in_start = 0;
}

static void update_date(struct worker *w)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME_COARSE, &ts);
        if (ts.tv_sec != w->date_sec) {
                w->date_sec = ts.tv_sec;
                http_date_format(ts.tv_sec, w->date);
        }
}

static void log_access(struct conn *c, const struct http_request *req, int status,
                       uint64_t bytes)
{
        struct worker *w = c->w;
        const struct http_header *ref = req ? http_find_header(req, "Referer") : NULL;
        const struct http_header *ua = req ? http_find_header(req, "User-Agent") : NULL;
        size_t line_len = 0;

        if (w->alog.fd < 0 && !w->alog.journal)
                return;
        if (c->peer_len == 0) {
                c->peer_len = sizeof(c->peer);
                if (getpeername(c->fd, (struct sockaddr *)&c->peer, &c->peer_len) < 0)
                        c->peer_len = 0;
        }
        if (req) {
                /* The request line is the first line of the head, without CRLF. */
                const char *start = req->method_name.ptr;
                const char *eol = memchr(start, '\r', req->head_len);
                line_len = eol ? (size_t)(eol - start) : 0;
        }
        access_log_write(&w->alog,
                         &(struct access_record){
                                 .peer = c->peer_len ? (struct sockaddr *)&c->peer : NULL,
                                 .request_line = req ? req->method_name.ptr : NULL,
                                 .request_line_len = line_len,
                                 .status = status,
                                 .bytes_sent = bytes,
                                 .referer = ref ? ref->value.ptr : NULL,
                                 .referer_len = ref ? ref->value.len : 0,
                                 .user_agent = ua ? ua->value.ptr : NULL,
                                 .user_agent_len = ua ? ua->value.len : 0,
                         });
}

/* Goes idle: arms the right timer and gives the buffers back when empty. */
static void conn_idle(struct conn *c)
{
        struct worker *w = c->w;

        c->state = CONN_IDLE;
        if (w->stopping) {
                /* Finished what it asked for: back to the proxy if it came from there. */
                if (c->handed_off && c->chan && c->chan->open && !c->peer_closed)
                        conn_handback(c);
                else
                        conn_close(c);
                return;
        }
        if (c->peer_closed) {
                conn_close(c);
                return;
        }
        if (c->io && c->io->in_len > 0) {
                /* The deadline covers the whole head: more bytes do not extend it. */
                if (c->tl != &w->t_header)
                        timer_start(c, &w->t_header, w->cfg->s.client_header_timeout);
                return;
        }
        if (c->io) {
                iobuf_put(w, c->io);
                c->io = NULL;
        }
        timer_start(c, &w->t_idle, w->cfg->s.keepalive_timeout);
}

/* What to do once the batch in flight is out. */
static void conn_after_output(struct conn *c)
{
        if (c->close_after) {
                conn_close(c);
        } else if (c->handback_after) {
                c->handback_after = false;
                conn_handback(c);
        } else {
                conn_process(c);
        }
}

/* Starts the large body planned after the batch. */
static void conn_start_file(struct conn *c)
{
        struct worker *w = c->w;
        int r = -ENOMEM;

        if (c->file.length >= w->cfg->s.splice_min && (c->pipe = pipe_get(w))) {
                r = conn_splice_in(c);
        } else if ((c->copy_buf = copy_buf_get(w))) {
                r = conn_file_read(c);
        }
        if (r < 0)
                conn_abort(c, r, "starting a file body");
}

/*
 * Answers the complete requests waiting in the input, as many as fit in one
 * batch, and sends the batch. Called only when nothing is being sent.
 */
static void conn_process(struct conn *c)
{
        struct worker *w = c->w;
        const struct static_config *cfg = w->cfg;
        struct iobuf *io = c->io;
        struct http_request req;

        if (c->state != CONN_IDLE)
                return;
        while (io && io->in_len > 0 && c->n_batch < MAX_BATCH && !c->close_after &&
               !c->handback_after && c->file.kind == BODY_NONE &&
               HEAD_BUF - io->out_len >= 2048) {
                const char *in = io->in + io->in_start;

                if (c->discard > 0) {
                        size_t n = (size_t)min_u64(c->discard, io->in_len);
                        consume_input(io, n);
                        c->discard -= n;
                        continue;
                }
                if (c->discard_chunked) {
                        size_t data;
                        ssize_t r = http_chunked_decode(&c->chunk, io->in + io->in_start,
                                                        io->in_len, &data);
                        if (r == -EAGAIN) {
                                consume_input(io, io->in_len);
                                break;
                        }
                        if (r < 0) {
                                /* Malformed or too long: answer what we have, then close. */
                                c->discard_chunked = false;
                                c->close_after = true;
                                consume_input(io, io->in_len);
                                break;
                        }
                        consume_input(io, (size_t)r);
                        c->discard_chunked = false;
                        continue;
                }

                ssize_t n = http_parse_request(in, io->in_len, cfg->s.max_header_size, &req);
                if (n == -EAGAIN)
                        break;

                struct request_ctx ctx = {
                        .cfg = cfg,
                        .cache = w->cache,
                        .date = w->date,
                        .now_ms = w->now,
                        .handed_off = c->handed_off,
                };
                struct http_writer wr;
                struct body body = {.kind = BODY_NONE, .fd = -1};
                enum plan plan;

                http_writer_init(&wr, io->out + io->out_len, HEAD_BUF - io->out_len);
                if (n < 0) {
                        static_error_response(&ctx, 1, http_status_from_errno((int)n), &wr);
                        log_access(c, NULL, ctx.status, 0);
                        io->in_len = 0;
                        plan = PLAN_RESPOND_CLOSE;
                } else {
                        c->requests++;
                        atomic_fetch_add_explicit(&w->stats.requests, 1, memory_order_relaxed);
                        ctx.keep_alive = req.keep_alive && !w->stopping &&
                                         c->requests < cfg->s.keepalive_requests &&
                                         (req.body != HTTP_BODY_LENGTH ||
                                          req.content_length <= DISCARD_MAX);
                        plan = static_handle_request(&ctx, &req, &wr, &body);
                        if (plan == PLAN_HANDBACK) {
                                /* The request stays in the input for the next owner. */
                                c->requests--;
                                if (c->n_batch == 0 && c->iov_n == 0) {
                                        conn_handback(c);
                                        return;
                                }
                                c->handback_after = true;
                                break;
                        }
                        log_access(c, &req, ctx.status, body.length);
                        consume_input(io, (size_t)n);
                        if (req.body == HTTP_BODY_LENGTH) {
                                c->discard = req.content_length;
                        } else if (req.body == HTTP_BODY_CHUNKED) {
                                c->discard_chunked = true;
                                http_chunked_init(&c->chunk, DISCARD_MAX);
                        }
                }
                if (wr.overflow) {
                        /* Cannot happen with HEAD_BUF >= 2048 per head; fail safe anyway. */
                        if (body.entry)
                                file_entry_release(w->cache, body.entry);
                        conn_close(c);
                        return;
                }

                c->iov[c->iov_n++] = (struct iovec){io->out + io->out_len, wr.len};
                io->out_len += wr.len;
                if (body.kind == BODY_MEMORY) {
                        c->iov[c->iov_n++] = (struct iovec){(void *)body.data, body.length};
                        c->batch[c->n_batch++] = body.entry;
                } else if (body.kind == BODY_FILE) {
                        c->file = body;
                }
                if (plan == PLAN_RESPOND_CLOSE)
                        c->close_after = true;
        }

        if (c->iov_n > 0) {
                int r = conn_send_batch(c);
                if (r < 0)
                        conn_abort(c, r, "send");
                return;
        }
        if (c->close_after) {
                conn_close(c);
                return;
        }
        if (c->handback_after) {
                c->handback_after = false;
                conn_handback(c);
                return;
        }
        conn_idle(c);
}

/* ---- handing a connection back ---- */

static void conn_handback_send(struct conn *c)
{
        struct iobuf *io = c->io;
        struct handoff_info info = {
                .kind = HANDOFF_CONN,
                .flags = c->handoff_flags,
                .requests = c->requests,
                .peer_len = c->peer_len,
                .data = io ? io->in + io->in_start : NULL,
                .data_len = io ? io->in_len : 0,
        };

        if (!c->chan || !c->chan->open || c->peer_closed) {
                conn_close(c);
                return;
        }
        if (c->peer_len == 0) {
                socklen_t len = sizeof(c->peer);
                if (getpeername(c->fd, (struct sockaddr *)&c->peer, &len) == 0)
                        c->peer_len = len;
                info.peer_len = c->peer_len;
        }
        memcpy(&info.peer, &c->peer, sizeof(info.peer));
        if (handoff_encode_header(&info, c->hb_header) < 0) {
                conn_close(c);
                return;
        }
        c->hb_iov[0] = (struct iovec){c->hb_header, HANDOFF_HEADER_SIZE};
        c->hb_iov[1] = (struct iovec){(void *)info.data, info.data_len};
        c->msg = (struct msghdr){
                .msg_iov = c->hb_iov,
                .msg_iovlen = info.data_len ? 2 : 1,
                .msg_control = c->hb_control.buf,
                .msg_controllen = sizeof(c->hb_control.buf),
        };
        struct cmsghdr *cm = CMSG_FIRSTHDR(&c->msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &c->fd, sizeof(int));

        struct io_uring_sqe *sqe = conn_sqe(c, &c->op_handback);
        if (!sqe) {
                conn_close(c);
                return;
        }
        io_uring_prep_sendmsg(sqe, c->chan->fd, &c->msg, MSG_NOSIGNAL);
        c->hb_sent = true;
}

/*
 * Gives the connection back to the daemon it came from, with the input not
 * yet answered. The receive is stopped first, so that no byte the client
 * sends after this point is read here.
 */
static void conn_handback(struct conn *c)
{
        c->state = CONN_HANDBACK;
        timer_stop(c);
        if (c->recv_armed) {
                struct io_uring_sqe *sqe = ring_sqe(&c->w->ring, NULL);
                if (!sqe) {
                        conn_close(c);
                        return;
                }
                io_uring_prep_cancel(sqe, &c->op_recv, 0);
                return; /* continues when the receive's last completion arrives */
        }
        conn_handback_send(c);
}

/* ---- the state machine ---- */

static void conn_received(struct conn *c, int res, unsigned flags)
{
        if (!(flags & IORING_CQE_F_MORE))
                c->recv_armed = false;

        if (res > 0) {
                unsigned bid = ring_cqe_bid(flags);
                int r = 0;
                if (c->state != CONN_CLOSING)
                        r = conn_input(c, ring_bufs_get(&c->w->bufs, bid), (size_t)res);
                ring_bufs_recycle(&c->w->bufs, bid);
                if (r < 0) {
                        /* More pipelined input than we buffer while answering. */
                        conn_abort(c, r, "input buffer");
                        return;
                }
                if (c->state == CONN_IDLE)
                        conn_process(c);
        } else if (res == 0) {
                c->peer_closed = true;
                if (c->state == CONN_IDLE || c->state == CONN_HANDBACK)
                        conn_close(c);
        } else if (res != -ENOBUFS && res != -ECANCELED) {
                conn_abort(c, res, "recv");
                return;
        }

        if (c->recv_armed || c->state == CONN_CLOSING)
                return;
        if (c->state == CONN_HANDBACK) {
                if (!c->hb_sent)
                        conn_handback_send(c);
        } else if (!c->peer_closed && conn_arm_recv(c) < 0) {
                conn_close(c);
        }
}

static void conn_file_done(struct conn *c)
{
        timer_stop(c);
        release_file_body(c, false);
        c->state = CONN_IDLE;
        conn_after_output(c);
}

static void conn_advance(struct conn *c, enum conn_event ev, int res, unsigned flags)
{
        int r = 0;

        /* Receives run beside every state: they only add to the input. */
        if (ev == EV_RECV) {
                conn_received(c, res, flags);
                return;
        }

        switch (c->state) {
        case CONN_SENDING:
                if (res <= 0) {
                        conn_abort(c, res, "send");
                        return;
                }
                /* Skip what went out; a short send continues where it stopped. */
                for (size_t left = (size_t)res; left > 0 && c->iov_i < c->iov_n;) {
                        struct iovec *v = &c->iov[c->iov_i];
                        size_t n = min_size(left, v->iov_len);
                        v->iov_base = (char *)v->iov_base + n;
                        v->iov_len -= n;
                        left -= n;
                        if (v->iov_len == 0)
                                c->iov_i++;
                }
                if (c->iov_i < c->iov_n) {
                        r = conn_send_batch(c);
                        break;
                }
                timer_stop(c);
                release_batch(c);
                c->state = CONN_IDLE;
                if (c->file.kind == BODY_FILE)
                        conn_start_file(c);
                else
                        conn_after_output(c);
                return;

        case CONN_FILE_READ:
                if (res <= 0) {
                        /* The file shrank under us: the client must see a short body. */
                        conn_abort(c, res ? res : -EIO, "read");
                        return;
                }
                c->copy_len = (size_t)res;
                c->copy_off = 0;
                r = conn_file_send(c);
                break;

        case CONN_FILE_SEND:
                if (res <= 0) {
                        conn_abort(c, res, "send");
                        return;
                }
                c->copy_off += (size_t)res;
                if (c->copy_off < c->copy_len) {
                        r = conn_file_send(c);
                        break;
                }
                c->file.offset += c->copy_len;
                c->file.length -= c->copy_len;
                if (c->file.length > 0)
                        r = conn_file_read(c);
                else
                        conn_file_done(c);
                break;

        case CONN_SPLICE_IN:
                if (res <= 0) {
                        conn_abort(c, res ? res : -EIO, "splice from file");
                        return;
                }
                c->pipe_bytes = (size_t)res;
                c->file.offset += (uint64_t)res;
                c->file.length -= (uint64_t)res;
                r = conn_splice_out(c);
                break;

        case CONN_SPLICE_OUT:
                if (ev == EV_WRITABLE) {
                        r = res < 0 ? res : conn_splice_out(c);
                        break;
                }
                if (res == -EAGAIN) {
                        r = conn_wait_writable(c);
                        break;
                }
                if (res <= 0) {
                        conn_abort(c, res, "splice to socket");
                        return;
                }
                c->pipe_bytes -= (size_t)res;
                if (c->pipe_bytes > 0)
                        r = conn_splice_out(c);
                else if (c->file.length > 0)
                        r = conn_splice_in(c);
                else
                        conn_file_done(c);
                break;

        case CONN_HANDBACK:
                if (ev != EV_HANDBACK)
                        return;
                if (res < 0) {
                        log_warning("handing a connection back failed: %s", strerror(-res));
                        conn_close(c);
                        return;
                }
                c->handed_back = true;
                conn_close(c);
                return;

        case CONN_IDLE:
        case CONN_CLOSING:
                return;

        case _CONN_STATE_MAX:
        default:
                assert(!"unreachable connection state");
                return;
        }
        if (r < 0)
                conn_abort(c, r, "submit");
}

/*
 * The completion handlers: which operation ended, then conn_advance(). A
 * multishot receive is in flight until a completion without F_MORE.
 */
static void conn_complete(struct conn *c, enum conn_event ev, int res, unsigned flags)
{
        if (ev != EV_RECV || !(flags & IORING_CQE_F_MORE))
                c->inflight--;
        if (c->state == CONN_CLOSING) {
                if (ev == EV_RECV && res > 0)
                        ring_bufs_recycle(&c->w->bufs, ring_cqe_bid(flags));
                if (ev == EV_RECV && !(flags & IORING_CQE_F_MORE))
                        c->recv_armed = false;
                if (c->inflight == 0)
                        conn_free(c);
                return;
        }
        /* If this made it close with nothing left in flight, conn_close() freed it. */
        conn_advance(c, ev, res, flags);
}

static void on_recv(struct ring_op *op, int res, unsigned flags)
{
        conn_complete(container_of(op, struct conn, op_recv), EV_RECV, res, flags);
}

static void on_send(struct ring_op *op, int res, unsigned flags)
{
        conn_complete(container_of(op, struct conn, op_send), EV_SEND, res, flags);
}

static void on_read(struct ring_op *op, int res, unsigned flags)
{
        conn_complete(container_of(op, struct conn, op_read), EV_READ, res, flags);
}

static void on_splice_in(struct ring_op *op, int res, unsigned flags)
{
        conn_complete(container_of(op, struct conn, op_splice_in), EV_SPLICE_IN, res, flags);
}

static void on_splice_out(struct ring_op *op, int res, unsigned flags)
{
        conn_complete(container_of(op, struct conn, op_splice_out), EV_SPLICE_OUT, res, flags);
}

static void on_handback(struct ring_op *op, int res, unsigned flags)
{
        conn_complete(container_of(op, struct conn, op_handback), EV_HANDBACK, res, flags);
}

static void on_poll(struct ring_op *op, int res, unsigned flags)
{
        conn_complete(container_of(op, struct conn, op_poll), EV_WRITABLE, res, flags);
}

/* Sets up a fresh connection: handlers, the receive, the first timer. */
static void conn_start(struct conn *c)
{
        c->op_recv.handler = on_recv;
        c->op_send.handler = on_send;
        c->op_read.handler = on_read;
        c->op_splice_in.handler = on_splice_in;
        c->op_splice_out.handler = on_splice_out;
        c->op_handback.handler = on_handback;
        c->op_poll.handler = on_poll;
        if (conn_arm_recv(c) < 0) {
                conn_close(c);
                return;
        }
        if (c->io && c->io->in_len > 0) {
                conn_process(c);
                return;
        }
        /* Until the first request arrives, the header timeout applies (as nginx). */
        timer_start(c, &c->w->t_header, c->w->cfg->s.client_header_timeout);
}

/* ---- handoff channels ---- */

static void chan_arm(struct chan *ch);

static void chan_put(struct chan *ch)
{
        struct worker *w = ch->w;

        if (--ch->refs > 0)
                return;
        safe_close(ch->fd);
        if (ch->prev)
                ch->prev->next = ch->next;
        else
                w->chans = ch->next;
        if (ch->next)
                ch->next->prev = ch->prev;
        w->n_chans--;
        free(ch);
}

static void chan_adopt(struct chan *ch, int fd, const struct handoff_info *info)
{
        struct worker *w = ch->w;
        struct conn *c;

        if (w->stopping || w->n_conns >= w->cfg->s.max_connections || !(c = conn_new(w, fd))) {
                log_warning("handoff: refusing a connection: %s",
                            w->stopping ? "shutting down" : "at max_connections");
                close(fd);
                return;
        }
        c->handed_off = true;
        c->chan = ch;
        ch->refs++;
        c->requests = info->requests;
        c->handoff_flags = info->flags;
        memcpy(&c->peer, &info->peer, sizeof(c->peer));
        c->peer_len = info->peer_len;
        if (info->data_len > 0 && conn_input(c, info->data, info->data_len) < 0) {
                log_warning("handoff: %zu bytes of client input is more than we buffer",
                            info->data_len);
                conn_close(c);
                return;
        }
        conn_start(c);
}

static void on_chan_recv(struct ring_op *op, int res, unsigned flags)
{
        struct chan *ch = container_of(op, struct chan, op_recv);
        struct handoff_info info;
        int fd, r;

        (void) flags;
        if (res == -ECANCELED) {
                /* We are stopping: no new handoffs, but handbacks still go out here. */
                chan_put(ch);
                return;
        }
        if (res <= 0) {
                /* The sender went away: nothing can be handed back on it either. */
                ch->open = false;
                chan_put(ch);
                return;
        }
        fd = handoff_rx_take_fd(&ch->rx);
        r = handoff_decode(ch->buf, (size_t)res, &info);
        if (r < 0 || fd < 0) {
                log_warning("handoff: refusing a message: %s",
                            fd < 0 ? "no file descriptor in it" : strerror(-r));
                safe_close(fd);
        } else {
                chan_adopt(ch, fd, &info);
        }
        if (ch->w->stopping) {
                chan_put(ch);
                return;
        }
        chan_arm(ch);
}

static void chan_arm(struct chan *ch)
{
        struct io_uring_sqe *sqe = ring_sqe(&ch->w->ring, &ch->op_recv);

        if (!sqe) {
                ch->open = false;
                chan_put(ch);
                return;
        }
        handoff_rx_prepare(&ch->rx, ch->buf, sizeof(ch->buf));
        io_uring_prep_recvmsg(sqe, ch->fd, &ch->rx.msg, MSG_CMSG_CLOEXEC);
}

static void chan_new(struct worker *w, int fd)
{
        struct chan *ch = malloc(sizeof(*ch));

        if (!ch) {
                close(fd);
                return;
        }
        *ch = (struct chan){.w = w, .fd = fd, .refs = 1, .open = true};
        ch->op_recv.handler = on_chan_recv;
        ch->next = w->chans;
        if (w->chans)
                w->chans->prev = ch;
        w->chans = ch;
        w->n_chans++;
        chan_arm(ch);
}

/* ---- accepting ---- */

static void accept_pause(struct worker *w)
{
        w->accept_paused = true;
        for (unsigned i = 0; i < w->n_accepts; i++) {
                struct listen_op *l = &w->accepts[i];
                if (!l->armed || l->handoff)
                        continue;
                struct io_uring_sqe *sqe = ring_sqe(&w->ring, NULL);
                if (sqe)
                        io_uring_prep_cancel(sqe, &l->op, 0);
        }
}

static void on_accept(struct ring_op *op, int res, unsigned flags)
{
        struct listen_op *l = container_of(op, struct listen_op, op);
        struct worker *w = l->w;

        if (!(flags & IORING_CQE_F_MORE))
                l->armed = false;
        if (res >= 0) {
                if (l->handoff) {
                        chan_new(w, res);
                } else if (w->stopping) {
                        close(res); /* raced with the stop */
                } else {
                        struct conn *c = conn_new(w, res);
                        if (c)
                                conn_start(c);
                        else
                                close(res);
                }
                if (!l->handoff && w->n_conns >= w->cfg->s.max_connections && !w->accept_paused)
                        accept_pause(w);
        } else if (res != -ECANCELED) {
                /* Out of fds or similar: the next tick retries. */
                log_warning("accept: %s", strerror(-res));
                return;
        }
        if (!l->armed && !w->stopping && !(w->accept_paused && !l->handoff))
                accept_arm(l);
}

static void accept_arm(struct listen_op *l)
{
        struct io_uring_sqe *sqe = ring_sqe(&l->w->ring, &l->op);

        if (!sqe)
                return;
        io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        l->armed = true;
}

/* ---- the loop ---- */

static void efd_arm(struct worker *w);

static void on_efd(struct ring_op *op, int res, unsigned flags)
{
        struct worker *w = container_of(op, struct worker, op_efd);

        (void) res;
        (void) flags;
        /* The loop looks at cfg and stopping after every batch; just re-arm. */
        if (!w->stopping)
                efd_arm(w);
}

static void efd_arm(struct worker *w)
{
        struct io_uring_sqe *sqe = ring_sqe(&w->ring, &w->op_efd);

        if (sqe)
                io_uring_prep_read(sqe, w->efd, &w->efd_val, sizeof(w->efd_val), 0);
}

static void worker_begin_stop(struct worker *w)
{
        w->stopping = true;
        w->stop_deadline = w->now + STOP_GRACE_MS;
        for (unsigned i = 0; i < w->n_accepts; i++) {
                if (!w->accepts[i].armed)
                        continue;
                struct io_uring_sqe *sqe = ring_sqe(&w->ring, NULL);
                if (sqe)
                        io_uring_prep_cancel(sqe, &w->accepts[i].op, 0);
        }
        for (struct chan *ch = w->chans; ch; ch = ch->next) {
                struct io_uring_sqe *sqe = ring_sqe(&w->ring, NULL);
                if (sqe)
                        io_uring_prep_cancel(sqe, &ch->op_recv, 0);
        }
        for (unsigned i = 0; i < w->pool_size; i++) {
                struct conn *c = &w->conns[i];
                if (c->fd >= 0 && c->state == CONN_IDLE)
                        conn_idle(c);
        }
}

static void worker_switch_config(struct worker *w, const struct static_config *cfg)
{
        w->cfg = cfg;
        file_cache_flush(w->cache);
        access_log_done(&w->alog);
        if (access_log_open(&w->alog, cfg->s.access_log ? cfg->s.access_log : "off") < 0)
                log_error("cannot open access log '%s'", cfg->s.access_log);
        atomic_store(&w->stats.cfg_seen, cfg);
}

static int worker_setup(struct worker *w)
{
        struct server *srv = w->srv;
        int r;

        r = ring_init(&w->ring, RING_ENTRIES, &w->error_what);
        if (r < 0)
                return r;
        r = ring_bufs_init(&w->ring, &w->bufs, RECV_BGID, RECV_BUF_COUNT, RECV_BUF_SIZE);
        if (r < 0) {
                w->error_what = "provided buffer ring (IORING_REGISTER_PBUF_RING)";
                return r;
        }
        w->pool_size = w->cfg->s.max_connections + POOL_SLACK;
        w->conns = calloc(w->pool_size, sizeof(*w->conns));
        w->cache = file_cache_new(w->cfg->s.open_file_cache);
        if (!w->conns || !w->cache) {
                w->error_what = "memory for connections";
                return -ENOMEM;
        }
        for (unsigned i = w->pool_size; i-- > 0;) {
                w->conns[i].fd = -1;
                w->conns[i].next_free = w->free_conns;
                w->free_conns = &w->conns[i];
        }
        r = access_log_open(&w->alog, w->cfg->s.access_log ? w->cfg->s.access_log : "off");
        if (r < 0) {
                w->error_what = "access log";
                return r;
        }
        for (size_t i = 0; i < srv->n_listeners && w->n_accepts < LISTEN_MAX; i++) {
                struct listen_op *l = &w->accepts[w->n_accepts++];
                l->op.handler = on_accept;
                l->w = w;
                l->fd = srv->listeners[i].fd;
                l->handoff = srv->listeners[i].type == SOCK_SEQPACKET;
                accept_arm(l);
        }
        w->op_efd.handler = on_efd;
        efd_arm(w);
        update_date(w);
        return 0;
}

static void worker_teardown(struct worker *w)
{
        /* Connections still open at the hard deadline are closed without ceremony. */
        if (w->conns)
                for (unsigned i = 0; i < w->pool_size; i++)
                        w->conns[i].fd = safe_close(w->conns[i].fd);
        while (w->chans) {
                struct chan *ch = w->chans;
                w->chans = ch->next;
                safe_close(ch->fd);
                free(ch);
        }
        if (w->ring.uring.ring_fd > 0) {
                ring_bufs_done(&w->ring, &w->bufs);
                ring_done(&w->ring);
        }
        access_log_flush(&w->alog);
}

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        struct server *srv = w->srv;
        int r;

        w->cfg = atomic_load(&srv->cfg);
        atomic_store(&w->stats.cfg_seen, w->cfg);
        w->now = now_ms();
        r = worker_setup(w);
        if (r < 0) {
                atomic_store(&w->stats.state, r);
                worker_teardown(w);
                return NULL;
        }
        atomic_store(&w->stats.state, 1);

        for (;;) {
                r = ring_run(&w->ring, TICK_USEC);
                if (r < 0) {
                        log_error("worker %u: io_uring wait failed: %s", w->id, strerror(-r));
                        break;
                }
                w->now = now_ms();
                atomic_store_explicit(&w->stats.heartbeat_ms, w->now, memory_order_relaxed);
                update_date(w);
                timers_expire(w);

                const struct static_config *cfg = atomic_load(&srv->cfg);
                if (cfg != w->cfg)
                        worker_switch_config(w, cfg);
                if (atomic_load_explicit(&srv->stopping, memory_order_relaxed) && !w->stopping)
                        worker_begin_stop(w);
                if (w->stopping) {
                        if (w->n_conns == 0 && w->n_chans == 0)
                                break;
                        if (w->now >= w->stop_deadline) {
                                log_warning("worker %u: %u connections still open after %d s",
                                            w->id, w->n_conns, STOP_GRACE_MS / 1000);
                                break;
                        }
                }
                if (!w->stopping && !w->accept_paused)
                        for (unsigned i = 0; i < w->n_accepts; i++)
                                if (!w->accepts[i].armed)
                                        accept_arm(&w->accepts[i]);
                if (w->alog.len > 0)
                        access_log_flush(&w->alog);
        }
        worker_teardown(w);
        atomic_store(&w->stats.state, 2);
        return NULL;
}

struct worker *worker_new(struct server *srv, unsigned id)
{
        struct worker *w = calloc(1, sizeof(*w));

        if (!w)
                return NULL;
        w->srv = srv;
        w->id = id;
        w->alog.fd = -1;
        for (unsigned i = 0; i < PIPE_POOL; i++)
                w->pipes[i].rfd = w->pipes[i].wfd = -1;
        w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (w->efd < 0) {
                free(w);
                return NULL;
        }
        return w;
}

struct worker *worker_free(struct worker *w)
{
        if (!w)
                return NULL;
        for (unsigned i = 0; i < PIPE_POOL; i++) {
                safe_close(w->pipes[i].rfd);
                safe_close(w->pipes[i].wfd);
        }
        while (w->free_io) {
                struct iobuf *b = w->free_io;
                w->free_io = b->next_free;
                free(b);
        }
        while (w->n_copy_free > 0)
                free(w->copy_free[--w->n_copy_free]);
        file_cache_free(w->cache);
        access_log_done(&w->alog);
        free(w->conns);
        safe_close(w->efd);
        free(w);
        return NULL;
}

int worker_start(struct worker *w)
{
        int r = pthread_create(&w->thread, NULL, worker_main, w);

        return -r;
}

int worker_join(struct worker *w)
{
        return -pthread_join(w->thread, NULL);
}

void worker_poke(struct worker *w)
{
        uint64_t one = 1;

        (void) !write(w->efd, &one, sizeof(one));
}

struct worker_stats *worker_stats(struct worker *w)
{
        return &w->stats;
}

const char *worker_error_what(struct worker *w)
{
        return w->error_what;
}
