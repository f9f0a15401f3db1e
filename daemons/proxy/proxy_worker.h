/* SPDX-License-Identifier: MIT */
/*
 * proxy_worker.h: the inside of a wharf-proxy worker, shared by
 * proxy_worker.c (loop, accept, handoff channels, timers), proxy_conn.c (the
 * client side) and proxy_upstream.c (the upstream side). Everything here
 * belongs to one worker thread.
 */
#ifndef WHARF_PROXY_WORKER_H
#define WHARF_PROXY_WORKER_H

#include <sys/uio.h>
#include <sys/un.h>

#include "handoff.h"
#include "http_parse.h"
#include "http_resp.h"
#include "http_response.h"
#include "log.h"
#include "proxy.h"
#include "proxy_body.h"
#include "proxy_gzip.h"
#include "ring.h"
#include "util.h"

#define RECV_BUF_SIZE 16384
#define RECV_BUF_COUNT 256
#define RECV_BGID 1
#define OBUF_SIZE (64 * 1024) /* one link of a response queue */
#define SEND_IOV_MAX 16
#define UP_RX_SIZE (64 * 1024)      /* upstream response head + one read of body */
#define UP_HEAD_MAX (64 * 1024 + 4) /* the request head sent upstream: uwsgi's limit */
#define TICK_USEC 100000
#define STOP_GRACE_MS 30000
#define STOP_FIRST_REQUEST_MS 1000 /* at stop, for a connection yet to send one */
#define HANDOFF_TRIES 3            /* then 502 */
#define RING_ENTRIES 2048
#define POOL_SLACK 128
#define LOG_LINE_MAX 1024 /* request line kept for the access log */
#define LOG_FIELD_MAX 512 /* referer, user agent */
#define PIPE_FREE_MAX 16  /* idle splice pipes kept per worker */
/* A request body a client keeps sending after its answer is skipped up to this. */
#define DISCARD_MAX (4 * 1024 * 1024)

/* One link of a queue of bytes for the client. */
struct obuf {
        struct obuf *next;
        size_t len, sent;
        char data[OBUF_SIZE];
};

struct outq {
        struct obuf *head, *tail;
        size_t bytes; /* not yet sent */
};

/* A pipe that a large response body passes through, upstream -> client. */
struct spipe {
        int rfd, wfd; /* -1: none */
        size_t cap;
};

enum phase {
        PH_HEAD,     /* reading a request head; idle between requests */
        PH_BODY,     /* a request body is being read whole (rb) before forwarding */
        PH_LOCAL,    /* a response made here is being sent */
        PH_UPSTREAM, /* an exchange with an upstream is in progress */
        PH_HANDOFF,  /* the connection goes to wharf-static */
        PH_DELAYED,  /* the request waits out its limit_req delay (op_delay) */
        PH_CLOSING,  /* waiting for operations in flight, then freed */
        _PH_MAX
};

/* The response as it comes from the upstream. */
enum resp_state { RESP_HEAD, RESP_BODY, RESP_DONE, _RESP_STATE_MAX };

/* How the response body reaches the client. */
enum client_framing { CF_NONE, CF_LENGTH, CF_CHUNKED, CF_CLOSE, _CF_MAX };

struct upconn {
        struct worker *w;
        struct conn *c; /* while it serves an exchange */
        int fd;
        struct upstream_server *server;
        const struct proxy_config *cfg;
        unsigned inflight;
        bool connected;
        bool send_busy, recv_busy;
        bool idle;        /* in the worker's keep-alive pool */
        bool reused;      /* came from the pool: may have been closed meanwhile */
        bool sp_in_armed; /* a POLLIN for the splice of a body is in flight */
        bool sp_readable; /* and it said readable */
        bool body_armed;  /* a POLLOUT for the sendfile of a buffered body is in flight */
        struct ring_op op_connect, op_send, op_recv, op_poll, op_sp_in, op_body;
        uint64_t deadline;                  /* connect or read timeout; 0 none */
        struct upconn *next;                /* pool and free list */
        struct upconn *all_prev, *all_next; /* every live one, for the teardown */
        struct msghdr msg;
        struct iovec iov[3];
        char *rx;
        size_t rx_len;
};

