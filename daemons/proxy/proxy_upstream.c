/* SPDX-License-Identifier: MIT */
/*
 * proxy_upstream: one exchange between a client request and an upstream.
 *
 * The request leaves as a uwsgi packet (the variables of Debian's
 * /etc/nginx/uwsgi_params plus every header as HTTP_*) or as an HTTP/1.1
 * head, followed by the body: read whole first (proxy_body.c), from memory
 * or, when it is large, from its file with sendfile(2); or with
 * request_buffering = off streamed as it arrives from the client. The response
 * head is parsed strictly and rewritten for the client (hop-by-hop headers
 * dropped, our Server and Date, framing chosen for this client); the body is
 * read into the client's output queue up to response_buffer bytes ahead of
 * the client, so that a slow client does not hold an application worker.
 * A body of at least splice_min bytes with a length goes through a pipe
 * instead, moved with splice(2) from the upstream socket into the pipe and
 * from the pipe to the client (response_buffer is the pipe's size): the
 * kernel moves page references and the bytes never enter wharf-proxy.
 *
 * Failures before the first response byte try the next server of the group
 * when the request can be repeated (connect failures always; otherwise only
 * idempotent requests whose body was not consumed yet), then end in 502, or
 * 504 on a timeout. After response bytes went to the client, a broken
 * upstream makes the client connection end with a reset and no clean end.
 *
 * Keep-alive to upstreams: HTTP upstreams with `keepalive = N` keep idle
 * connections per worker. uwsgi has no keep-alive of its own, so the proxy
 * asks for it with the variable WHARF_KEEPALIVE=1; wharf-wsgi then frames its
 * response and says "Connection: keep-alive". Any other uwsgi server ignores
 * an unknown variable and closes after the response, as the protocol has it.
 * The variable goes with every uwsgi request: a framed response is one whose
 * breakage shows, which a close-delimited one over a unix socket cannot.
 */
#include "proxy_worker.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/socket.h>

#include "uwsgi.h"

/* What one sendfile of a buffered body asks for; the socket's room decides what it moves. */
#define BODY_SENDFILE_MAX (1u << 20)

static void up_send_pump(struct conn *c);
static void up_recv_pump(struct conn *c);
static void up_connect(struct conn *c);
static void splice_pump(struct conn *c);
static void splice_start(struct conn *c);

/* ---- upstream connections ---- */

static void upconn_maybe_free(struct upconn *u)
{
        struct worker *w = u->w;

        if (u->c || u->idle || u->inflight > 0)
                return;
        if (u->fd >= 0)
                close(u->fd);
        u->fd = -1;
        free(u->rx);
        u->rx = NULL;
        if (u->all_prev)
                u->all_prev->all_next = u->all_next;
        else
                w->up_all = u->all_next;
        if (u->all_next)
                u->all_next->all_prev = u->all_prev;
        u->next = w->up_free;
        w->up_free = u;
        w->n_up--;
}

static void upconn_cancel(struct upconn *u, struct ring_op *op)
{
        struct io_uring_sqe *sqe = ring_sqe(&u->w->ring, NULL);

        if (sqe)
                io_uring_prep_cancel(sqe, op, 0);
}

/* Closes an upstream connection; it is freed once nothing of it is in flight. */
static void upconn_close(struct upconn *u)
{
        if (u->idle)
                upconn_cancel(u, &u->op_poll);
        u->c = NULL;
        u->idle = false;
        if (u->fd >= 0)
                (void) shutdown(u->fd, SHUT_RDWR);
        if (!u->connected && u->inflight > 0)
                upconn_cancel(u, &u->op_connect);
        if (u->send_busy)
                upconn_cancel(u, &u->op_send);
        if (u->recv_busy)
                upconn_cancel(u, &u->op_recv);
        if (u->sp_in_armed)
                upconn_cancel(u, &u->op_sp_in);
        if (u->body_armed)
                upconn_cancel(u, &u->op_body);
        upconn_maybe_free(u);
}

static void on_up_connect(struct ring_op *op, int res, unsigned flags);
static void on_up_send(struct ring_op *op, int res, unsigned flags);
static void on_up_recv(struct ring_op *op, int res, unsigned flags);
static void on_up_poll(struct ring_op *op, int res, unsigned flags);
static void on_up_readable(struct ring_op *op, int res, unsigned flags);
static void on_up_writable(struct ring_op *op, int res, unsigned flags);

static struct upconn *upconn_new(struct worker *w)
{
        struct upconn *u = w->up_free;

        if (u)
                w->up_free = u->next;
        else if (!(u = malloc(sizeof(*u))))
                return NULL;
        *u = (struct upconn){.w = w, .fd = -1};
        u->rx = malloc(UP_RX_SIZE);
        if (!u->rx) {
                free(u);
                return NULL;
        }
        u->op_connect.handler = on_up_connect;
        u->op_send.handler = on_up_send;
        u->op_recv.handler = on_up_recv;
        u->op_poll.handler = on_up_poll;
        u->op_sp_in.handler = on_up_readable;
        u->op_body.handler = on_up_writable;
        u->all_next = w->up_all;
        if (w->up_all)
                w->up_all->all_prev = u;
        w->up_all = u;
        w->n_up++;
        return u;
}

static struct io_uring_sqe *up_sqe(struct upconn *u, struct ring_op *op)
{
        struct io_uring_sqe *sqe = ring_sqe(&u->w->ring, op);

        if (sqe)
                u->inflight++;
        return sqe;
}

/* An idle pooled connection that becomes readable was closed (or spoke out of turn). */
static void on_up_poll(struct ring_op *op, int res, unsigned flags)
{
        struct upconn *u = container_of(op, struct upconn, op_poll);
        struct worker *w = u->w;

        (void) res;
        (void) flags;
        u->inflight--;
        if (!u->idle) {
                upconn_maybe_free(u);
                return;
        }
        for (struct upconn **p = &w->up_idle; *p; p = &(*p)->next)
                if (*p == u) {
                        *p = u->next;
                        break;
                }
        upconn_close(u);
}

static void pool_put(struct worker *w, struct upconn *u, unsigned max_idle)
{
        unsigned n = 0;
        struct io_uring_sqe *sqe;

        for (struct upconn *p = w->up_idle; p; p = p->next)
                if (p->server == u->server)
                        n++;
        if (n >= max_idle || w->stopping || u->cfg != w->cfg || !(sqe = up_sqe(u, &u->op_poll))) {
                upconn_close(u);
                return;
        }
        io_uring_prep_poll_add(sqe, u->fd, POLLIN | POLLRDHUP);
        u->c = NULL;
        u->idle = true;
        u->rx_len = 0;
        u->deadline = 0;
        u->next = w->up_idle;
        w->up_idle = u;
}

static struct upconn *pool_take(struct worker *w, const struct upstream_server *s)
{
        for (struct upconn **p = &w->up_idle; *p; p = &(*p)->next) {
                struct upconn *u = *p;
                if (u->server != s)
                        continue;
                *p = u->next;
                u->idle = false;
                u->reused = true;
                upconn_cancel(u, &u->op_poll);
                return u;
        }
        return NULL;
}

void upconn_pool_drop_all(struct worker *w)
{
        while (w->up_idle) {
                struct upconn *u = w->up_idle;
                w->up_idle = u->next;
                upconn_close(u);
        }
}

void upconn_free_all(struct worker *w)
{
        /* At the end of the loop: what is still in flight no longer matters. */
        while (w->up_all) {
                struct upconn *u = w->up_all;
                w->up_all = u->all_next;
                safe_close(u->fd);
                free(u->rx);
                free(u);
        }
        while (w->up_free) {
                struct upconn *u = w->up_free;
                w->up_free = u->next;
                free(u);
        }
}

/* ---- choosing a server ---- */

static bool server_usable(const struct upstream *up, const struct upstream_server *s, uint64_t now)
{
        /* As nginx does: a group of one is never considered unavailable. */
        return up->n_servers == 1 || atomic_load(&s->down_until) <= now;
}

static struct upstream_server *pick_server(struct conn *c, struct upstream *up)
{
        uint64_t now = c->w->now;
        struct upstream_server *best = NULL;
        size_t n = up->n_servers;

