/* SPDX-License-Identifier: MIT */
/*
 * wsgi_request: a worker's serving loop and one request's path through it:
 * the uwsgi packet or HTTP/1.1 head in, the PEP 3333 environ, the call into
 * the application, and the response out.
 *
 * I/O model: sockets are non-blocking, and a call that would block waits in
 * poll() with the GIL released and the socket timeout as its bound. Under
 * load the data is there when we look (nginx writes the whole uwsgi packet
 * before we accept), so a request costs accept4, recv, sendmsg and close,
 * and no setsockopt for timeouts. A synchronous WSGI worker has nothing else
 * to do while a request waits, so an event loop would only add work. The
 * GIL is held only while Python code runs or Python objects are built: every
 * socket call and every wait releases it (gil_release()), so the other
 * `threads` of a worker and the application's own threads run meanwhile.
 *
 * Signals: every thread of a worker keeps SIGTERM, SIGINT and SIGHUP
 * blocked, and one more thread takes them with sigwaitinfo(). It sets the
 * flag (main.c's handler does) and writes the wake eventfd, so a serving
 * thread sees a stop between two requests (a memory read), also when a
 * connection is always waiting, and an idle one leaves its poll() at once.
 * No request pays a syscall for this.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/uio.h>

#include "http_parse.h"
#include "http_resp.h"
#include "notify.h"
#include "uwsgi.h"
#include "wsgi.h"

#define KEEPALIVE_MS 5000
/*
 * Idle uwsgi connections a serving thread keeps for its front (wharf-proxy
 * asks for them with WHARF_KEEPALIVE), and how long it keeps one unused.
 */
#define IDLE_MAX 64
#define IDLE_MS 30000
#define IOV_BATCH 64
#define HEAD_MAX (16 * 1024)
#define DRAIN_CHUNK 65536
#define VCACHE_SLOTS 64
#define VCACHE_MAX 256 /* longer environ values are not kept for reuse */

static const char error_500[] = "Internal Server Error\n";

/* What the threads of one worker process share. */
struct worker_group {
        int wake_fd;             /* eventfd: readable once the threads must stop */
        atomic_bool woken;       /* wake_fd was written */
        atomic_bool recycle;     /* max-requests reached */
        _Atomic uint64_t served; /* requests, all threads */
        sigset_t sigs;           /* what the signal thread takes; blocked in all */
        pthread_t sig_thread;
};

/* One serving thread (there is one per `threads`). */
struct worker {
        const struct wsgi_server *srv;
        const struct wsgi_py *py;
        struct worker_group *g;
        struct wsgi_slot *slot;          /* may be NULL without master */
        struct wsgi_slot_thread *status; /* this thread's part of slot, or NULL */
        unsigned index;
        pthread_t thread;
        struct pollfd *pfds; /* listeners, the wake eventfd, then connections */
        size_t n_listeners;
        size_t next_listener; /* round robin start for accept */
        char *buf;
        size_t cap;
        struct wsgi_req_objects objs;
        int idle[IDLE_MAX];            /* kept-alive uwsgi connections, waiting */
        uint64_t idle_until[IDLE_MAX]; /* monotonic ms */
        size_t n_idle;
        PyThreadState *ts;              /* saved while the GIL is released */
        PyObject *vcache[VCACHE_SLOTS]; /* owned: recent environ values, see value_str() */
};

static bool stop_requested(struct worker *w)
{
        if (!*w->srv->sig.stop && !*w->srv->sig.reload && !atomic_load(&w->g->recycle))
                return false;
        /* The first to see it wakes the idle threads out of their poll(). */
        if (!atomic_exchange(&w->g->woken, true))
                (void) eventfd_write(w->g->wake_fd, 1);
        return true;
}

/* Releases the GIL when this thread holds it; gil_restore() takes it back. */
static PyThreadState *gil_release(void)
{
        return PyGILState_Check() ? PyEval_SaveThread() : NULL;
}

static void gil_restore(PyThreadState *ts)
{
        int e = errno;
        if (ts)
                PyEval_RestoreThread(ts);
        errno = e;
}

int wsgi_wait_fd(int fd, short events, int timeout_ms)
{
        struct pollfd p = {.fd = fd, .events = events};
        PyThreadState *ts = NULL;
        int r, e;

        if (Py_IsInitialized() && PyGILState_Check())
                ts = PyEval_SaveThread();
        do
                r = poll(&p, 1, timeout_ms);
        while (r < 0 && errno == EINTR);
        e = errno;
        if (ts)
                PyEval_RestoreThread(ts);
        if (r < 0)
                return -e;
        if (r == 0)
                return -ETIMEDOUT;
        return 0;
}

ssize_t wsgi_conn_recv(struct wsgi_conn *c, char *dst, size_t max)
{
        for (;;) {
                PyThreadState *ts = gil_release();
                ssize_t n = recv(c->fd, dst, max, 0);
                gil_restore(ts);
                if (n >= 0)
                        return n;
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN)
                        return -errno;
                int r = wsgi_wait_fd(c->fd, POLLIN, c->timeout_ms);
                if (r < 0)
                        return r;
        }
}

/* Discards body bytes the application did not read. Returns 0 or -errno. */
static int discard_some(struct wsgi_req *req)
{
        char scratch[4096];
        ssize_t n;

        req->body_pos = req->body_end;
        if (req->body_left == 0 || req->spool)
                return 0;
        n = recv(req->c->fd, scratch, min_size(sizeof(scratch), req->body_left), MSG_DONTWAIT);
        if (n > 0) {
                req->body_left -= (uint64_t) n;
                return 0;
        }
        if (n == 0)
                return -ECONNRESET;
        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
}

/*
 * Sends all of iov. While the peer does not take our bytes we also discard
 * request body bytes nobody will read: a peer that finishes sending its body
 * before it reads (nginx does) would otherwise wait on us as we wait on it.
 */
static int send_all(struct wsgi_req *req, struct iovec *iov, int n)
{
        struct wsgi_conn *c = req->c;

        while (n > 0) {
                struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t) n};
                PyThreadState *gts = gil_release();
                ssize_t k = sendmsg(c->fd, &m, MSG_NOSIGNAL);
                gil_restore(gts);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                return -errno;
                        short ev = POLLOUT | (req->body_left > 0 && !req->spool ? POLLIN : 0);
                        struct pollfd p = {.fd = c->fd, .events = ev};
                        PyThreadState *ts = gil_release();
                        int r = poll(&p, 1, c->timeout_ms);
                        int e = errno;
                        gil_restore(ts);
                        if (r < 0 && e != EINTR)
                                return -e;
                        if (r == 0)
                                return -ETIMEDOUT;
                        if (r > 0 && (p.revents & POLLIN)) {
                                int d = discard_some(req);
                                if (d < 0)
                                        return d;
                        }
                        continue;
                }
                iov = iov_advance(iov, &n, (size_t) k);
        }
        return 0;
}

/* ---- the response ---- */

static bool status_has_body(int code)
{
        return code >= 200 && code != 204 && code != 304;
}