struct chan {
        struct worker *w;
        char path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
        int fd;
        bool recv_armed;
        bool retired;   /* takes no more handoffs; still receives handbacks until it ends */
        unsigned sends; /* handoffs in flight on it */
        bool acks;      /* wharf-static said HELLO: it acknowledges marked handoffs */
        bool ended;     /* nothing more comes from it (EOF or error) */
        uint16_t next_id;
        uint16_t early_ack;   /* an ACK that came before its send's completion, else 0 */
        struct conn *pending; /* handed over, not acknowledged yet (still ours) */
        struct ring_op op_recv;
        struct handoff_rx rx;
        struct chan *next;
        char buf[HANDOFF_MAX_MSG];
};

struct conn {
        struct worker *w;
        int fd;
        enum phase phase;
        unsigned inflight;
        bool recv_busy;
        bool send_busy;
        bool peer_closed; /* EOF from the client */
        bool close_after; /* close once the output is sent */
        bool abort_after; /* the response is broken: close without a clean end */
        bool body_broken; /* upstream stopped reading the body: discard the rest */
        unsigned requests;
        uint32_t handoff_flags;
        bool static_refused;    /* wharf-static returned it unread: answer 502 */
        unsigned handoff_tries; /* handoffs of this request that did not take */
        uint16_t handoff_id;    /* of the marked handoff in flight, else 0 */
        struct chan *pend_chan; /* waiting for wharf-static's ACK on this channel */
        struct conn *pend_next;
        struct ring_op op_recv, op_send, op_handoff;
        struct sockaddr_storage peer;
        socklen_t peer_len;
        struct sockaddr_storage client; /* the request's client, when real_ip named one */
        socklen_t client_len;           /* 0: the client is the peer */
        unsigned local_port;
        struct proxy_config *cfg; /* held (refs) while a request is in progress */
        uint64_t deadline;        /* client-side timeout; 0 none */

        /* Input: in[in_start .. in_start + in_len). */
        char *in;
        size_t in_cap, in_start, in_len;

        /* Output to the client. */
        struct outq out;
        struct iovec iov[SEND_IOV_MAX];
        struct msghdr msg;
        size_t send_len;

        /* The request being served. */
        const struct vserver *vs;
        const struct location *loc;
        enum http_method method;
        int minor_version;
        bool keep_alive;
        bool expect_continue; /* the client waits for 100 before its body */
        enum http_body body;
        uint64_t body_left;    /* bytes of a length-delimited body not yet read from input */
        uint64_t body_sent;    /* body bytes the upstream took */
        uint64_t discard_left; /* body bytes to skip before the next request */
        struct http_chunked chunk;
        struct reqbody rb; /* the body, read whole first (buffered) */
        bool buffered;     /* the body is in rb: chunked, or request_buffering */
        uint64_t started_us;
        int status;
        uint64_t body_bytes_out;
        char logline[LOG_LINE_MAX];
        size_t logline_len;
        char referer[LOG_FIELD_MAX], agent[LOG_FIELD_MAX];
        size_t referer_len, agent_len;
        bool has_referer, has_agent;
        struct log_values *lf;  /* log_format: the values of its head variables */
        uint64_t request_id[2]; /* with a log_format that uses $request_id */