        if (up->balance == BALANCE_ROUND_ROBIN && up->total_weight > 0) {
                unsigned pos =
                    atomic_fetch_add_explicit(&up->rr, 1, memory_order_relaxed) % up->total_weight;
                size_t start = 0;
                for (size_t i = 0; i < n; i++) {
                        if (up->servers[i].backup)
                                continue;
                        if (pos < up->servers[i].weight) {
                                start = i;
                                break;
                        }
                        pos -= up->servers[i].weight;
                }
                for (size_t k = 0; k < n && !best; k++) {
                        size_t i = (start + k) % n;
                        struct upstream_server *s = &up->servers[i];
                        if (!s->backup && !(c->tried & (1ull << (i % 64))) &&
                            server_usable(up, s, now))
                                best = s;
                }
        } else {
                uint64_t best_load = UINT64_MAX;
                for (size_t i = 0; i < n; i++) {
                        struct upstream_server *s = &up->servers[i];
                        if (s->backup || (c->tried & (1ull << (i % 64))) ||
                            !server_usable(up, s, now))
                                continue;
                        uint64_t load = (uint64_t) atomic_load(&s->active) * 1000 / s->weight;
                        if (load < best_load) {
                                best_load = load;
                                best = s;
                        }
                }
        }
        for (size_t i = 0; i < n && !best; i++) {
                struct upstream_server *s = &up->servers[i];
                if (s->backup && !(c->tried & (1ull << (i % 64))) && server_usable(up, s, now))
                        best = s;
        }
        if (!best && c->tries == 0) {
                /* Every server is marked down: try the one that went down first. */
                for (size_t i = 0; i < n; i++)
                        if (!best || atomic_load(&up->servers[i].down_until) <
                                         atomic_load(&best->down_until))
                                best = &up->servers[i];
        }
        return best;
}

static void server_failed(const struct upstream *up, struct upstream_server *s, uint64_t now)
{
        if (s->max_fails == 0 || up->n_servers == 1)
                return;
        if (atomic_fetch_add(&s->fails, 1) + 1 >= s->max_fails) {
                atomic_store(&s->fails, 0);
                atomic_store(&s->down_until, now + s->fail_timeout);
                log_warning("upstream server %s marked down for %llu ms", s->addr,
                            (unsigned long long) s->fail_timeout);
        }
}

/* ---- the request head for the upstream ---- */

static void span_upper_var(char *out, const char *prefix, struct span name)
{
        size_t n = strlen(prefix);

        memcpy(out, prefix, n);
        for (size_t i = 0; i < name.len; i++) {
                char ch = name.ptr[i];
                out[n + i] = ch == '-' ? '_' : (ch >= 'a' && ch <= 'z') ? (char) (ch - 32) : ch;
        }
        out[n + name.len] = '\0';
}

static bool name_is(struct span name, const char *lit)
{
        return name.len == strlen(lit) && strncasecmp(name.ptr, lit, name.len) == 0;
}

/*
 * The values of every header named like headers[i], joined in order: ", "
 * in general, "; " for Cookie (RFC 6265 5.4). Returns the length written.
 */
static size_t join_values(const struct http_request *req, size_t i, char *out, size_t cap)
{
        struct span name = req->headers[i].name;
        const char *sep = name_is(name, "Cookie") ? "; " : ", ";
        size_t len = 0;

        for (size_t j = i; j < req->n_headers; j++) {
                if (j != i && !(req->headers[j].name.len == name.len &&
                                strncasecmp(req->headers[j].name.ptr, name.ptr, name.len) == 0))
                        continue;
                struct span v = req->headers[j].value;
                if (len > 0 && len + 2 <= cap) {
                        memcpy(out + len, sep, 2);
                        len += 2;
                }
                size_t n = min_size(v.len, cap - len);
                memcpy(out + len, v.ptr, n);
                len += n;
        }
        return len;
}

static bool seen_before(const struct http_request *req, size_t i)
{
        struct span name = req->headers[i].name;

        for (size_t j = 0; j < i; j++)
                if (req->headers[j].name.len == name.len &&
                    strncasecmp(req->headers[j].name.ptr, name.ptr, name.len) == 0)
                        return true;
        return false;
}

static bool uwsgi_param_set(const struct location *l, const char *name)
{
        for (size_t i = 0; i < l->n_params; i++)
                if (streq(l->params[i].name, name))
                        return true;
        return false;
}

static ssize_t build_uwsgi(struct conn *c, const struct http_request *req, uint64_t body_len,
                           bool keepalive)
{
        struct uwsgi_writer uw;
        char path[HTTP_MAX_TARGET + 1], addr[INET6_ADDRSTRLEN + 8], port[16], lport[16], clen[24];
        char name[300], *value;
        ssize_t plen;
        struct span server_name;

        value = malloc(UWSGI_MAX_BLOCK);
        if (!value)
                return -ENOMEM;
        uwsgi_writer_init(&uw, c->uphead, UP_HEAD_MAX, UWSGI_MOD_WSGI, 0);
        plen = http_path_normalize(req->path.ptr, req->path.len, path, sizeof(path), 0);
        if (plen < 0)
                plen = 0;
        socklen_t client_len;
        const struct sockaddr_storage *client = conn_client(c, &client_len);
        addr_text(client, client_len, addr, sizeof(addr), port, sizeof(port));
        snprintf(lport, sizeof(lport), "%u", c->local_port);
        snprintf(clen, sizeof(clen), "%llu", (unsigned long long) body_len);

        const struct http_header *ct = http_find_header(req, "Content-Type");
        if (c->vs->names.n > 0 && !streq(c->vs->names.v[0], "_") && !strchr(c->vs->names.v[0], '*'))
                server_name = span_from_str(c->vs->names.v[0]);
        else {
                server_name = req->host;
                const char *colon = memrchr(server_name.ptr, ':', server_name.len);
                if (colon &&
                    !memchr(colon, ']', (size_t) (server_name.ptr + server_name.len - colon)))
                        server_name.len = (size_t) (colon - server_name.ptr);
        }

        uwsgi_add(&uw, span_from_str("QUERY_STRING"), req->query);
        uwsgi_add(&uw, span_from_str("REQUEST_METHOD"), req->method_name);
        uwsgi_add(&uw, span_from_str("CONTENT_TYPE"), ct ? ct->value : (struct span){"", 0});
        uwsgi_add_str(&uw, "CONTENT_LENGTH", req->body != HTTP_BODY_NONE ? clen : "");
        uwsgi_add(&uw, span_from_str("REQUEST_URI"), req->target);
        uwsgi_add(&uw, span_from_str("PATH_INFO"), (struct span){path, (size_t) plen});
        uwsgi_add_str(&uw, "DOCUMENT_ROOT", "");
        uwsgi_add_str(&uw, "SERVER_PROTOCOL", req->minor_version ? "HTTP/1.1" : "HTTP/1.0");
        uwsgi_add_str(&uw, "REQUEST_SCHEME", c->handoff_flags & HANDOFF_F_TLS ? "https" : "http");
        if (c->handoff_flags & HANDOFF_F_TLS)
                uwsgi_add_str(&uw, "HTTPS", "on");
        uwsgi_add_str(&uw, "REMOTE_ADDR", addr);
        uwsgi_add_str(&uw, "REMOTE_PORT", port);
        uwsgi_add_str(&uw, "SERVER_PORT", lport);
        uwsgi_add(&uw, span_from_str("SERVER_NAME"), server_name);
        if (keepalive)
                uwsgi_add_str(&uw, "WHARF_KEEPALIVE", "1");
        for (size_t i = 0; i < req->n_headers; i++) {
                struct span n = req->headers[i].name;
                /*
                 * As nginx: a name with '_' would pose as another header once
                 * dashes become underscores, so it is not passed on.
                 */
                if (n.len + 6 > sizeof(name) || memchr(n.ptr, '_', n.len) ||
                    name_is(n, "Content-Type") || name_is(n, "Content-Length") ||
                    (req->body == HTTP_BODY_CHUNKED && name_is(n, "Transfer-Encoding")) ||
                    seen_before(req, i))
                        continue;
                span_upper_var(name, "HTTP_", n);
                if (uwsgi_param_set(c->loc, name))
                        continue; /* a uwsgi_param of that name replaces the client's header */
                size_t vlen = join_values(req, i, value, UWSGI_MAX_BLOCK);
                uwsgi_add(&uw, span_from_str(name), (struct span){value, vlen});
        }
        /* uwsgi_param: after the built-in ones, which a name of theirs replaces (the last wins). */
        struct var_ctx x = {req, path, (size_t) plen};
        for (size_t i = 0; i < c->loc->n_params; i++) {
                const struct upstream_param *pm = &c->loc->params[i];
                ssize_t k = vars_expand(c, &x, pm->value, false, value, UWSGI_MAX_BLOCK);
                if (k < 0)
                        log_info("uwsgi_param %s: not sent: too long, or a control character",
                                 pm->name);
                else if (k > 0 || !pm->if_not_empty)
                        uwsgi_add(&uw, span_from_str(pm->name), (struct span){value, (size_t) k});
        }
        free(value);
        return uwsgi_finish(&uw);
}

