/* SPDX-License-Identifier: MIT */
/*
 * wsgi_types: the small C types of the request path, made with
 * PyType_FromSpec: wsgi.input, start_response, the write() callable it
 * returns, wsgi.errors and wsgi.file_wrapper.
 *
 * The per-request objects point at the struct wsgi_req of the request being
 * served and are reused from one request to the next, so a hello-world
 * request allocates none of them. When a request ends they are detached
 * (req = NULL, and a call then raises); one that the application kept a
 * reference to is dropped and a fresh one made for the next request, so an
 * old reference can never reach a later request.
 */
#include <stdio.h>

#include "wsgi.h"

#define ERRORS_LINE_MAX 4096

struct input_obj {
        PyObject_HEAD struct wsgi_req *req; /* borrowed; NULL once the request is over */
};

struct start_obj {
        PyObject_HEAD struct wsgi_req *req; /* borrowed */
        PyObject *write;                    /* owned: returned by every call */
};

struct write_obj {
        PyObject_HEAD struct wsgi_req *req; /* borrowed */
};

struct errors_obj {
        PyObject_HEAD size_t len;
        char line[ERRORS_LINE_MAX];
};

struct file_wrapper_obj {
        PyObject_HEAD PyObject *filelike; /* owned */
        Py_ssize_t blksize;
};

static void plain_dealloc(PyObject *self)
{
        PyTypeObject *tp = Py_TYPE(self);
        PyObject_Free(self);
        Py_DECREF(tp);
}

static struct wsgi_req *req_or_raise(struct wsgi_req *req)
{
        if (!req)
                PyErr_SetString(PyExc_ValueError, "the request this object belongs to is over");
        return req;
}

/* ---- wsgi.input ---- */

static PyObject *body_error(void)
{
        PyErr_SetString(PyExc_OSError, "the client went away while sending the request body");
        return NULL;
}

static Py_ssize_t size_arg(PyObject *const *args, Py_ssize_t nargs, bool *ok)
{
        *ok = true;
        if (nargs == 0 || args[0] == Py_None)
                return -1;
        Py_ssize_t n = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
        if (n == -1 && PyErr_Occurred())
                *ok = false;
        return n;
}

static PyObject *input_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
        struct wsgi_req *req = req_or_raise(((struct input_obj *) self)->req);
        PyObject *out; /* owned until returned */
        uint64_t avail;
        Py_ssize_t want, got = 0;
        bool ok;

        if (!req)
                return NULL;
        if (nargs > 1)
                return PyErr_Format(PyExc_TypeError, "read() takes at most 1 argument");
        want = size_arg(args, nargs, &ok);
        if (!ok)
                return NULL;
        avail = (req->body_end - req->body_pos) + req->body_left;
        if (want < 0 || (uint64_t) want > avail)
                want = avail > PY_SSIZE_T_MAX ? PY_SSIZE_T_MAX : (Py_ssize_t) avail;
        out = PyBytes_FromStringAndSize(NULL, want);
        if (!out)
                return NULL;
        while (got < want) {
                ssize_t n =
                    wsgi_req_read_body(req, PyBytes_AS_STRING(out) + got, (size_t) (want - got));
                if (n <= 0) {
                        Py_DECREF(out);
                        return body_error();
                }
                got += n;
        }
        return out;
}

static PyObject *input_readline(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
        struct wsgi_req *req = req_or_raise(((struct input_obj *) self)->req);
        PyObject *out = NULL; /* owned until returned */
        Py_ssize_t limit, have = 0;
        bool ok;

        if (!req)
                return NULL;
        if (nargs > 1)
                return PyErr_Format(PyExc_TypeError, "readline() takes at most 1 argument");
        limit = size_arg(args, nargs, &ok);
        if (!ok)
                return NULL;
        out = PyBytes_FromStringAndSize(NULL, 0);
        if (!out)
                return NULL;
        for (;;) {
                if (limit >= 0 && have >= limit)
                        break;
                if (req->body_pos == req->body_end) {
                        if (req->body_left == 0)
                                break;
                        ssize_t n = wsgi_req_fill_body(req);
                        if (n <= 0) {
                                Py_DECREF(out);
                                return body_error();
                        }
                }
                const char *p = req->body_buf + req->body_pos;
                size_t n = req->body_end - req->body_pos;
                if (limit >= 0 && n > (size_t) (limit - have))
                        n = (size_t) (limit - have);
                const char *nl = memchr(p, '\n', n);
                if (nl)
                        n = (size_t) (nl - p) + 1;
                if (_PyBytes_Resize(&out, have + (Py_ssize_t) n) < 0)
                        return NULL;
                memcpy(PyBytes_AS_STRING(out) + have, p, n);
                have += (Py_ssize_t) n;
                req->body_pos += n;
                if (nl)
                        break;
        }
        return out;
}

