/* SPDX-License-Identifier: MIT */
/*
 * wharf-wsgi: the internal interfaces of the daemon that embeds CPython and
 * runs a WSGI application, in place of uWSGI.
 *
 * Modules:
 *   main.c          command line, configuration, sockets, signals, start-up
 *   wsgi_config.c   the option table (uWSGI spelling) and its checks
 *   wsgi_python.c   the interpreter, loading the application, tracebacks
 *   wsgi_body.c     request bodies read whole first: memory, or an unlinked temp file
 *   wsgi_types.c    the C types: wsgi.input, start_response, write(),
 *                   wsgi.errors, wsgi.file_wrapper
 *   wsgi_request.c  the serving threads of a worker; one connection: uwsgi
 *                   or HTTP/1.1 in, PEP 3333 environ, calling the
 *                   application, the response out
 *   wsgi_master.c   the master: forking, respawning, harakiri, reload, stop
 *
 * Process model: the master (or the single process without master = true)
 * imports the application, then forks workers that share it copy-on-write.
 * Each of a worker's `threads` serves one request at a time with
 * blocking-style I/O (non-blocking sockets waited on with poll(), the GIL
 * released around every wait): a synchronous WSGI application cannot do
 * anything useful while its request waits, so an event loop would only add
 * cost. Concurrency comes from processes (and threads), which is what the
 * application was written for.
 *
 * Ownership: the struct wsgi_settings is built once in main() and is const
 * from then on. Every PyObject * field says whether it is owned (released at
 * the single cleanup point) or borrowed.
 */
#ifndef WHARF_WSGI_H
#define WHARF_WSGI_H

/* Python.h first: it sets feature macros the C library headers depend on. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "listen.h"
#include "log.h"
#include "util.h"

/* Room for the largest uwsgi packet head: 4 bytes + a 65535-byte block. */
#define WSGI_DEFAULT_BUFFER (65535 + 4)
#define WSGI_MAX_PROCESSES 256
#define WSGI_MAX_THREADS 64
/* Set across a reload's re-exec when the passed sockets are ones we bound. */
#define WSGI_OWN_SOCKETS_ENV "WHARF_WSGI_OWN_SOCKETS"
#define WSGI_REQUEST_DESC 160 /* "GET /path" kept for harakiri and logs */
/* A chunked body is held in memory up to this much when post-buffering is unset. */
#define WSGI_CHUNKED_MEMORY (64 * 1024)
#define WSGI_SPOOL_RBUF (64 * 1024)

/* Settings as the options set them; strings point into the config file or argv. */
struct wsgi_settings {
        const char *module;
        const char *wsgi_file;
        const char *callable;
        const char *chdir;
        const char *home;
        struct config_strv pythonpath;
        struct config_strv env;
        struct config_strv socket;
        struct config_strv http;
        unsigned chmod_socket;
        bool master;
        unsigned processes;
        unsigned threads;
        bool enable_threads;
        const char *pidfile;
        bool vacuum;
        const char *logger;
        unsigned max_requests;
        unsigned max_requests_delta;        /* worker N serves max-requests + N * this */
        unsigned max_worker_lifetime;       /* seconds, 0: off */
        unsigned max_worker_lifetime_delta; /* worker N lives that + N * this */
        struct config_strv touch_reload;    /* files whose change reloads, as SIGHUP does */
        unsigned reload_on_rss;             /* MiB, 0: off */
        unsigned harakiri;                  /* seconds, 0: off */
        bool lazy_apps;
        uint64_t buffer_size;
        unsigned socket_timeout; /* seconds */
        unsigned reload_mercy;   /* seconds a stopping worker may take */
        uint64_t post_buffering; /* bytes: bodies are read whole first; larger ones to a file */
        uint64_t limit_post;     /* bytes: a larger body is refused with 413; 0: no limit */
        const char *log_level;
};

extern const struct config_key wsgi_config_keys[];

/* Defaults, before the file and the command line. */
void wsgi_settings_defaults(struct wsgi_settings *s);

/*
 * Checks a complete set of settings; problems go into diag.
 * Returns 0 or -EINVAL.
 */
int wsgi_settings_check(const struct wsgi_settings *s, struct config_diag *diag);

/* The protocol of a listen socket. */
enum wsgi_proto {
        WSGI_PROTO_UWSGI,
        WSGI_PROTO_HTTP,
        _WSGI_PROTO_MAX,
};

struct wsgi_listener {
        struct listener l;
        enum wsgi_proto proto;
};