/* The head, into out. Returns its length or -ENOBUFS. */
static ssize_t build_head(struct wsgi_req *req, char *out, size_t size, int64_t auto_length)
{
        struct http_writer w;
        Py_ssize_t slen;
        const char *status = PyUnicode_AsUTF8AndSize(req->status, &slen);

        http_writer_init(&w, out, size);
        http_write_raw(&w, req->minor_version ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
        http_write_raw(&w, status, (size_t) slen);
        http_write_raw(&w, "\r\n", 2);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(req->headers); i++) {
                PyObject *h = PyList_GET_ITEM(req->headers, i); /* borrowed */
                PyObject *name = PyTuple_GET_ITEM(h, 0);        /* borrowed */
                PyObject *value = PyTuple_GET_ITEM(h, 1);       /* borrowed */
                http_write_raw(&w, PyUnicode_1BYTE_DATA(name), (size_t) PyUnicode_GET_LENGTH(name));
                http_write_raw(&w, ": ", 2);
                http_write_raw(&w, PyUnicode_1BYTE_DATA(value),
                               (size_t) PyUnicode_GET_LENGTH(value));
                http_write_raw(&w, "\r\n", 2);
        }
        if (req->content_length < 0 && status_has_body(req->status_code)) {
                if (auto_length >= 0) {
                        http_write_header_u64(&w, "Content-Length", (uint64_t) auto_length);
                        req->content_length = auto_length;
                } else if (req->c->framed) {
                        /* No length known: chunked for 1.1, the end of the connection for 1.0. */
                        if (req->minor_version >= 1)
                                req->chunked = true;
                        else
                                req->keep_alive = false;
                        if (req->chunked)
                                http_write_header_str(&w, "Transfer-Encoding", "chunked");
                }
        }
        if (req->c->framed) {
                if (!req->keep_alive)
                        http_write_header_str(&w, "Connection", "close");
                else if (req->minor_version == 0 || req->c->proto == WSGI_PROTO_UWSGI)
                        http_write_header_str(&w, "Connection", "keep-alive");
        }
        return http_write_end(&w);
}

/*
 * Sends the head (if not sent yet) and body pieces in one sendmsg, framed
 * as chunks when chunked. Pieces past a declared Content-Length are cut.
 */
static int send_body(struct wsgi_req *req, struct iovec *pieces, int n, int64_t auto_length)
{
        struct iovec iov[IOV_BATCH * 3 + 1];
        char head[HEAD_MAX];
        char sizes[IOV_BATCH][20];
        int k = 0;
        ssize_t hlen;

        if (req->io_error)
                return -EPIPE;
        if (!req->head_sent) {
                hlen = build_head(req, head, sizeof(head), auto_length);
                if (hlen < 0) {
                        /* The application's fault, and nothing is out yet: a 500. */
                        PyErr_Format(PyExc_ValueError, "response head larger than %d bytes",
                                     HEAD_MAX);
                        return -EINVAL;
                }
                iov[k++] = (struct iovec){head, (size_t) hlen};
                req->head_sent = true;
        }
        if (!req->head_only && status_has_body(req->status_code)) {
                for (int i = 0; i < n && i < IOV_BATCH; i++) {
                        size_t len = pieces[i].iov_len;
                        if (req->content_length >= 0) {
                                uint64_t room = (uint64_t) req->content_length - req->body_sent;
                                if (len > room)
                                        len = room; /* never more than the declared length */
                        }
                        if (len == 0)
                                continue;
                        if (req->chunked) {
                                int sl = snprintf(sizes[i], sizeof(sizes[i]), "%zx\r\n", len);
                                iov[k++] = (struct iovec){sizes[i], (size_t) sl};
                        }
                        iov[k++] = (struct iovec){pieces[i].iov_base, len};
                        if (req->chunked)
                                iov[k++] = (struct iovec){(char *) "\r\n", 2};
                        req->body_sent += len;
                }
        }
        if (k == 0)
                return 0;
        int r = send_all(req, iov, k);
        if (r < 0)
                req->io_error = true;
        return r;
}

int wsgi_req_write(struct wsgi_req *req, const char *data, size_t len)
{
        struct iovec piece = {(char *) data, len};
        return send_body(req, &piece, 1, -1);
}

/* A file body with sendfile(2): zero-copy from the page cache. Returns 0, 1 (not a file), -errno.
 */
static int send_file(struct wsgi_req *req, PyObject *filelike)
{
        PyObject *fileno = NULL, *pos = NULL; /* owned */
        struct stat st;
        off_t off;
        int fd, r;

        fileno = PyObject_CallMethod(filelike, "fileno", NULL);
        if (!fileno || !PyLong_Check(fileno)) {
                PyErr_Clear();
                Py_XDECREF(fileno);
                return 1;
        }
        fd = (int) PyLong_AsLong(fileno);
        Py_DECREF(fileno);
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                PyErr_Clear();
                return 1;
        }
        /* Where the application left the file is where the body starts. */
        pos = PyObject_CallMethod(filelike, "tell", NULL);
        if (!pos) {
                PyErr_Clear();
                off = lseek(fd, 0, SEEK_CUR);
        } else {
                off = (off_t) PyLong_AsLongLong(pos);
                Py_DECREF(pos);
                if (PyErr_Occurred()) {
                        PyErr_Clear();
                        return 1;
                }
        }
        if (off < 0 || off > st.st_size)
                return 1;
        uint64_t left = (uint64_t) (st.st_size - off);
        if (req->content_length >= 0 && (uint64_t) req->content_length < left)
                left = (uint64_t) req->content_length;
        r = send_body(req, NULL, 0, (int64_t) left);
        if (r < 0)
                return r;
        if (req->head_only || !status_has_body(req->status_code))
                return 0;
        PyThreadState *ts = PyEval_SaveThread();
        while (left > 0) {
                ssize_t n = sendfile(req->c->fd, fd, &off, min_u64(left, 1u << 30));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN) {
                        r = wsgi_wait_fd(req->c->fd, POLLOUT, req->c->timeout_ms);
                        if (r < 0)
                                break;
                        continue;
                }
                if (n <= 0) {
                        r = n < 0 ? -errno : -EIO; /* 0: the file shrank under us */
                        break;
                }
                left -= (uint64_t) n;
                req->body_sent += (uint64_t) n;
        }
        PyEval_RestoreThread(ts);
        if (r < 0)
                req->io_error = true;
        return r < 0 ? r : 0;
}

/* Sends a list or tuple of bytes in batches, with a Content-Length when none was given. */
static int send_sequence(struct wsgi_req *req, PyObject *seq)
{
        PyObject **items = PySequence_Fast_ITEMS(seq);
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        struct iovec pieces[IOV_BATCH];
        int64_t total = 0;

        for (Py_ssize_t i = 0; i < n; i++) {
                if (!PyBytes_Check(items[i])) {
                        PyErr_Format(PyExc_TypeError,
                                     "the application returned a %s in its body, not bytes",
                                     Py_TYPE(items[i])->tp_name);
                        return -EINVAL;
                }
                total += PyBytes_GET_SIZE(items[i]);
        }
        if (!req->status) {
                PyErr_SetString(PyExc_RuntimeError, "start_response() was not called");
                return -EINVAL;
        }
        Py_ssize_t i = 0;
        do {
                int k = 0;
                for (; i < n && k < IOV_BATCH; i++, k++)
                        pieces[k] = (struct iovec){PyBytes_AS_STRING(items[i]),
                                                   (size_t) PyBytes_GET_SIZE(items[i])};
                int r = send_body(req, pieces, k, req->head_sent ? -1 : total);
                if (r < 0)
                        return r;
        } while (i < n);
        return 0;
}

/* Any other iterable: each piece goes out as it comes (streaming). */
static int send_iterable(struct wsgi_req *req, PyObject *result)
{
        PyObject *it = PyObject_GetIter(result), *item; /* owned */
        int r = 0;

        if (!it)
                return -EINVAL;
        while ((item = PyIter_Next(it))) {
                if (!PyBytes_Check(item)) {
                        PyErr_Format(PyExc_TypeError, "the application yielded a %s, not bytes",
                                     Py_TYPE(item)->tp_name);
                        Py_DECREF(item);
                        r = -EINVAL;
                        break;
                }
                if (!req->status) {
                        Py_DECREF(item);
                        PyErr_SetString(PyExc_RuntimeError,
                                        "the application yielded before start_response()");
                        r = -EINVAL;
                        break;
                }
                /* PEP 3333: an empty piece must not hold the head back, nor end a chunked body. */
                if (PyBytes_GET_SIZE(item) > 0)
                        r = wsgi_req_write(req, PyBytes_AS_STRING(item),
                                           (size_t) PyBytes_GET_SIZE(item));
                Py_DECREF(item);
                if (r < 0)
                        break;
        }
        Py_DECREF(it);
        if (r == 0 && PyErr_Occurred())
                r = -EINVAL;
        return r;
}

