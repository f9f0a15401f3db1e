/* SPDX-License-Identifier: MIT */
/*
 * proxy_conn: a client connection of wharf-proxy.
 *
 * Requests on a connection are served one at a time, in order: while one is
 * in progress, pipelined requests wait in the input buffer. Each parsed
 * request is routed (virtual server by Host, location by the normalised
 * path) to one of four ends: an upstream exchange (proxy_upstream.c), a
 * response made here (errors, `return`), or the connection itself handed to
 * wharf-static, which hands it back on the first request that is not its.
 *
 * Input arrives through one single-shot receive at a time into a provided
 * buffer and is copied into the connection's own buffer, which exists only
 * while there is input to hold; an idle keep-alive connection holds no
 * buffer. A receive is armed only when there is room for a whole provided
 * buffer, which is the backpressure on a client sending a body faster than
 * the upstream reads it. Output goes through a queue of 64 KiB links, one
 * sendmsg in flight at a time.
 *
 * A connection is freed only in PH_CLOSING once nothing of it is in flight
 * in the kernel (inflight == 0).
 */
#include "proxy_worker.h"

#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>

static void conn_process(struct conn *c);
static void conn_maybe_free(struct conn *c);
static void on_recv(struct ring_op *op, int res, unsigned flags);
static void on_send(struct ring_op *op, int res, unsigned flags);
static void on_handoff(struct ring_op *op, int res, unsigned flags);
static void on_writable(struct ring_op *op, int res, unsigned flags);
static void on_delay_done(struct ring_op *op, int res, unsigned flags);

struct io_uring_sqe *conn_sqe(struct conn *c, struct ring_op *op)
{
        struct io_uring_sqe *sqe = ring_sqe(&c->w->ring, op);

        if (sqe)
                c->inflight++;
        return sqe;
}

struct conn *conn_new(struct worker *w, int fd, unsigned local_port)
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
        *c = (struct conn){.w = w, .fd = fd, .local_port = local_port};
        c->sp = (struct spipe){.rfd = -1, .wfd = -1};
        c->op_recv.handler = on_recv;
        c->op_send.handler = on_send;
        c->op_sp_out.handler = on_writable;
        c->op_handoff.handler = on_handoff;
        c->op_delay.handler = on_delay_done;
        reqbody_init(&c->rb);
        c->peer_len = sizeof(c->peer);
        if (getpeername(fd, (struct sockaddr *) &c->peer, &c->peer_len) < 0)
                c->peer_len = 0;
        w->n_conns++;
        atomic_store_explicit(&w->stats.connections, w->n_conns, memory_order_relaxed);
        return c;
}

/* ---- output ---- */

bool outq_append(struct conn *c, const void *data, size_t len)
{
        const char *p = data;

        while (len > 0) {
                struct obuf *b = c->out.tail;
                if (!b || b->len == OBUF_SIZE) {
                        b = obuf_get(c->w);
                        if (!b)
                                return false;
                        if (c->out.tail)
                                c->out.tail->next = b;
                        else
                                c->out.head = b;
                        c->out.tail = b;
                }
                size_t n = min_size(len, OBUF_SIZE - b->len);
                memcpy(b->data + b->len, p, n);
                b->len += n;
                c->out.bytes += n;
                p += n;
                len -= n;
        }
        return true;
}

static void outq_clear(struct conn *c)
{
        while (c->out.head) {
                struct obuf *b = c->out.head;
                c->out.head = b->next;
                obuf_put(c->w, b);
        }
        c->out.tail = NULL;
        c->out.bytes = 0;
}

void conn_send_pump(struct conn *c)
{
        struct io_uring_sqe *sqe;
        unsigned n = 0;

        if (c->send_busy || c->out.bytes == 0 || c->phase == PH_CLOSING)
                return;
        c->send_len = 0;
        for (struct obuf *b = c->out.head; b && n < SEND_IOV_MAX; b = b->next) {
                if (b->len == b->sent)
                        continue;
                c->iov[n].iov_base = b->data + b->sent;
                c->iov[n].iov_len = b->len - b->sent;
                c->send_len += b->len - b->sent;
                n++;
        }
        sqe = conn_sqe(c, &c->op_send);
        if (!sqe) {
                conn_close(c);
                return;
        }
        c->msg = (struct msghdr){.msg_iov = c->iov, .msg_iovlen = n};
        io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
        c->send_busy = true;
        c->deadline = c->w->now + (c->vs ? c->vs->send_timeout : 60000);
}

void conn_wait_writable(struct conn *c)
{
        struct io_uring_sqe *sqe;

        if (c->sp_out_armed || c->phase == PH_CLOSING)
                return;
        sqe = conn_sqe(c, &c->op_sp_out);
        if (!sqe) {
                conn_close(c);
                return;
        }
        io_uring_prep_poll_add(sqe, c->fd, POLLOUT);
        c->sp_out_armed = true;
        c->deadline = c->w->now + (c->vs ? c->vs->send_timeout : 60000);
}

static void on_writable(struct ring_op *op, int res, unsigned flags)
{
        struct conn *c = container_of(op, struct conn, op_sp_out);

        (void) res;
        (void) flags;
        c->inflight--;
        c->sp_out_armed = false;
        if (c->phase == PH_CLOSING) {
                conn_maybe_free(c);
                return;
        }
        c->deadline = 0;
        if (c->phase == PH_UPSTREAM)
                exchange_output_sent(c);
}

/* Everything queued has left: what comes next depends on what was sent. */
static void conn_output_drained(struct conn *c)
{
        switch (c->phase) {
        case PH_LOCAL:
                conn_request_done(c);
                break;
        case PH_UPSTREAM:
                exchange_output_sent(c);
                break;
        case PH_HEAD:
        case PH_BODY:
                /* An interim 100 Continue went out: now the body is awaited. */
                c->deadline = c->w->now + (c->vs ? c->vs->client_body_timeout : 60000);
                break;
        case PH_HANDOFF:
        case PH_DELAYED:
        case PH_CLOSING:
        case _PH_MAX:
                break;
        }
}