static PyObject *input_readlines(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
        PyObject *lines = NULL; /* owned until returned */
        Py_ssize_t hint, total = 0;
        bool ok;

        if (nargs > 1)
                return PyErr_Format(PyExc_TypeError, "readlines() takes at most 1 argument");
        hint = size_arg(args, nargs, &ok);
        if (!ok)
                return NULL;
        lines = PyList_New(0);
        if (!lines)
                return NULL;
        for (;;) {
                PyObject *line = input_readline(self, NULL, 0); /* owned */
                if (!line) {
                        Py_DECREF(lines);
                        return NULL;
                }
                if (PyBytes_GET_SIZE(line) == 0) {
                        Py_DECREF(line);
                        break;
                }
                total += PyBytes_GET_SIZE(line);
                int r = PyList_Append(lines, line);
                Py_DECREF(line);
                if (r < 0) {
                        Py_DECREF(lines);
                        return NULL;
                }
                if (hint > 0 && total >= hint)
                        break;
        }
        return lines;
}

static PyObject *input_iternext(PyObject *self)
{
        PyObject *line = input_readline(self, NULL, 0); /* owned */
        if (line && PyBytes_GET_SIZE(line) == 0) {
                Py_DECREF(line);
                return NULL; /* StopIteration */
        }
        return line;
}