/* ---- the environ ---- */

/*
 * The bytes v as a str (latin-1, PEP 3333). Most values repeat from one
 * request to the next (method, protocol, host, port, user agent, address),
 * so each thread keeps the last value it made for each variable, in a slot
 * picked by the key object, and hands it out again while the bytes are the
 * same: a str is immutable, and sharing it saves its allocation. The bytes
 * are always compared, so a slot shared by two keys costs only a miss.
 */
static PyObject *value_str(struct worker *w, PyObject *key, const char *v, size_t len)
{
        PyObject **slot = &w->vcache[((uintptr_t) key * 0x9E3779B97F4A7C15ull) >> 58];
        PyObject *s = *slot;

        if (s && (size_t) PyUnicode_GET_LENGTH(s) == len &&
            (len == 0 || memcmp(PyUnicode_1BYTE_DATA(s), v, len) == 0)) {
                Py_INCREF(s);
                return s;
        }
        s = PyUnicode_DecodeLatin1(v, (Py_ssize_t) len, NULL);
        if (s && len <= VCACHE_MAX && PyUnicode_KIND(s) == PyUnicode_1BYTE_KIND) {
                Py_INCREF(s);
                Py_XSETREF(*slot, s);
        }
        return s;
}

static int set_item(struct worker *w, PyObject *env, PyObject *key, const char *v, size_t len)
{
        PyObject *value = value_str(w, key, v, len); /* owned */
        if (!value)
                return -1;
        int r = PyDict_SetItem(env, key, value);
        Py_DECREF(value);
        return r;
}

/* Sets key, or appends ", value" (or "; " for cookies) when it is already there. */
static int set_or_join(struct worker *w, PyObject *env, PyObject *key, const char *v, size_t len,
                       bool cookie)
{
        PyObject *old = PyDict_GetItemWithError(env, key); /* borrowed */
        PyObject *value, *joined;                          /* owned */

        if (!old)
                return PyErr_Occurred() ? -1 : set_item(w, env, key, v, len);
        value = PyUnicode_FromFormat("%U%s", old, cookie ? "; " : ", ");
        if (!value)
                return -1;
        PyObject *tail = PyUnicode_DecodeLatin1(v, (Py_ssize_t) len, NULL); /* owned */
        if (!tail) {
                Py_DECREF(value);
                return -1;
        }
        joined = PyUnicode_Concat(value, tail);
        Py_DECREF(value);
        Py_DECREF(tail);
        if (!joined)
                return -1;
        int r = PyDict_SetItem(env, key, joined);
        Py_DECREF(joined);
        return r;
}

static int set_common(const struct worker *w, PyObject *env, PyObject *scheme, PyObject *input)
{
        const struct wsgi_py *py = w->py;
        PyObject *const *k = py->keys;

        if (PyDict_SetItem(env, k[K_WSGI_VERSION], py->version) < 0 ||
            PyDict_SetItem(env, k[K_WSGI_URL_SCHEME], scheme) < 0 ||
            PyDict_SetItem(env, k[K_WSGI_INPUT], input) < 0 ||
            PyDict_SetItem(env, k[K_WSGI_ERRORS], py->errors) < 0 ||
            PyDict_SetItem(env, k[K_WSGI_MULTITHREAD], w->srv->multithread ? Py_True : Py_False) <
                0 ||
            PyDict_SetItem(env, k[K_WSGI_MULTIPROCESS], w->srv->multiprocess ? Py_True : Py_False) <
                0 ||
            PyDict_SetItem(env, k[K_WSGI_RUN_ONCE], Py_False) < 0 ||
            PyDict_SetItem(env, k[K_WSGI_FILE_WRAPPER], (PyObject *) py->file_wrapper_type) < 0)
                return -1;
        return 0;
}

/* The interned key for a name we know (CGI variables, common headers), or NULL. */
static PyObject *known_key(const struct wsgi_py *py, const char *name, size_t len)
{
        if (len < 2)
                return NULL;
        for (unsigned j = wsgi_key_hash(name, len); py->key_table[j];
             j = (j + 1) & (WSGI_KEY_TABLE - 1)) {
                PyObject *k = py->keys[py->key_table[j] - 1];
                if ((size_t) PyUnicode_GET_LENGTH(k) == len &&
                    memcmp(PyUnicode_1BYTE_DATA(k), name, len) == 0)
                        return k;
        }
        return NULL;
}

static void addr_text(const struct sockaddr_storage *sa, char *host, size_t hsize, unsigned *port)
{
        host[0] = '\0';
        *port = 0;
        if (sa->ss_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                inet_ntop(AF_INET, &in->sin_addr, host, (socklen_t) hsize);
                *port = ntohs(in->sin_port);
        } else if (sa->ss_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                inet_ntop(AF_INET6, &in6->sin6_addr, host, (socklen_t) hsize);
                *port = ntohs(in6->sin6_port);
        }
}

/* The local address, for SERVER_NAME/SERVER_PORT when nothing better says. */
static void local_addr(struct wsgi_conn *c, char *host, size_t hsize, unsigned *port)
{
        if (!c->have_local) {
                c->local_len = sizeof(c->local);
                if (getsockname(c->fd, (struct sockaddr *) &c->local, &c->local_len) < 0)
                        c->local.ss_family = AF_UNSPEC;
                c->have_local = true;
        }
        addr_text(&c->local, host, hsize, port);
        if (!host[0])
                snprintf(host, hsize, "localhost");
        if (*port == 0)
                *port = 80;
}

/* PEP 3333: PATH_INFO is the percent-decoded path, each byte one latin-1 character. */
static size_t percent_decode(const char *in, size_t len, char *out)
{
        size_t o = 0;

        for (size_t i = 0; i < len; i++) {
                if (in[i] == '%' && i + 2 < len && isxdigit((unsigned char) in[i + 1]) &&
                    isxdigit((unsigned char) in[i + 2])) {
                        char hex[3] = {in[i + 1], in[i + 2], 0};
                        out[o++] = (char) strtoul(hex, NULL, 16);
                        i += 2;
                } else {
                        out[o++] = in[i];
                }
        }
        return o;
}

/*
 * The environ of an HTTP request. decoded_length is the size of a chunked
 * body as it was decoded (-1 for any other): it becomes CONTENT_LENGTH, and
 * Transfer-Encoding no longer applies to what wsgi.input gives.
 */
