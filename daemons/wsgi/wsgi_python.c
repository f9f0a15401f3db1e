/* SPDX-License-Identifier: MIT */
/*
 * wsgi_python: the embedded interpreter and the application it runs.
 *
 * The interpreter starts from a PyConfig: Python's own signal handlers are
 * not installed (signals belong to the daemon), the command line is not
 * parsed, and a virtualenv given as home contributes its site-packages the
 * way uWSGI's home= does, on top of Debian's interpreter.
 */
#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>

#include "wsgi.h"

static const char *const key_names[_WSGI_KEY_MAX] = {
    [K_REQUEST_METHOD] = "REQUEST_METHOD",
    [K_SCRIPT_NAME] = "SCRIPT_NAME",
    [K_PATH_INFO] = "PATH_INFO",
    [K_QUERY_STRING] = "QUERY_STRING",
    [K_CONTENT_TYPE] = "CONTENT_TYPE",
    [K_CONTENT_LENGTH] = "CONTENT_LENGTH",
    [K_SERVER_NAME] = "SERVER_NAME",
    [K_SERVER_PORT] = "SERVER_PORT",
    [K_SERVER_PROTOCOL] = "SERVER_PROTOCOL",
    [K_REMOTE_ADDR] = "REMOTE_ADDR",
    [K_REMOTE_PORT] = "REMOTE_PORT",
    [K_REQUEST_URI] = "REQUEST_URI",
    [K_WSGI_VERSION] = "wsgi.version",
    [K_WSGI_URL_SCHEME] = "wsgi.url_scheme",
    [K_WSGI_INPUT] = "wsgi.input",
    [K_WSGI_ERRORS] = "wsgi.errors",
    [K_WSGI_MULTITHREAD] = "wsgi.multithread",
    [K_WSGI_MULTIPROCESS] = "wsgi.multiprocess",
    [K_WSGI_RUN_ONCE] = "wsgi.run_once",
    [K_WSGI_FILE_WRAPPER] = "wsgi.file_wrapper",
    [K_HTTP_HOST] = "HTTP_HOST",
    [K_HTTP_USER_AGENT] = "HTTP_USER_AGENT",
    [K_HTTP_ACCEPT] = "HTTP_ACCEPT",
    [K_HTTP_ACCEPT_ENCODING] = "HTTP_ACCEPT_ENCODING",
    [K_HTTP_ACCEPT_LANGUAGE] = "HTTP_ACCEPT_LANGUAGE",
    [K_HTTP_CONNECTION] = "HTTP_CONNECTION",
    [K_HTTP_COOKIE] = "HTTP_COOKIE",
    [K_HTTP_REFERER] = "HTTP_REFERER",
    [K_V_HTTP] = "http",
    [K_V_HTTPS] = "https",
    [K_V_GET] = "GET",
    [K_V_HTTP11] = "HTTP/1.1",
    [K_V_HTTP10] = "HTTP/1.0",
    [K_V_EMPTY] = "",
};

/* The message of the current exception as "Type: text", for one-line errors. */
static void exception_summary(char *out, size_t size)
{
        PyObject *type, *value, *tb;         /* owned */
        PyObject *name = NULL, *text = NULL; /* owned */

        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        snprintf(out, size, "unknown error");
        if (type)
                name = PyObject_GetAttrString(type, "__name__");
        if (value)
                text = PyObject_Str(value);
        if (name && PyUnicode_Check(name) && text && PyUnicode_Check(text))
                snprintf(out, size, "%s: %s", PyUnicode_AsUTF8(name), PyUnicode_AsUTF8(text));
        else if (name && PyUnicode_Check(name))
                snprintf(out, size, "%s", PyUnicode_AsUTF8(name));
        PyErr_Clear();
        Py_XDECREF(name);
        Py_XDECREF(text);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
}

void wsgi_python_log_exception(const struct wsgi_py *py, const char *what)
{
        PyObject *type, *value, *tb;                         /* owned */
        PyObject *lines = NULL, *sep = NULL, *joined = NULL; /* owned */

        PyErr_Fetch(&type, &value, &tb);
        if (!type) {
                log_error("%s", what);
                return;
        }
        PyErr_NormalizeException(&type, &value, &tb);
        if (py->traceback_format)
                lines = PyObject_CallFunctionObjArgs(
                    py->traceback_format, type, value ? value : Py_None, tb ? tb : Py_None, NULL);
        sep = PyUnicode_FromString("");
        if (lines && sep)
                joined = PyUnicode_Join(sep, lines);
        if (joined) {
                const char *text = PyUnicode_AsUTF8(joined);
                log_error("%s\n%s", what, text ? text : "(traceback not printable)");
        } else {
                PyErr_Clear();
                PyErr_Restore(type, value, tb);
                type = value = tb = NULL;
                char summary[512];
                exception_summary(summary, sizeof(summary));
                log_error("%s: %s", what, summary);
        }
        PyErr_Clear();
        Py_XDECREF(joined);
        Py_XDECREF(sep);
        Py_XDECREF(lines);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
}

