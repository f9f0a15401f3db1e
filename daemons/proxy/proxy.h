/* SPDX-License-Identifier: MIT */
/*
 * wharf-proxy: the daemon's own types, shared by its files.
 *
 *   main.c           command line, threads, signals, sd_notify, reloads
 *   proxy_config.c   the INI file: [server], [upstream NAME], [location PREFIX]
 *   proxy_worker.c   one event loop per thread: accept, timers, handoff
 *                    channels to wharf-static, the idle upstream pool, stop
 *   proxy_conn.c     the client connection: requests, routing, local answers,
 *                    handing connections to wharf-static
 *   proxy_upstream.c one exchange with an upstream: choosing a server,
 *                    connecting, the uwsgi or HTTP request, the response
 *                    relayed and re-framed for the client, a WebSocket tunnel
 *   proxy_gzip.c     gzip of relayed responses (nginx's gzip module)
 *
 * Ownership: a struct proxy_config is immutable once built and shared by all
 * workers, except for the passive health counters of its upstream servers,
 * which are atomics. A reload builds a new config; the old one is freed by
 * the supervisor once no request holds it (refs) and every worker moved on.
 */
#ifndef WHARF_PROXY_H
#define WHARF_PROXY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "config.h"
#include "listen.h"
#include "loops.h"
#include "proxy_limit.h"
#include "realip.h"
#include "proxy_logfmt.h"

/* ---- configuration (proxy_config.c) ---- */

enum balance { BALANCE_ROUND_ROBIN, BALANCE_LEAST_CONN, _BALANCE_MAX };

struct upstream_server {
        char addr[256]; /* as written: unix:/path or host:port */
        struct sockaddr_storage sa;
        socklen_t sa_len;
        unsigned weight;
        unsigned max_fails;
        uint64_t fail_timeout; /* ms */
        bool backup;
        /* Passive health and load, shared by every worker. */
        atomic_uint fails;
        atomic_uint_fast64_t down_until; /* monotonic ms */
        atomic_uint active;              /* exchanges in progress */
};

struct upstream {
        char *name;
        struct upstream_server *servers;
        size_t n_servers;
        enum balance balance;
        unsigned keepalive; /* idle connections kept per worker and server */
        uint64_t connect_timeout, read_timeout, send_timeout; /* ms */
        atomic_uint rr;                                       /* round-robin position */
        unsigned total_weight;
};

enum location_kind { LOC_UWSGI, LOC_HTTP, LOC_STATIC, LOC_RETURN, _LOC_KIND_MAX };

/* The variables of `return` and log_format, with nginx's names and meanings. */
enum proxy_var {
        PV_HOST,        /* $host: Host without the port, lowercase; else server_name */
        PV_HTTP_HOST,   /* $http_host: the Host header as sent */
        PV_REQUEST_URI, /* $request_uri: the request-target as sent, query included */
        PV_URI,         /* $uri: the normalised path */
        PV_ARGS,        /* $args, $query_string: the query, without '?' */
        PV_SCHEME,      /* $scheme: http or https */
        PV_SERVER_NAME, /* $server_name: the server's first server_name */
        PV_SERVER_PORT, /* $server_port: the port the connection came in on */
        PV_REMOTE_ADDR, /* $remote_addr: the client's address */
        _PV_RETURN_MAX, /* `return` knows those above; log_format all */
        PV_REQUEST_METHOD = _PV_RETURN_MAX, /* $request_method */
        PV_REQUEST,                         /* $request: the request line */
        PV_SERVER_PROTOCOL,                 /* $server_protocol: HTTP/1.1 */
        PV_REMOTE_PORT,                     /* $remote_port */
        PV_REMOTE_USER,                     /* $remote_user: never set (no auth_basic) */
        PV_STATUS,                          /* $status */
        PV_BODY_BYTES_SENT,                 /* $body_bytes_sent */
        PV_REQUEST_TIME,                    /* $request_time: seconds, with ms */
        PV_UPSTREAM_ADDR,                   /* $upstream_addr */
        PV_UPSTREAM_RESPONSE_TIME,          /* $upstream_response_time */
        PV_TIME_LOCAL,                      /* $time_local: 07/Dec/2026:10:00:00 +0000 */
        PV_TIME_ISO8601,                    /* $time_iso8601: 2026-12-07T10:00:00+00:00 */
        PV_MSEC,                            /* $msec: seconds since the epoch, with ms */
        PV_REQUEST_ID,                      /* $request_id: 32 random hex digits */
        PV_CONNECTION_REQUESTS,             /* $connection_requests: this one included */
        PV_PID,                             /* $pid */
        PV_LIMIT_REQ_STATUS,                /* $limit_req_status: PASSED, DELAYED, REJECTED, ... */
        PV_LIMIT_CONN_STATUS,               /* $limit_conn_status: PASSED, REJECTED, ... */
        PV_HTTP_HEADER,                     /* $http_NAME: the request header NAME */
        _PV_MAX,
};