static bool hop_by_hop(struct span name)
{
        static const char *const names[] = {"Connection", "Keep-Alive", "Proxy-Connection",
                                            "TE",         "Trailer",    "Transfer-Encoding",
                                            "Upgrade",    "Expect"};
        for (size_t i = 0; i < ARRAY_SIZE(names); i++)
                if (name_is(name, names[i]))
                        return true;
        return false;
}

/* The proxy_set_header line for a header name, if any. */
static const struct upstream_param *param_named(const struct location *l, struct span name)
{
        for (size_t i = 0; i < l->n_params; i++)
                if (name_is(name, l->params[i].name))
                        return &l->params[i];
        return NULL;
}

static bool param_set(const struct location *l, const char *name)
{
        return param_named(l, span_from_str(name)) != NULL;
}

/* proxy_set_header: the lines with a value, filled in (a line without one only removes). */
static void write_params(struct conn *c, const struct http_request *req, struct http_writer *hw)
{
        char path[HTTP_MAX_TARGET + 1], value[4096];
        ssize_t plen = http_path_normalize(req->path.ptr, req->path.len, path, sizeof(path), 0);
        struct var_ctx x = {req, path, plen < 0 ? 0 : (size_t) plen};

        for (size_t i = 0; i < c->loc->n_params; i++) {
                const struct upstream_param *pm = &c->loc->params[i];
                if (!pm->value)
                        continue;
                ssize_t k = vars_expand(c, &x, pm->value, false, value, sizeof(value));
                if (k < 0)
                        log_info("proxy_set_header %s: not sent: too long, or a control character",
                                 pm->name);
                else if (k > 0) /* as nginx: an empty value sends no header */
                        http_write_header(hw, pm->name, (struct span){value, (size_t) k});
        }
}

static ssize_t build_http(struct conn *c, const struct http_request *req, uint64_t body_len,
                          bool keepalive)
{
        struct http_writer hw;
        char addr[INET6_ADDRSTRLEN + 8], port[16];
        const struct http_header *xff = http_find_header(req, "X-Forwarded-For");
        const struct http_header *conn_hdr = http_find_header(req, "Connection");

        socklen_t client_len;
        const struct sockaddr_storage *client = conn_client(c, &client_len);

        http_writer_init(&hw, c->uphead, UP_HEAD_MAX);
        addr_text(client, client_len, addr, sizeof(addr), port, sizeof(port));
        http_write_raw(&hw, req->method_name.ptr, req->method_name.len);
        http_write_raw(&hw, " ", 1);
        http_write_raw(&hw, req->target.ptr, req->target.len);
        http_write_raw(&hw, " HTTP/1.1\r\n", 11);
        if (req->host.len && !param_set(c->loc, "Host"))
                http_write_header(&hw, "Host", req->host);
        for (size_t i = 0; i < req->n_headers; i++) {
                const struct http_header *h = &req->headers[i];
                if (c->upgrade && name_is(h->name, "Upgrade")) {
                        http_write_header(&hw, "Upgrade", h->value);
                        continue;
                }
                if (hop_by_hop(h->name) || name_is(h->name, "Host") ||
                    name_is(h->name, "Content-Length") || name_is(h->name, "X-Forwarded-For") ||
                    name_is(h->name, "X-Real-IP") || name_is(h->name, "X-Forwarded-Proto") ||
                    param_named(c->loc, h->name))
                        continue;
                /* Headers the client named in Connection are hop-by-hop too. */
                if (conn_hdr) {
                        char tok[64];
                        if (h->name.len < sizeof(tok)) {
                                memcpy(tok, h->name.ptr, h->name.len);
                                tok[h->name.len] = '\0';
                                if (http_list_has_token(conn_hdr->value, tok))
                                        continue;
                        }
                }
                http_write_raw(&hw, h->name.ptr, h->name.len);
                http_write_raw(&hw, ": ", 2);
                http_write_raw(&hw, h->value.ptr, h->value.len);
                http_write_raw(&hw, "\r\n", 2);
        }
        if (xff && !param_set(c->loc, "X-Forwarded-For")) {
                http_write_raw(&hw, "X-Forwarded-For: ", 17);
                http_write_raw(&hw, xff->value.ptr, xff->value.len);
                http_write_raw(&hw, ", ", 2);
                http_write_raw(&hw, addr, strlen(addr));
                http_write_raw(&hw, "\r\n", 2);
        } else if (!param_set(c->loc, "X-Forwarded-For")) {
                http_write_header_str(&hw, "X-Forwarded-For", addr);
        }
        if (!param_set(c->loc, "X-Real-IP"))
                http_write_header_str(&hw, "X-Real-IP", addr);
        if (!param_set(c->loc, "X-Forwarded-Proto"))
                http_write_header_str(&hw, "X-Forwarded-Proto",
                                      c->handoff_flags & HANDOFF_F_TLS ? "https" : "http");
        write_params(c, req, &hw);
        if (req->body != HTTP_BODY_NONE)
                http_write_header_u64(&hw, "Content-Length", body_len);
        http_write_header_str(&hw, "Connection",
                              c->upgrade  ? "upgrade"
                              : keepalive ? "keep-alive"
                                          : "close");
        return http_write_end(&hw);
}

/* ---- the exchange ---- */

/*
 * A request to switch protocols (RFC 9110 7.8), a WebSocket handshake for
 * one: HTTP/1.1, an Upgrade header named in Connection, and no body. Only
 * proxy_pass forwards it; uwsgi has no way to switch.
 */
static bool upgrade_requested(const struct http_request *req)
{
        const struct http_header *conn = http_find_header(req, "Connection");

        return req->minor_version == 1 && req->body == HTTP_BODY_NONE && conn &&
               http_list_has_token(conn->value, "upgrade") && http_find_header(req, "Upgrade");
}

static bool method_idempotent(enum http_method m)
{
        return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_PUT || m == HTTP_DELETE ||
               m == HTTP_OPTIONS || m == HTTP_TRACE;
}

void exchange_start(struct conn *c, const struct http_request *req, size_t head_len)
{
        struct http_request saved_req;
        char *saved = NULL;
        uint64_t body_len;
        const struct upstream *up = c->loc->upstream;
        /*
         * uwsgi: always ask for a framed response (WHARF_KEEPALIVE), pooled or
         * not: over a unix socket a close is all an unframed response can end
         * with, so a response the application broke would look complete.
         */
        bool keepalive = up->keepalive > 0 || c->loc->kind == LOC_UWSGI;
        ssize_t r;

        if (!req) {
                /* A buffered request: its head was kept in uphead, its body is in rb. */
                saved = TAKE_PTR(c->uphead);
                r = http_parse_request(saved, c->uphead_len, c->uphead_len, &saved_req);
                if (r < 0) {
                        free(saved);
                        conn_local_error(c, 400);
                        return;
                }
                req = &saved_req;
                body_len = c->rb.len;
        } else {
                body_len = req->body == HTTP_BODY_LENGTH ? req->content_length : 0;
        }
        c->gz_accept = c->loc->gzip && gzip_request_accepts(&c->vs->gzip, req);
        c->upgrade = c->loc->kind == LOC_HTTP && upgrade_requested(req);
        c->uphead = malloc(UP_HEAD_MAX);
        r = !c->uphead                  ? -ENOMEM
            : c->loc->kind == LOC_UWSGI ? build_uwsgi(c, req, body_len, keepalive)
                                        : build_http(c, req, body_len, keepalive);
        free(saved);
        conn_consume(c, head_len);
        if (r < 0) {
                log_warning("request head too large for the upstream protocol");
                c->close_after = true;
                conn_local_error(c, r == -ENOMEM ? 500 : 431);
                return;
        }
        c->uphead_len = (size_t) r;
        c->rstate = RESP_HEAD;
        c->up_started_us = now_us();
        up_connect(c);
}

