/* SPDX-License-Identifier: MIT */
/*
 * static_conn: the connection state machine of a wharf-static worker.
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
#include "static_worker.h"

#include <assert.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
static const char *const conn_state_names[_CONN_STATE_MAX] = {
    [CONN_IDLE] = "idle",
    [CONN_SENDING] = "sending",
    [CONN_FILE_READ] = "file-read",
    [CONN_FILE_SEND] = "file-send",
    [CONN_SENDFILE] = "sendfile",
    [CONN_SPLICE_IN] = "splice-in",
    [CONN_SPLICE_OUT] = "splice-out",
    [CONN_HANDBACK] = "handback",
    [CONN_CLOSING] = "closing",
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

static void conn_advance(struct conn *c, enum conn_event ev, int res, unsigned flags);
static void conn_process(struct conn *c);
static void conn_handback(struct conn *c);

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

void timers_expire(struct worker *w)
{
        struct tlist *lists[] = {&w->t_header, &w->t_idle, &w->t_send, &w->t_stop};

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
        /*
         * With a file body to follow, MSG_MORE holds the head back so that it
         * leaves in full segments with the body (nginx's tcp_nopush).
         */
        io_uring_prep_sendmsg(sqe, c->fd, &c->msg,
                              MSG_NOSIGNAL | (c->file.kind == BODY_FILE ? MSG_MORE : 0));
        timer_start(c, &c->w->t_send, c->w->cfg->s.send_timeout);
        c->state = CONN_SENDING;
        return 0;
}

static int conn_splice_in(struct conn *c)
{
        struct io_uring_sqe *sqe = conn_sqe(c, &c->op_splice_in);

        if (!sqe)
                return -EBUSY;
        unsigned len = (unsigned) min_u64(c->file.length, PIPE_SIZE);
        io_uring_prep_splice(sqe, c->file.fd, (int64_t) c->file.offset, c->pipe->wfd, -1, len, 0);
        c->state = CONN_SPLICE_IN;
        return 0;
}