/*
 * One worker's state in memory shared with the master (MAP_SHARED, made
 * before the first fork). The worker writes, the master reads; every field
 * is a single atomic so no lock is needed.
 */
struct wsgi_slot_thread {
        _Atomic int busy;                /* inside a request */
        _Atomic uint64_t request_ms;     /* monotonic start of the current request */
        char request[WSGI_REQUEST_DESC]; /* written before busy is set */
};

struct wsgi_slot {
        _Atomic pid_t pid;         /* 0: free */
        _Atomic int ready;         /* the application is loaded, serving */
        _Atomic uint64_t requests; /* served by this worker */
        unsigned max_requests;     /* this worker's max-requests (with its delta), 0: none */
        struct wsgi_slot_thread t[WSGI_MAX_THREADS];
};

/* Signal state a worker reads between requests (set by main.c's handler). */
struct wsgi_signals {
        volatile sig_atomic_t *stop;
        volatile sig_atomic_t *reload;
        void (*setup_worker)(void); /* installs the handlers in a new worker */
        void (*handle)(int sig);    /* the handler, called by a worker's signal thread */
};

struct notify;

struct wsgi_server {
        const struct wsgi_settings *s;
        struct wsgi_listener *listeners;
        size_t n_listeners;
        bool own_sockets; /* bound by us (now or before a reload), not passed by systemd */
        bool multiprocess;
        bool multithread;
        struct wsgi_signals sig;
        struct wsgi_py *py;
        struct notify *notify; /* the process that talks to systemd, else NULL */
        char **argv;           /* for the re-exec of a reload */
};

/* The environ keys made once, interned (wsgi_python.c). */
enum wsgi_key {
        K_REQUEST_METHOD,
        K_SCRIPT_NAME,
        K_PATH_INFO,
        K_QUERY_STRING,
        K_CONTENT_TYPE,
        K_CONTENT_LENGTH,
        K_SERVER_NAME,
        K_SERVER_PORT,
        K_SERVER_PROTOCOL,
        K_REMOTE_ADDR,
        K_REMOTE_PORT,
        K_REQUEST_URI,
        K_WSGI_VERSION,
        K_WSGI_URL_SCHEME,
        K_WSGI_INPUT,
        K_WSGI_ERRORS,
        K_WSGI_MULTITHREAD,
        K_WSGI_MULTIPROCESS,
        K_WSGI_RUN_ONCE,
        K_WSGI_FILE_WRAPPER,
        K_HTTP_HOST,
        K_HTTP_USER_AGENT,
        K_HTTP_ACCEPT,
        K_HTTP_ACCEPT_ENCODING,
        K_HTTP_ACCEPT_LANGUAGE,
        K_HTTP_CONNECTION,
        K_HTTP_COOKIE,
        K_HTTP_REFERER,
        K_V_HTTP, /* values: "http", "https", "GET", "HTTP/1.1", "", "80" */
        K_V_HTTPS,
        K_V_GET,
        K_V_HTTP11,
        K_V_HTTP10,
        K_V_EMPTY,
        _WSGI_KEY_MAX,
};

#define WSGI_KEY_TABLE 64 /* a power of two, over twice the names */

/* Where a variable name starts looking in wsgi_py.key_table; name has len >= 2. */
static inline unsigned wsgi_key_hash(const char *name, size_t len)
{
        unsigned h = (unsigned) len * 0x9E37u;

        h ^= (unsigned char) name[len - 1] * 0x85EBu;
        h ^= (unsigned char) name[len - 2] * 0xC2B3u;
        h ^= (unsigned char) name[len / 2] * 0x27D5u;
        return (h ^ (h >> 7)) & (WSGI_KEY_TABLE - 1);
}

/*
 * The interpreter-wide objects of one process. Created by
 * wsgi_python_init() and wsgi_python_load_app(), owned here, released by
 * wsgi_python_done().
 */
struct wsgi_py {
        PyObject *app;                   /* owned: the WSGI callable */
        PyTypeObject *input_type;        /* owned */
        PyTypeObject *start_type;        /* owned: start_response */
        PyTypeObject *write_type;        /* owned: the write() callable */
        PyTypeObject *errors_type;       /* owned */
        PyTypeObject *file_wrapper_type; /* owned */
        PyObject *errors;                /* owned: the one wsgi.errors object */
        PyObject *version;               /* owned: (1, 0) */
        PyObject *keys[_WSGI_KEY_MAX];   /* owned, interned */
        /* The names below K_V_HTTP by wsgi_key_hash(): index + 1, 0 empty. */
        unsigned char key_table[WSGI_KEY_TABLE];
        PyObject *traceback_format; /* owned: traceback.format_exception */
};