/* The upstream connection is done with this exchange. */
static void up_release(struct conn *c, bool reusable)
{
        struct upconn *u = c->up;

        if (!u)
                return;
        c->up = NULL;
        atomic_fetch_sub(&u->server->active, 1);
        atomic_fetch_sub_explicit(&c->w->stats.upstream_busy, 1, memory_order_relaxed);
        if (reusable && !u->send_busy && !u->recv_busy && !u->sp_in_armed && !u->body_armed)
                pool_put(c->w, u, c->loc->upstream->keepalive);
        else
                upconn_close(u);
}

void exchange_abort(struct conn *c)
{
        up_release(c, false);
}

/* Nothing left of the response to read, and everything of it queued. */
static void exchange_finish(struct conn *c)
{
        if (c->body_left > 0) {
                /* The upstream answered without the whole body: skip the rest, if small. */
                if (c->body_left <= DISCARD_MAX && !c->peer_closed)
                        c->discard_left = c->body_left;
                else
                        c->close_after = true;
                c->body_left = 0;
        }
        conn_request_done(c);
}

static void up_fail(struct conn *c, int status, const char *what, int err)
{
        struct upconn *u = c->up;
        struct upstream *up = c->loc->upstream;
        bool connect_failed = u && !u->connected;
        bool was_reused = u && u->reused;
        struct upstream_server *u_server = u ? u->server : NULL;

        log_warning("upstream %s: %s%s%s", u ? u->server->addr : up->name, what, err ? ": " : "",
                    err ? strerror(-err) : "");
        if (u && !was_reused)
                server_failed(up, u->server, c->w->now);
        up_release(c, false);
        if (c->rstate == RESP_HEAD) {
                bool body_intact = c->buffered || c->body_sent == 0;
                bool again =
                    body_intact && (connect_failed || was_reused || method_idempotent(c->method));
                if (again && (c->tries < up->n_servers || was_reused)) {
                        c->uphead_sent = 0;
                        reqbody_rewind(&c->rb);
                        c->rstate = RESP_HEAD;
                        if (was_reused) {
                                c->tries--; /* a stale pooled connection is no real try */
                                c->tried &= ~(1ull << ((size_t) (u_server - up->servers) % 64));
                                c->fresh_only = true; /* the other idle ones may be stale too */
                        }
                        up_connect(c);
                        return;
                }
                c->up_usec = now_us() - c->up_started_us;
                if (c->body_left > 0)
                        c->close_after = true;
                c->body_left = 0;
                conn_local_error(c, status);
                return;
        }
        /* The client has part of the response: it must see that it is cut short. */
        c->abort_after = true;
        c->rstate = RESP_DONE;
        if (c->out.bytes == 0)
                conn_close(c);
}

/* A submission for the exchange's upstream connection; without one the exchange fails (502). */
static struct io_uring_sqe *exchange_sqe(struct conn *c, struct ring_op *op)
{
        struct io_uring_sqe *sqe = up_sqe(c->up, op);

        if (!sqe)
                up_fail(c, 502, "no submission slot", 0);
        return sqe;
}