        /* The exchange with an upstream. */
        struct upconn *up;
        char *uphead;
        size_t uphead_len, uphead_sent;
        unsigned tries;
        uint64_t tried; /* bitmask of servers tried */
        uint64_t up_started_us, up_usec;
        const char *up_addr;
        enum resp_state rstate;
        enum http_resp_body rbody;
        enum client_framing cf;
        uint64_t rleft; /* length-delimited response bytes still to come */
        struct http_chunked rchunk;
        bool up_keep; /* the upstream connection may be reused */
        /* A large body goes through sp while it is a pipe: sp_bytes of it are in there now. */
        bool sp_out_armed; /* a POLLOUT on the client is in flight */
        struct spipe sp;
        size_t sp_bytes;
        struct ring_op op_sp_out;
        struct ring_op op_delay;      /* limit_req's timer */
        bool rb_copy;                 /* sendfile cannot read the body's file: pread and send */
        struct limit_conn_hold lc;    /* what limit_conn counts of this request */
        bool lc_done;                 /* limit_conn applied to this request (once, as nginx) */
        uint8_t lr_status, lc_status; /* enum limit_status: $limit_req_status, $limit_conn_status */
        struct __kernel_timespec delay_ts;
        bool delay_armed;
        bool rerouted; /* routed before (limit_req delay, internal redirect): limits, log values
                          done */
        bool internal; /* this request is an internal redirect (X-Accel-Redirect) */
        unsigned redirects; /* internal redirects of this request so far */
        char *req_head;     /* a copy of the client's request head, for an X-Accel-Redirect */
        size_t req_head_len, req_head_cap; /* the buffer is kept while the connection is busy */
        bool fresh_only;     /* an idle connection failed: open new ones for this request */
        bool gz_accept;      /* the request takes a gzip response */
        bool gz_vary;        /* the response says Vary: Accept-Encoding */
        bool gz_head;        /* the response says Content-Encoding: gzip */
        bool upgrade;        /* the client asks to switch protocols (WebSocket) */
        bool tunnel;         /* switched (101): bytes flow both ways until a side closes */
        struct gzstream *gz; /* this response is being compressed */

        /* Handoff message. */
        uint8_t hd_header[HANDOFF_HEADER_SIZE];
        struct iovec hd_iov[2];
        struct msghdr hd_msg;
        struct {
                _Alignas(struct cmsghdr) char buf[HANDOFF_CMSG_SPACE(1)];
        } hd_control;
        struct chan *chan;

        struct conn *next_free;
};

struct listen_op {
        struct ring_op op;
        struct worker *w;
        int fd;
        unsigned port;
        bool armed;
};

struct worker {
        struct server *srv;
        unsigned id;
        pthread_t thread;
        struct worker_stats stats;

        struct ring ring;
        struct ring_bufs bufs;
        struct proxy_config *cfg;
        struct access_log *alogs; /* one per virtual server of cfg */
        size_t n_alogs;

        struct conn *conns;
        unsigned pool_size;
        unsigned pool_used; /* conns[0..pool_used) were handed out: the rest is untouched */
        struct conn *free_conns;
        unsigned n_conns;
        struct chan *chans;
        struct upconn *up_idle, *up_free;
        struct upconn *up_all; /* every live upstream connection */
        unsigned n_up;

        struct listen_op accepts[LISTEN_MAX];
        unsigned n_accepts;
        bool accept_paused;

        int efd;
        uint64_t efd_val;
        struct ring_op op_efd;

        struct obuf *free_obufs;
        unsigned n_free_obufs;
        struct spipe free_pipes[PIPE_FREE_MAX];
        unsigned n_free_pipes;
        struct gzip_pool gz_pool;

        uint64_t now; /* ms */
        char date[HTTP_DATE_LEN + 1];
        time_t date_sec;
        bool stopping;
        uint64_t stop_deadline;
};

/* proxy_worker.c */
struct chan *chan_get(struct worker *w, const char *path);
/* A handoff sent on ch completed with res; a failed one retires the channel. */
void chan_sent(struct chan *ch, int res);
/* c waits for ch's ACK; drop: it no longer does (freed meanwhile). */
void chan_pending_add(struct chan *ch, struct conn *c);
void chan_pending_drop(struct conn *c);
struct obuf *obuf_get(struct worker *w);
void obuf_put(struct worker *w, struct obuf *b);
/* A pipe for splicing, non-blocking, about response_buffer big. */
bool spipe_get(struct worker *w, struct spipe *p);
/* Back to the pool if empty (else closed); p becomes none. */
void spipe_put(struct worker *w, struct spipe *p, bool empty);
struct access_log *worker_alog(struct worker *w, const struct proxy_config *cfg,
                               const struct vserver *vs);