static PyMethodDef input_methods[] = {
    {"read", (PyCFunction) (void (*)(void)) input_read, METH_FASTCALL, NULL},
    {"readline", (PyCFunction) (void (*)(void)) input_readline, METH_FASTCALL, NULL},
    {"readlines", (PyCFunction) (void (*)(void)) input_readlines, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot input_slots[] = {
    {Py_tp_dealloc, plain_dealloc},
    {Py_tp_methods, input_methods},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, input_iternext},
    {0, NULL},
};

static PyType_Spec input_spec = {
    .name = "wharf_wsgi.Input",
    .basicsize = sizeof(struct input_obj),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = input_slots,
};

/* ---- start_response and write ---- */

/* "200 OK": three digits, a space, a reason without control characters. */
static int parse_status(PyObject *status)
{
        Py_ssize_t len;
        const char *s;

        if (!PyUnicode_Check(status))
                return -1;
        s = PyUnicode_AsUTF8AndSize(status, &len);
        if (!s) {
                PyErr_Clear();
                return -1;
        }
        if (len < 4 || s[3] != ' ' || s[0] < '1' || s[0] > '5' || s[1] < '0' || s[1] > '9' ||
            s[2] < '0' || s[2] > '9')
                return -1;
        for (Py_ssize_t i = 0; i < len; i++)
                if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
                        return -1;
        return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
}

static bool header_text_ok(PyObject *o, bool is_name)
{
        Py_ssize_t len;

        if (!PyUnicode_Check(o) || PyUnicode_KIND(o) != PyUnicode_1BYTE_KIND)
                return false;
        const unsigned char *s = PyUnicode_1BYTE_DATA(o);
        len = PyUnicode_GET_LENGTH(o);
        if (is_name && len == 0)
                return false;
        for (Py_ssize_t i = 0; i < len; i++) {
                if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
                        return false;
                if (is_name && (s[i] <= ' ' || s[i] == ':' || s[i] >= 0x7f))
                        return false;
        }
        return true;
}

/* Checks the header list and finds Content-Length. Returns 0 or -1 with an exception. */
static int check_headers(PyObject *headers, int64_t *ret_length)
{
        int64_t length = -1;

        if (!PyList_Check(headers)) {
                PyErr_SetString(PyExc_TypeError, "response headers must be a list");
                return -1;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
                PyObject *h = PyList_GET_ITEM(headers, i); /* borrowed */
                if (!PyTuple_Check(h) || PyTuple_GET_SIZE(h) != 2 ||
                    !header_text_ok(PyTuple_GET_ITEM(h, 0), true) ||
                    !header_text_ok(PyTuple_GET_ITEM(h, 1), false)) {
                        PyErr_Format(PyExc_ValueError,
                                     "response header %zd is not a (name, value) pair of "
                                     "latin-1 str without control characters",
                                     i);
                        return -1;
                }
                PyObject *name = PyTuple_GET_ITEM(h, 0); /* borrowed */
                if (PyUnicode_GET_LENGTH(name) == 14 &&
                    strcasecmp((const char *) PyUnicode_1BYTE_DATA(name), "content-length") == 0) {
                        const char *v = (const char *) PyUnicode_1BYTE_DATA(PyTuple_GET_ITEM(h, 1));
                        char *end;
                        errno = 0;
                        long long n = strtoll(v, &end, 10);
                        if (errno || end == v || *end || n < 0 || v[0] == '-' || v[0] == '+') {
                                PyErr_Format(PyExc_ValueError, "bad Content-Length '%s'", v);
                                return -1;
                        }
                        length = n;
                }
        }
        *ret_length = length;
        return 0;
}

static PyObject *start_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
        static char *kwlist[] = {"status", "headers", "exc_info", NULL};
        struct start_obj *so = (struct start_obj *) self;
        struct wsgi_req *req = req_or_raise(so->req);
        PyObject *status, *headers, *exc_info = Py_None; /* borrowed */
        int64_t length;
        int code;

        if (!req)
                return NULL;
        if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:start_response", kwlist, &status,
                                         &headers, &exc_info))
                return NULL;
        if (exc_info != Py_None) {
                if (req->head_sent) {
                        /* Too late to change anything: re-raise for the application. */
                        PyObject *t, *v, *tb; /* borrowed from exc_info */
                        if (!PyArg_ParseTuple(exc_info, "OOO", &t, &v, &tb))
                                return NULL;
                        Py_INCREF(t);
                        Py_INCREF(v);
                        if (tb == Py_None)
                                tb = NULL;
                        Py_XINCREF(tb);
                        PyErr_Restore(t, v, tb);
                        return NULL;
                }
        } else if (req->status) {
                PyErr_SetString(PyExc_RuntimeError,
                                "start_response called a second time without exc_info");
                return NULL;
        }
        code = parse_status(status);
        if (code < 0) {
                PyErr_SetString(PyExc_ValueError,
                                "status must be a str like '200 OK' (three digits, a space, "
                                "a reason)");
                return NULL;
        }
        if (check_headers(headers, &length) < 0)
                return NULL;
        /*
         * A copy of the list: the application may change its own list until
         * the head goes out, while the (immutable) tuples checked above stay.
         */
        PyObject *copy = PyList_GetSlice(headers, 0, PyList_GET_SIZE(headers)); /* owned */
        if (!copy)
                return NULL;
        Py_INCREF(status);
        Py_XSETREF(req->status, status);
        Py_XSETREF(req->headers, copy);
        req->status_code = code;
        req->content_length = length;
        Py_INCREF(so->write);
        return so->write;
}

static void start_dealloc(PyObject *self)
{
        Py_CLEAR(((struct start_obj *) self)->write);
        plain_dealloc(self);
}

static PyObject *write_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
        struct wsgi_req *req = req_or_raise(((struct write_obj *) self)->req);
        Py_buffer view;
        int r;

        if (!req)
                return NULL;
        if (kwargs && PyDict_GET_SIZE(kwargs)) {
                PyErr_SetString(PyExc_TypeError, "write() takes no keyword arguments");
                return NULL;
        }
        if (!PyArg_ParseTuple(args, "y*:write", &view))
                return NULL;
        if (!req->status) {
                PyBuffer_Release(&view);
                PyErr_SetString(PyExc_RuntimeError, "write() before start_response()");
                return NULL;
        }
        r = wsgi_req_write(req, view.buf, (size_t) view.len);
        PyBuffer_Release(&view);
        if (r < 0) {
                errno = -r;
                return PyErr_SetFromErrno(PyExc_OSError);
        }
        Py_RETURN_NONE;
}

