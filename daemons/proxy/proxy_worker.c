/* SPDX-License-Identifier: MIT */
/*
 * proxy_worker: a worker thread's loop around its io_uring.
 *
 * It accepts on every listening socket (multishot, paused at
 * max_connections), keeps one handoff channel per wharf-static socket that
 * its routes name (connected on first use, and listened on for connections
 * handed back), holds the idle upstream connections, expires timeouts once
 * per tick, follows configuration reloads and, on stop, drains: no new
 * connections, idle ones closed, requests in progress finished, a hard
 * deadline.
 */
#include "proxy_worker.h"

#include <netinet/in.h>
#include <fcntl.h>
#include <limits.h>
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

/* ---- buffers ---- */

#define OBUF_FREE_MAX 64

struct obuf *obuf_get(struct worker *w)
{
        struct obuf *b = w->free_obufs;

        if (b) {
                w->free_obufs = b->next;
                w->n_free_obufs--;
        } else if (!(b = malloc(sizeof(*b)))) {
                return NULL;
        }
        b->next = NULL;
        b->len = b->sent = 0;
        return b;
}

void obuf_put(struct worker *w, struct obuf *b)
{
        if (w->n_free_obufs >= OBUF_FREE_MAX) {
                free(b);
                return;
        }
        b->next = w->free_obufs;
        w->free_obufs = b;
        w->n_free_obufs++;
}

bool spipe_get(struct worker *w, struct spipe *p)
{
        int fds[2];

        if (w->n_free_pipes > 0) {
                *p = w->free_pipes[--w->n_free_pipes];
                return true;
        }
        if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
                log_warning("pipe for a spliced response: %s", strerror(errno));
                return false;
        }
        /* As big as the read-ahead allowed; the kernel may cap it (pipe-max-size). */
        int cap = fcntl(fds[1], F_SETPIPE_SZ, (int) min_u64(w->cfg->response_buffer, INT_MAX));
        if (cap < 0)
                cap = fcntl(fds[1], F_GETPIPE_SZ);
        *p = (struct spipe){.rfd = fds[0], .wfd = fds[1], .cap = cap > 0 ? (size_t) cap : 65536};
        return true;
}

void spipe_put(struct worker *w, struct spipe *p, bool empty)
{
        if (p->rfd < 0)
                return;
        if (empty && w->n_free_pipes < PIPE_FREE_MAX) {
                w->free_pipes[w->n_free_pipes++] = *p;
        } else {
                close(p->rfd);
                close(p->wfd);
        }
        p->rfd = p->wfd = -1;
}

struct access_log *worker_alog(struct worker *w, const struct proxy_config *cfg,
                               const struct vserver *vs)
{
        /*
         * A request that began before a reload goes to the log of the server
         * in the same place now: the logs follow the current configuration.
         */
        size_t i = (size_t) (vs - cfg->servers);

        return i < w->n_alogs ? &w->alogs[i] : NULL;
}

static void alogs_close(struct worker *w)
{
        for (size_t i = 0; i < w->n_alogs; i++) {
                access_log_flush(&w->alogs[i]);
                access_log_done(&w->alogs[i]);
        }
        free(w->alogs);
        w->alogs = NULL;
        w->n_alogs = 0;
}

static int alogs_open(struct worker *w)
{
        w->alogs = calloc(w->cfg->n_servers, sizeof(*w->alogs));
        if (!w->alogs)
                return -ENOMEM;
        w->n_alogs = w->cfg->n_servers;
        for (size_t i = 0; i < w->n_alogs; i++) {
                w->alogs[i].fd = -1;
                int r = access_log_open(&w->alogs[i], w->cfg->servers[i].access_log);
                if (r < 0)
                        log_error("cannot open access log '%s': %s", w->cfg->servers[i].access_log,
                                  strerror(-r));
        }
        return 0;
}

/* ---- handoff channels to wharf-static ---- */

static bool chan_arm(struct chan *ch);