static void up_connect(struct conn *c)
{
        struct worker *w = c->w;
        struct upstream *up = c->loc->upstream;
        struct upstream_server *s = pick_server(c, up);
        struct upconn *u;
        struct io_uring_sqe *sqe;

        if (!s) {
                c->up_usec = now_us() - c->up_started_us;
                if (c->body_left > 0)
                        c->close_after = true;
                conn_local_error(c, 502);
                return;
        }
        c->tries++;
        c->tried |= 1ull << ((size_t) (s - up->servers) % 64);
        c->up_addr = s->addr;
        atomic_fetch_add(&s->active, 1);
        atomic_fetch_add_explicit(&w->stats.upstream_busy, 1, memory_order_relaxed);

        u = up->keepalive && !c->fresh_only ? pool_take(w, s) : NULL;
        if (u) {
                u->c = c;
                c->up = u;
                u->deadline = w->now + up->read_timeout;
                up_send_pump(c);
                up_recv_pump(c);
                return;
        }
        u = upconn_new(w);
        if (!u) {
                atomic_fetch_sub(&s->active, 1);
                atomic_fetch_sub_explicit(&w->stats.upstream_busy, 1, memory_order_relaxed);
                conn_local_error(c, 500);
                return;
        }
        u->c = c;
        u->server = s;
        u->cfg = c->cfg;
        c->up = u;
        u->fd = socket(s->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (u->fd < 0) {
                up_fail(c, 502, "socket", -errno);
                return;
        }
        if (s->sa.ss_family != AF_UNIX) {
                int one = 1;
                (void) setsockopt(u->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        sqe = exchange_sqe(c, &u->op_connect);
        if (!sqe)
                return;
        io_uring_prep_connect(sqe, u->fd, (const struct sockaddr *) &s->sa, s->sa_len);
        u->deadline = w->now + up->connect_timeout;
}

static void on_up_connect(struct ring_op *op, int res, unsigned flags)
{
        struct upconn *u = container_of(op, struct upconn, op_connect);
        struct conn *c = u->c;

        (void) flags;
        u->inflight--;
        if (!c) {
                upconn_maybe_free(u);
                return;
        }
        if (res < 0) {
                up_fail(c, 502, "connect", res);
                return;
        }
        u->connected = true;
        u->deadline = c->w->now + c->loc->upstream->read_timeout;
        up_send_pump(c);
        up_recv_pump(c);
}

/*
 * The upstream stopped reading: it may have answered without the body (a
 * view that ignores it). Its response still goes to the client; the rest of
 * the body is skipped.
 */
static void up_body_refused(struct conn *c)
{
        c->body_broken = true;
        c->up_keep = false;
        up_recv_pump(c);
        exchange_input(c);
}

/*
 * A buffered body in a file goes to the upstream with sendfile(2), from the
 * page cache to the socket without a copy through here. When the socket is
 * full a POLLOUT waits (op_body), and on_up_writable() comes back here.
 */
static void body_sendfile(struct conn *c)
{
        struct upconn *u = c->up;
        struct io_uring_sqe *sqe;

        if (u->body_armed)
                return;
        while (c->rb.sent < c->rb.len) {
                off_t off = (off_t) c->rb.sent;
                size_t want = (size_t) min_u64(c->rb.len - c->rb.sent, BODY_SENDFILE_MAX);
                ssize_t n = sendfile(u->fd, c->rb.fd, &off, want);
                if (n > 0) {
                        reqbody_sent(&c->rb, (size_t) n);
                        c->body_sent += (uint64_t) n;
                        u->deadline = c->w->now + c->loc->upstream->read_timeout;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        break;
                if (n < 0 && (errno == EINVAL || errno == ENOSYS) && c->body_sent == 0) {
                        c->rb_copy = true; /* a file sendfile cannot read: pread it is */
                        up_send_pump(c);
                        return;
                }
                if (n == 0) {
                        up_fail(c, 502, "the buffered request body is shorter than it was", 0);
                        return;
                }
                up_body_refused(c);
                return;
        }
        if (c->rb.sent == c->rb.len)
                return;
        sqe = exchange_sqe(c, &u->op_body);
        if (!sqe)
                return;
        io_uring_prep_poll_add(sqe, u->fd, POLLOUT);
        u->body_armed = true;
        /* An upstream that stops taking the request is timed by send_timeout. */
        u->deadline = c->w->now + c->loc->upstream->send_timeout;
}

static void on_up_writable(struct ring_op *op, int res, unsigned flags)
{
        struct upconn *u = container_of(op, struct upconn, op_body);
        struct conn *c = u->c;

        (void) flags;
        (void) res; /* an error shows in the next sendfile */
        u->inflight--;
        u->body_armed = false;
        if (!c) {
                upconn_maybe_free(u);
                return;
        }
        up_send_pump(c);
}

static void up_send_pump(struct conn *c)
{
        struct upconn *u = c->up;
        struct io_uring_sqe *sqe;
        unsigned n = 0;

        if (!u || !u->connected || u->send_busy)
                return;
        if (c->uphead_sent < c->uphead_len)
                u->iov[n++] =
                    (struct iovec){c->uphead + c->uphead_sent, c->uphead_len - c->uphead_sent};
        if (!c->body_broken && c->buffered && c->rb.fd >= 0 && !c->rb_copy) {
                /* The head alone first, then the file. */
                if (n == 0) {
                        body_sendfile(c);
                        return;
                }
        } else if (!c->body_broken && c->buffered) {
                const char *p;
                ssize_t k = reqbody_next(&c->rb, &p);
                if (k < 0) {
                        up_fail(c, 502, "reading the buffered request body", (int) k);
                        return;
                }
                if (k > 0)
                        u->iov[n++] = (struct iovec){(void *) p, (size_t) k};
        } else if (!c->body_broken && c->body == HTTP_BODY_LENGTH && c->body_left > 0 &&
                   c->in_len > 0) {
                u->iov[n++] =
                    (struct iovec){c->in + c->in_start, (size_t) min_u64(c->body_left, c->in_len)};
        }
        if (n == 0)
                return;
        sqe = exchange_sqe(c, &u->op_send);
        if (!sqe)
                return;
        u->msg = (struct msghdr){.msg_iov = u->iov, .msg_iovlen = n};
        io_uring_prep_sendmsg(sqe, u->fd, &u->msg, MSG_NOSIGNAL);
        u->send_busy = true;
        /* An upstream that stops taking the request is timed by send_timeout. */
        u->deadline = c->w->now + c->loc->upstream->send_timeout;
}

static void on_up_send(struct ring_op *op, int res, unsigned flags)
{
        struct upconn *u = container_of(op, struct upconn, op_send);
        struct conn *c = u->c;

        (void) flags;
        u->inflight--;
        u->send_busy = false;
        if (!c) {
                upconn_maybe_free(u);
                return;
        }
        if (res < 0) {
                if (c->uphead_sent == 0) {
                        up_fail(c, 502, "send", res);
                        return;
                }
                up_body_refused(c);
                return;
        }
        size_t done = (size_t) res;
        size_t n = min_size(done, c->uphead_len - c->uphead_sent);
        c->uphead_sent += n;
        done -= n;
        if (done > 0 && c->buffered) {
                reqbody_sent(&c->rb, done);
                c->body_sent += done;
        } else if (done > 0) {
                conn_consume(c, done);
                c->body_left -= done;
                c->body_sent += done;
        }
        u->deadline = c->w->now + c->loc->upstream->read_timeout;
        up_send_pump(c);
        conn_recv_pump(c);
}

void exchange_input(struct conn *c)
{
        if (c->body_broken && c->body_left > 0 && c->in_len > 0) {
                size_t n = (size_t) min_u64(c->body_left, c->in_len);
                conn_consume(c, n);
                c->body_left -= n;
        }
        if (c->peer_closed && c->body_left > 0) {
                /* The client went away in the middle of its body. */
                conn_close(c);
                return;
        }
        /* A tunnel's client may stay silent: the upstream's read_timeout bounds it. */
        if (c->body_left > 0 && !c->tunnel)
                c->deadline = c->w->now + c->vs->client_body_timeout;
        else if (c->out.bytes == 0)
                c->deadline = 0;
        up_send_pump(c);
}

/* ---- the response ---- */

/* Body bytes as they go to the client, framed for it. */
static void emit_raw(struct conn *c, const char *p, size_t n)
{
        char line[24];
        bool ok = true;

        if (n == 0)
                return;
        if (c->cf == CF_CHUNKED) {
                int k = snprintf(line, sizeof(line), "%zx\r\n", n);
                ok = outq_append(c, line, (size_t) k) && outq_append(c, p, n) &&
                     outq_append(c, "\r\n", 2);
        } else {
                ok = outq_append(c, p, n);
        }
        if (!ok) {
                c->abort_after = true;
                c->rstate = RESP_DONE;
                return;
        }
        c->body_bytes_out += n;
}

static bool emit_gz_out(void *arg, const char *p, size_t n)
{
        struct conn *c = arg;

        emit_raw(c, p, n);
        return !c->abort_after;
}

/* Body bytes from the upstream: compressed first when the response is. */
static void emit(struct conn *c, const char *p, size_t n)
{
        if (!c->gz) {
                emit_raw(c, p, n);
                return;
        }
        if (gzip_deflate(c->gz, p, n, false, emit_gz_out, c) < 0) {
                c->abort_after = true;
                c->rstate = RESP_DONE;
        }
}

static void response_complete(struct conn *c)
{
        struct upconn *u = c->up;
        bool body_done = c->uphead_sent == c->uphead_len && c->body_left == 0 &&
                         (!c->buffered || c->rb.sent == c->rb.len);

        c->rstate = RESP_DONE;
        if (c->gz && !c->abort_after && gzip_deflate(c->gz, NULL, 0, true, emit_gz_out, c) < 0)
                c->abort_after = true;
        gzip_give(&c->w->gz_pool, &c->gz);
        if (c->cf == CF_CHUNKED && !c->abort_after)
                (void) outq_append(c, "0\r\n\r\n", 5);
        c->up_usec = now_us() - c->up_started_us;
        if (u) {
                atomic_store(&u->server->fails, 0);
                up_release(c, c->up_keep && body_done && !c->body_broken);
        }
        conn_send_pump(c);
        if (c->out.bytes == 0 && c->sp_bytes == 0)
                exchange_finish(c);
}

static void body_feed(struct conn *c, char *p, size_t n)
{
        size_t data = 0;
        ssize_t r;

        switch (c->rbody) {
        case HTTP_RESP_LENGTH: {
                size_t take = (size_t) min_u64(c->rleft, n);
                emit(c, p, take);
                c->rleft -= take;
                if (n > take)
                        c->up_keep = false; /* more than it announced: do not trust it again */
                if (c->rleft == 0)
                        response_complete(c);
                return;
        }
        case HTTP_RESP_CHUNKED:
                r = http_chunked_decode(&c->rchunk, p, n, &data);
                emit(c, p, data);
                if (r == -EAGAIN)
                        return;
                if (r < 0) {
                        up_fail(c, 502, "invalid chunked response body", 0);
                        return;
                }
                if ((size_t) r < n)
                        c->up_keep = false;
                response_complete(c);
                return;
        case HTTP_RESP_CLOSE:
                emit(c, p, n);
                return;
        case HTTP_RESP_NONE:
        case _HTTP_RESP_BODY_MAX:
                if (n > 0)
                        c->up_keep = false;
                return;
        }
}

/*
 * What nginx keeps from the client by default: its instructions
 * (X-Accel-...), and Date, Server and X-Pad from an HTTP server (whose
 * Server and Date are nginx's own then; a uwsgi server's go through); the
 * location's hide_header names too. Its pass_header names go through all
 * the same.
 */
static bool resp_header_hidden(const struct location *l, struct span name)
{
        static const char *const accel[] = {"X-Accel-Expires", "X-Accel-Redirect",
                                            "X-Accel-Limit-Rate", "X-Accel-Buffering",
                                            "X-Accel-Charset"};
        bool hidden = l->hide_headers.n && name_list_has(&l->hide_headers, name.ptr, name.len);

        if (!hidden && name.len > 8 && strncasecmp(name.ptr, "X-Accel-", 8) == 0)
                for (size_t i = 0; !hidden && i < ARRAY_SIZE(accel); i++)
                        hidden = name_is(name, accel[i]);
        if (!hidden && l->kind != LOC_UWSGI)
                hidden = name_is(name, "Date") || name_is(name, "Server") || name_is(name, "X-Pad");
        return hidden &&
               !(l->pass_headers.n && name_list_has(&l->pass_headers, name.ptr, name.len));
}

static bool resp_header_dropped(const struct conn *c, struct span name, enum client_framing cf)
{
        if (hop_by_hop(name) || resp_header_hidden(c->loc, name))
                return true;
        /* We write the length ourselves, except where the body is absent (HEAD, 304). */
        return cf != CF_NONE && name_is(name, "Content-Length");
}

/* Our Server and Date lines, where the client gets none from the upstream. */
static bool write_server_date(struct conn *c, const struct http_response *resp)
{
        static const struct span server = {"Server", 6}, date = {"Date", 4};
        bool ok = true;

        if (!http_response_header(resp, "Server") || resp_header_hidden(c->loc, server))
                ok = outq_append(c, "Server: ", 8) &&
                     outq_append(c, c->w->cfg->server_header, strlen(c->w->cfg->server_header)) &&
                     outq_append(c, "\r\n", 2);
        if (!http_response_header(resp, "Date") || resp_header_hidden(c->loc, date))
                ok = ok && outq_append(c, "Date: ", 6) &&
                     outq_append(c, c->w->date, HTTP_DATE_LEN) && outq_append(c, "\r\n", 2);
        return ok;
}

/* The client's response head, from the upstream's. */
static bool write_client_head(struct conn *c, const struct http_response *resp)
{
        char line[64];
        bool ok = true;
        int k;

        if (resp->body == HTTP_RESP_NONE)
                c->cf = CF_NONE;
        else if (resp->body == HTTP_RESP_LENGTH && !c->gz)
                c->cf = CF_LENGTH;
        else if (c->minor_version == 1)
                c->cf = CF_CHUNKED;
        else
                c->cf = CF_CLOSE;
        /*
         * A client that waits for 100 Continue may drop its body once the
         * final answer is there, so whether the rest of the body follows is
         * unknowable: the connection ends after this response.
         */
        if (c->cf == CF_CLOSE || (c->expect_continue && c->body_left > 0))
                c->keep_alive = false;
        if (!c->keep_alive)
                c->close_after = true;

        k = snprintf(line, sizeof(line), "HTTP/1.1 %03d ", resp->status);
        ok = ok && outq_append(c, line, (size_t) k);
        if (resp->reason.len)
                ok = ok && outq_append(c, resp->reason.ptr, resp->reason.len);
        else
                ok = ok && outq_append(c, http_status_reason(resp->status),
                                       strlen(http_status_reason(resp->status)));
        ok = ok && outq_append(c, "\r\n", 2) && write_server_date(c, resp);
        for (size_t i = 0; i < resp->n_headers && ok; i++) {
                const struct http_header *h = &resp->headers[i];
                if (resp_header_dropped(c, h->name, c->cf) ||
                    (c->gz_head && name_is(h->name, "Content-Length")))
                        continue;
                ok = outq_append(c, h->name.ptr, h->name.len) && outq_append(c, ": ", 2);
                /* The compressed body is another representation: its ETag can only be weak. */
                if (c->gz_head && name_is(h->name, "ETag") && h->value.len > 0 &&
                    h->value.ptr[0] == '"')
                        ok = ok && outq_append(c, "W/", 2);
                ok = ok && outq_append(c, h->value.ptr, h->value.len) && outq_append(c, "\r\n", 2);
        }
        if (c->gz_head)
                ok = ok && outq_append(c, "Content-Encoding: gzip\r\n", 24);
        if (c->gz_vary)
                ok = ok && outq_append(c, "Vary: Accept-Encoding\r\n", 23);
        if (c->cf == CF_LENGTH) {
                k = snprintf(line, sizeof(line), "Content-Length: %llu\r\n",
                             (unsigned long long) resp->content_length);
                ok = ok && outq_append(c, line, (size_t) k);
        } else if (c->cf == CF_CHUNKED) {
                ok = ok && outq_append(c, "Transfer-Encoding: chunked\r\n", 28);
        }
        if (c->loc->add_headers)
                ok = ok && outq_append(c, c->loc->add_headers, c->loc->add_headers_len);
        if (!c->keep_alive)
                ok = ok && outq_append(c, "Connection: close\r\n", 19);
        else if (c->minor_version == 0)
                ok = ok && outq_append(c, "Connection: keep-alive\r\n", 24);
        ok = ok && outq_append(c, "\r\n", 2);
        return ok;
}

/* Did the upstream agree to keep the connection? uwsgi needs an explicit yes. */
static bool upstream_keeps(const struct conn *c, const struct http_response *resp)
{
        if (!resp->keep_alive || c->loc->upstream->keepalive == 0)
                return false;
        if (c->loc->kind == LOC_HTTP)
                return true;
        for (size_t i = 0; i < resp->n_headers; i++)
                if (name_is(resp->headers[i].name, "Connection"))
                        return http_list_has_token(resp->headers[i].value, "keep-alive");
        return false;
}

/* The 101 head for the client: the upstream's headers, the upgrade among them. */
static bool write_tunnel_head(struct conn *c, const struct http_response *resp)
{
        bool ok = outq_append(c, "HTTP/1.1 101 Switching Protocols\r\n", 34) &&
                  write_server_date(c, resp);

        for (size_t i = 0; i < resp->n_headers && ok; i++) {
                const struct http_header *h = &resp->headers[i];
                if (!name_is(h->name, "Upgrade") && resp_header_dropped(c, h->name, CF_NONE))
                        continue;
                ok = outq_append(c, h->name.ptr, h->name.len) && outq_append(c, ": ", 2) &&
                     outq_append(c, h->value.ptr, h->value.len) && outq_append(c, "\r\n", 2);
        }
        if (c->loc->add_headers)
                ok = ok && outq_append(c, c->loc->add_headers, c->loc->add_headers_len);
        return ok && outq_append(c, "Connection: upgrade\r\n\r\n", 23);
}

/*
 * The upstream agreed to switch (101): from here on the connection is a
 * tunnel, as nginx makes it. The client's bytes go up as a body that never
 * ends and the upstream's come down as a body that ends with its
 * connection, neither framed nor looked at, until either side closes. The
 * upstream's read_timeout bounds a silence on both sides.
 */
static void tunnel_start(struct conn *c, const struct http_response *resp, size_t head_len)
{
        struct upconn *u = c->up;
        size_t rest = u->rx_len - head_len;

        c->status = 101;
        c->tunnel = true;
        c->up_keep = false;
        c->keep_alive = false;
        c->cf = CF_CLOSE;
        c->rbody = HTTP_RESP_CLOSE;
        c->body = HTTP_BODY_LENGTH;
        c->body_left = UINT64_MAX;
        if (!write_tunnel_head(c, resp)) {
                up_fail(c, 502, "out of memory", 0);
                return;
        }
        c->rstate = RESP_BODY;
        u->rx_len = 0;
        if (rest > 0)
                body_feed(c, u->rx + head_len, rest);
        exchange_input(c);
}

/* ---- X-Accel-Redirect ---- */

#define ACCEL_REDIRECTS_MAX 10 /* nginx's limit on internal redirects of one request */

/* The application's response headers that go with the redirected request, as nginx keeps. */
static bool accel_header_kept(struct span name)
{
        return name_is(name, "Content-Type") || name_is(name, "Set-Cookie") ||
               name_is(name, "Content-Disposition") || name_is(name, "Cache-Control") ||
               name_is(name, "Expires");
}

/* The client's headers that the redirected request (a GET without a body) does not carry. */
static bool accel_header_dropped(struct span name)
{
        return name_is(name, "Content-Length") || name_is(name, "Transfer-Encoding") ||
               name_is(name, "Expect") || name_is(name, "Upgrade") ||
               name_is(name, "Wharf-Response-Header");
}

static bool buf_add(char *buf, size_t cap, size_t *len, const char *p, size_t n)
{
        if (n > cap - *len)
                return false;
        memcpy(buf + *len, p, n);
        *len += n;
        return true;
}

/*
 * The request head of the redirect: GET (a HEAD stays HEAD) of uri, which
 * is sent percent-encoded where a request line could not hold it, with the
 * client's headers and the kept response headers as Wharf-Response-Header
 * lines (wharf-static sets them on its response). Returns its length, or
 * -1 when it does not fit.
 */
static ssize_t accel_head(const struct conn *c, const struct http_request *req,
                          const struct http_response *resp, struct span uri, char *out, size_t cap)
{
        static const char hex[] = "0123456789ABCDEF";
        const char *method = c->method == HTTP_HEAD ? "HEAD " : "GET ";
        size_t len = 0;
        bool ok = buf_add(out, cap, &len, method, strlen(method));

        for (size_t i = 0; i < uri.len && ok; i++) {
                unsigned char b = (unsigned char) uri.ptr[i];
                char esc[3] = {'%', hex[b >> 4], hex[b & 15]};
                ok = b > 0x20 && b < 0x7f && b != '#' ? buf_add(out, cap, &len, (char *) &b, 1)
                                                      : buf_add(out, cap, &len, esc, 3);
        }
        ok =
            ok && buf_add(out, cap, &len, c->minor_version ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n", 11);
        for (size_t i = 0; i < req->n_headers && ok; i++) {
                const struct http_header *h = &req->headers[i];
                if (accel_header_dropped(h->name))
                        continue;
                ok = buf_add(out, cap, &len, h->name.ptr, h->name.len) &&
                     buf_add(out, cap, &len, ": ", 2) &&
                     buf_add(out, cap, &len, h->value.ptr, h->value.len) &&
                     buf_add(out, cap, &len, "\r\n", 2);
        }
        for (size_t i = 0; i < resp->n_headers && ok; i++) {
                const struct http_header *h = &resp->headers[i];
                if (!accel_header_kept(h->name))
                        continue;
                ok = buf_add(out, cap, &len, "Wharf-Response-Header: ", 23) &&
                     buf_add(out, cap, &len, h->name.ptr, h->name.len) &&
                     buf_add(out, cap, &len, ": ", 2) &&
                     buf_add(out, cap, &len, h->value.ptr, h->value.len) &&
                     buf_add(out, cap, &len, "\r\n", 2);
        }
        ok = ok && buf_add(out, cap, &len, "\r\n", 2);
        return ok ? (ssize_t) len : -1;
}

/*
 * X-Accel-Redirect: the application answered with a path to serve in its
 * place, a protected file after its own checks, as with nginx. Its body is
 * dropped, and the request goes again to the location of that path
 * (internal ones included) as conn_internal_redirect() does it.
 */
static void accel_redirect(struct conn *c, const struct http_response *resp, struct span uri,
                           size_t head_len)
{
        struct upconn *u = c->up;
        bool body_done = c->uphead_sent == c->uphead_len && c->body_left == 0 &&
                         (!c->buffered || c->rb.sent == c->rb.len);
        bool nothing_follows = resp->body == HTTP_RESP_NONE ||
                               (resp->body == HTTP_RESP_LENGTH && resp->content_length == 0);
        bool reusable = c->up_keep && body_done && nothing_follows && u->rx_len == head_len;
        const char *why = NULL;
        struct http_request req;
        size_t cap = c->cfg->max_header_size;
        char *head = NULL;
        ssize_t n = -1;

        /* resp and uri point into the upstream's buffer: all is taken before it goes. */
        if (++c->redirects > ACCEL_REDIRECTS_MAX)
                why = "more than 10 internal redirects";
        else if (uri.len == 0 || uri.ptr[0] != '/')
                why = "not a path";
        else if (c->req_head &&
                 http_parse_request(c->req_head, c->req_head_len, c->req_head_len, &req) > 0 &&
                 (head = malloc(cap)))
                n = accel_head(c, &req, resp, uri, head, cap);
        if (!why && n < 0)
                why = "the redirected request head does not fit in max_header_size";
        if (why)
                log_error("X-Accel-Redirect '%.*s': %s", (int) min_size(uri.len, 200), uri.ptr,
                          why);
        c->up_usec = now_us() - c->up_started_us;
        atomic_store(&u->server->fails, 0);
        up_release(c, reusable);
        if (why) {
                free(head);
                c->body_left = 0;
                c->close_after = true;
                conn_local_error(c, 500);
                return;
        }
        /* The rest of a request body that has not all come is skipped, or ends the connection. */
        size_t skip = (size_t) min_u64(c->body_left, c->in_len);
        conn_consume(c, skip);
        c->body_left -= skip;
        if (c->body_left > 0)
                c->close_after = true;
        c->body_left = 0;
        c->body = HTTP_BODY_NONE;
        c->body_sent = 0;
        free(c->uphead);
        c->uphead = NULL;
        c->uphead_len = c->uphead_sent = 0;
        reqbody_free(&c->rb);
        c->buffered = false;
        c->tries = 0;
        c->tried = 0;
        c->fresh_only = false;
        c->up_keep = false;
        c->upgrade = false;
        c->gz_accept = c->gz_vary = c->gz_head = false;
        conn_internal_redirect(c, head, (size_t) n);
}

/*
 * nginx's uwsgi_intercept_errors / proxy_intercept_errors: the upstream
 * answered with a status that has an error_page, so the client gets the
 * page, with that status, instead of the upstream's body. The upstream is
 * kept when its whole answer is in already (a short error body comes with
 * its head); what the request body still has to come is skipped, or ends
 * the connection after the page.
 */
static void error_intercepted(struct conn *c, const struct http_response *resp, size_t head_len)
{
        struct upconn *u = c->up;
        bool body_done = c->uphead_sent == c->uphead_len && c->body_left == 0 &&
                         (!c->buffered || c->rb.sent == c->rb.len);
        size_t extra = u->rx_len - head_len;
        bool whole = resp->body == HTTP_RESP_NONE
                         ? extra == 0
                         : resp->body == HTTP_RESP_LENGTH && extra == resp->content_length;
        int status = resp->status;

        c->up_usec = now_us() - c->up_started_us;
        atomic_store(&u->server->fails, 0);
        up_release(c, upstream_keeps(c, resp) && body_done && whole);
        size_t skip = (size_t) min_u64(c->body_left, c->in_len);
        conn_consume(c, skip);
        c->body_left -= skip;
        if (c->body_left > 0)
                c->close_after = true;
        c->body_left = 0;
        conn_local_error(c, status);
}

static void response_head(struct conn *c)
{
        struct upconn *u = c->up;
        struct http_response resp;
        ssize_t r;

        for (;;) {
                r = http_parse_response(u->rx, u->rx_len, UP_RX_SIZE, c->method == HTTP_HEAD,
                                        &resp);
                if (r == -EAGAIN) {
                        if (u->rx_len == UP_RX_SIZE)
                                up_fail(c, 502, "response head too large", 0);
                        return;
                }
                if (r < 0) {
                        up_fail(c, 502, "invalid response head", (int) r);
                        return;
                }
                if (resp.status >= 200)
                        break;
                if (resp.status == 101) {
                        if (c->upgrade)
                                tunnel_start(c, &resp, (size_t) r);
                        else
                                up_fail(c, 502, "switched protocols unasked", 0);
                        return;
                }
                /* An interim response (100 Continue) is ours to hide. */
                memmove(u->rx, u->rx + r, u->rx_len - (size_t) r);
                u->rx_len -= (size_t) r;
        }
        const struct http_header *xa;
        if (c->loc->x_accel && (xa = http_response_header(&resp, "X-Accel-Redirect"))) {
                accel_redirect(c, &resp, xa->value, (size_t) r);
                return;
        }
        if (c->loc->intercept_errors && resp.status >= 300 &&
            proxy_error_page(c->vs, resp.status)) {
                error_intercepted(c, &resp, (size_t) r);
                return;
        }
        c->status = resp.status;
        c->up_keep = upstream_keeps(c, &resp);
        c->rbody = resp.body;
        c->rleft = resp.content_length;
        http_chunked_init(&c->rchunk, 0);
        /*
         * A response that could be compressed varies with Accept-Encoding
         * also when this client gets it as it is (a cache must know), as
         * with nginx. A HEAD gets the head a GET would. Out of memory for
         * a stream, the response goes uncompressed.
         */
        bool head = c->method == HTTP_HEAD;
        bool gz_able = c->loc->gzip && gzip_response_wanted(&c->vs->gzip, &resp, head);
        c->gz_vary = gz_able && c->vs->gzip.vary;
        c->gz_head = gz_able && c->gz_accept;
        if (c->gz_head && !head) {
                c->gz = gzip_take(&c->w->gz_pool, c->vs->gzip.level);
                c->gz_head = c->gz != NULL;
        }
        if (!write_client_head(c, &resp)) {
                up_fail(c, 502, "out of memory", 0);
                return;
        }
        c->rstate = RESP_BODY;
        size_t rest = u->rx_len - (size_t) r;
        char *p = u->rx + r;
        u->rx_len = 0;
        if (resp.body == HTTP_RESP_NONE) {
                if (rest > 0)
                        c->up_keep = false;
                response_complete(c);
                return;
        }
        if (resp.body == HTTP_RESP_LENGTH && resp.content_length == 0) {
                response_complete(c);
                return;
        }
        if (resp.body == HTTP_RESP_LENGTH && c->cf == CF_LENGTH && c->cfg->splice_min > 0 &&
            resp.content_length >= c->cfg->splice_min)
                splice_start(c);
        if (rest > 0)
                body_feed(c, p, rest);
}

/* ---- large bodies: upstream -> pipe -> client with splice(2) ---- */

/* Whether this response's body goes through a pipe (splice_start got one). */
static bool spliced(const struct conn *c)
{
        return c->sp.rfd >= 0;
}

/* Takes the body through a pipe from here on; it stays with copying if none. */
static void splice_start(struct conn *c)
{
        int fds[] = {c->up->fd, c->fd};

        if (!spipe_get(c->w, &c->sp))
                return;
        /* splice(2) waits on a blocking socket whatever its flags say. */
        for (size_t i = 0; i < ARRAY_SIZE(fds); i++) {
                int fl = fcntl(fds[i], F_GETFL);
                if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) < 0)) {
                        spipe_put(c->w, &c->sp, true);
                        return;
                }
        }
        c->sp_bytes = 0;
}

/* Upstream -> pipe. 1: bytes moved; 0: nothing now (a wait is armed); -1: failed. */
static int splice_in(struct conn *c)
{
        struct upconn *u = c->up;
        size_t room = c->sp.cap > c->sp_bytes ? c->sp.cap - c->sp_bytes : 0;
        struct io_uring_sqe *sqe;
        ssize_t n;

        if (!u || u->sp_in_armed)
                return 0;
        if (room == 0) {
                u->deadline = 0; /* the client is behind, not the upstream */
                return 0;
        }
        n = splice(u->fd, NULL, c->sp.wfd, NULL, (size_t) min_u64(c->rleft, room),
                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
                c->rleft -= (uint64_t) n;
                c->sp_bytes += (size_t) n;
                c->body_bytes_out += (uint64_t) n;
                u->deadline = c->w->now + c->loc->upstream->read_timeout;
                return 1;
        }
        if (n == 0) {
                up_fail(c, 502, "closed in the middle of the response", 0);
                return -1;
        }
        if (errno != EAGAIN) {
                up_fail(c, 502, "splice from the upstream", -errno);
                return -1;
        }
        /*
         * Nothing to read, or the pipe is out of slots (a slot per piece of
         * a packet, not per page) before it is out of bytes: then the client
         * has to take some first, and that comes back here.
         */
        if (u->sp_readable && c->sp_bytes > 0) {
                u->deadline = 0;
                return 0;
        }
        sqe = exchange_sqe(c, &u->op_sp_in);
        if (!sqe)
                return -1;
        io_uring_prep_poll_add(sqe, u->fd, POLLIN);
        u->sp_in_armed = true;
        u->sp_readable = false;
        u->deadline = c->w->now + c->loc->upstream->read_timeout;
        return 0;
}

static void on_up_readable(struct ring_op *op, int res, unsigned flags)
{
        struct upconn *u = container_of(op, struct upconn, op_sp_in);
        struct conn *c = u->c;

        (void) flags;
        u->inflight--;
        u->sp_in_armed = false;
        if (!c) {
                upconn_maybe_free(u);
                return;
        }
        u->sp_readable = res > 0;
        splice_pump(c);
}

/* Pipe -> client, after what the output queue holds. Same results as splice_in. */
static int splice_out(struct conn *c)
{
        ssize_t n;

        if (c->sp_bytes == 0 || c->out.bytes > 0 || c->send_busy || c->sp_out_armed)
                return 0;
        n = splice(c->sp.rfd, NULL, c->fd, NULL, c->sp_bytes,
                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK | (c->rleft > 0 ? SPLICE_F_MORE : 0));
        if (n > 0) {
                c->sp_bytes -= (size_t) n;
                c->deadline = 0;
                return 1;
        }
        if (n < 0 && errno == EAGAIN) {
                conn_wait_writable(c);
                return 0;
        }
        log_debug("client went away during a spliced response: %s",
                  n < 0 ? strerror(errno) : "no progress");
        conn_close(c);
        return -1;
}

static void splice_pump(struct conn *c)
{
        int in, out;

        do {
                in = c->rstate == RESP_BODY && c->rleft > 0 ? splice_in(c) : 0;
                if (in < 0 || (out = splice_out(c)) < 0)
                        return;
        } while (in > 0 || out > 0);
        if (c->rstate == RESP_BODY && c->rleft == 0) {
                response_complete(c);
                return;
        }
        if (c->rstate == RESP_DONE && c->sp_bytes == 0 && c->out.bytes == 0 && !c->send_busy) {
                if (c->abort_after)
                        conn_close(c);
                else
                        exchange_finish(c);
        }
}

static void up_recv_pump(struct conn *c)
{
        struct upconn *u = c->up;
        struct io_uring_sqe *sqe;

        if (!u || !u->connected || u->recv_busy || c->rstate == RESP_DONE)
                return;
        if (spliced(c)) {
                splice_pump(c);
                return;
        }
        if (c->out.bytes >= c->cfg->response_buffer)
                return; /* the client is behind: wait until it catches up */
        sqe = exchange_sqe(c, &u->op_recv);
        if (!sqe)
                return;
        io_uring_prep_recv(sqe, u->fd, u->rx + u->rx_len, UP_RX_SIZE - u->rx_len, 0);
        u->recv_busy = true;
}

static void on_up_recv(struct ring_op *op, int res, unsigned flags)
{
        struct upconn *u = container_of(op, struct upconn, op_recv);
        struct conn *c = u->c;

        (void) flags;
        u->inflight--;
        u->recv_busy = false;
        if (!c) {
                upconn_maybe_free(u);
                return;
        }
        u->deadline = c->w->now + c->loc->upstream->read_timeout;
        if (res <= 0) {
                if (res == 0 && c->rstate == RESP_BODY && c->rbody == HTTP_RESP_CLOSE) {
                        c->up_keep = false;
                        response_complete(c);
                        return;
                }
                if (res == 0 && c->rstate == RESP_HEAD)
                        up_fail(c, 502, "closed the connection before a response", 0);
                else
                        up_fail(c, 502, res ? "receive" : "closed in the middle of the response",
                                res);
                return;
        }
        u->reused = false; /* it answered: not a stale pooled connection */
        if (c->rstate == RESP_HEAD) {
                u->rx_len += (size_t) res;
                response_head(c);
        } else {
                body_feed(c, u->rx, (size_t) res);
        }
        if (c->phase != PH_UPSTREAM || c->up != u)
                return;
        if (c->rstate == RESP_DONE && c->abort_after) {
                up_release(c, false);
                if (c->out.bytes == 0)
                        conn_close(c);
                else
                        conn_send_pump(c);
                return;
        }
        up_recv_pump(c);
        conn_send_pump(c);
}

void exchange_output_sent(struct conn *c)
{
        if (spliced(c)) {
                splice_pump(c);
                return;
        }
        if (c->rstate == RESP_DONE) {
                if (c->out.bytes > 0)
                        return;
                if (c->abort_after) {
                        conn_close(c);
                        return;
                }
                exchange_finish(c);
                return;
        }
        up_recv_pump(c);
}

void upconn_timeout(struct upconn *u)
{
        struct conn *c = u->c;

        u->deadline = 0;
        if (c)
                up_fail(c, 504,
                        !u->connected  ? "timed out connecting"
                        : u->send_busy ? "timed out sending the request"
                                       : "timed out waiting for the response",
                        0);
}
