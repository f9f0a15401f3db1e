/* SPDX-License-Identifier: MIT */
/*
 * static_worker: a worker thread's loop around its io_uring.
 *
 * It accepts on every listening socket (multishot, paused at
 * max_connections), receives handed-over connections on handoff channels,
 * expires timers, follows configuration reloads (a new config pointer; the
 * open-file cache is dropped) and, on stop, drains: no new connections,
 * idle ones closed or handed back, busy ones finished, a hard deadline.
 *
 * A handoff channel is shut down for reading at the stop: from then on the
 * proxy's sends fail (EPIPE) and it hands over to the next wharf-static
 * instead, while the connections it sent before are still in the channel.
 * Those are received and served like any other, until the channel reads as
 * ended: a restart loses none of them.
 */
#include "static_worker.h"

#include <poll.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

static void update_date(struct worker *w)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME_COARSE, &ts);
        if (ts.tv_sec != w->date_sec) {
                w->date_sec = ts.tv_sec;
                http_date_format(ts.tv_sec, w->date);
        }
}

/* ---- handoff channels ---- */

static void chan_arm(struct chan *ch);

/* A HELLO or an ACK to the proxy, at once; a full channel gets a moment to drain. */
static int chan_tell(const struct chan *ch, const struct handoff_info *m)
{
        int r = handoff_send(ch->fd, -1, m);

        if (r == -EAGAIN) {
                struct pollfd p = {.fd = ch->fd, .events = POLLOUT};
                (void) poll(&p, 1, 1000);
                r = handoff_send(ch->fd, -1, m);
        }
        return r;
}

/* Tells the proxy that the connection with this id is ours now, before anything touches it. */
static int chan_ack(const struct chan *ch, uint16_t id)
{
        int r = chan_tell(ch, &(struct handoff_info){.kind = HANDOFF_ACK, .id = id});

        if (r < 0)
                log_warning("handoff: cannot acknowledge a connection: %s", strerror(-r));
        return r;
}

/* New handoffs go elsewhere; those already in the channel are still read. */
static void chan_stop_receiving(struct chan *ch)
{
        if (shutdown(ch->fd, SHUT_RD) < 0) {
                struct io_uring_sqe *sqe = ring_sqe(&ch->w->ring, NULL);
                if (sqe)
                        io_uring_prep_cancel(sqe, &ch->op_recv, 0);
        }
}

void chan_put(struct chan *ch)
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

        if (w->n_conns >= w->cfg->s.max_connections || !(c = conn_new(w, fd))) {
                /*
                 * Back to the proxy, untouched and marked, so that the client
                 * gets an answer (a 502 from the proxy) rather than a close.
                 * Should even that not fit in the channel, the close it is.
                 */
                struct handoff_info back = *info;
                back.flags |= HANDOFF_F_REFUSED;
                log_warning("handoff: refusing a connection: at max_connections");
                int r = handoff_send(ch->fd, fd, &back);
                if (r < 0)
                        log_errno(r, "handoff: cannot return the refused connection: %m");
                close(fd);
                return;
        }
        c->handed_off = true;
        c->chan = ch;
        ch->refs++;
        c->requests = info->requests;
        c->handoff_flags = info->flags & ~HANDOFF_F_INTERNAL;
        c->internal_first = info->flags & HANDOFF_F_INTERNAL;
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
        if (res == -ECANCELED || (res == 0 && ch->w->stopping)) {
                /* Stopping, and all sent before it taken: handbacks still go out here. */
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
        r = handoff_decode(ch->buf, (size_t) res, &info);
        if (r < 0 || fd < 0 || info.kind != HANDOFF_CONN) {
                log_warning("handoff: refusing a message: %s", r < 0 ? strerror(-r)
                                                               : info.kind != HANDOFF_CONN
                                                                   ? "not a connection"
                                                                   : "no file descriptor in it");
                safe_close(fd);
        } else if ((info.flags & HANDOFF_F_ACK) && chan_ack(ch, info.id) < 0) {
                /*
                 * Unacknowledged, the connection is still the proxy's: ours
                 * goes untouched, and the channel ends, so that the proxy
                 * hands over again whatever it has not seen acknowledged.
                 */
                safe_close(fd);
                (void) shutdown(ch->fd, SHUT_RDWR);
        } else {
                info.flags &= ~HANDOFF_F_ACK;
                info.id = 0;
                chan_adopt(ch, fd, &info);
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
        /* We acknowledge: the proxy may ask for it from now on. */
        int r = chan_tell(ch, &(struct handoff_info){.kind = HANDOFF_HELLO});
        if (r < 0)
                log_debug("handoff: no HELLO on a new channel: %s", strerror(-r));
        chan_arm(ch);
        if (w->stopping)
                chan_stop_receiving(ch); /* accepted as the stop began */
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
                } else {
                        /* Accepted as the stop began: its request is served too. */
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

void accept_arm(struct listen_op *l)
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
        for (struct chan *ch = w->chans; ch; ch = ch->next)
                chan_stop_receiving(ch);
        for (unsigned i = 0; i < w->pool_used; i++) {
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

        r = ring_init(&w->ring, RING_ENTRIES, &w->stats.health.error_what);
        if (r < 0)
                return r;
        r = ring_bufs_init(&w->ring, &w->bufs, RECV_BGID, RECV_BUF_COUNT, RECV_BUF_SIZE);
        if (r < 0) {
                w->stats.health.error_what = "provided buffer ring (IORING_REGISTER_PBUF_RING)";
                return r;
        }
        w->pool_size = w->cfg->s.max_connections + POOL_SLACK;
        w->conns = calloc(w->pool_size, sizeof(*w->conns));
        w->cache = file_cache_new(w->cfg->s.open_file_cache);
        if (!w->conns || !w->cache) {
                w->stats.health.error_what = "memory for connections";
                return -ENOMEM;
        }
        r = access_log_open(&w->alog, w->cfg->s.access_log ? w->cfg->s.access_log : "off");
        if (r < 0) {
                w->stats.health.error_what = "access log";
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
                for (unsigned i = 0; i < w->pool_used; i++)
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
                atomic_store(&w->stats.health.state, r);
                worker_teardown(w);
                return NULL;
        }
        atomic_store(&w->stats.health.state, LOOP_RUNNING);

        for (;;) {
                r = ring_run(&w->ring, TICK_USEC);
                if (r < 0) {
                        log_error("worker %u: io_uring wait failed: %s", w->id, strerror(-r));
                        break;
                }
                w->now = now_ms();
                loop_heartbeat(&w->stats.health, w->now);
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
        atomic_store(&w->stats.health.state, LOOP_EXITED);
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