static void on_send(struct ring_op *op, int res, unsigned flags)
{
        struct conn *c = container_of(op, struct conn, op_send);

        (void) flags;
        c->inflight--;
        c->send_busy = false;
        if (c->phase == PH_CLOSING) {
                conn_maybe_free(c);
                return;
        }
        if (res < 0) {
                log_debug("client send: %s", strerror(-res));
                conn_close(c);
                return;
        }
        size_t done = (size_t) res;
        c->out.bytes -= done;
        while (done > 0 && c->out.head) {
                struct obuf *b = c->out.head;
                size_t n = min_size(done, b->len - b->sent);
                b->sent += n;
                done -= n;
                if (b->sent == b->len && (b->len == OBUF_SIZE || b->next || c->out.tail != b)) {
                        c->out.head = b->next;
                        if (!c->out.head)
                                c->out.tail = NULL;
                        obuf_put(c->w, b);
                } else if (b->sent == b->len) {
                        /* The last link, fully sent: reuse it from the start. */
                        b->len = b->sent = 0;
                }
        }
        if (c->out.bytes > 0) {
                conn_send_pump(c);
                if (c->phase == PH_UPSTREAM)
                        exchange_output_sent(c);
                return;
        }
        c->deadline = 0;
        outq_clear(c);
        conn_output_drained(c);
}

/* ---- input ---- */

static bool conn_wants_input(const struct conn *c)
{
        if (c->peer_closed || c->close_after)
                return false;
        switch (c->phase) {
        case PH_HEAD:
        case PH_BODY:
        case PH_UPSTREAM:
        case PH_LOCAL:
        case PH_DELAYED: /* pipelined requests wait in the buffer */
                return true;
        case PH_HANDOFF:
        case PH_CLOSING:
        case _PH_MAX:
                break;
        }
        return false;
}

/* Moves unprocessed input to the front, unless an upstream send still points into it. */
static void conn_compact(struct conn *c)
{
        if (c->in_start == 0 || (c->up && c->up->send_busy))
                return;
        memmove(c->in, c->in + c->in_start, c->in_len);
        c->in_start = 0;
}