/* One client connection of a worker; buf is the worker's, reused. */
struct wsgi_conn {
        int fd;
        enum wsgi_proto proto;
        /*
         * Responses mark their own end (Content-Length or chunked), so the
         * connection can carry another request: always with HTTP, and with
         * uwsgi when the front asked for it (WHARF_KEEPALIVE, wharf-proxy).
         */
        bool framed;
        char *buf;
        size_t cap;
        size_t len;      /* bytes in buf */
        size_t consumed; /* bytes of buf the current request has used up */
        int timeout_ms;
        struct sockaddr_storage peer;
        socklen_t peer_len;
        struct sockaddr_storage local;
        socklen_t local_len;
        bool have_local;
};

/*
 * A request body read whole before the application runs: in memory up to
 * threshold bytes, beyond that in an unlinked temporary file (wsgi_body.c).
 */
struct wsgi_spool {
        char *mem; /* owned, while in memory */
        size_t mem_len, mem_cap;
        int fd;     /* owned: the file, or -1 while in memory */
        char *rbuf; /* owned: WSGI_SPOOL_RBUF bytes read from the file at a time */
        uint64_t size;
        uint64_t threshold;
        uint64_t read_pos;
};

/*
 * One request, from the parsed head to the last byte out. Lives on the
 * worker's stack; the Python objects that point at it (input,
 * start_response, write) are detached before it goes away.
 */
struct wsgi_req {
        struct wsgi_conn *c;
        const struct wsgi_py *py;
        int minor_version; /* of the response status line */
        bool head_only;    /* HEAD: no body bytes go out */
        bool keep_alive;   /* HTTP: the connection may serve another request */

        /* The body, as wsgi.input gives it out. */
        char *body_buf;            /* c->buf, or the spool's memory or read buffer */
        size_t body_pos, body_end; /* body bytes still in body_buf */
        uint64_t body_left;        /* body bytes not yet read from the socket (or spool) */
        bool body_error;           /* the client went away while sending it */
        struct wsgi_spool *spool;  /* the body read whole beforehand (body_left counts what
                                      is still unread in it), or NULL: it streams */

        /* start_response */
        PyObject *status;  /* owned: str, or NULL before start_response */
        PyObject *headers; /* owned: list of (str, str) */
        int status_code;
        bool head_sent;
        bool chunked;
        int64_t content_length; /* from the application's headers, -1 if none */
        uint64_t body_sent;
        bool io_error; /* the client is gone: stop sending */
};

/* wsgi_python.c */

/*
 * Starts the interpreter (PyConfig, Py_InitializeFromConfig) with home
 * (a virtualenv's site-packages), pythonpath and the working directory on
 * sys.path, and creates the C types and interned keys into py.
 * Returns 0, or -EINVAL with the reason logged.
 */
int wsgi_python_init(const struct wsgi_settings *s, struct wsgi_py *py);

/*
 * Imports the application named by module or wsgi-file and keeps its
 * callable in py->app. Returns 0, or -EINVAL with one clear message logged.
 */
int wsgi_python_load_app(const struct wsgi_settings *s, struct wsgi_py *py);

/* Called in a child after fork(). */
void wsgi_python_after_fork(void);

/* Releases py's objects and finalizes the interpreter. */
void wsgi_python_done(struct wsgi_py *py);

/*
 * Logs the current Python exception with its traceback, prefixed by what
 * (with the GIL held; clears the exception).
 */
void wsgi_python_log_exception(const struct wsgi_py *py, const char *what);

/* wsgi_types.c: the C types of the request path. */

int wsgi_types_init(struct wsgi_py *py);

/* Input, start_response and write objects bound to req; reused across requests. */
struct wsgi_req_objects {
        PyObject *input; /* owned */
        PyObject *start; /* owned */
        PyObject *write; /* owned */
};

/* Binds (creating when needed) the objects to req. Returns 0 or -ENOMEM (exception set). */
int wsgi_req_objects_bind(struct wsgi_req_objects *o, const struct wsgi_py *py,
                          struct wsgi_req *req);
/* Detaches them from req; an object the application kept is replaced next time. */
void wsgi_req_objects_unbind(struct wsgi_req_objects *o);
void wsgi_req_objects_done(struct wsgi_req_objects *o);