static PyObject *environ_http(struct worker *w, struct wsgi_conn *c, const struct http_request *hr,
                              int64_t decoded_length, PyObject *input)
{
        const struct wsgi_py *py = w->py;
        PyObject *const *k = py->keys;
        PyObject *env = PyDict_New(); /* owned until returned */
        char name[256], host[INET6_ADDRSTRLEN + 8];
        unsigned port;

        if (!env)
                return NULL;
        if (hr->method == HTTP_GET) {
                if (PyDict_SetItem(env, k[K_REQUEST_METHOD], k[K_V_GET]) < 0)
                        goto fail;
        } else if (set_item(w, env, k[K_REQUEST_METHOD], hr->method_name.ptr, hr->method_name.len) <
                   0)
                goto fail;
        if (PyDict_SetItem(env, k[K_SCRIPT_NAME], k[K_V_EMPTY]) < 0 ||
            PyDict_SetItem(env, k[K_SERVER_PROTOCOL],
                           hr->minor_version ? k[K_V_HTTP11] : k[K_V_HTTP10]) < 0)
                goto fail;
        {
                /* The path is at most HTTP_MAX_TARGET bytes: decoding only shrinks it. */
                char path[HTTP_MAX_TARGET];
                size_t n = percent_decode(hr->path.ptr, min_size(hr->path.len, sizeof(path)), path);
                if (set_item(w, env, k[K_PATH_INFO], path, n) < 0)
                        goto fail;
        }
        if (set_item(w, env, k[K_QUERY_STRING], hr->query.ptr, hr->query.len) < 0 ||
            set_item(w, env, k[K_REQUEST_URI], hr->target.ptr, hr->target.len) < 0)
                goto fail;

        if (decoded_length >= 0) {
                char n[24];
                int len = snprintf(n, sizeof(n), "%lld", (long long) decoded_length);
                if (set_item(w, env, k[K_CONTENT_LENGTH], n, (size_t) len) < 0)
                        goto fail;
        }
        for (size_t i = 0; i < hr->n_headers; i++) {
                const struct http_header *h = &hr->headers[i];
                if (decoded_length >= 0 && span_eq_case(h->name, "Transfer-Encoding"))
                        continue;
                if (span_eq_case(h->name, "Content-Type")) {
                        if (set_or_join(w, env, k[K_CONTENT_TYPE], h->value.ptr, h->value.len,
                                        false) < 0)
                                goto fail;
                        continue;
                }
                if (span_eq_case(h->name, "Content-Length")) {
                        /* The parser refused differing duplicates: one value is enough. */
                        if (set_item(w, env, k[K_CONTENT_LENGTH], h->value.ptr, h->value.len) < 0)
                                goto fail;
                        continue;
                }
                /* "X-Foo_Bar" would pose as "X-Foo-Bar": dropped, as nginx does. */
                if (memchr(h->name.ptr, '_', h->name.len) || h->name.len + 5 > sizeof(name))
                        continue;
                memcpy(name, "HTTP_", 5);
                for (size_t j = 0; j < h->name.len; j++) {
                        char ch = h->name.ptr[j];
                        name[5 + j] = ch == '-' ? '_' : (char) toupper((unsigned char) ch);
                }
                size_t nlen = 5 + h->name.len;
                PyObject *key = known_key(py, name, nlen); /* borrowed */
                PyObject *made = NULL;                     /* owned */
                if (!key) {
                        made = PyUnicode_DecodeLatin1(name, (Py_ssize_t) nlen, NULL);
                        if (!made)
                                goto fail;
                        key = made;
                }
                int r =
                    set_or_join(w, env, key, h->value.ptr, h->value.len, key == k[K_HTTP_COOKIE]);
                Py_XDECREF(made);
                if (r < 0)
                        goto fail;
        }

        /*
         * SERVER_NAME and SERVER_PORT: from Host (RFC 9112 3.2), "[v6]:port"
         * included; what Host leaves open comes from the socket's address.
         */
        bool have_name = false, have_port = false;
        if (hr->host.len > 0) {
                const char *h = hr->host.ptr, *end = h + hr->host.len, *colon = NULL, *he;
                if (*h == '[') {
                        const char *rb = memchr(h, ']', hr->host.len);
                        he = rb ? rb + 1 : end;
                        if (rb && rb + 1 < end && rb[1] == ':')
                                colon = rb + 1;
                } else {
                        colon = memchr(h, ':', hr->host.len);
                        he = colon ? colon : end;
                }
                if (he > h) {
                        if (set_item(w, env, k[K_SERVER_NAME], h, (size_t) (he - h)) < 0)
                                goto fail;
                        have_name = true;
                }
                if (colon && colon + 1 < end) {
                        if (set_item(w, env, k[K_SERVER_PORT], colon + 1,
                                     (size_t) (end - colon - 1)) < 0)
                                goto fail;
                        have_port = true;
                }
        }
        if (!have_name || !have_port) {
                char p[8];
                local_addr(c, host, sizeof(host), &port);
                int n = snprintf(p, sizeof(p), "%u", port);
                if ((!have_name && set_item(w, env, k[K_SERVER_NAME], host, strlen(host)) < 0) ||
                    (!have_port && set_item(w, env, k[K_SERVER_PORT], p, (size_t) n) < 0))
                        goto fail;
        }
        addr_text(&c->peer, host, sizeof(host), &port);
        if (host[0]) {
                char p[8];
                int n = snprintf(p, sizeof(p), "%u", port);
                if (set_item(w, env, k[K_REMOTE_ADDR], host, strlen(host)) < 0 ||
                    set_item(w, env, k[K_REMOTE_PORT], p, (size_t) n) < 0)
                        goto fail;
        }
        if (set_common(w, env, k[K_V_HTTP], input) < 0)
                goto fail;
        return env;
fail:
        Py_DECREF(env);
        return NULL;
}

static bool span_is_on(struct span s)
{
        return s.ptr && (span_eq_case(s, "on") || span_eq(s, "1"));
}

static PyObject *environ_uwsgi(struct worker *w, struct wsgi_conn *c,
                               const struct uwsgi_request *ur, PyObject *input)
{
        const struct wsgi_py *py = w->py;
        PyObject *const *k = py->keys;
        PyObject *env = PyDict_New();   /* owned until returned */
        PyObject *scheme = k[K_V_HTTP]; /* borrowed */
        PyObject *made = NULL;          /* owned: a scheme from UWSGI_SCHEME */

        if (!env)
                return NULL;
        for (size_t i = 0; i < ur->n_vars; i++) {
                const struct uwsgi_var *v = &ur->vars[i];
                /* PEP 3333: these are CONTENT_TYPE/CONTENT_LENGTH only, never twice. */
                if (span_eq(v->key, "HTTP_CONTENT_TYPE") || span_eq(v->key, "HTTP_CONTENT_LENGTH"))
                        continue;
                PyObject *key = known_key(py, v->key.ptr, v->key.len); /* borrowed */
                PyObject *own = NULL;                                  /* owned */
                if (!key) {
                        own = PyUnicode_DecodeLatin1(v->key.ptr, (Py_ssize_t) v->key.len, NULL);
                        if (!own)
                                goto fail;
                        key = own;
                }
                int r;
                if (v->key.len > 5 && memcmp(v->key.ptr, "HTTP_", 5) == 0)
                        r = set_or_join(w, env, key, v->value.ptr, v->value.len,
                                        key == k[K_HTTP_COOKIE]);
                else
                        r = set_item(w, env, key, v->value.ptr, v->value.len);
                Py_XDECREF(own);
                if (r < 0)
                        goto fail;
        }
        /* What PEP 3333 requires and nginx's uwsgi_params may leave out. */
        static const enum wsgi_key must[] = {K_SCRIPT_NAME, K_PATH_INFO, K_QUERY_STRING};
        for (size_t i = 0; i < ARRAY_SIZE(must); i++)
                if (PyDict_SetDefault(env, k[must[i]], k[K_V_EMPTY]) == NULL)
                        goto fail;
        if (PyDict_SetDefault(env, k[K_REQUEST_METHOD], k[K_V_GET]) == NULL ||
            PyDict_SetDefault(env, k[K_SERVER_PROTOCOL], k[K_V_HTTP10]) == NULL)
                goto fail;
        if (!PyDict_GetItemWithError(env, k[K_SERVER_NAME]) ||
            !PyDict_GetItemWithError(env, k[K_SERVER_PORT])) {
                char host[INET6_ADDRSTRLEN + 8], p[8];
                unsigned port;
                if (PyErr_Occurred())
                        goto fail;
                local_addr(c, host, sizeof(host), &port);
                snprintf(p, sizeof(p), "%u", port);
                PyObject *hv = PyUnicode_FromString(host), *pv = PyUnicode_FromString(p);
                int bad = !hv || !pv || !PyDict_SetDefault(env, k[K_SERVER_NAME], hv) ||
                          !PyDict_SetDefault(env, k[K_SERVER_PORT], pv);
                Py_XDECREF(hv);
                Py_XDECREF(pv);
                if (bad)
                        goto fail;
        }
        /* The scheme: UWSGI_SCHEME, else HTTPS=on, else REQUEST_SCHEME. Never code-loading vars. */
        struct span us = uwsgi_get(ur, "UWSGI_SCHEME");
        struct span rs = uwsgi_get(ur, "REQUEST_SCHEME");
        if (us.ptr && us.len > 0) {
                made = PyUnicode_DecodeLatin1(us.ptr, (Py_ssize_t) us.len, NULL);
                if (!made)
                        goto fail;
                scheme = made;
        } else if (span_is_on(uwsgi_get(ur, "HTTPS")) || (rs.ptr && span_eq(rs, "https"))) {
                scheme = k[K_V_HTTPS];
        }
        if (set_common(w, env, scheme, input) < 0)
                goto fail;
        Py_XDECREF(made);
        return env;
fail:
        Py_XDECREF(made);
        Py_DECREF(env);
        return NULL;
}