static int conn_splice_out(struct conn *c)
{
        struct io_uring_sqe *sqe = conn_sqe(c, &c->op_splice_out);

        if (!sqe)
                return -EBUSY;
        io_uring_prep_splice(sqe, c->pipe->rfd, -1, c->fd, -1, (unsigned) c->pipe_bytes, 0);
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

/*
 * Zero-copy without io_uring's splice: sendfile(2) on the non-blocking
 * socket moves page references straight from the page cache, and when the
 * socket is full a POLLOUT through the ring says when to go on. io_uring
 * has no sendfile opcode, and its splice runs in io-wq threads (two
 * context switches per chunk), which the benchmark shows costing more than
 * this synchronous call (README, "Measured"). At most SENDFILE_BURST bytes
 * go out per turn, so one large file does not keep the loop from the
 * other connections. Returns 1 when the body is out, 0 when waiting, or a
 * negative errno.
 */
static int conn_sendfile(struct conn *c)
{
        size_t sent = 0;

        c->state = CONN_SENDFILE;
        while (c->file.length > 0) {
                off_t off = (off_t) c->file.offset;
                size_t len = (size_t) min_u64(c->file.length, SENDFILE_BURST);
                ssize_t n = sendfile(c->fd, c->file.fd, &off, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return conn_wait_writable(c);
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return -EIO; /* the file shrank: the client must see a short body */
                c->file.offset += (uint64_t) n;
                c->file.length -= (uint64_t) n;
                sent += (size_t) n;
                if (sent >= SENDFILE_BURST && c->file.length > 0)
                        return conn_wait_writable(c); /* writable: completes next turn */
        }
        return 1;
}

static int conn_file_read(struct conn *c)
{
        struct io_uring_sqe *sqe = conn_sqe(c, &c->op_read);

        if (!sqe)
                return -EBUSY;
        unsigned len = (unsigned) min_u64(c->file.length, COPY_CHUNK);
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

struct conn *conn_new(struct worker *w, int fd)
{
        struct conn *c = w->free_conns;

        /*
         * Freed ones first; the pool's untouched tail only at a new peak, so
         * that its memory is only ever as big as the most connections seen.
         */
        if (c)
                w->free_conns = c->next_free;
        else if (w->pool_used < w->pool_size)
                c = &w->conns[w->pool_used++];
        else
                return NULL;
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
void conn_close(struct conn *c)
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
                /*
                 * The shutdown already ends the multishot receive (it completes
                 * with 0): a cancellation, which searches every armed request of
                 * the ring, is needed only for anything else in flight.
                 */
                bool only_recv = c->shut && !c->handed_back && c->inflight == 1 && c->recv_armed;
                struct io_uring_sqe *sqe = only_recv ? NULL : ring_sqe(&c->w->ring, NULL);
                if (sqe)
                        io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
                if (c->pipe) {
                        sqe = ring_sqe(&c->w->ring, NULL);
                        if (sqe)
                                io_uring_prep_cancel_fd(sqe, c->pipe->rfd, IORING_ASYNC_CANCEL_ALL);
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
int conn_input(struct conn *c, const char *data, size_t len)
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

static void log_access(struct conn *c, const struct http_request *req, int status, uint64_t bytes)
{
        struct worker *w = c->w;
        const struct http_header *ref = req ? http_find_header(req, "Referer") : NULL;
        const struct http_header *ua = req ? http_find_header(req, "User-Agent") : NULL;
        const struct sockaddr *client;
        struct sockaddr_storage real;
        socklen_t real_len;
        size_t line_len = 0;

        if (w->alog.fd < 0 && !w->alog.journal)
                return;
        if (c->peer_len == 0) {
                c->peer_len = sizeof(c->peer);
                if (getpeername(c->fd, (struct sockaddr *) &c->peer, &c->peer_len) < 0)
                        c->peer_len = 0;
        }
        /*
         * Behind a trusted proxy (set_real_ip_from) the client is the one it
         * names, request by request: a load balancer's keep-alive connection
         * carries many clients' requests. c->peer stays the peer, for the
         * proxy a handed-back connection goes to (it decides for itself).
         */
        client = c->peer_len ? (const struct sockaddr *) &c->peer : NULL;
        if (req &&
            realip_from_request(&w->cfg->realip, req, &c->peer, c->peer_len, &real, &real_len))
                client = (const struct sockaddr *) &real;
        if (req) {
                /* The request line is the first line of the head, without CRLF. */
                const char *start = req->method_name.ptr;
                const char *eol = memchr(start, '\r', req->head_len);
                line_len = eol ? (size_t) (eol - start) : 0;
        }
        access_log_write(&w->alog, &(struct access_record){
                                       .peer = client,
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
void conn_idle(struct conn *c)
{
        struct worker *w = c->w;

        c->state = CONN_IDLE;
        if (w->stopping) {
                /* Finished what it asked for: back to the proxy if it came from there. */
                if (c->handed_off && c->chan && c->chan->open && !c->peer_closed) {
                        conn_handback(c);
                } else if (c->requests == 0 && !c->peer_closed) {
                        /* Accepted just before the stop: its request may be on its way. */
                        if (c->tl != &w->t_stop)
                                timer_start(c, &w->t_stop, STOP_FIRST_REQUEST_MS);
                } else {
                        conn_close(c);
                }
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

static void conn_file_done(struct conn *c);

/* Starts the large body planned after the batch. */
static void conn_start_file(struct conn *c)
{
        struct worker *w = c->w;
        int r = -ENOMEM;

        if (c->file.length >= w->cfg->s.splice_min && w->cfg->zero_copy == ZERO_COPY_SENDFILE) {
                r = conn_sendfile(c);
                if (r > 0) {
                        conn_file_done(c);
                        return;
                }
        } else if (c->file.length >= w->cfg->s.splice_min && (c->pipe = pipe_get(w))) {
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
               !c->handback_after && c->file.kind == BODY_NONE && HEAD_BUF - io->out_len >= 2048) {
                const char *in = io->in + io->in_start;

                if (c->discard > 0) {
                        size_t n = (size_t) min_u64(c->discard, io->in_len);
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
                        consume_input(io, (size_t) r);
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
                    .internal = c->internal_first,
                };
                struct http_writer wr;
                struct body body = {.kind = BODY_NONE, .fd = -1};
                enum plan plan;

                http_writer_init(&wr, io->out + io->out_len, HEAD_BUF - io->out_len);
                if (n < 0) {
                        static_error_response(&ctx, 1, http_status_from_errno((int) n), &wr);
                        log_access(c, NULL, ctx.status, 0);
                        io->in_len = 0;
                        plan = PLAN_RESPOND_CLOSE;
                } else {
                        c->requests++;
                        atomic_fetch_add_explicit(&w->stats.requests, 1, memory_order_relaxed);
                        ctx.keep_alive =
                            req.keep_alive && !w->stopping &&
                            c->requests < cfg->s.keepalive_requests &&
                            (req.body != HTTP_BODY_LENGTH || req.content_length <= DISCARD_MAX);
                        plan = static_handle_request(&ctx, &req, &wr, &body);
                        c->internal_first = false; /* it names one request only */
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
                        consume_input(io, (size_t) n);
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
                        c->iov[c->iov_n++] = (struct iovec){(void *) body.data, body.length};
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
                if (getpeername(c->fd, (struct sockaddr *) &c->peer, &len) == 0)
                        c->peer_len = len;
                info.peer_len = c->peer_len;
        }
        memcpy(&info.peer, &c->peer, sizeof(info.peer));
        if (handoff_encode_header(&info, c->hb_header) < 0) {
                conn_close(c);
                return;
        }
        c->hb_iov[0] = (struct iovec){c->hb_header, HANDOFF_HEADER_SIZE};
        c->hb_iov[1] = (struct iovec){(void *) info.data, info.data_len};
        c->msg = (struct msghdr){
            .msg_iov = c->hb_iov,
            .msg_iovlen = info.data_len ? 2 : 1,
            .msg_control = c->hb_control.buf,
            .msg_controllen = CMSG_SPACE(sizeof(int)),
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
                        r = conn_input(c, ring_bufs_get(&c->w->bufs, bid), (size_t) res);
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
                for (size_t left = (size_t) res; left > 0 && c->iov_i < c->iov_n;) {
                        struct iovec *v = &c->iov[c->iov_i];
                        size_t n = min_size(left, v->iov_len);
                        v->iov_base = (char *) v->iov_base + n;
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
                c->copy_len = (size_t) res;
                c->copy_off = 0;
                r = conn_file_send(c);
                break;

        case CONN_FILE_SEND:
                if (res <= 0) {
                        conn_abort(c, res, "send");
                        return;
                }
                c->copy_off += (size_t) res;
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

        case CONN_SENDFILE:
                if (res < 0) {
                        conn_abort(c, res, "poll");
                        return;
                }
                r = conn_sendfile(c);
                if (r > 0)
                        conn_file_done(c);
                break;

        case CONN_SPLICE_IN:
                if (res <= 0) {
                        conn_abort(c, res ? res : -EIO, "splice from file");
                        return;
                }
                c->pipe_bytes = (size_t) res;
                c->file.offset += (uint64_t) res;
                c->file.length -= (uint64_t) res;
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
                c->pipe_bytes -= (size_t) res;
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
void conn_start(struct conn *c)
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
        if (c->w->stopping) {
                conn_idle(c);
                return;
        }
        /* Until the first request arrives, the header timeout applies (as nginx). */
        timer_start(c, &c->w->t_header, c->w->cfg->s.client_header_timeout);
}