/* home/lib/python3.X/site-packages of a virtualenv, into out. */
static int venv_site_packages(const char *home, char *out, size_t size)
{
        struct stat st;
        int n;

        n = snprintf(out, size, "%s/lib/python%d.%d/site-packages", home, PY_MAJOR_VERSION,
                     PY_MINOR_VERSION);
        if (n < 0 || (size_t) n >= size)
                return -ENAMETOOLONG;
        if (stat(out, &st) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        return 0;
}

/* Inserts path at sys.path[pos] (pos -1: appends). */
static int sys_path_insert(const char *path, Py_ssize_t pos)
{
        PyObject *sys_path = PySys_GetObject("path"); /* borrowed */
        PyObject *item = NULL;                        /* owned */
        int r = -1;

        if (!sys_path || !PyList_Check(sys_path))
                return -1;
        item = PyUnicode_DecodeFSDefault(path);
        if (!item)
                return -1;
        r = pos < 0 ? PyList_Append(sys_path, item) : PyList_Insert(sys_path, pos, item);
        Py_DECREF(item);
        return r;
}

_Static_assert(K_V_HTTP * 2 <= WSGI_KEY_TABLE, "the key table must stay at most half full");

static int make_keys(struct wsgi_py *py)
{
        for (int i = 0; i < _WSGI_KEY_MAX; i++) {
                py->keys[i] = PyUnicode_InternFromString(key_names[i]);
                if (!py->keys[i])
                        return -ENOMEM;
        }
        /* Open addressing, linear probing: a lookup costs a hash and about one compare. */
        for (int i = 0; i < K_V_HTTP; i++) {
                unsigned j = wsgi_key_hash(key_names[i], strlen(key_names[i]));
                while (py->key_table[j])
                        j = (j + 1) & (WSGI_KEY_TABLE - 1);
                py->key_table[j] = (unsigned char) (i + 1);
        }
        py->version = Py_BuildValue("(ii)", 1, 0);
        if (!py->version)
                return -ENOMEM;
        return 0;
}

int wsgi_python_init(const struct wsgi_settings *s, struct wsgi_py *py)
{
        PyConfig config;
        PyStatus status;
        char site[PATH_MAX];
        PyObject *tb_mod = NULL; /* owned */
        int r;

        *py = (struct wsgi_py){0};
        if (s->home) {
                r = venv_site_packages(s->home, site, sizeof(site));
                if (r < 0) {
                        log_error("home '%s' is not a virtualenv for Python %d.%d: %s: %s", s->home,
                                  PY_MAJOR_VERSION, PY_MINOR_VERSION, site, strerror(-r));
                        return -EINVAL;
                }
        }

        PyConfig_InitPythonConfig(&config);
        /* Signals are the daemon's: SIGINT must not become KeyboardInterrupt. */
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        config.buffered_stdio = 0;
        status = PyConfig_SetBytesString(&config, &config.program_name, "wharf-wsgi");
        if (PyStatus_Exception(status))
                goto fail;
        status = Py_InitializeFromConfig(&config);
        if (PyStatus_Exception(status))
                goto fail;
        PyConfig_Clear(&config);

        /*
         * sys.path: the working directory (chdir) first, as uWSGI has it, then
         * pythonpath in order, then the virtualenv through site.addsitedir so
         * its .pth files are honoured.
         */
        if (sys_path_insert(".", 0) < 0)
                goto py_fail;
        for (size_t i = 0; i < s->pythonpath.n; i++)
                if (sys_path_insert(s->pythonpath.v[i], (Py_ssize_t) i + 1) < 0)
                        goto py_fail;
        if (s->home) {
                PyObject *site_mod = PyImport_ImportModule("site"); /* owned */
                PyObject *res = NULL;                               /* owned */
                if (site_mod)
                        res = PyObject_CallMethod(site_mod, "addsitedir", "s", site);
                Py_XDECREF(site_mod);
                if (!res)
                        goto py_fail;
                Py_DECREF(res);
                /* Code asking where it runs (sys.prefix) sees the virtualenv. */
                PyObject *prefix = PyUnicode_DecodeFSDefault(s->home); /* owned */
                if (!prefix || PySys_SetObject("prefix", prefix) < 0) {
                        Py_XDECREF(prefix);
                        goto py_fail;
                }
                Py_DECREF(prefix);
        }

        tb_mod = PyImport_ImportModule("traceback");
        if (!tb_mod)
                goto py_fail;
        py->traceback_format = PyObject_GetAttrString(tb_mod, "format_exception");
        Py_DECREF(tb_mod);
        if (!py->traceback_format)
                goto py_fail;
        if (make_keys(py) < 0 || wsgi_types_init(py) < 0)
                goto py_fail;
        return 0;

fail:
        PyConfig_Clear(&config);
        log_error("cannot start Python: %s%s%s", status.func ? status.func : "",
                  status.func ? ": " : "", status.err_msg ? status.err_msg : "error");
        return -EINVAL;
py_fail : {
        char summary[512];
        exception_summary(summary, sizeof(summary));
        log_error("cannot set up Python: %s", summary);
        return -EINVAL;
}
}

/* "pkg.mod:callable" or "pkg.mod" (with s->callable) into a module and a name. */
static int split_module(const struct wsgi_settings *s, char *mod, size_t size,
                        const char **ret_callable)
{
        const char *colon = strchr(s->module, ':');
        size_t n = colon ? (size_t) (colon - s->module) : strlen(s->module);

        if (n == 0 || n >= size || (colon && colon[1] == '\0'))
                return -EINVAL;
        memcpy(mod, s->module, n);
        mod[n] = '\0';
        *ret_callable = colon ? colon + 1 : s->callable;
        return 0;
}

/*
 * Runs a wsgi-file (runpy.run_path, with __file__ set and __name__
 * "__wsgi_file__") and returns its global namespace (owned), or NULL with
 * the exception set.
 */
static PyObject *exec_wsgi_file(const char *path)
{
        PyObject *runpy, *ns; /* owned */

        runpy = PyImport_ImportModule("runpy");
        if (!runpy)
                return NULL;
        ns = PyObject_CallMethod(runpy, "run_path", "sOs", path, Py_None, "__wsgi_file__");
        Py_DECREF(runpy);
        return ns;
}

int wsgi_python_load_app(const struct wsgi_settings *s, struct wsgi_py *py)
{
        char mod[512], what[600];
        const char *callable = s->callable;
        PyObject *module = NULL, *app = NULL; /* owned */

        if (s->wsgi_file) {
                snprintf(what, sizeof(what), "wsgi-file '%s'", s->wsgi_file);
                module = exec_wsgi_file(s->wsgi_file);
                if (module) {
                        app = PyDict_GetItemString(module, callable); /* borrowed */
                        Py_XINCREF(app);
                }
        } else {
                if (split_module(s, mod, sizeof(mod), &callable) < 0) {
                        log_error("module '%s' is not of the form pkg.mod or pkg.mod:callable",
                                  s->module);
                        return -EINVAL;
                }
                snprintf(what, sizeof(what), "module '%s'", mod);
                module = PyImport_ImportModule(mod);
                if (module)
                        app = PyObject_GetAttrString(module, callable);
                if (module && !app)
                        PyErr_Clear();
        }
        if (!module) {
                char summary[512];
                exception_summary(summary, sizeof(summary));
                log_error("cannot load the application: %s: %s", what, summary);
                return -EINVAL;
        }
        Py_DECREF(module);
        if (!app) {
                log_error("cannot load the application: %s has no callable '%s'", what, callable);
                return -EINVAL;
        }
        if (!PyCallable_Check(app)) {
                log_error("cannot load the application: '%s' in %s is not callable", callable,
                          what);
                Py_DECREF(app);
                return -EINVAL;
        }
        Py_XDECREF(py->app);
        py->app = app;
        log_info("application loaded: %s, callable '%s'", what, callable);
        return 0;
}

void wsgi_python_after_fork(void)
{
        PyOS_AfterFork_Child();
}

void wsgi_python_done(struct wsgi_py *py)
{
        if (!Py_IsInitialized())
                return;
        Py_CLEAR(py->app);
        Py_CLEAR(py->errors);
        Py_CLEAR(py->version);
        Py_CLEAR(py->traceback_format);
        for (int i = 0; i < _WSGI_KEY_MAX; i++)
                Py_CLEAR(py->keys[i]);
        Py_CLEAR(py->input_type);
        Py_CLEAR(py->start_type);
        Py_CLEAR(py->write_type);
        Py_CLEAR(py->errors_type);
        Py_CLEAR(py->file_wrapper_type);
        (void) Py_FinalizeEx();
}
