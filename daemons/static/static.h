/* SPDX-License-Identifier: MIT */
/*
 * wharf-static: the daemon's own types, shared by its three files.
 *
 *   main.c         command line, configuration, threads, signals, sd_notify
 *   static_worker.c one event loop per worker thread: accept, handoff
 *                  channels, reloads, the drain on stop
 *   static_conn.c  the connection state machine and its timers
 *   static_file.c  what a request means: path to file, open-file cache,
 *                  conditionals, ranges, the response head
 *
 * Ownership: struct static_config is immutable once built and shared by all
 * workers; a reload builds a new one and retires the old one after every
 * worker has switched. Everything else here belongs to one worker thread.
 */
#ifndef WHARF_STATIC_H
#define WHARF_STATIC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "config.h"
#include "handoff.h"
#include "http_parse.h"
#include "http_resp.h"
#include "listen.h"
#include "log.h"
#include "loops.h"
#include "realip.h"
#include "ring.h"

/* Settings as the file and the command line give them. */
struct static_settings {
        const char *root;
        const char *prefix;
        struct config_strv listen;
        const char *handoff;
        unsigned workers;
        const char *index;
        bool gzip_static;
        bool internal; /* serve only wharf-proxy's internal redirects (X-Accel-Redirect) */
        const char *expires;
        bool server_tokens;
        const char *default_type;
        const char *mime_types;
        uint64_t keepalive_timeout; /* ms */
        unsigned keepalive_requests;
        uint64_t client_header_timeout; /* ms */
        uint64_t send_timeout;          /* ms */
        unsigned max_connections;
        uint64_t max_header_size;
        uint64_t open_file_cache;
        uint64_t cache_max_file;
        uint64_t splice_min;
        const char *zero_copy;
        const char *access_log;
        const char *error_log;
        const char *log_level;
        struct config_strv set_real_ip_from; /* nginx's realip: trusted proxies */
        const char *real_ip_header;
        bool real_ip_recursive;
};

extern const struct config_key static_config_keys[];

enum expires_mode { EXPIRES_OFF, EXPIRES_EPOCH, EXPIRES_MAX, EXPIRES_SECONDS, _EXPIRES_MODE_MAX };

/* How bodies from splice_min up leave: both are zero-copy from the page cache. */
enum zero_copy {
        ZERO_COPY_SENDFILE, /* sendfile(2) when the socket is writable (POLLOUT via the ring) */
        ZERO_COPY_SPLICE,   /* IORING_OP_SPLICE file -> pipe -> socket */
        _ZERO_COPY_MAX
};

/* The validated, ready-to-serve form of the settings. Immutable. */
struct static_config {
        struct static_settings s;
        struct config_file *file; /* owns the strings in s; NULL without -c */
        int root_fd;              /* O_PATH directory fd of s.root */
        char prefix[512];         /* always ends in '/' */
        size_t prefix_len;
        enum zero_copy zero_copy;
        enum expires_mode expires_mode;
        uint64_t expires_sec;
        char server_header[64]; /* "wharf-static/0.1.0" or "wharf" */
        struct mime_table *mime;
        int log_level;
        struct realip_conf realip; /* who a request's client is, behind a trusted proxy */
};

/*
 * Builds a config from settings (taking ownership of file). Problems go to
 * diag. Returns 0 or -EINVAL (see diag), -errno.
 */
int static_config_new(const struct static_settings *s, struct config_file *file,
                      struct config_diag *diag, struct static_config **ret);
struct static_config *static_config_free(struct static_config *c);

/* ---- the open-file cache (static_file.c) ---- */

struct file_entry;
struct file_cache;

struct file_cache *file_cache_new(uint64_t max_bytes);
struct file_cache *file_cache_free(struct file_cache *fc);
/* Drops every entry (on reload); entries still sending stay until released. */
void file_cache_flush(struct file_cache *fc);
void file_entry_release(struct file_cache *fc, struct file_entry *e);

/* ---- a response, as static_file.c plans it and static_conn.c sends it ---- */

enum body_kind {
        BODY_NONE,
        BODY_MEMORY, /* from the cache: data */
        BODY_FILE,   /* from fd at offset: splice or read+send */
        _BODY_KIND_MAX
};

struct body {
        enum body_kind kind;
        struct file_entry *entry; /* holds a reference while the body is sent */
        const char *data;         /* BODY_MEMORY */
        int fd;                   /* BODY_FILE: owned by entry */
        uint64_t offset;
        uint64_t length;
};

/* What the request asks the connection to do next. */
enum plan {
        PLAN_RESPOND,       /* send head (+ body), then go on */
        PLAN_RESPOND_CLOSE, /* send head (+ body), then close */
        PLAN_HANDBACK,      /* not ours: hand the connection back */
        _PLAN_MAX
};

struct request_ctx {
        const struct static_config *cfg;
        struct file_cache *cache;
        const char *date; /* HTTP date of now */
        uint64_t now_ms;
        bool handed_off; /* the connection came through the handoff socket */
        bool internal;   /* an internal redirect of wharf-proxy (HANDOFF_F_INTERNAL) */
        bool keep_alive; /* may the connection stay open after this one? */
        int status;      /* out: for the access log */
};

/*
 * Plans the response to req: writes the head into w and describes the body.
 * Returns the plan; the head is complete in w unless PLAN_HANDBACK.
 */
enum plan static_handle_request(struct request_ctx *ctx, const struct http_request *req,
                                struct http_writer *w, struct body *ret_body);

/* A response for a request that could not be parsed (status from errno). */
void static_error_response(struct request_ctx *ctx, int minor_version, int status,
                           struct http_writer *w);

/* ---- workers (static_conn.c) ---- */

struct server {
        struct listener *listeners;
        size_t n_listeners;
        _Atomic(const struct static_config *) cfg;
        atomic_bool stopping;
        unsigned n_workers;
        struct worker **workers;
        struct loop_health **health; /* each worker's, for the supervision */
};

struct worker_stats {
        atomic_uint_fast64_t requests;
        atomic_uint_fast64_t connections; /* open now */
        atomic_uint_fast64_t accepted;
        _Atomic(const struct static_config *) cfg_seen;
        struct loop_health health;
};

struct worker *worker_new(struct server *srv, unsigned id);
struct worker *worker_free(struct worker *w);
/* Runs the loop in a new thread. Returns 0 or -errno. */
int worker_start(struct worker *w);
int worker_join(struct worker *w);
/* Wakes the loop to look at srv->cfg and srv->stopping. Thread-safe. */
void worker_poke(struct worker *w);
struct worker_stats *worker_stats(struct worker *w);
/* The name of what failed when a worker could not start (an op, a setup step). */

#endif