static PyType_Slot start_slots[] = {
    {Py_tp_dealloc, start_dealloc},
    {Py_tp_call, start_call},
    {0, NULL},
};

static PyType_Spec start_spec = {
    .name = "wharf_wsgi.StartResponse",
    .basicsize = sizeof(struct start_obj),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = start_slots,
};

static PyType_Slot write_slots[] = {
    {Py_tp_dealloc, plain_dealloc},
    {Py_tp_call, write_call},
    {0, NULL},
};

static PyType_Spec write_spec = {
    .name = "wharf_wsgi.Write",
    .basicsize = sizeof(struct write_obj),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = write_slots,
};

/* ---- wsgi.errors: lines to the daemon's log ---- */

static void errors_emit(struct errors_obj *e)
{
        if (e->len > 0)
                log_error("wsgi.errors: %.*s", (int) e->len, e->line);
        e->len = 0;
}

static int errors_add(struct errors_obj *e, PyObject *s)
{
        Py_ssize_t len;
        const char *p;

        if (!PyUnicode_Check(s)) {
                PyErr_SetString(PyExc_TypeError, "wsgi.errors.write() takes a str");
                return -1;
        }
        p = PyUnicode_AsUTF8AndSize(s, &len);
        if (!p)
                return -1;
        for (Py_ssize_t i = 0; i < len; i++) {
                if (p[i] == '\n') {
                        errors_emit(e);
                        continue;
                }
                if (e->len == sizeof(e->line))
                        errors_emit(e);
                e->line[e->len++] = p[i];
        }
        return 0;
}

static PyObject *errors_write(PyObject *self, PyObject *s)
{
        if (errors_add((struct errors_obj *) self, s) < 0)
                return NULL;
        Py_RETURN_NONE;
}

static PyObject *errors_writelines(PyObject *self, PyObject *seq)
{
        PyObject *it = PyObject_GetIter(seq), *item; /* owned */

        if (!it)
                return NULL;
        while ((item = PyIter_Next(it))) {
                int r = errors_add((struct errors_obj *) self, item);
                Py_DECREF(item);
                if (r < 0) {
                        Py_DECREF(it);
                        return NULL;
                }
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
                return NULL;
        Py_RETURN_NONE;
}

static PyObject *errors_flush(PyObject *self, PyObject *unused)
{
        (void) unused;
        errors_emit((struct errors_obj *) self);
        Py_RETURN_NONE;
}

static PyMethodDef errors_methods[] = {
    {"write", errors_write, METH_O, NULL},
    {"writelines", errors_writelines, METH_O, NULL},
    {"flush", errors_flush, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot errors_slots[] = {
    {Py_tp_dealloc, plain_dealloc},
    {Py_tp_methods, errors_methods},
    {0, NULL},
};

static PyType_Spec errors_spec = {
    .name = "wharf_wsgi.Errors",
    .basicsize = sizeof(struct errors_obj),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = errors_slots,
};

/* ---- wsgi.file_wrapper ---- */

static PyObject *fw_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
        static char *kwlist[] = {"filelike", "blksize", NULL};
        PyObject *filelike; /* borrowed */
        Py_ssize_t blksize = 8192;
        struct file_wrapper_obj *fw;

        if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|n:file_wrapper", kwlist, &filelike,
                                         &blksize))
                return NULL;
        if (blksize <= 0)
                blksize = 8192;
        fw = PyObject_New(struct file_wrapper_obj, type);
        if (!fw)
                return NULL;
        Py_INCREF(filelike);
        fw->filelike = filelike;
        fw->blksize = blksize;
        return (PyObject *) fw;
}

static void fw_dealloc(PyObject *self)
{
        Py_CLEAR(((struct file_wrapper_obj *) self)->filelike);
        plain_dealloc(self);
}

static PyObject *fw_iternext(PyObject *self)
{
        struct file_wrapper_obj *fw = (struct file_wrapper_obj *) self;
        PyObject *data = PyObject_CallMethod(fw->filelike, "read", "n", fw->blksize); /* owned */

        if (!data)
                return NULL;
        if (!PyBytes_Check(data) || PyBytes_GET_SIZE(data) == 0) {
                Py_DECREF(data);
                return NULL;
        }
        return data;
}

