/* SPDX-License-Identifier: MIT */
/*
 * proxy_vars: the variables of a request, in nginx's names, for `return`
 * and log_format (proxy.h lists them), and the log_format line itself.
 *
 * A variable of the request head is read from the parsed head while it is
 * there; log_values_keep() copies those a log_format needs, since the input
 * buffer is reused by the time the response ends. The others are read from
 * the connection when they are needed.
 */
#include "proxy_worker.h"

#include <ctype.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

/* $host: the Host without its port, lowercase; the server's name without one. */
static struct span host_of(const struct conn *c, const struct http_request *req, char *buf,
                           size_t size)
{
        struct span h = req->host;

        if (h.len == 0) {
                const char *name = c->vs->names.n ? c->vs->names.v[0] : "";
                return (struct span){name, strlen(name)};
        }
        size_t n = min_size(proxy_host_name_len(h.ptr, h.len), size);
        for (size_t i = 0; i < n; i++)
                buf[i] = (char) tolower((unsigned char) h.ptr[i]);
        return (struct span){buf, n};
}

static struct span seconds_text(uint64_t usec, char *buf, size_t size)
{
        int n = snprintf(buf, size, "%" PRIu64 ".%03u", usec / 1000000,
                         (unsigned) (usec / 1000 % 1000));
        return (struct span){buf, (size_t) n};
}

static struct span iso8601_now(char *buf, size_t size)
{
        time_t t = time(NULL);
        struct tm tm;