/* For the response path: the file-like of a wsgi.file_wrapper (borrowed), or NULL. */
PyObject *wsgi_file_wrapper_filelike(const struct wsgi_py *py, PyObject *obj);

/* wsgi_request.c */

/* recv with the socket timeout, the GIL released. Returns bytes (0 at EOF) or -errno. */
ssize_t wsgi_conn_recv(struct wsgi_conn *c, char *dst, size_t max);

/* Sends body bytes for the application (write() and the iterable). Returns 0 or -errno. */
int wsgi_req_write(struct wsgi_req *req, const char *data, size_t len);

/*
 * Waits for fd to be ready for events with the GIL released (when held).
 * Returns 0, -ETIMEDOUT or -errno.
 */
int wsgi_wait_fd(int fd, short events, int timeout_ms);

/*
 * The serving loop of one worker process: accepts and serves until asked to
 * stop (or max-requests), then returns. slot may be NULL without master.
 * Returns 0, or a negative errno on a fatal error.
 */
int wsgi_worker_run(const struct wsgi_server *srv, const struct wsgi_py *py,
                    struct wsgi_slot *slot);

/* wsgi_body.c */

/*
 * Refills body_buf with the next body bytes (after the buffered ones were used
 * up). Returns the count (> 0), 0 at the end of the body, or -errno.
 */
ssize_t wsgi_req_fill_body(struct wsgi_req *req);

/* Reads body bytes for wsgi.input into dst, at most max. Returns the count (0: end) or -errno. */
ssize_t wsgi_req_read_body(struct wsgi_req *req, char *dst, size_t max);

void wsgi_spool_init(struct wsgi_spool *s, uint64_t threshold);
/* Appends body bytes, moving to a file once past the threshold. Returns 0 or -errno. */
int wsgi_spool_append(struct wsgi_spool *s, const char *data, size_t len);
/* Moves the bytes so far to the file now (when the size is known to pass the threshold). */
int wsgi_spool_to_file(struct wsgi_spool *s);
/* Reads from where the last read ended. Returns the count (0: end) or -errno. */
ssize_t wsgi_spool_read(struct wsgi_spool *s, char *dst, size_t max);
/* Frees the memory and closes the file (which the kernel then removes). */
void wsgi_spool_done(struct wsgi_spool *s);

/*
 * post-buffering: reads a Content-Length body of body_len bytes, the start
 * of which follows the head_len bytes of head in c->buf, whole into sp; a
 * body past sp's threshold goes to the file from the start. The body's bytes
 * leave c->buf (c->len becomes head_len). Called without the GIL.
 * Returns 0 or -errno.
 */
int wsgi_spool_body(struct wsgi_conn *c, size_t head_len, uint64_t body_len, struct wsgi_spool *sp);

/*
 * Reads a chunked body whole into sp (initialised here, memory up to
 * post-buffering or WSGI_CHUNKED_MEMORY), decoded, within limit-post: first
 * what follows the head in c->buf, then what arrives. What follows the body
 * (a pipelined request) is put back right after the head; when it does not
 * fit there, *keep_alive becomes false so that the client sends it again.
 * Called without the GIL. Returns 0, -EBADMSG (malformed), -EFBIG (past
 * limit-post) or -errno.
 */
ssize_t wsgi_read_chunked(struct wsgi_conn *c, size_t head, const struct wsgi_settings *s,
                          struct wsgi_spool *sp, bool *keep_alive);

/* wsgi_master.c */

/*
 * Runs the master: forks the workers, supervises them, and handles SIGHUP
 * (graceful reload by re-exec) and SIGTERM (graceful stop).
 * sfd is a signalfd for SIGTERM, SIGINT, SIGHUP and SIGCHLD.
 * Returns 0 after a clean stop, or a negative errno.
 */
int wsgi_master_run(struct wsgi_server *srv, int sfd);

/*
 * Replaces the running image with a fresh one (same argv), passing the listen
 * sockets as systemd would and the pids of the workers that must be stopped
 * once the new ones serve. Returns only on failure (-errno).
 */
int wsgi_reexec(const struct wsgi_server *srv, const pid_t *old_workers, size_t n_old);

/*
 * After a reload whose new image cannot start: tells the workers of the
 * image before (still serving, still our children) to finish and exit, so
 * that none is left without a master.
 */
void wsgi_master_stop_old_workers(void);

#endif