static void chan_adopt(struct chan *ch, int fd, const struct handoff_info *info)
{
        struct worker *w = ch->w;
        struct sockaddr_storage local;
        socklen_t len = sizeof(local);
        unsigned port = 0;
        struct conn *c;

        if (getsockname(fd, (struct sockaddr *) &local, &len) == 0) {
                if (local.ss_family == AF_INET)
                        port = ntohs(((struct sockaddr_in *) &local)->sin_port);
                else if (local.ss_family == AF_INET6)
                        port = ntohs(((struct sockaddr_in6 *) &local)->sin6_port);
        }
        c = conn_new(w, fd, port);
        if (!c) {
                log_warning("handback: refusing a connection: at max_connections");
                close(fd);
                return;
        }
        c->requests = info->requests;
        c->handoff_flags = info->flags & ~(HANDOFF_F_REFUSED | HANDOFF_F_ACK | HANDOFF_F_INTERNAL);
        c->static_refused = info->flags & HANDOFF_F_REFUSED;
        /* A refused internal redirect is still one: its location answers (502), not a 404. */
        c->internal = c->static_refused && (info->flags & HANDOFF_F_INTERNAL);
        memcpy(&c->peer, &info->peer, sizeof(c->peer));
        c->peer_len = info->peer_len;
        conn_start(c, info->data, info->data_len);
}

static void chan_maybe_free(struct chan *ch);

static void chan_acked(struct chan *ch, uint16_t id)
{
        for (struct conn **p = &ch->pending; *p; p = &(*p)->pend_next) {
                struct conn *c = *p;
                if (c->handoff_id != id)
                        continue;
                *p = c->pend_next;
                c->pend_chan = NULL;
                conn_handoff_taken(c);
                return;
        }
        /* Its send's completion has not been seen yet: on_handoff looks here. */
        ch->early_ack = id;
}

void chan_pending_add(struct chan *ch, struct conn *c)
{
        c->pend_chan = ch;
        c->pend_next = ch->pending;
        ch->pending = c;
}

void chan_pending_drop(struct conn *c)
{
        struct chan *ch = c->pend_chan;

        if (!ch)
                return;
        for (struct conn **p = &ch->pending; *p; p = &(*p)->pend_next)
                if (*p == c) {
                        *p = c->pend_next;
                        break;
                }
        c->pend_chan = NULL;
        chan_maybe_free(ch);
}

/* Nothing more will be heard from ch: what it never acknowledged it never touched. */
static void chan_end(struct chan *ch)
{
        ch->retired = true;
        ch->ended = true;
        while (ch->pending) {
                struct conn *c = ch->pending;
                ch->pending = c->pend_next;
                c->pend_chan = NULL;
                conn_handoff_again(c);
        }
        chan_maybe_free(ch);
}

static void on_chan_recv(struct ring_op *op, int res, unsigned flags)
{
        struct chan *ch = container_of(op, struct chan, op_recv);
        struct handoff_info info;
        int fd, r;

        (void) flags;
        ch->recv_armed = false;
        if (res <= 0) {
                if (res != -ECANCELED)
                        log_info("handoff channel %s closed by wharf-static", ch->path);
                chan_end(ch);
                return;
        }
        fd = handoff_rx_take_fd(&ch->rx);
        r = handoff_decode(ch->buf, (size_t) res, &info);
        if (r == 0 && info.kind == HANDOFF_HELLO && fd < 0) {
                ch->acks = true;
        } else if (r == 0 && info.kind == HANDOFF_ACK && fd < 0) {
                chan_acked(ch, info.id);
        } else if (r < 0 || fd < 0 || info.kind != HANDOFF_CONN) {
                log_warning("handback: refusing a message: %s",
                            r < 0    ? strerror(-r)
                            : fd < 0 ? "no file descriptor in it"
                                     : "a file descriptor where none belongs");
                safe_close(fd);
        } else {
                chan_adopt(ch, fd, &info);
        }
        if (!chan_arm(ch))
                chan_end(ch);
}

static bool chan_arm(struct chan *ch)
{
        struct io_uring_sqe *sqe = ring_sqe(&ch->w->ring, &ch->op_recv);

        if (!sqe) {
                ch->retired = true; /* cannot hear from it: new handoffs use a new one */
                return false;
        }
        handoff_rx_prepare(&ch->rx, ch->buf, sizeof(ch->buf));
        io_uring_prep_recvmsg(sqe, ch->fd, &ch->rx.msg, MSG_CMSG_CLOEXEC);
        ch->recv_armed = true;
        return true;
}