/*
 * The variable named at s, just after a '$' ($name or ${name}). Returns it
 * and sets *len to the bytes its name takes after the '$'; returns -1 for a
 * name that is no variable (*len > 0) or no name at all (*len 0: the '$' is
 * a plain character). For PV_HTTP_HEADER the header's name follows "http_".
 */
int proxy_var_parse(const char *s, size_t *len);

/* Whether the variable is read from the request head (and so is gone with it). */
bool proxy_var_in_head(int var);

/* uwsgi_param / proxy_set_header: what the upstream gets, its value a template with $variables. */
struct upstream_param {
        char *name;        /* REMOTE_ADDR, HTTP_X_REQUEST_ID; X-Request-ID */
        char *value;       /* NULL: proxy_set_header Name alone (the header is not passed) */
        bool if_not_empty; /* uwsgi_param ... if_not_empty: not sent when it comes out empty */
};

/* Whether a variable has its value before the response (uwsgi_param, proxy_set_header may use it).
 */
bool proxy_var_before_response(int var);

/* Header names, each NUL-terminated, one after another. */
struct name_list {
        char *names;
        size_t n;
};

/* Is name (any case) in l? */
bool name_list_has(const struct name_list *l, const char *name, size_t len);

struct location {
        char *prefix;
        size_t prefix_len;
        bool exact; /* [location = /path] */
        enum location_kind kind;
        struct upstream *upstream; /* LOC_UWSGI, LOC_HTTP */
        char *static_path;         /* LOC_STATIC: wharf-static's handoff socket */
        int return_status;         /* LOC_RETURN */
        char *return_target;       /* LOC_RETURN: Location (3xx) or body text */
        uint64_t client_max_body_size;
        char *add_headers; /* "Name: value\r\n" lines, or NULL */
        size_t add_headers_len;
        bool gzip; /* compress responses (the server's gzip, or the location's own) */
        struct realip_rule *rules; /* the location's allow/deny, else the server's */
        size_t n_rules;
        struct limit_req limits[LIMIT_RULES_MAX]; /* the location's limit_req, else the server's */
        size_t n_limits;
        int limit_status;   /* limit_req_status: for a refused request */
        bool limit_dry_run; /* limit_req_dry_run: count and log, refuse and delay nothing */
        struct limit_conn conn_limits[LIMIT_RULES_MAX]; /* limit_conn, likewise */
        size_t n_conn_limits;
        int conn_limit_status;   /* limit_conn_status */
        bool conn_limit_dry_run; /* limit_conn_dry_run */
        bool internal; /* only internal redirects (X-Accel-Redirect) reach it: nginx's internal */
        bool x_accel;  /* an upstream's X-Accel-Redirect is followed (uwsgi_pass, proxy_pass) */
        bool request_buffering; /* read a body whole before the upstream sees it */
        bool intercept_errors;  /* uwsgi_ or proxy_intercept_errors: error_page for upstream answers
                                 */
        struct upstream_param *params; /* uwsgi_param (uwsgi_pass), proxy_set_header (proxy_pass) */
        /* uwsgi_ or proxy_hide_header and _pass_header: the response headers kept from the client
         */
        struct name_list hide_headers, pass_headers;
        size_t n_params;
};

/* error_page: the body wharf-proxy sends, instead of its own, with this status. */
struct error_page {
        int status;
        char *body; /* the file's bytes, read when the configuration is */
        size_t len;
        bool owns_body;   /* the first of the codes on one error_page line */
        const char *type; /* Content-Type, from the file's extension */
};