        if (!localtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%S%z", &tm) != 24)
                return (struct span){NULL, 0};
        /* +0100 -> +01:00 */
        memmove(buf + 23, buf + 22, 2);
        buf[22] = ':';
        buf[25] = '\0';
        return (struct span){buf, 25};
}

struct span conn_var(const struct conn *c, const struct var_ctx *x, int var, const char *name,
                     char *buf, size_t size, bool *found)
{
        const struct http_request *req = x->req;
        char port[16];

        *found = true;
        if (!req && proxy_var_in_head(var)) {
                *found = false;
                return (struct span){NULL, 0};
        }
        switch (var) {
        case PV_HOST:
                return host_of(c, req, buf, size);
        case PV_HTTP_HOST:
                *found = req->host.ptr != NULL;
                return req->host;
        case PV_REQUEST_URI:
                return req->target;
        case PV_URI:
                return (struct span){x->uri, x->uri_len};
        case PV_ARGS:
                *found = req->query.len > 0; /* as nginx: "/x?" has no $args either */
                return req->query;
        case PV_REQUEST_METHOD:
                return req->method_name;
        case PV_HTTP_HEADER: {
                const struct http_header *h = http_find_header(req, name);
                *found = h != NULL;
                return h ? h->value : (struct span){NULL, 0};
        }
        case PV_SCHEME:
                return span_from_str(c->handoff_flags & HANDOFF_F_TLS ? "https" : "http");
        case PV_SERVER_NAME:
                return span_from_str(c->vs->names.n ? c->vs->names.v[0] : "");
        case PV_SERVER_PORT:
                return (struct span){buf, (size_t) snprintf(buf, size, "%u", c->local_port)};
        case PV_REMOTE_ADDR:
        case PV_REMOTE_PORT: {
                socklen_t client_len;
                const struct sockaddr_storage *client = conn_client(c, &client_len);
                addr_text(client, client_len, buf, size, port, sizeof(port));
                if (var == PV_REMOTE_PORT)
                        snprintf(buf, size, "%s", port);
                return span_from_str(buf);
        }
        case PV_REQUEST:
                *found = c->logline_len > 0;
                return (struct span){c->logline, c->logline_len};
        case PV_SERVER_PROTOCOL:
                return (struct span){buf,
                                     (size_t) snprintf(buf, size, "HTTP/1.%d", c->minor_version)};
        case PV_STATUS:
                return (struct span){buf, (size_t) snprintf(buf, size, "%03d", c->status)};
        case PV_BODY_BYTES_SENT:
                return (struct span){buf,
                                     (size_t) snprintf(buf, size, "%" PRIu64, c->body_bytes_out)};
        case PV_REQUEST_TIME:
                return seconds_text(now_us() - c->started_us, buf, size);
        case PV_UPSTREAM_ADDR:
                *found = c->up_addr != NULL;
                return span_from_str(c->up_addr);
        case PV_UPSTREAM_RESPONSE_TIME:
                *found = c->up_addr != NULL;
                return seconds_text(c->up_usec, buf, size);
        case PV_TIME_LOCAL:
                return span_from_str(access_time_local());
        case PV_TIME_ISO8601:
                return iso8601_now(buf, size);
        case PV_MSEC: {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                return (struct span){buf, (size_t) snprintf(buf, size, "%lld.%03ld",
                                                            (long long) ts.tv_sec,
                                                            ts.tv_nsec / 1000000)};
        }
        case PV_REQUEST_ID:
                return (struct span){buf, (size_t) snprintf(buf, size, "%016" PRIx64 "%016" PRIx64,
                                                            c->request_id[0], c->request_id[1])};
        case PV_CONNECTION_REQUESTS:
                return (struct span){buf, (size_t) snprintf(buf, size, "%u", c->requests)};
        case PV_PID:
                return (struct span){buf, (size_t) snprintf(buf, size, "%d", (int) getpid())};
        case PV_LIMIT_REQ_STATUS:
        case PV_LIMIT_CONN_STATUS: {
                const char *s =
                    limit_status_name(var == PV_LIMIT_REQ_STATUS ? c->lr_status : c->lc_status);
                *found = s != NULL;
                return span_from_str(s);
        }
        case PV_REMOTE_USER:
        default:
                *found = false;
                return (struct span){NULL, 0};
        }
}

/* What a log_format keeps of the head: slot i's value is at text + off[i]. */
struct log_values {
        uint32_t off[LOG_FORMAT_SLOTS], len[LOG_FORMAT_SLOTS];
        bool found[LOG_FORMAT_SLOTS];
        char text[];
};

/* A per-thread generator for $request_id (splitmix64), seeded once from the kernel. */
static uint64_t request_id_next(void)
{
        static _Thread_local uint64_t state;

        if (state == 0 && getrandom(&state, sizeof(state), 0) != sizeof(state))
                state = now_us() ^ (uint64_t) pthread_self();
        uint64_t z = (state += 0x9e3779b97f4a7c15u);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
        return z ^ (z >> 31);
}

void conn_new_request_id(struct conn *c)
{
        c->request_id[0] = request_id_next();
        c->request_id[1] = request_id_next();
}

/*
 * The values of the head variables of the server's log_format, copied
 * while the head is still in the input buffer: a first pass measures, the
 * second copies. Without memory the line shows them as missing.
 */
void log_values_keep(struct conn *c, const struct var_ctx *x)
{
        const struct log_format *f = c->vs->log_format;
        char buf[256];
        size_t total = 0;

        if (f->n_slots == 0)
                return;
        for (size_t pass = 0; pass < 2; pass++) {
                for (size_t i = 0; i < f->n; i++) {
                        const struct log_piece *p = &f->pieces[i];
                        if (p->slot < 0)
                                continue;
                        bool found;
                        struct span v = conn_var(c, x, p->var, p->text, buf, sizeof(buf), &found);
                        size_t n = min_size(v.len, LOG_FORMAT_VALUE);
                        if (pass == 0) {
                                total += n;
                                continue;
                        }
                        c->lf->off[p->slot] = (uint32_t) total;
                        c->lf->len[p->slot] = (uint32_t) n;
                        c->lf->found[p->slot] = found;
                        if (n > 0)
                                memcpy(c->lf->text + total, v.ptr, n);
                        total += n;
                }
                if (pass == 0) {
                        c->lf = malloc(sizeof(*c->lf) + total);
                        if (!c->lf)
                                return;
                        total = 0;
                }
        }
}

size_t log_format_line(const struct conn *c, const struct log_format *f, char *out, size_t cap)
{
        const struct var_ctx none = {0};
        char buf[256];
        size_t len = 0;

        for (size_t i = 0; i < f->n; i++) {
                const struct log_piece *p = &f->pieces[i];
                struct span v;
                bool found;
                if (p->var < 0) {
                        log_escape_append(LOG_ESCAPE_NONE, p->text, p->len, out, &len, cap);
                        continue;
                }
                if (p->slot >= 0) {
                        found = c->lf && c->lf->found[p->slot];
                        v = found ? (struct span){c->lf->text + c->lf->off[p->slot],
                                                  c->lf->len[p->slot]}
                                  : (struct span){NULL, 0};
                } else {
                        v = conn_var(c, &none, p->var, p->text, buf, sizeof(buf), &found);
                }
                if (found)
                        log_escape_append(f->escape, v.ptr, v.len, out, &len, cap);
                else if (f->escape == LOG_ESCAPE_DEFAULT)
                        log_escape_append(LOG_ESCAPE_NONE, "-", 1, out, &len, cap);
        }
        return len;
}

ssize_t vars_expand(const struct conn *c, const struct var_ctx *x, const char *tmpl,
                    bool return_only, char *out, size_t size)
{
        char buf[256], header[128];
        size_t len = 0;

        for (const char *p = tmpl; *p;) {
                struct span v = {p, 1};
                size_t n = 0;
                bool found;
                int var = *p == '$' ? proxy_var_parse(p + 1, &n) : -1;
                if (var >= 0 && (!return_only || var < _PV_RETURN_MAX)) {
                        if (var == PV_HTTP_HEADER) {
                                /* $http_x_request_id, ${http_x_request_id}: X-Request-ID */
                                bool braced = p[1] == '{';
                                size_t k = min_size(n - 5 - 2 * braced, sizeof(header) - 1);
                                for (size_t i = 0; i < k; i++)
                                        header[i] =
                                            p[6 + braced + i] == '_' ? '-' : p[6 + braced + i];
                                header[k] = '\0';
                        }
                        v = conn_var(c, x, var, header, buf, sizeof(buf), &found);
                        p += n + 1;
                } else {
                        p++; /* a plain '$', or any other character */
                }
                if (v.len > size - len)
                        return -1;
                for (size_t i = 0; i < v.len; i++)
                        if ((unsigned char) v.ptr[i] < 0x20 || v.ptr[i] == 0x7f)
                                return -1;
                if (v.len > 0)
                        memcpy(out + len, v.ptr, v.len);
                len += v.len;
        }
        return (ssize_t) len;
}