/*
 * The channel to the wharf-static at path, connected on first use. The
 * connect on a unix socket does not block: it succeeds or fails at once.
 */
static struct chan *chan_find(struct worker *w, const char *path)
{
        for (struct chan *ch = w->chans; ch; ch = ch->next)
                if (!ch->retired && streq(ch->path, path))
                        return ch;
        return NULL;
}

void chan_sent(struct chan *ch, int res)
{
        ch->sends--;
        if (res < 0)
                ch->retired = true;
        chan_maybe_free(ch);
}

struct chan *chan_get(struct worker *w, const char *path)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct chan *ch = chan_find(w, path);
        int fd;

        if (ch)
                return ch;
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return NULL;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                log_warning("cannot reach wharf-static at %s: %m", path);
                close(fd);
                return NULL;
        }
        ch = malloc(sizeof(*ch));
        if (!ch) {
                close(fd);
                return NULL;
        }
        *ch = (struct chan){.w = w, .fd = fd};
        snprintf(ch->path, sizeof(ch->path), "%s", path);
        ch->op_recv.handler = on_chan_recv;
        ch->next = w->chans;
        w->chans = ch;
        if (!chan_arm(ch)) {
                chan_maybe_free(ch);
                return NULL;
        }
        return ch;
}

/*
 * A retired channel goes once nothing more can come from it and no handoff
 * sent on it is in flight: its descriptor number stays taken until then, so
 * that no send meant for it can reach a socket that got the number anew.
 */
static void chan_maybe_free(struct chan *ch)
{
        struct worker *w = ch->w;

        if (!ch->retired || ch->recv_armed || ch->sends > 0 || ch->pending)
                return;
        for (struct chan **p = &w->chans; *p; p = &(*p)->next)
                if (*p == ch) {
                        *p = ch->next;
                        break;
                }
        safe_close(ch->fd);
        free(ch);
}

/* ---- accepting ---- */

static void accept_arm(struct listen_op *l)
{
        struct io_uring_sqe *sqe = ring_sqe(&l->w->ring, &l->op);

        if (!sqe)
                return;
        io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        l->armed = true;
}

static void accept_cancel_all(struct worker *w)
{
        for (unsigned i = 0; i < w->n_accepts; i++) {
                if (!w->accepts[i].armed)
                        continue;
                struct io_uring_sqe *sqe = ring_sqe(&w->ring, NULL);
                if (sqe)
                        io_uring_prep_cancel(sqe, &w->accepts[i].op, 0);
        }
}

static void on_accept(struct ring_op *op, int res, unsigned flags)
{
        struct listen_op *l = container_of(op, struct listen_op, op);
        struct worker *w = l->w;

        if (!(flags & IORING_CQE_F_MORE))
                l->armed = false;
        if (res >= 0) {
                /* Accepted as the stop began: its request is served too. */
                struct conn *c = conn_new(w, res, l->port);
                if (c) {
                        conn_start(c, NULL, 0);
                        if (w->stopping && c->fd >= 0)
                                conn_idle_close(c);
                } else {
                        close(res);
                }
                if (w->n_conns >= w->cfg->max_connections && !w->accept_paused) {
                        w->accept_paused = true;
                        accept_cancel_all(w);
                }
        } else if (res != -ECANCELED) {
                log_warning("accept: %s", strerror(-res));
        }
}

static unsigned socket_port(int fd)
{
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);

        if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0)
                return 0;
        if (ss.ss_family == AF_INET)
                return ntohs(((struct sockaddr_in *) &ss)->sin_port);
        if (ss.ss_family == AF_INET6)
                return ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
        return 0;
}

/* ---- the loop ---- */

static void efd_arm(struct worker *w);

static void on_efd(struct ring_op *op, int res, unsigned flags)
{
        struct worker *w = container_of(op, struct worker, op_efd);

        (void) res;
        (void) flags;
        if (!w->stopping)
                efd_arm(w);
}

static void efd_arm(struct worker *w)
{
        struct io_uring_sqe *sqe = ring_sqe(&w->ring, &w->op_efd);

        if (sqe)
                io_uring_prep_read(sqe, w->efd, &w->efd_val, sizeof(w->efd_val), 0);
}