static PyObject *fw_close(PyObject *self, PyObject *unused)
{
        struct file_wrapper_obj *fw = (struct file_wrapper_obj *) self;
        (void) unused;
        if (PyObject_HasAttrString(fw->filelike, "close"))
                return PyObject_CallMethod(fw->filelike, "close", NULL);
        Py_RETURN_NONE;
}

static PyMethodDef fw_methods[] = {
    {"close", fw_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot fw_slots[] = {
    {Py_tp_new, fw_new},           {Py_tp_dealloc, fw_dealloc}, {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, fw_iternext}, {Py_tp_methods, fw_methods}, {0, NULL},
};

static PyType_Spec fw_spec = {
    .name = "wharf_wsgi.FileWrapper",
    .basicsize = sizeof(struct file_wrapper_obj),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = fw_slots,
};

PyObject *wsgi_file_wrapper_filelike(const struct wsgi_py *py, PyObject *obj)
{
        if (Py_TYPE(obj) != py->file_wrapper_type)
                return NULL;
        return ((struct file_wrapper_obj *) obj)->filelike;
}

int wsgi_types_init(struct wsgi_py *py)
{
        py->input_type = (PyTypeObject *) PyType_FromSpec(&input_spec);
        py->start_type = (PyTypeObject *) PyType_FromSpec(&start_spec);
        py->write_type = (PyTypeObject *) PyType_FromSpec(&write_spec);
        py->errors_type = (PyTypeObject *) PyType_FromSpec(&errors_spec);
        py->file_wrapper_type = (PyTypeObject *) PyType_FromSpec(&fw_spec);
        if (!py->input_type || !py->start_type || !py->write_type || !py->errors_type ||
            !py->file_wrapper_type)
                return -ENOMEM;
        struct errors_obj *e = PyObject_New(struct errors_obj, py->errors_type);
        if (!e)
                return -ENOMEM;
        e->len = 0;
        py->errors = (PyObject *) e;
        return 0;
}

/* ---- binding to a request ---- */

/* Keeps o if only we hold it, else drops it (the application kept a reference). */
static void drop_if_shared(PyObject **o)
{
        if (*o && Py_REFCNT(*o) > 1)
                Py_CLEAR(*o);
}

int wsgi_req_objects_bind(struct wsgi_req_objects *o, const struct wsgi_py *py,
                          struct wsgi_req *req)
{
        if (!o->input) {
                o->input = (PyObject *) PyObject_New(struct input_obj, py->input_type);
                if (!o->input)
                        return -ENOMEM;
        }
        if (!o->write) {
                o->write = (PyObject *) PyObject_New(struct write_obj, py->write_type);
                if (!o->write)
                        return -ENOMEM;
                Py_CLEAR(o->start); /* it holds the old write */
        }
        if (!o->start) {
                struct start_obj *so = PyObject_New(struct start_obj, py->start_type);
                if (!so)
                        return -ENOMEM;
                Py_INCREF(o->write);
                so->write = o->write;
                o->start = (PyObject *) so;
        }
        ((struct input_obj *) o->input)->req = req;
        ((struct write_obj *) o->write)->req = req;
        ((struct start_obj *) o->start)->req = req;
        return 0;
}

void wsgi_req_objects_unbind(struct wsgi_req_objects *o)
{
        if (o->input)
                ((struct input_obj *) o->input)->req = NULL;
        if (o->write)
                ((struct write_obj *) o->write)->req = NULL;
        if (o->start)
                ((struct start_obj *) o->start)->req = NULL;
        drop_if_shared(&o->input);
        /*
         * start holds one reference to write. If the application kept either,
         * both go: a kept start_response would hand out the reused write.
         */
        if ((o->start && Py_REFCNT(o->start) > 1) || (o->write && Py_REFCNT(o->write) > 2)) {
                Py_CLEAR(o->start);
                Py_CLEAR(o->write);
        }
}

void wsgi_req_objects_done(struct wsgi_req_objects *o)
{
        Py_CLEAR(o->input);
        Py_CLEAR(o->start);
        Py_CLEAR(o->write);
}