/* proxy_conn.c */
struct conn *conn_new(struct worker *w, int fd, unsigned local_port);
void conn_start(struct conn *c, const char *data, size_t len);
void conn_close(struct conn *c);
void conn_idle_close(struct conn *c); /* on stop: close it if nothing is in progress */
void conn_timeout(struct conn *c);
struct io_uring_sqe *conn_sqe(struct conn *c, struct ring_op *op);
void conn_send_pump(struct conn *c);
/* Calls exchange_output_sent once the client can take more bytes. */
void conn_wait_writable(struct conn *c);
void conn_recv_pump(struct conn *c);
void conn_local_error(struct conn *c, int status);
void conn_request_done(struct conn *c);
/* wharf-static has the connection (ACK): our copy goes. */
void conn_handoff_taken(struct conn *c);
/* Its channel ended before an ACK: the connection is still ours, hand it over again. */
void conn_handoff_again(struct conn *c);
/*
 * An internal redirect (X-Accel-Redirect): head (malloc'd, taken) is a
 * request head made for it, which takes the place of the one served; the
 * input after that (pipelined requests) stays behind it. The request keeps
 * its log line, its count and its configuration, and is routed again,
 * internal locations included.
 */
void conn_internal_redirect(struct conn *c, char *head, size_t len);
/* Appends bytes for the client; false when out of memory. */
bool outq_append(struct conn *c, const void *data, size_t len);
void conn_consume(struct conn *c, size_t n);
/* The numeric address and port of a peer, "unix:" and "" for a unix socket. */
void addr_text(const struct sockaddr_storage *ss, socklen_t len, char *addr, size_t addr_size,
               char *port, size_t port_size);

/* proxy_vars.c */
/* The request head a variable may need: req and the normalised path, or nothing. */
struct var_ctx {
        const struct http_request *req; /* NULL: the head is gone */
        const char *uri;
        size_t uri_len;
};
/*
 * The value of variable var (name: a header's, for $http_NAME) for the
 * request on c, made in buf (size >= 64 bytes) when it is not in c or the
 * head. *found is false for a value that does not exist: the variables of
 * the head when x->req is NULL, a header not sent, no upstream.
 */
struct span conn_var(const struct conn *c, const struct var_ctx *x, int var, const char *name,
                     char *buf, size_t size, bool *found);
/* Copies the values of the head that the server's log_format needs (into c->lf). */
void log_values_keep(struct conn *c, const struct var_ctx *x);
/* One access log line in the log_format f. */
size_t log_format_line(const struct conn *c, const struct log_format *f, char *out, size_t cap);
/*
 * A template with its $variables filled in, into out: those of `return`
 * only (return_only), or all. Returns the length, or -1 when it does not
 * fit or a value would put a control character into a head (for `return`
 * the caller answers 400: the request is at fault).
 */
ssize_t vars_expand(const struct conn *c, const struct var_ctx *x, const char *tmpl,
                    bool return_only, char *out, size_t size);
/* A new $request_id for the request on c. */
void conn_new_request_id(struct conn *c);

/* proxy_upstream.c */
/*
 * Starts forwarding req, whose head takes head_len bytes of input. With
 * req NULL, the request was buffered: its head is in c->uphead and its
 * body in c->rb.
 */
void exchange_start(struct conn *c, const struct http_request *req, size_t head_len);
/* New input from the client while an exchange runs (more body, or EOF). */
void exchange_input(struct conn *c);
/* The client took bytes: there may be room to read more of the response. */
void exchange_output_sent(struct conn *c);
/* The client connection is going away: drop the upstream side. */
/* The request's client: the address real_ip found, else the peer. */
static inline const struct sockaddr_storage *conn_client(const struct conn *c, socklen_t *len)
{
        *len = c->client_len ? c->client_len : c->peer_len;
        return c->client_len ? &c->client : &c->peer;
}

void exchange_abort(struct conn *c);
void upconn_timeout(struct upconn *u);
void upconn_pool_drop_all(struct worker *w);
void upconn_free_all(struct worker *w);

#endif