static void timers_expire(struct worker *w)
{
        for (unsigned i = 0; i < w->pool_used; i++) {
                struct conn *c = &w->conns[i];
                if (c->fd < 0 || c->phase == PH_CLOSING)
                        continue;
                if (c->up && c->up->deadline && c->up->deadline <= w->now)
                        upconn_timeout(c->up);
                if (c->phase != PH_CLOSING && c->deadline && c->deadline <= w->now)
                        conn_timeout(c);
        }
}

static void worker_begin_stop(struct worker *w)
{
        w->stopping = true;
        w->stop_deadline = w->now + STOP_GRACE_MS;
        accept_cancel_all(w);
        upconn_pool_drop_all(w);
        for (unsigned i = 0; i < w->pool_used; i++)
                if (w->conns[i].fd >= 0)
                        conn_idle_close(&w->conns[i]);
}

static void worker_switch_config(struct worker *w, struct proxy_config *cfg)
{
        alogs_close(w);
        w->cfg = cfg;
        if (alogs_open(w) < 0)
                log_error("out of memory for access logs");
        /* Idle upstream connections may lead to servers the new config dropped. */
        upconn_pool_drop_all(w);
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
        w->pool_size = w->cfg->max_connections + POOL_SLACK;
        w->conns = calloc(w->pool_size, sizeof(*w->conns));
        if (!w->conns) {
                w->stats.health.error_what = "memory for connections";
                return -ENOMEM;
        }
        r = alogs_open(w);
        if (r < 0) {
                w->stats.health.error_what = "access log";
                return r;
        }
        for (size_t i = 0; i < srv->n_listeners && w->n_accepts < LISTEN_MAX; i++) {
                struct listen_op *l = &w->accepts[w->n_accepts++];
                l->op.handler = on_accept;
                l->w = w;
                l->fd = srv->listeners[i].fd;
                l->port = socket_port(l->fd);
                accept_arm(l);
        }
        w->op_efd.handler = on_efd;
        efd_arm(w);
        update_date(w);
        return 0;
}

static void worker_teardown(struct worker *w)
{
        if (w->conns)
                for (unsigned i = 0; i < w->pool_used; i++) {
                        w->conns[i].fd = safe_close(w->conns[i].fd);
                        spipe_put(w, &w->conns[i].sp, false);
                        gzip_give(&w->gz_pool, &w->conns[i].gz);
                }
        gzip_pool_done(&w->gz_pool);
        while (w->n_free_pipes > 0) {
                struct spipe *p = &w->free_pipes[--w->n_free_pipes];
                close(p->rfd);
                close(p->wfd);
        }
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
        alogs_close(w);
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

                struct proxy_config *cfg = atomic_load(&srv->cfg);
                if (cfg != w->cfg)
                        worker_switch_config(w, cfg);
                if (atomic_load_explicit(&srv->stopping, memory_order_relaxed) && !w->stopping)
                        worker_begin_stop(w);
                if (w->stopping) {
                        if (w->n_conns == 0 && w->n_up == 0)
                                break;
                        if (w->now >= w->stop_deadline) {
                                log_warning("worker %u: %u connections still open after %d s",
                                            w->id, w->n_conns, STOP_GRACE_MS / 1000);
                                break;
                        }
                }
                if (w->accept_paused && w->n_conns < w->cfg->max_connections)
                        w->accept_paused = false;
                if (!w->stopping && !w->accept_paused)
                        for (unsigned i = 0; i < w->n_accepts; i++)
                                if (!w->accepts[i].armed)
                                        accept_arm(&w->accepts[i]);
                /* Receives that found no provided buffer free try again. */
                for (unsigned i = 0; i < w->pool_used; i++)
                        if (w->conns[i].fd >= 0 && w->conns[i].phase != PH_CLOSING)
                                conn_recv_pump(&w->conns[i]);
                for (size_t i = 0; i < w->n_alogs; i++)
                        if (w->alogs[i].len > 0)
                                access_log_flush(&w->alogs[i]);
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
        while (w->free_obufs) {
                struct obuf *b = w->free_obufs;
                w->free_obufs = b->next;
                free(b);
        }
        upconn_free_all(w);
        free(w->conns);
        safe_close(w->efd);
        free(w);
        return NULL;
}

int worker_start(struct worker *w)
{
        return -pthread_create(&w->thread, NULL, worker_main, w);
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