/* ---- one request ---- */

enum outcome {
        OUT_DONE,  /* response complete; the connection may go on (HTTP keep-alive) */
        OUT_CLOSE, /* response complete; close the connection */
        OUT_ABORT, /* response broken: reset the connection so the peer sees it */
};

static void abort_conn(struct wsgi_conn *c)
{
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        /* A reset, not a FIN: the peer must not take a truncated body for a whole one. */
        (void) setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/*
 * How to end a response that broke after its head went out: an HTTP body
 * that is framed (chunked, or a Content-Length) is visibly incomplete when
 * the connection just closes, and the client keeps what it got; anything
 * else (uwsgi, where nginx takes a close for the end) needs a reset.
 */
static enum outcome broken(const struct wsgi_req *req)
{
        if (req->c->framed && (req->chunked || req->content_length >= 0))
                return OUT_CLOSE;
        return OUT_ABORT;
}

static void call_close(const struct wsgi_py *py, PyObject *result, const char *desc)
{
        /* A list or tuple has none: asking would raise and drop an AttributeError. */
        if (PyList_CheckExact(result) || PyTuple_CheckExact(result))
                return;
        PyObject *close = PyObject_GetAttrString(result, "close"); /* owned */
        if (!close) {
                PyErr_Clear();
                return;
        }
        PyObject *r = PyObject_CallNoArgs(close); /* owned */
        Py_DECREF(close);
        if (!r) {
                char what[WSGI_REQUEST_DESC + 64];
                snprintf(what, sizeof(what), "%s: exception in close() of the response", desc);
                wsgi_python_log_exception(py, what);
        }
        Py_XDECREF(r);
}

/* Calls the application and sends its response. GIL held. */
static enum outcome run_app(struct worker *w, struct wsgi_req *req, PyObject *env, const char *desc)
{
        const struct wsgi_py *py = w->py;
        PyObject *args[2] = {env, w->objs.start};
        PyObject *result;                             /* owned */
        PyObject *et = NULL, *ev = NULL, *etb = NULL; /* owned: the application's exception */
        int r;

        result = PyObject_Vectorcall(py->app, args, 2, NULL);
        if (!result) {
                r = -EINVAL;
        } else {
                PyObject *filelike = wsgi_file_wrapper_filelike(py, result); /* borrowed */
                r = 1;
                if (filelike && req->status)
                        r = send_file(req, filelike);
                if (r == 1 && (PyList_CheckExact(result) || PyTuple_CheckExact(result)))
                        r = send_sequence(req, result);
                else if (r == 1)
                        r = send_iterable(req, result);
                /* close() runs whatever happened, with the exception (if any) set aside. */
                PyErr_Fetch(&et, &ev, &etb);
                call_close(py, result, desc);
                PyErr_Restore(et, ev, etb);
                Py_DECREF(result);
        }

        if (PyErr_Occurred()) {
                char what[WSGI_REQUEST_DESC + 64];
                if (req->io_error) {
                        PyErr_Clear();
                        log_info("%s: the client went away", desc);
                        return OUT_ABORT;
                }
                snprintf(what, sizeof(what), "%s: exception in the application", desc);
                wsgi_python_log_exception(py, what);
                if (req->head_sent)
                        return broken(req);
                /* Nothing went out yet: a clean 500 (never an empty 200). */
                char head[256];
                int n = snprintf(head, sizeof(head),
                                 "HTTP/1.%d 500 Internal Server Error\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "Content-Length: %zu\r\n%s\r\n",
                                 req->minor_version, sizeof(error_500) - 1,
                                 req->c->framed ? "Connection: close\r\n" : "");
                struct iovec iov[2] = {
                    {head, (size_t) n},
                    {(char *) error_500, req->head_only ? 0 : sizeof(error_500) - 1}};
                req->status_code = 500;
                (void) send_all(req, iov, 2);
                return OUT_CLOSE;
        }
        if (r < 0) {
                log_info("%s: the client went away (%s)", desc, strerror(-r));
                return OUT_ABORT;
        }
        if (!req->head_sent) {
                /* An empty body: send the head now. */
                if (!req->status) {
                        PyErr_SetString(PyExc_RuntimeError, "start_response() was not called");
                        char what[WSGI_REQUEST_DESC + 64];
                        snprintf(what, sizeof(what), "%s: application error", desc);
                        wsgi_python_log_exception(py, what);
                        return OUT_ABORT;
                }
                if (send_body(req, NULL, 0, 0) < 0)
                        return OUT_ABORT;
        }
        if (req->chunked && !req->head_only) {
                struct iovec end = {(char *) "0\r\n\r\n", 5};
                if (send_all(req, &end, 1) < 0)
                        return OUT_ABORT;
        }
        if (req->content_length >= 0 && !req->head_only && status_has_body(req->status_code) &&
            req->body_sent < (uint64_t) req->content_length) {
                log_error("%s: the application sent %llu of %lld bytes it declared", desc,
                          (unsigned long long) req->body_sent, (long long) req->content_length);
                return broken(req);
        }
        return req->keep_alive ? OUT_DONE : OUT_CLOSE;
}

/* Reads and throws away the body the application left, within the timeout. */
static int drain_body(struct wsgi_req *req)
{
        char scratch[DRAIN_CHUNK];
        struct wsgi_conn *c = req->c;
        int timeout = c->timeout_ms;
        uint64_t deadline = now_ms() + (uint64_t) timeout;
        int r = 0;

        /*
         * One socket timeout for the whole body, not for each read: a client
         * trickling a huge body must not hold the worker for ever.
         */
        req->body_pos = req->body_end;
        while (req->body_left > 0) {
                uint64_t now = now_ms();
                if (now >= deadline) {
                        r = -ETIMEDOUT;
                        break;
                }
                c->timeout_ms = (int) (deadline - now);
                ssize_t n = wsgi_conn_recv(c, scratch, min_size(sizeof(scratch), req->body_left));
                if (n <= 0) {
                        r = n == 0 ? -ECONNRESET : (int) n;
                        break;
                }
                req->body_left -= (uint64_t) n;
        }
        c->timeout_ms = timeout;
        return r;
}

static void slot_begin(struct worker *w, const char *desc)
{
        if (!w->status)
                return;
        size_t n = strnlen(desc, sizeof(w->status->request) - 1);
        memcpy(w->status->request, desc, n);
        w->status->request[n] = '\0';
        atomic_store(&w->status->request_ms, now_ms());
        atomic_store(&w->status->busy, 1);
}

static void slot_end(struct worker *w)
{
        uint64_t served = atomic_fetch_add(&w->g->served, 1) + 1;
        unsigned max = w->slot ? w->slot->max_requests : w->srv->s->max_requests;

        if (max && served >= max && !atomic_exchange(&w->g->recycle, true))
                log_info("worker %d: %llu requests served (max-requests), recycling",
                         (int) getpid(), (unsigned long long) served);
        /* Only thread 0 talks to systemd: struct notify is not shared. */
        if (w->srv->notify && w->index == 0)
                (void) notify_tick(w->srv->notify, now_us());
        if (!w->status)
                return;
        atomic_store(&w->status->busy, 0);
        atomic_fetch_add(&w->slot->requests, 1);
}

/* A short error response for a request that never reached the application. */
static void reply_error(struct wsgi_conn *c, int status, int minor)
{
        char buf[1024];
        struct http_writer wr;
        http_writer_init(&wr, buf, sizeof(buf));
        ssize_t n = http_write_error(&wr, minor, status, false, NULL, NULL, NULL, false);
        if (n > 0)
                (void) send(c->fd, buf, (size_t) n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* A failure to read a body whole: the client's, or ours (then it hears 500). */
static void spool_failed(struct wsgi_conn *c, int r, int minor, const char *desc)
{
        if (r == -ECONNRESET || r == -ETIMEDOUT || r == -EPIPE) {
                log_debug("%s: the client went away while sending the request body", desc);
                return;
        }
        log_error("%s: cannot keep the request body in a temporary file in %s: %s", desc,
                  getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", strerror(-r));
        reply_error(c, 500, minor);
}

/*
 * Serves one request whose head is parsed. Called without the GIL. spool is
 * a body already read whole (a chunked one), owned from here on, or NULL:
 * the body_len bytes after the head are the body.
 */
static enum outcome serve(struct worker *w, struct wsgi_conn *c, const struct http_request *hr,
                          const struct uwsgi_request *ur, size_t head_len, uint64_t body_len,
                          struct wsgi_spool *spool, int minor, bool head_only, bool keep_alive,
                          const char *desc)
{
        struct wsgi_req req = {
            .c = c,
            .py = w->py,
            .minor_version = minor,
            .head_only = head_only,
            .keep_alive = keep_alive,
            .content_length = -1,
        };
        enum outcome out;
        PyObject *env = NULL; /* owned */
        struct wsgi_spool own;
        int64_t decoded_length = -1;

        wsgi_spool_init(&own, w->srv->s->post_buffering);
        if (!spool && w->srv->s->post_buffering > 0 && body_len > c->len - head_len) {
                int r = wsgi_spool_body(c, head_len, body_len, &own);
                if (r < 0) {
                        wsgi_spool_done(&own);
                        spool_failed(c, r, minor, desc);
                        return OUT_CLOSE;
                }
                spool = &own;
        } else if (spool) {
                decoded_length = (int64_t) spool->size;
        }

        if (!spool) {
                req.body_buf = c->buf;
                req.body_pos = head_len;
                req.body_end = head_len + (size_t) min_u64(body_len, c->len - head_len);
                req.body_left = body_len - (req.body_end - head_len);
        } else if (spool->fd < 0) {
                /* In memory: all of it is buffered, read with no copy. */
                req.spool = spool;
                req.body_buf = spool->mem;
                req.body_end = spool->mem_len;
        } else {
                req.spool = spool;
                req.body_buf = spool->rbuf;
                req.body_left = spool->size;
        }

        slot_begin(w, desc);
        PyEval_RestoreThread(w->ts);
        if (wsgi_req_objects_bind(&w->objs, w->py, &req) < 0) {
                out = OUT_ABORT;
        } else {
                env = hr ? environ_http(w, c, hr, decoded_length, w->objs.input)
                         : environ_uwsgi(w, c, ur, w->objs.input);
                if (!env) {
                        wsgi_python_log_exception(w->py, "cannot build the environ");
                        out = OUT_ABORT;
                } else {
                        out = run_app(w, &req, env, desc);
                }
        }
        Py_XDECREF(env);
        wsgi_req_objects_unbind(&w->objs);
        Py_CLEAR(req.status);
        Py_CLEAR(req.headers);
        w->ts = PyEval_SaveThread();
        slot_end(w);

        if (req.spool)
                wsgi_spool_done(req.spool);
        if (out == OUT_ABORT) {
                abort_conn(c);
                return OUT_ABORT;
        }
        /* Unread body: read it away so the peer gets its response without a reset. */
        if (!req.spool && (req.body_pos < req.body_end || req.body_left > 0)) {
                if (drain_body(&req) < 0)
                        return OUT_CLOSE;
        }
        /*
         * What follows this request in the buffer (pipelining) moves to the
         * front. A body read whole beforehand has left c->buf already.
         */
        size_t end = req.spool ? head_len : req.body_end;
        if (end < c->len && out == OUT_DONE) {
                memmove(c->buf, c->buf + end, c->len - end);
                c->len -= end;
        } else {
                c->len = 0;
        }
        return out;
}

static void describe(char *out, size_t size, struct span method, struct span target)
{
        size_t m = min_size(min_size(method.len, 16), size - 1);
        size_t t = min_size(target.len, size - 1 - m - (m < size - 1));

        if (m > 0)
                memcpy(out, method.ptr, m);
        if (m < size - 1)
                out[m++] = ' ';
        if (t > 0)
                memcpy(out + m, target.ptr, t);
        out[m + t] = '\0';
}

/*
 * poll() on the first nfds entries of w->pfds (the wake eventfd among them)
 * for at most max_ms. The thread that feeds the watchdog (thread 0 without a
 * master) wakes in time for it. Returns poll()'s count (0: the time is up),
 * or -errno.
 */
static int idle_poll(struct worker *w, size_t nfds, uint64_t max_ms)
{
        struct notify *n = w->index == 0 ? w->srv->notify : NULL;
        uint64_t ms = min_u64(max_ms, INT_MAX);
        int r = 0, e = 0;

        if (n)
                ms = min_u64(ms, notify_next_due(n, now_us()) / 1000 + 1);
        for (size_t i = 0; i < nfds; i++)
                w->pfds[i].revents = 0;
        if (!stop_requested(w)) {
                r = poll(w->pfds, nfds, (int) ms);
                e = errno;
        }
        if (n)
                (void) notify_tick(n, now_us());
        return r < 0 ? -e : r;
}

/*
 * Waits for the next request on a keep-alive connection, at most
 * KEEPALIVE_MS. The wait gives way to a stop request and to another client
 * waiting on a listener: an idle connection must not hold the worker.
 * Returns 0 when the connection has bytes, -ETIMEDOUT when it should close.
 */
static int wait_next_request(struct worker *w, struct wsgi_conn *c)
{
        size_t n = w->n_listeners + 1; /* the listeners and the wake eventfd */
        uint64_t deadline = now_ms() + KEEPALIVE_MS;

        w->pfds[n] = (struct pollfd){.fd = c->fd, .events = POLLIN};
        for (;;) {
                uint64_t now = now_ms();
                if (now >= deadline || stop_requested(w))
                        return -ETIMEDOUT;
                int r = idle_poll(w, n + 1, deadline - now);
                if (r < 0 && r != -EINTR)
                        return r;
                if (w->pfds[n].revents)
                        return 0;
                if (r > 0)
                        return -ETIMEDOUT; /* someone else waits: close this idle connection */
        }
}

static void serve_http(struct worker *w, struct wsgi_conn *c)
{
        struct http_request hr;
        char desc[WSGI_REQUEST_DESC];

        for (bool first = true;; first = false) {
                ssize_t head;
                for (;;) {
                        head = c->len ? http_parse_request(c->buf, c->len, c->cap, &hr) : -EAGAIN;
                        if (head != -EAGAIN)
                                break;
                        if (c->len == c->cap) {
                                head = -E2BIG;
                                break;
                        }
                        /* Between requests the wait gives way to a stop or another client. */
                        if (!first && c->len == 0 && wait_next_request(w, c) < 0)
                                return;
                        ssize_t n = wsgi_conn_recv(c, c->buf + c->len, c->cap - c->len);
                        if (n <= 0)
                                return;
                        c->len += (size_t) n;
                }
                if (head < 0) {
                        reply_error(c, http_status_from_errno((int) head), 1);
                        return;
                }
                uint64_t body = hr.body == HTTP_BODY_LENGTH ? hr.content_length : 0;
                uint64_t limit = w->srv->s->limit_post;
                if (limit > 0 && body > limit) {
                        reply_error(c, 413, hr.minor_version);
                        return;
                }
                bool chunked = hr.body == HTTP_BODY_CHUNKED;
                if (hr.expect_continue && (chunked || body > c->len - (size_t) head)) {
                        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                        (void) send(c->fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
                }
                describe(desc, sizeof(desc), hr.method_name, hr.target);
                bool keep_alive = hr.keep_alive && !stop_requested(w);
                struct wsgi_spool spool;
                if (chunked) {
                        /*
                         * PEP 3333 gives an application a body of known length:
                         * it is decoded whole first, as nginx does before
                         * uwsgi_pass, and CONTENT_LENGTH is its decoded size.
                         */
                        ssize_t r =
                            wsgi_read_chunked(c, (size_t) head, w->srv->s, &spool, &keep_alive);
                        if (r < 0) {
                                wsgi_spool_done(&spool);
                                if (r == -EBADMSG || r == -EFBIG)
                                        reply_error(c, r == -EBADMSG ? 400 : 413, hr.minor_version);
                                else
                                        spool_failed(c, (int) r, hr.minor_version, desc);
                                return;
                        }
                }
                enum outcome o =
                    serve(w, c, &hr, NULL, (size_t) head, body, chunked ? &spool : NULL,
                          hr.minor_version, hr.method == HTTP_HEAD, keep_alive, desc);
                if (o != OUT_DONE || stop_requested(w))
                        return;
        }
}

/*
 * One uwsgi request per connection, as the protocol has it, unless the
 * front sent WHARF_KEEPALIVE=1 (wharf-proxy does): then the response is
 * framed, says "Connection: keep-alive", and the next packet may follow on
 * the same connection. nginx and other fronts never send it and see plain
 * uwsgi. Returns true when the connection stays open for the next request
 * (the serving loop keeps it among its idle connections).
 */
static bool serve_uwsgi(struct worker *w, struct wsgi_conn *c)
{
        struct uwsgi_request ur;
        char desc[WSGI_REQUEST_DESC];
        ssize_t head;

        for (bool first = true;; first = false) {
                for (;;) {
                        head = c->len ? uwsgi_parse_request(c->buf, c->len, &ur) : -EAGAIN;
                        if (head != -EAGAIN)
                                break;
                        if (c->len == c->cap) {
                                log_warning("uwsgi packet larger than buffer-size (%zu bytes)",
                                            c->cap);
                                return false;
                        }
                        /* Between requests: the serving loop watches the connection. */
                        if (!first && c->len == 0)
                                return true;
                        ssize_t n = wsgi_conn_recv(c, c->buf + c->len, c->cap - c->len);
                        if (n <= 0)
                                return false;
                        c->len += (size_t) n;
                }
                if (head < 0) {
                        log_warning("malformed uwsgi packet: %s", strerror((int) -head));
                        return false;
                }
                if (ur.modifier1 == UWSGI_MOD_PING) {
                        static const char pong[4] = {UWSGI_MOD_PING, 0, 0, 0};
                        (void) send(c->fd, pong, sizeof(pong), MSG_NOSIGNAL | MSG_DONTWAIT);
                        return false;
                }
                if (ur.modifier1 != UWSGI_MOD_WSGI) {
                        log_warning("uwsgi modifier1 %u is not served (only 0, WSGI)",
                                    ur.modifier1);
                        return false;
                }

                uint64_t body = 0;
                struct span cl = uwsgi_get(&ur, "CONTENT_LENGTH");
                for (size_t i = 0; cl.ptr && i < cl.len; i++) {
                        if (cl.ptr[i] < '0' || cl.ptr[i] > '9' || body > UINT64_MAX / 10 - 10) {
                                reply_error(c, 400, 1);
                                return false;
                        }
                        body = body * 10 + (uint64_t) (cl.ptr[i] - '0');
                }
                if (w->srv->s->limit_post > 0 && body > w->srv->s->limit_post) {
                        reply_error(c, 413, 1);
                        return false;
                }
                struct span method = uwsgi_get(&ur, "REQUEST_METHOD");
                struct span uri = uwsgi_get(&ur, "REQUEST_URI");
                if (!uri.ptr)
                        uri = uwsgi_get(&ur, "PATH_INFO");
                struct span proto = uwsgi_get(&ur, "SERVER_PROTOCOL");
                struct span ka = uwsgi_get(&ur, "WHARF_KEEPALIVE");
                c->framed = ka.ptr && span_eq(ka, "1");
                describe(desc, sizeof(desc), method.ptr ? method : span_from_str("GET"),
                         uri.ptr ? uri : span_from_str("/"));
                enum outcome o = serve(w, c, NULL, &ur, (size_t) head, body, NULL,
                                       proto.ptr && span_eq(proto, "HTTP/1.0") ? 0 : 1,
                                       method.ptr && span_eq(method, "HEAD"),
                                       c->framed && !stop_requested(w), desc);
                if (o != OUT_DONE || !c->framed || stop_requested(w))
                        return false;
        }
}

/* Accepts one connection from any listener. Returns its fd, or -EAGAIN if none waits. */
static int accept_one(struct worker *w, struct wsgi_conn *c)
{
        for (size_t i = 0; i < w->n_listeners; i++) {
                size_t j = (w->next_listener + i) % w->n_listeners;
                const struct wsgi_listener *l = &w->srv->listeners[j];
                c->peer_len = sizeof(c->peer);
                int fd = accept4(l->l.fd, (struct sockaddr *) &c->peer, &c->peer_len,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd >= 0) {
                        w->next_listener = j + 1;
                        c->proto = l->proto;
                        return fd;
                }
                if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                        log_warning("accept on '%s': %m", l->l.name);
        }
        return -EAGAIN;
}

/*
 * Keeps fd for its front's next request. A full set gives up the connection
 * kept longest instead: the newest is the one a front is using now, and an
 * old one may belong to a front that went (a wharf-proxy reloaded, or one of
 * two). Refusing the newest would make a busy front open a connection for
 * every request while idle ones sat here for IDLE_MS.
 */
static void idle_keep(struct worker *w, int fd)
{
        if (stop_requested(w)) {
                (void) close(fd);
                return;
        }
        if (w->n_idle == IDLE_MAX) {
                (void) close(w->idle[0]);
                memmove(w->idle, w->idle + 1, (IDLE_MAX - 1) * sizeof(w->idle[0]));
                memmove(w->idle_until, w->idle_until + 1,
                        (IDLE_MAX - 1) * sizeof(w->idle_until[0]));
                w->n_idle--;
        }
        w->idle[w->n_idle] = fd;
        w->idle_until[w->n_idle++] = now_ms() + IDLE_MS;
}

static void idle_close_all(struct worker *w)
{
        while (w->n_idle > 0)
                (void) close(w->idle[--w->n_idle]);
}

/* A kept connection with input (or closed by the front): serve what it has. */
static void idle_serve(struct worker *w, int fd)
{
        struct wsgi_conn c = {
            .fd = fd,
            .proto = WSGI_PROTO_UWSGI,
            .framed = true,
            .buf = w->buf,
            .cap = w->cap,
            .timeout_ms = (int) w->srv->s->socket_timeout * 1000,
        };

        if (serve_uwsgi(w, &c))
                idle_keep(w, fd);
        else
                (void) close(fd);
}

/*
 * Waits for a new connection, a request on a kept one, or a stop (at most
 * until the next kept one expires; not at all with wait false), and serves
 * the kept connections that have a request; drops those unused too long.
 */
static void serve_idle(struct worker *w, bool wait)
{
        size_t base = w->n_listeners + 1, n = w->n_idle;
        uint64_t now = now_ms(), next = now + 1000;

        for (size_t i = 0; i < n; i++) {
                w->pfds[base + i] = (struct pollfd){.fd = w->idle[i], .events = POLLIN};
                next = min_u64(next, w->idle_until[i]);
        }
        (void) idle_poll(w, base + n, wait && next > now ? next - now : 0);
        now = now_ms();
        /* Taken out first: serving one may add it back at the end. */
        int ready[IDLE_MAX];
        size_t n_ready = 0, kept = 0;
        for (size_t i = 0; i < n; i++) {
                if (w->pfds[base + i].revents)
                        ready[n_ready++] = w->idle[i];
                else if (w->idle_until[i] <= now)
                        (void) close(w->idle[i]);
                else {
                        w->idle[kept] = w->idle[i];
                        w->idle_until[kept++] = w->idle_until[i];
                }
        }
        w->n_idle = kept;
        for (size_t i = 0; i < n_ready; i++) {
                if (stop_requested(w))
                        (void) close(ready[i]);
                else
                        idle_serve(w, ready[i]);
        }
}

/* The accept-and-serve loop of one thread. Called without the GIL. */
static void serve_loop(struct worker *w)
{
        for (;;) {
                struct wsgi_conn c = {
                    .buf = w->buf,
                    .cap = w->cap,
                    .timeout_ms = (int) w->srv->s->socket_timeout * 1000,
                };
                if (stop_requested(w))
                        break;
                c.fd = accept_one(w, &c);
                if (c.fd < 0) {
                        serve_idle(w, true);
                        continue;
                }
                c.framed = c.proto == WSGI_PROTO_HTTP;
                if (c.proto == WSGI_PROTO_HTTP) {
                        serve_http(w, &c);
                        (void) close(c.fd);
                } else if (serve_uwsgi(w, &c)) {
                        idle_keep(w, c.fd);
                } else {
                        (void) close(c.fd);
                }
                /*
                 * New connections must not starve the kept ones: while they
                 * keep coming, a request on a kept connection waits at most
                 * one accepted one, not until the queue is empty.
                 */
                if (w->n_idle > 0)
                        serve_idle(w, false);
        }
        idle_close_all(w);
}

/* Threads after the first get their own Python thread state. */
static void *thread_main(void *arg)
{
        struct worker *w = arg;
        PyGILState_STATE st = PyGILState_Ensure();

        w->ts = PyEval_SaveThread();
        serve_loop(w);
        PyEval_RestoreThread(w->ts);
        wsgi_req_objects_done(&w->objs);
        for (size_t i = 0; i < VCACHE_SLOTS; i++)
                Py_CLEAR(w->vcache[i]);
        PyGILState_Release(st);
        return NULL;
}

static int worker_init(struct worker *w, const struct wsgi_server *srv, const struct wsgi_py *py,
                       struct worker_group *g, struct wsgi_slot *slot, unsigned index)
{
        *w = (struct worker){
            .srv = srv,
            .py = py,
            .g = g,
            .slot = slot,
            .status = slot ? &slot->t[index] : NULL,
            .index = index,
            .n_listeners = srv->n_listeners,
            .cap = srv->s->buffer_size,
        };
        w->buf = malloc(w->cap);
        w->pfds = calloc(w->n_listeners + 2 + IDLE_MAX, sizeof(*w->pfds));
        if (!w->buf || !w->pfds)
                return -ENOMEM;
        for (size_t i = 0; i < w->n_listeners; i++)
                w->pfds[i] = (struct pollfd){.fd = srv->listeners[i].l.fd, .events = POLLIN};
        w->pfds[w->n_listeners] = (struct pollfd){.fd = g->wake_fd, .events = POLLIN};
        return 0;
}

/*
 * The worker's signal thread. A handler in a serving thread would not do: a
 * busy thread takes a new connection whenever one waits and never sleeps
 * where a blocked signal could reach it, so under steady load an old worker
 * of a reload would keep serving the old code.
 */
static void *signal_main(void *arg)
{
        struct worker *w = arg;

        for (;;) {
                int sig = sigwaitinfo(&w->g->sigs, NULL);
                if (sig > 0) {
                        w->srv->sig.handle(sig);
                        (void) stop_requested(w); /* wakes the idle threads */
                }
        }
        return NULL;
}

/* Blocks the signals in this thread (and so in every thread it starts), and starts the signal
 * thread. */
static int signals_start(struct worker *w0, sigset_t *old)
{
        struct worker_group *g = w0->g;

        sigemptyset(&g->sigs);
        sigaddset(&g->sigs, SIGTERM);
        sigaddset(&g->sigs, SIGINT);
        sigaddset(&g->sigs, SIGHUP);
        (void) pthread_sigmask(SIG_BLOCK, &g->sigs, old);
        int r = -pthread_create(&g->sig_thread, NULL, signal_main, w0);
        if (r < 0) {
                (void) pthread_sigmask(SIG_SETMASK, old, NULL);
                return log_errno(r, "worker: cannot start the signal thread: %m");
        }
        return 0;
}

/* A signal that comes after this goes to main.c's handler: the flags stay right. */
static void signals_stop(struct worker_group *g, const sigset_t *old)
{
        (void) pthread_cancel(g->sig_thread);
        (void) pthread_join(g->sig_thread, NULL);
        (void) pthread_sigmask(SIG_SETMASK, old, NULL);
}

int wsgi_worker_run(const struct wsgi_server *srv, const struct wsgi_py *py, struct wsgi_slot *slot)
{
        sigset_t old_mask;
        struct worker_group g = {.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
        unsigned n = srv->s->threads, started = 1;
        struct worker *w;
        int r = 0;

        if (g.wake_fd < 0)
                return log_errno(-errno, "worker: eventfd: %m");
        w = calloc(n, sizeof(*w));
        if (!w) {
                (void) close(g.wake_fd);
                return log_errno(-ENOMEM, "worker: out of memory");
        }
        for (unsigned i = 0; i < n && r == 0; i++)
                r = worker_init(&w[i], srv, py, &g, slot, i);
        if (r < 0) {
                log_errno(r, "worker: out of memory");
                goto done;
        }
        r = signals_start(&w[0], &old_mask);
        if (r < 0)
                goto done;
        if (slot)
                atomic_store(&slot->ready, 1);

        /* The GIL is held only while a request runs Python code. */
        w[0].ts = PyEval_SaveThread();
        for (; started < n; started++) {
                r = -pthread_create(&w[started].thread, NULL, thread_main, &w[started]);
                if (r < 0) {
                        log_errno(r, "worker: cannot start thread %u: %m", started);
                        *srv->sig.stop = 1;
                        break;
                }
        }
        if (r == 0)
                serve_loop(&w[0]);
        else
                (void) stop_requested(&w[0]); /* wakes the threads that did start */
        for (unsigned i = 1; i < started; i++)
                (void) pthread_join(w[i].thread, NULL);
        PyEval_RestoreThread(w[0].ts);
        wsgi_req_objects_done(&w[0].objs);
        for (size_t i = 0; i < VCACHE_SLOTS; i++)
                Py_CLEAR(w[0].vcache[i]);
        signals_stop(&g, &old_mask);
done:
        for (unsigned i = 0; i < n; i++) {
                free(w[i].buf);
                free(w[i].pfds);
        }
        free(w);
        (void) close(g.wake_fd);
        return r;
}