void conn_recv_pump(struct conn *c)
{
        struct io_uring_sqe *sqe;

        if (c->recv_busy || !conn_wants_input(c))
                return;
        if (c->in) {
                if (c->in_cap - c->in_start - c->in_len < RECV_BUF_SIZE)
                        conn_compact(c);
                if (c->in_cap - c->in_start - c->in_len < RECV_BUF_SIZE)
                        return; /* full: the request in progress drains it */
        }
        sqe = conn_sqe(c, &c->op_recv);
        if (!sqe) {
                conn_close(c);
                return;
        }
        io_uring_prep_recv(sqe, c->fd, NULL, RECV_BUF_SIZE, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = RECV_BGID;
        c->recv_busy = true;
}

static bool conn_input(struct conn *c, const char *data, size_t len)
{
        if (!c->in) {
                c->in_cap = c->cfg ? c->cfg->max_header_size : c->w->cfg->max_header_size;
                c->in_cap += RECV_BUF_SIZE;
                c->in = malloc(c->in_cap);
                if (!c->in)
                        return false;
                c->in_start = c->in_len = 0;
        }
        if (c->in_cap - c->in_start - c->in_len < len)
                conn_compact(c);
        if (c->in_cap - c->in_start - c->in_len < len)
                return false;
        memcpy(c->in + c->in_start + c->in_len, data, len);
        c->in_len += len;
        return true;
}

void conn_consume(struct conn *c, size_t n)
{
        c->in_start += n;
        c->in_len -= n;
        if (c->in_len == 0)
                c->in_start = 0;
}

static void conn_try_handoff(struct conn *c);

static void on_recv(struct ring_op *op, int res, unsigned flags)
{
        struct conn *c = container_of(op, struct conn, op_recv);
        struct worker *w = c->w;

        c->inflight--;
        c->recv_busy = false;
        if (res > 0) {
                unsigned bid = ring_cqe_bid(flags);
                bool ok = c->phase != PH_CLOSING &&
                          conn_input(c, ring_bufs_get(&w->bufs, bid), (size_t) res);
                ring_bufs_recycle(&w->bufs, bid);
                if (c->phase == PH_CLOSING) {
                        conn_maybe_free(c);
                        return;
                }
                if (!ok) {
                        log_warning("client input buffer full or out of memory");
                        conn_close(c);
                        return;
                }
        } else if (c->phase == PH_CLOSING) {
                conn_maybe_free(c);
                return;
        } else if (res == -ENOBUFS) {
                /* Every provided buffer is taken: the next tick tries again. */
                return;
        } else if (res == -ECANCELED) {
                /* Stopped for a handoff. */
        } else if (res == 0 || res == -ECONNRESET || res < 0) {
                c->peer_closed = true;
                if (res < 0 && res != -ECONNRESET)
                        log_debug("client recv: %s", strerror(-res));
                if (res < 0) {
                        /* A reset: nothing more can be sent either. */
                        conn_close(c);
                        return;
                }
        }

        switch (c->phase) {
        case PH_HEAD:
        case PH_BODY:
                conn_process(c);
                break;
        case PH_UPSTREAM:
                exchange_input(c);
                break;
        case PH_HANDOFF:
                conn_try_handoff(c);
                break;
        case PH_LOCAL:
                if (c->peer_closed && c->out.bytes == 0)
                        conn_close(c);
                break;
        case PH_DELAYED: /* its time comes in on_delay_done() */
        case PH_CLOSING:
        case _PH_MAX:
                break;
        }
        if (c->phase != PH_CLOSING)
                conn_recv_pump(c);
}

/* ---- closing ---- */

static void conn_free(struct conn *c)
{
        struct worker *w = c->w;

        chan_pending_drop(c);
        limit_conn_release(&c->lc);
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        free(c->in);
        reqbody_free(&c->rb);
        free(c->uphead);
        c->in = c->uphead = NULL;
        free(c->lf);
        c->lf = NULL;
        free(c->req_head);
        c->req_head = NULL;
        outq_clear(c);
        gzip_give(&w->gz_pool, &c->gz);
        spipe_put(w, &c->sp, c->sp_bytes == 0);
        if (c->cfg) {
                atomic_fetch_sub(&c->cfg->refs, 1);
                c->cfg = NULL;
        }
        c->next_free = w->free_conns;
        w->free_conns = c;
        w->n_conns--;
        atomic_store_explicit(&w->stats.connections, w->n_conns, memory_order_relaxed);
}

static void conn_maybe_free(struct conn *c)
{
        if (c->phase == PH_CLOSING && c->inflight == 0)
                conn_free(c);
}

void conn_close(struct conn *c)
{
        if (c->phase == PH_CLOSING)
                return;
        if (c->up || c->phase == PH_UPSTREAM)
                exchange_abort(c);
        c->phase = PH_CLOSING;
        c->deadline = 0;
        if (c->fd >= 0) {
                /*
                 * A broken response ends with a reset, so that the client can
                 * never take it for a complete one; otherwise the client gets
                 * a FIN after everything sent.
                 */
                if (c->abort_after) {
                        struct linger lg = {.l_onoff = 1, .l_linger = 0};
                        (void) setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
                } else {
                        (void) shutdown(c->fd, SHUT_WR);
                }
        }
        if (c->recv_busy) {
                struct io_uring_sqe *sqe = ring_sqe(&c->w->ring, NULL);
                if (sqe)
                        io_uring_prep_cancel(sqe, &c->op_recv, 0);
        }
        if (c->send_busy) {
                struct io_uring_sqe *sqe = ring_sqe(&c->w->ring, NULL);
                if (sqe)
                        io_uring_prep_cancel(sqe, &c->op_send, 0);
        }
        if (c->sp_out_armed) {
                struct io_uring_sqe *sqe = ring_sqe(&c->w->ring, NULL);
                if (sqe)
                        io_uring_prep_cancel(sqe, &c->op_sp_out, 0);
        }
        if (c->delay_armed) {
                struct io_uring_sqe *sqe = ring_sqe(&c->w->ring, NULL);
                if (sqe)
                        io_uring_prep_timeout_remove(sqe, (uint64_t) (uintptr_t) &c->op_delay, 0);
        }
        conn_maybe_free(c);
}

/*
 * At stop, a connection between requests is closed, as nginx does, once it
 * has been answered at least once: its client knows to retry on a fresh one.
 * A connection that has not sent its first request yet may have it in flight
 * (accepted just before the stop): it gets a short grace to send it instead.
 * A tunnel (WebSocket) is closed too: it has no end to wait for, and would
 * hold the stop for its whole grace; its client reconnects.
 */
void conn_idle_close(struct conn *c)
{
        if (c->tunnel) {
                conn_close(c);
                return;
        }
        if (c->phase != PH_HEAD || c->in_len > 0 || c->cfg)
                return;
        if (c->requests > 0) {
                conn_close(c);
                return;
        }
        uint64_t grace = c->w->now + STOP_FIRST_REQUEST_MS;
        if (!c->deadline || c->deadline > grace)
                c->deadline = grace;
}

void conn_timeout(struct conn *c)
{
        log_debug("client connection timed out");
        if (c->phase == PH_HEAD && c->in_len > 0 && c->out.bytes == 0) {
                /* A request head that never completed: say so, as nginx does. */
                c->minor_version = 1;
                conn_local_error(c, 408);
                c->deadline = c->w->now + 1000;
                return;
        }
        conn_close(c);
}

/* ---- requests ---- */

static void request_reset(struct conn *c)
{
        if (c->cfg) {
                atomic_fetch_sub(&c->cfg->refs, 1);
                c->cfg = NULL;
        }
        reqbody_free(&c->rb);
        c->buffered = false;
        c->rb_copy = false;
        free(c->uphead);
        c->uphead = NULL;
        c->uphead_len = c->uphead_sent = 0;
        c->vs = NULL;
        c->loc = NULL;
        c->body = HTTP_BODY_NONE;
        c->body_left = 0;
        c->body_sent = 0;
        c->status = 0;
        c->body_bytes_out = 0;
        c->logline_len = 0;
        c->has_referer = c->has_agent = false;
        free(c->lf);
        c->lf = NULL;
        c->rerouted = false;
        c->internal = false;
        c->redirects = 0;
        c->req_head_len = 0;
        c->tries = 0;
        c->tried = 0;
        c->fresh_only = false;
        c->up_usec = 0;
        c->up_addr = NULL;
        c->body_broken = false;
        gzip_give(&c->w->gz_pool, &c->gz);
        spipe_put(c->w, &c->sp, c->sp_bytes == 0);
        c->sp_bytes = 0;
        c->upgrade = c->tunnel = false;
        c->client_len = 0;
        limit_conn_release(&c->lc);
        c->lc_done = false;
        c->lr_status = c->lc_status = LIMIT_NONE;
}

static void log_access(struct conn *c)
{
        struct access_log *a;
        socklen_t client_len;
        const struct sockaddr_storage *client = conn_client(c, &client_len);

        if (!c->vs || !c->cfg || !(a = worker_alog(c->w, c->cfg, c->vs)))
                return;
        if (c->vs->log_format) {
                char line[LOG_FORMAT_LINE], addr[INET6_ADDRSTRLEN + 8], port[16];
                size_t len = log_format_line(c, c->vs->log_format, line, sizeof(line));
                addr_text(client, client_len, addr, sizeof(addr), port, sizeof(port));
                access_log_put(a, line, len, c->status, addr);
                return;
        }
        struct access_record r = {
            .peer = client_len ? (const struct sockaddr *) client : NULL,
            .request_line = c->logline,
            .request_line_len = c->logline_len,
            .status = c->status,
            .bytes_sent = c->body_bytes_out,
            .referer = c->has_referer ? c->referer : NULL,
            .referer_len = c->referer_len,
            .user_agent = c->has_agent ? c->agent : NULL,
            .user_agent_len = c->agent_len,
            .upstream = c->up_addr,
            .upstream_usec = c->up_usec,
            .request_usec = now_us() - c->started_us,
        };
        access_log_write(a, &r);
}

void conn_request_done(struct conn *c)
{
        struct worker *w = c->w;

        if (c->logline_len > 0) {
                log_access(c);
                atomic_fetch_add_explicit(&w->stats.requests, 1, memory_order_relaxed);
        }
        request_reset(c);
        if (c->close_after || c->abort_after || (c->peer_closed && c->in_len == 0) ||
            (w->stopping && c->in_len == 0)) {
                conn_close(c);
                return;
        }
        c->phase = PH_HEAD;
        if (c->in_len == 0) {
                /* Idle: give the buffers back until the next request arrives. */
                free(c->in);
                c->in = NULL;
                free(c->req_head);
                c->req_head = NULL;
                c->req_head_cap = 0;
                c->in_cap = c->in_start = 0;
                c->deadline = w->now + w->cfg->servers[0].keepalive_timeout;
                if (w->stopping) {
                        conn_close(c);
                        return;
                }
        }
        conn_process(c);
        if (c->phase != PH_CLOSING)
                conn_recv_pump(c);
}

static void copy_field(char *dst, size_t *dst_len, struct span v, size_t max)
{
        size_t n = min_size(v.len, max);
        memcpy(dst, v.ptr, n);
        *dst_len = n;
}

/* What the access log needs outlives the input buffer, so it is copied. */
static void stash_log_fields(struct conn *c, const struct http_request *req)
{
        const struct http_header *h;
        const char *start = req->method_name.ptr;
        /* method SP target SP HTTP/1.x */
        size_t n = (size_t) (req->target.ptr + req->target.len - start) + 9;

        copy_field(c->logline, &c->logline_len, (struct span){start, n}, LOG_LINE_MAX);
        if ((h = http_find_header(req, "Referer"))) {
                copy_field(c->referer, &c->referer_len, h->value, LOG_FIELD_MAX);
                c->has_referer = true;
        }
        if ((h = http_find_header(req, "User-Agent"))) {
                copy_field(c->agent, &c->agent_len, h->value, LOG_FIELD_MAX);
                c->has_agent = true;
        }
}

/* A response made here: error pages, `return`. */
static void conn_local(struct conn *c, int status, const char *extra, const char *body,
                       size_t body_len, const char *type)
{
        char buf[4096];
        struct http_writer hw;
        const char *server = c->w->cfg->server_header;
        bool head_only = c->method == HTTP_HEAD;

        c->status = status;
        c->phase = PH_LOCAL;
        http_writer_init(&hw, buf, sizeof(buf));
        if (!body) {
                if (http_write_error(&hw, c->minor_version, status,
                                     c->keep_alive && !c->close_after, server, c->w->date, extra,
                                     head_only) < 0) {
                        conn_close(c);
                        return;
                }
        } else {
                http_write_status(&hw, c->minor_version, status);
                http_write_header_str(&hw, "Server", server);
                http_write_header_str(&hw, "Date", c->w->date);
                http_write_header_str(&hw, "Content-Type",
                                      type ? type : "text/plain; charset=utf-8");
                http_write_header_u64(&hw, "Content-Length", body_len);
                if (extra)
                        http_write_raw(&hw, extra, strlen(extra));
                if (!c->keep_alive || c->close_after)
                        http_write_header_str(&hw, "Connection", "close");
                else if (c->minor_version == 0)
                        http_write_header_str(&hw, "Connection", "keep-alive");
                if (http_write_end(&hw) < 0) {
                        conn_close(c);
                        return;
                }
        }
        if (!outq_append(c, buf, hw.len) ||
            (body && !head_only && !outq_append(c, body, body_len))) {
                conn_close(c);
                return;
        }
        if (body && !head_only)
                c->body_bytes_out = body_len;
        conn_send_pump(c);
}

void conn_local_error(struct conn *c, int status)
{
        /* After an error the rest of the input cannot be trusted to be in step. */
        if (status == 400 || status == 408 || status == 413 || status == 414 || status == 431 ||
            status == 505)
                c->close_after = true;
        /* Before a virtual server is chosen (a request that does not parse): the default one's. */
        const struct vserver *vs = c->vs                  ? c->vs
                                   : c->w->cfg->n_servers ? &c->w->cfg->servers[0]
                                                          : NULL;
        const struct error_page *page = proxy_error_page(vs, status);
        if (page)
                conn_local(c, status, NULL, page->body, page->len, page->type);
        else
                conn_local(c, status, NULL, NULL, 0, NULL);
}

/*
 * The request's body, for an answer made here: skipped when it is small and
 * already framed, otherwise the connection closes after the answer.
 */
static void skip_body(struct conn *c, const struct http_request *req)
{
        if (req->body == HTTP_BODY_NONE)
                return;
        if (req->body == HTTP_BODY_LENGTH && req->content_length <= c->in_len) {
                conn_consume(c, (size_t) req->content_length);
                return;
        }
        c->close_after = true;
}

void addr_text(const struct sockaddr_storage *ss, socklen_t len, char *addr, size_t addr_size,
               char *port, size_t port_size)
{
        if (len == 0 || ss->ss_family == AF_UNIX ||
            getnameinfo((const struct sockaddr *) ss, len, addr, (socklen_t) addr_size, port,
                        (socklen_t) port_size, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
                snprintf(addr, addr_size, "%s", len && ss->ss_family == AF_UNIX ? "unix:" : "");
                snprintf(port, port_size, "%s", "");
        }
        /* A v4 client on a dual-stack socket reads as itself. */
        if (!strncmp(addr, "::ffff:", 7) && strchr(addr + 7, '.'))
                memmove(addr, addr + 7, strlen(addr + 7) + 1);
}

static void conn_return(struct conn *c, const struct location *l, const struct var_ctx *x)
{
        char extra[4096 + 16], text[4096];
        int st = l->return_status;
        ssize_t n = vars_expand(c, x, l->return_target, true, text, sizeof(text));
        size_t hl = l->add_headers_len;
        const char *h = l->add_headers ? l->add_headers : "";

        if (n < 0) {
                log_info("return: the value for %s does not fit in a response", l->return_target);
                conn_local_error(c, 400);
                return;
        }
        if (st == 301 || st == 302 || st == 303 || st == 307 || st == 308) {
                int k = snprintf(extra, sizeof(extra), "Location: %.*s\r\n%.*s", (int) n, text,
                                 (int) hl, h);
                if (k < 0 || (size_t) k >= sizeof(extra)) {
                        conn_local_error(c, 500);
                        return;
                }
                conn_local(c, st, extra, NULL, 0, NULL);
        } else if (n > 0) {
                snprintf(extra, sizeof(extra), "%.*s", (int) hl, h);
                conn_local(c, st, extra, text, (size_t) n, NULL);
        } else {
                conn_local(c, st, NULL, NULL, 0, NULL);
        }
}

/* ---- handoff to wharf-static ---- */

static void on_handoff(struct ring_op *op, int res, unsigned flags)
{
        struct conn *c = container_of(op, struct conn, op_handoff);
        struct chan *ch = c->chan;

        (void) flags;
        c->inflight--;
        c->chan = NULL;
        if (res >= 0 && c->handoff_id && c->phase != PH_CLOSING) {
                bool taken = ch->early_ack == c->handoff_id, ended = ch->ended;
                /* Sent, not known to be taken: ours until wharf-static acknowledges it. */
                if (!taken && !ended)
                        chan_pending_add(ch, c);
                if (taken)
                        ch->early_ack = 0;
                chan_sent(ch, res);
                if (taken)
                        conn_handoff_taken(c);
                else if (ended)
                        conn_handoff_again(c); /* it died before a word about this one */
                return;
        }
        chan_sent(ch, res);
        if (c->phase == PH_CLOSING) {
                conn_maybe_free(c);
                return;
        }
        if (res < 0) {
                if (res == -EPIPE || res == -ECONNRESET) {
                        /*
                         * That wharf-static is stopping (it shut the channel
                         * for reading) or gone: the connection is still ours,
                         * and a new channel reaches the next one.
                         */
                        conn_handoff_again(c);
                        return;
                }
                log_warning("handoff to %s failed: %s", c->loc->static_path, strerror(-res));
                c->phase = PH_HEAD;
                c->close_after = true;
                conn_local_error(c, 502);
                return;
        }
        conn_handoff_taken(c);
}

void conn_handoff_taken(struct conn *c)
{
        /* wharf-static has the connection now: our copy closes, never shut down. */
        c->logline_len = 0; /* wharf-static logs it */
        request_reset(c);
        c->phase = PH_CLOSING;
        c->in_len = 0;
        conn_maybe_free(c);
}

void conn_handoff_again(struct conn *c)
{
        if (++c->handoff_tries >= HANDOFF_TRIES) {
                log_warning("handoff to %s: not taken after %u tries", c->loc->static_path,
                            c->handoff_tries);
                c->phase = PH_HEAD;
                c->close_after = true;
                conn_local_error(c, 502);
                return;
        }
        log_info("handoff to %s: not taken, trying a new channel", c->loc->static_path);
        conn_try_handoff(c);
}

static void conn_try_handoff(struct conn *c)
{
        struct handoff_info info = {
            .kind = HANDOFF_CONN,
            .flags = c->handoff_flags | (c->internal ? HANDOFF_F_INTERNAL : 0),
            .requests = c->requests - 1,
            .peer_len = c->peer_len,
            .data = c->in + c->in_start,
            .data_len = c->in_len,
        };
        struct io_uring_sqe *sqe;
        struct cmsghdr *cm;

        if (c->recv_busy)
                return; /* on_recv comes back here once the receive is cancelled */
        memcpy(&info.peer, &c->peer, sizeof(info.peer));
        c->chan = info.data_len <= HANDOFF_MAX_DATA ? chan_get(c->w, c->loc->static_path) : NULL;
        if (c->chan && c->chan->acks) {
                /* Ids tell the acknowledgements apart; 0 means none. */
                if (++c->chan->next_id == 0)
                        c->chan->next_id = 1;
                info.flags |= HANDOFF_F_ACK;
                info.id = c->chan->next_id;
        }
        c->handoff_id = info.id;
        if (!c->chan || handoff_encode_header(&info, c->hd_header) < 0) {
                c->phase = PH_HEAD;
                c->close_after = true;
                conn_local_error(c, 502);
                return;
        }
        c->hd_iov[0] = (struct iovec){c->hd_header, HANDOFF_HEADER_SIZE};
        c->hd_iov[1] = (struct iovec){c->in + c->in_start, c->in_len};
        c->hd_msg = (struct msghdr){
            .msg_iov = c->hd_iov,
            .msg_iovlen = c->in_len ? 2 : 1,
            .msg_control = c->hd_control.buf,
            .msg_controllen = HANDOFF_CMSG_SPACE(1),
        };
        cm = CMSG_FIRSTHDR(&c->hd_msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &c->fd, sizeof(int));
        sqe = conn_sqe(c, &c->op_handoff);
        if (!sqe) {
                conn_close(c);
                return;
        }
        io_uring_prep_sendmsg(sqe, c->chan->fd, &c->hd_msg, MSG_NOSIGNAL);
        c->chan->sends++;
}

static void conn_handoff(struct conn *c)
{
        c->phase = PH_HANDOFF;
        c->deadline = 0;
        c->handoff_tries = 0;
        if (c->recv_busy) {
                struct io_uring_sqe *sqe = ring_sqe(&c->w->ring, NULL);
                if (sqe)
                        io_uring_prep_cancel(sqe, &c->op_recv, 0);
        }
        conn_try_handoff(c);
}

/* ---- routing ---- */

static void conn_expect_continue(struct conn *c, const struct http_request *req)
{
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

        if (req->expect_continue && req->minor_version == 1 && c->in_len == 0)
                (void) outq_append(c, cont, sizeof(cont) - 1);
        conn_send_pump(c);
}

/* ---- internal redirects ---- */

static void conn_route(struct conn *c, const struct http_request *req, size_t head_len);

void conn_internal_redirect(struct conn *c, char *head, size_t len)
{
        size_t cap =
            max_size(len + c->in_len + RECV_BUF_SIZE, c->cfg->max_header_size + RECV_BUF_SIZE);
        char *in = malloc(cap);
        struct http_request req;

        if (!in) {
                free(head);
                c->close_after = true;
                conn_local_error(c, 500);
                return;
        }
        memcpy(in, head, len);
        if (c->in_len > 0)
                memcpy(in + len, c->in + c->in_start, c->in_len);
        free(head);
        free(c->in);
        c->in = in;
        c->in_cap = cap;
        c->in_start = 0;
        c->in_len += len;
        ssize_t r = http_parse_request(c->in, c->in_len, c->cfg->max_header_size, &req);
        c->phase = PH_HEAD;
        if (r <= 0) { /* made here from a head that parsed: cannot happen */
                c->in_len = 0;
                c->close_after = true;
                conn_local_error(c, 500);
                return;
        }
        c->method = req.method;
        c->keep_alive = c->keep_alive && req.keep_alive;
        c->expect_continue = false;
        c->internal = true;
        c->rerouted = true;
        conn_route(c, &req, (size_t) r);
        if (c->phase != PH_CLOSING)
                conn_recv_pump(c);
}

/* ---- limit_req, limit_conn ---- */

static void conn_delay(struct conn *c, uint64_t ms)
{
        struct io_uring_sqe *sqe = conn_sqe(c, &c->op_delay);

        if (!sqe) {
                conn_close(c);
                return;
        }
        c->delay_ts = (struct __kernel_timespec){.tv_sec = (long long) (ms / 1000),
                                                 .tv_nsec = (long long) (ms % 1000) * 1000000};
        io_uring_prep_timeout(sqe, &c->delay_ts, 0, 0);
        c->delay_armed = true;
        c->phase = PH_DELAYED;
        c->deadline = 0;
}

/* The delay is over: the request, still at the front of the input, is routed again. */
static void on_delay_done(struct ring_op *op, int res, unsigned flags)
{
        struct conn *c = container_of(op, struct conn, op_delay);
        struct http_request req;

        (void) res;
        (void) flags;
        c->inflight--;
        c->delay_armed = false;
        if (c->phase == PH_CLOSING) {
                conn_maybe_free(c);
                return;
        }
        ssize_t r =
            http_parse_request(c->in + c->in_start, c->in_len, c->cfg->max_header_size, &req);
        if (r <= 0) { /* it parsed before: cannot happen */
                conn_close(c);
                return;
        }
        c->phase = PH_HEAD;
        c->rerouted = true;
        conn_route(c, &req, (size_t) r);
        if (c->phase != PH_CLOSING)
                conn_recv_pump(c);
}

/*
 * limit_req for the request on c. True when it goes on now; otherwise it
 * was refused (answered with limit_req_status) or waits in PH_DELAYED.
 * nginx logs the same two lines. With limit_req_dry_run it always goes on,
 * charged as it would be, and the lines say "dry run".
 */
static bool conn_limit(struct conn *c, const struct http_request *req, size_t head_len)
{
        char addr[INET6_ADDRSTRLEN + 8], port[16];
        uint8_t key[LIMIT_KEY];
        socklen_t len;
        const struct sockaddr_storage *client = conn_client(c, &len);
        bool dry = c->loc->limit_dry_run;

        if (!limit_key(client, len, key))
                return true;
        struct limit_outcome o = limit_check(c->loc->limits, c->loc->n_limits, key, c->w->now);
        if (o.verdict == LIMIT_PASS) {
                c->lr_status = LIMIT_PASSED;
                return true;
        }
        addr_text(client, len, addr, sizeof(addr), port, sizeof(port));
        if (o.verdict == LIMIT_REFUSE) {
                log_warning("limiting requests%s, excess: %" PRIu64 ".%03u by zone \"%s\", "
                            "client: %s, request: \"%.*s\"",
                            dry ? ", dry run" : "", o.excess / 1000, (unsigned) (o.excess % 1000),
                            o.zone->name, addr, (int) c->logline_len, c->logline);
                c->lr_status = dry ? LIMIT_REJECTED_DRY_RUN : LIMIT_REJECTED;
                if (dry)
                        return true;
                conn_consume(c, head_len);
                skip_body(c, req);
                conn_local_error(c, c->loc->limit_status);
                return false;
        }
        log_info("delaying request%s for %" PRIu64 " ms, excess: %" PRIu64 ".%03u by zone \"%s\", "
                 "client: %s",
                 dry ? ", dry run," : "", o.delay_ms, o.excess / 1000, (unsigned) (o.excess % 1000),
                 o.zone->name, addr);
        c->lr_status = dry ? LIMIT_DELAYED_DRY_RUN : LIMIT_DELAYED;
        if (dry)
                return true;
        conn_delay(c, o.delay_ms);
        return false;
}

/*
 * limit_conn for the request on c, once per request: true when it goes on
 * (counted until it ends); otherwise it was refused with limit_conn_status.
 * With limit_conn_dry_run one over the limit goes on too, uncounted, as in
 * nginx, and the line says "dry run".
 */
static bool conn_limit_conn(struct conn *c, const struct http_request *req, size_t head_len)
{
        char addr[INET6_ADDRSTRLEN + 8], port[16];
        uint8_t key[LIMIT_KEY];
        socklen_t len;
        const struct sockaddr_storage *client = conn_client(c, &len);

        c->lc_done = true;
        if (!limit_key(client, len, key))
                return true;
        const struct limit_conn *r =
            limit_conn_take(c->loc->conn_limits, c->loc->n_conn_limits, key, &c->lc);
        if (!r) {
                c->lc_status = LIMIT_PASSED;
                return true;
        }
        addr_text(client, len, addr, sizeof(addr), port, sizeof(port));
        log_warning("limiting connections%s by zone \"%s\", client: %s, request: \"%.*s\"",
                    c->loc->conn_limit_dry_run ? ", dry run," : "", r->zone->name, addr,
                    (int) c->logline_len, c->logline);
        c->lc_status = c->loc->conn_limit_dry_run ? LIMIT_REJECTED_DRY_RUN : LIMIT_REJECTED;
        if (c->loc->conn_limit_dry_run)
                return true;
        conn_consume(c, head_len);
        skip_body(c, req);
        conn_local_error(c, c->loc->conn_limit_status);
        return false;
}

static void conn_route(struct conn *c, const struct http_request *req, size_t head_len)
{
        struct worker *w = c->w;
        char path[HTTP_MAX_TARGET + 1];
        ssize_t plen;

        c->vs = proxy_find_server(c->cfg, req->host.ptr ? req->host.ptr : "", req->host.len);
        c->client_len = 0;
        if (c->vs->real_ip.n_from)
                (void) realip_from_request(&c->vs->real_ip, req, &c->peer, c->peer_len, &c->client,
                                           &c->client_len);
        if (c->requests >= c->vs->keepalive_requests || w->stopping)
                c->keep_alive = false;
        plen = req->path.len == 1 && req->path.ptr[0] == '*'
                   ? -EBADMSG
                   : http_path_normalize(req->path.ptr, req->path.len, path, sizeof(path), 0);
        if (!c->rerouted)
                conn_new_request_id(c);
        if (c->vs->log_format && !c->rerouted) {
                struct var_ctx x = {req, plen < 0 ? NULL : path, plen < 0 ? 0 : (size_t) plen};
                log_values_keep(c, &x);
        }
        if (plen < 0) {
                conn_consume(c, head_len);
                conn_local_error(c, 400);
                return;
        }
        c->loc = proxy_find_location(c->vs, path, (size_t) plen);
        if (c->loc && c->loc->internal && !c->internal)
                c->loc = NULL; /* nginx's internal: not there for the client */
        if (!c->loc) {
                conn_consume(c, head_len);
                skip_body(c, req);
                conn_local_error(c, 404);
                return;
        }
        /* nginx's order: limit_req, then limit_conn (preaccess), then allow/deny (access). */
        if (c->loc->n_limits && !c->rerouted && !conn_limit(c, req, head_len))
                return;
        if (c->loc->n_conn_limits && !c->lc_done && !conn_limit_conn(c, req, head_len))
                return;
        socklen_t client_len;
        const struct sockaddr_storage *client = conn_client(c, &client_len);
        if (c->loc->n_rules &&
            !realip_rules_allow(c->loc->rules, c->loc->n_rules, client, client_len)) {
                log_info("access forbidden by rule: %.*s", (int) min_size(req->target.len, 200),
                         req->target.ptr);
                conn_consume(c, head_len);
                skip_body(c, req);
                conn_local_error(c, 403);
                return;
        }
        switch (c->loc->kind) {
        case LOC_STATIC:
                if (req->body != HTTP_BODY_NONE) {
                        /* wharf-static serves GET and HEAD; a body means a method it refuses. */
                        conn_consume(c, head_len);
                        skip_body(c, req);
                        conn_local(c, 405, "Allow: GET, HEAD\r\n", NULL, 0, NULL);
                        return;
                }
                if (c->static_refused) {
                        /* It came back refused: once more would only loop. */
                        c->static_refused = false;
                        conn_consume(c, head_len);
                        c->close_after = true;
                        conn_local_error(c, 502);
                        return;
                }
                conn_handoff(c);
                return;
        case LOC_RETURN: {
                /* Consuming only moves offsets: req still points at the head. */
                struct var_ctx x = {req, path, (size_t) plen};
                conn_consume(c, head_len);
                skip_body(c, req);
                conn_return(c, c->loc, &x);
                return;
        }
        case LOC_UWSGI:
        case LOC_HTTP:
                break;
        case _LOC_KIND_MAX:
                return;
        }

        uint64_t limit = c->loc->client_max_body_size;
        if (req->body == HTTP_BODY_LENGTH && limit && req->content_length > limit) {
                log_info("request body of %llu bytes is over client_max_body_size (%llu)",
                         (unsigned long long) req->content_length, (unsigned long long) limit);
                conn_consume(c, head_len);
                conn_local_error(c, 413);
                return;
        }
        c->body = req->body;
        if (c->loc->x_accel) {
                /* The application may answer X-Accel-Redirect: the request goes again then. */
                if (head_len > c->req_head_cap) {
                        char *p = realloc(c->req_head, head_len);
                        if (p) {
                                c->req_head = p;
                                c->req_head_cap = head_len;
                        }
                }
                c->req_head_len = head_len <= c->req_head_cap ? head_len : 0;
                if (c->req_head_len)
                        memcpy(c->req_head, c->in + c->in_start, head_len);
        }
        /*
         * The body is read whole first when it is chunked (uwsgi needs a
         * length) and, with request_buffering, when it has not all come with
         * the head: a slow client must not hold an application worker. As
         * nginx does. One that came whole goes from the input as it is.
         */
        bool whole = req->body == HTTP_BODY_LENGTH && req->content_length <= c->in_len - head_len;
        if (req->body == HTTP_BODY_CHUNKED ||
            (req->body == HTTP_BODY_LENGTH && c->loc->request_buffering && !whole)) {
                c->uphead = malloc(head_len);
                if (!c->uphead) {
                        conn_close(c);
                        return;
                }
                memcpy(c->uphead, c->in + c->in_start, head_len);
                c->uphead_len = head_len;
                if (req->body == HTTP_BODY_CHUNKED)
                        http_chunked_init(&c->chunk, limit);
                else
                        c->body_left = req->content_length;
                conn_consume(c, head_len);
                c->buffered = true;
                c->phase = PH_BODY;
                c->deadline = w->now + c->vs->client_body_timeout;
                conn_expect_continue(c, req);
                conn_process(c);
                return;
        }
        c->body_left = req->body == HTTP_BODY_LENGTH ? req->content_length : 0;
        c->phase = PH_UPSTREAM;
        if (c->body_left > c->in_len - head_len)
                conn_expect_continue(c, req);
        exchange_start(c, req, head_len);
}

/*
 * Reads a buffered body (chunked, decoded; or Content-Length bytes) into
 * c->rb; when it is complete the exchange starts.
 */
static void conn_read_body(struct conn *c)
{
        size_t data = 0;
        ssize_t r;

        if (c->in_len == 0) {
                if (c->peer_closed)
                        conn_close(c);
                return;
        }
        if (c->body == HTTP_BODY_CHUNKED) {
                r = http_chunked_decode(&c->chunk, c->in + c->in_start, c->in_len, &data);
        } else {
                data = (size_t) min_u64(c->body_left, c->in_len);
                c->body_left -= data;
                r = c->body_left == 0 ? (ssize_t) data : -EAGAIN;
        }
        int e = reqbody_add(&c->rb, c->in + c->in_start, data, c->vs->client_body_buffer_size,
                            c->cfg->client_body_temp_path);
        if (e < 0) {
                log_error("request body: cannot keep it (client_body_temp_path %s): %s",
                          c->cfg->client_body_temp_path, strerror(-e));
                c->phase = PH_HEAD;
                c->body_left = 0;
                c->close_after = true; /* the rest of the body is still to come */
                conn_local_error(c, 500);
                return;
        }
        if (r == -EAGAIN) {
                conn_consume(c, c->in_len);
                c->deadline = c->w->now + c->vs->client_body_timeout;
                return;
        }
        if (r < 0) {
                c->phase = PH_HEAD;
                conn_local_error(c, r == -EFBIG ? 413 : 400);
                return;
        }
        conn_consume(c, (size_t) r);
        c->phase = PH_UPSTREAM;
        c->deadline = 0;
        exchange_start(c, NULL, 0);
}

static void conn_process(struct conn *c)
{
        struct worker *w = c->w;
        struct http_request req;
        ssize_t r;

        if (c->phase == PH_BODY) {
                conn_read_body(c);
                return;
        }
        if (c->phase != PH_HEAD)
                return;
        if (c->discard_left > 0) {
                size_t n = (size_t) min_u64(c->discard_left, c->in_len);
                conn_consume(c, n);
                c->discard_left -= n;
                if (c->discard_left > 0)
                        return;
        }
        if (c->in_len == 0) {
                if (c->peer_closed)
                        conn_close(c);
                return;
        }
        r = http_parse_request(c->in + c->in_start, c->in_len, w->cfg->max_header_size, &req);
        if (r == -EAGAIN) {
                if (c->peer_closed) {
                        conn_close(c);
                        return;
                }
                if (!c->deadline || c->out.bytes == 0)
                        c->deadline = w->now + w->cfg->servers[0].client_header_timeout;
                return;
        }
        c->cfg = w->cfg;
        atomic_fetch_add(&c->cfg->refs, 1);
        c->requests++;
        c->started_us = now_us();
        c->deadline = 0;
        if (r < 0) {
                c->method = HTTP_GET;
                c->minor_version = 1;
                c->keep_alive = false;
                c->vs = &c->cfg->servers[0];
                memcpy(c->logline, "-", 1);
                c->logline_len = 1;
                c->in_len = 0;
                conn_local_error(c, http_status_from_errno((int) r));
                return;
        }
        c->method = req.method;
        c->minor_version = req.minor_version;
        c->keep_alive = req.keep_alive;
        c->expect_continue = req.expect_continue;
        stash_log_fields(c, &req);
        conn_route(c, &req, (size_t) r);
}

/* Starts serving: data is what was already read (a handback), if any. */
void conn_start(struct conn *c, const char *data, size_t len)
{
        c->phase = PH_HEAD;
        c->deadline = c->w->now + c->w->cfg->servers[0].client_header_timeout;
        if (len > 0 && !conn_input(c, data, len)) {
                conn_close(c);
                return;
        }
        conn_process(c);
        if (c->phase != PH_CLOSING)
                conn_recv_pump(c);
}