/* nginx's gzip module, for a virtual server. */
struct gzip_conf {
        bool on;
        char *types; /* gzip_types: lowercase, space-separated, "text/html" first; "*" any */
        uint64_t min_length; /* a body known to be shorter is sent as it is */
        int level;           /* gzip_comp_level, 1..9 */
        bool vary;           /* gzip_vary: add Vary: Accept-Encoding */
        bool proxied;        /* gzip_proxied any: also for requests with Via */
        int min_minor;       /* gzip_http_version: 1.0 -> 0, 1.1 -> 1 */
        /* gzip_disable: no gzip for these User-Agents (regex_t, case-insensitive) */
        bool disable_msie6;
        struct regex_list *disable;
};

struct vserver {
        struct config_strv names; /* server_name: host names, "*" or "_" for any */
        struct location *locations;
        size_t n_locations;
        uint64_t client_max_body_size;
        uint64_t client_body_buffer_size; /* a buffered body beyond this goes to a file */
        uint64_t client_header_timeout, client_body_timeout, send_timeout; /* ms */
        uint64_t keepalive_timeout;                                        /* ms */
        unsigned keepalive_requests;
        bool server_tokens;
        char *access_log;              /* off, journal, stderr, file:/path */
        struct log_format *log_format; /* NULL: the combined format, and upstream and times */
        struct gzip_conf gzip;
        struct error_page *error_pages;
        size_t n_error_pages;
        struct realip_conf real_ip; /* set_real_ip_from, real_ip_header, real_ip_recursive */
};

/* The page for status in vs (NULL: the built-in one). */
const struct error_page *proxy_error_page(const struct vserver *vs, int status);

struct proxy_config {
        struct config_file *file;
        struct vserver *servers; /* servers[0] is the default */
        size_t n_servers;
        struct upstream *upstreams;
        size_t n_upstreams;
        struct limit_zone *zones; /* limit_req_zone, limit_conn_zone */
        size_t n_zones;
        /* Process-wide, from the first [server]. */
        struct config_strv listen;
        unsigned workers;
        unsigned max_connections;
        uint64_t max_header_size;
        uint64_t response_buffer;    /* response bytes buffered per client */
        uint64_t splice_min;         /* response bodies this long are spliced; 0: never */
        char *client_body_temp_path; /* where request bodies too big for memory go */
        char *error_log;
        int log_level;
        char server_header[64];
        atomic_uint refs; /* requests in flight that use this config */
};

/*
 * Reads path (may be NULL: an empty config) and the --key=value overrides
 * into a ready config. Problems go to diag, file:line first.
 */
int proxy_config_load(const char *path, const char *const *keys, const char *const *values,
                      size_t n, struct config_diag *diag, struct proxy_config **ret);
/* The same from text in memory (tests, fuzzing); name stands for the file in messages. */
int proxy_config_from_text(const char *name, const char *text, size_t len, struct config_diag *diag,
                           struct proxy_config **ret);
struct proxy_config *proxy_config_free(struct proxy_config *c);
/*
 * At a reload: the new configuration c takes over what old has learnt that
 * it still needs: the tables of the limit_req and limit_conn zones whose
 * name, kind and size stay (a limit_req zone's rate may change), so that
 * requests counted before the reload are given back where they were.
 */
void proxy_config_adopt(struct proxy_config *c, const struct proxy_config *old);

/* How much of a Host value is the name: without the port ("[v6]" keeps its brackets). */
size_t proxy_host_name_len(const char *host, size_t len);
/* Which virtual server answers for this Host (port ignored). Never NULL. */
const struct vserver *proxy_find_server(const struct proxy_config *c, const char *host, size_t len);
/* The location for a normalised path; NULL when none matches (404). */
const struct location *proxy_find_location(const struct vserver *s, const char *path, size_t len);

/* ---- workers ---- */

struct server {
        struct listener *listeners;
        size_t n_listeners;
        _Atomic(struct proxy_config *) cfg;
        atomic_bool stopping;
        unsigned n_workers;
        struct worker **workers;
        struct loop_health **health; /* each worker's, for the supervision */
};

struct worker_stats {
        atomic_uint_fast64_t requests;
        atomic_uint_fast64_t connections; /* open now */
        atomic_uint_fast64_t upstream_busy;
        _Atomic(struct proxy_config *) cfg_seen;
        struct loop_health health;
};

struct worker *worker_new(struct server *srv, unsigned id);
struct worker *worker_free(struct worker *w);
int worker_start(struct worker *w);
int worker_join(struct worker *w);
void worker_poke(struct worker *w);
struct worker_stats *worker_stats(struct worker *w);

#endif
