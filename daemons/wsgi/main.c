/* SPDX-License-Identifier: MIT */
/*
 * wharf-wsgi: runs a WSGI application (Django first of all) in an embedded
 * CPython, in place of uWSGI. main() reads the options (uWSGI's spelling, on
 * the command line and in the [uwsgi] or [wharf-wsgi] section of an ini),
 * takes the sockets from systemd or binds them, starts Python and imports
 * the application, and then either serves in this one process or becomes the
 * master of `processes` workers (wsgi_master.c).
 */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

#include "notify.h"
#include "wharf-config.h"
#include "wsgi.h"

#define MAX_CMDLINE 128
#define MAX_INI 8

/* Set by the signal handlers of a serving process; read between requests. */
static volatile sig_atomic_t stop_flag;
static volatile sig_atomic_t reload_flag;

static void on_signal(int sig)
{
        if (sig == SIGHUP)
                reload_flag = 1;
        else
                stop_flag = 1;
}

/* A serving process: handlers that only set flags, and the signals unblocked. */
static void setup_worker_signals(void)
{
        struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
        sigset_t mask;

        sigemptyset(&sa.sa_mask);
        (void) sigaction(SIGTERM, &sa, NULL);
        (void) sigaction(SIGINT, &sa, NULL);
        (void) sigaction(SIGHUP, &sa, NULL);
        sa.sa_handler = SIG_DFL;
        (void) sigaction(SIGCHLD, &sa, NULL);
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGCHLD);
        (void) sigprocmask(SIG_UNBLOCK, &mask, NULL);
}

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: wharf-wsgi [OPTIONS]\n"
                "Run a WSGI application (uWSGI's options and ini files).\n"
                "\n"
                "  -i, --ini FILE          read the [uwsgi] (or [wharf-wsgi]) section of FILE\n"
                "  -w, --module MOD[:APP]  import the application from MOD (callable "
                "'application')\n"
                "      --wsgi-file FILE    load the application from a file\n"
                "      --callable NAME     the name of the callable (default application)\n"
                "      --chdir DIR         change to DIR before loading\n"
                "  -H, --home DIR          use the virtualenv DIR (also --virtualenv)\n"
                "      --pythonpath DIR    add DIR to sys.path (repeatable)\n"
                "      --env KEY=VALUE     set an environment variable (repeatable)\n"
                "  -s, --socket ADDR       serve the uwsgi protocol on ADDR (/path, :3031, ...)\n"
                "      --http ADDR         serve HTTP/1.1 on ADDR (also --http-socket)\n"
                "      --chmod-socket MODE mode of a unix socket (e.g. 666)\n"
                "  -M, --master            run a master process with workers\n"
                "  -p, --processes N       number of workers (also --workers)\n"
                "      --threads N         serving threads per worker (default 1)\n"
                "      --max-requests N    recycle a worker after N requests\n"
                "      --max-worker-lifetime SECONDS  recycle a worker after it lived this "
                "long\n"
                "      --reload-on-rss MB  recycle a worker that grew past MB MiB resident\n"
                "      --touch-reload FILE reload when FILE is touched (repeatable)\n"
                "      --harakiri SECONDS  kill a worker whose request runs longer\n"
                "      --lazy-apps         import the application in each worker\n"
                "      --pidfile FILE      write the master's pid to FILE\n"
                "      --vacuum            remove the sockets and pidfile at exit\n"
                "      --logger file:PATH  log to a file (default: journal or stderr)\n"
                "  -b, --buffer-size SIZE  largest request head (default 64k)\n"
                "      --socket-timeout S  I/O timeout on a client socket (default 30)\n"
                "      --check-config      check the configuration and exit\n"
                "  -h, --help              show this help\n"
                "      --version           show the version\n"
                "\n"
                "Under systemd the socket comes from wharf-wsgi@APP.socket: a socket named\n"
                "'http' speaks HTTP/1.1, any other the uwsgi protocol. SIGHUP reloads the\n"
                "application gracefully, SIGTERM stops after the requests in flight.\n"
                "See docs/wharf-wsgi.md.\n");
}

enum {
        OPT_INI = 0x1000,
        OPT_CHECK,
        OPT_VERSION,
        OPT_KEY = 0x2000, /* + index into wsgi_config_keys */
};

struct cmdline {
        const char *ini[MAX_INI];
        unsigned n_ini;
        bool check;
        const char *key[MAX_CMDLINE];
        const char *value[MAX_CMDLINE];
        unsigned n;
};

static const struct {
        char c;
        const char *key;
} short_opts[] = {
    {'w', "module"}, {'H', "home"},      {'s', "socket"},
    {'M', "master"}, {'p', "processes"}, {'b', "buffer-size"},
};

static int parse_cmdline(int argc, char **argv, struct cmdline *ret)
{
        struct option options[128];
        size_t n = 0;
        int opt;

        for (size_t i = 0; wsgi_config_keys[i].name && n < ARRAY_SIZE(options) - 5; i++) {
                const struct config_key *k = &wsgi_config_keys[i];
                options[n++] = (struct option){k->name,
                                               k->type == CONFIG_BOOL || k->type == CONFIG_IGNORED
                                                   ? optional_argument
                                                   : required_argument,
                                               NULL, OPT_KEY + (int) i};
        }
        options[n++] = (struct option){"ini", required_argument, NULL, OPT_INI};
        options[n++] = (struct option){"check-config", no_argument, NULL, OPT_CHECK};
        options[n++] = (struct option){"help", no_argument, NULL, 'h'};
        options[n++] = (struct option){"version", no_argument, NULL, OPT_VERSION};
        options[n] = (struct option){0};

        *ret = (struct cmdline){0};
        while ((opt = getopt_long(argc, argv, "i:w:H:s:Mp:b:h", options, NULL)) >= 0) {
                const char *key = NULL;
                switch (opt) {
                case 'h':
                        usage(stdout);
                        exit(EXIT_SUCCESS);
                case OPT_VERSION:
                        printf("wharf-wsgi " WHARF_VERSION " (Python %s)\n", PY_VERSION);
                        exit(EXIT_SUCCESS);
                case OPT_CHECK:
                        ret->check = true;
                        continue;
                case 'i':
                case OPT_INI:
                        if (ret->n_ini >= MAX_INI) {
                                fprintf(stderr, "wharf-wsgi: at most %d ini files\n", MAX_INI);
                                return -E2BIG;
                        }
                        ret->ini[ret->n_ini++] = optarg;
                        continue;
                case '?':
                        fprintf(stderr, "Try 'wharf-wsgi --help'.\n");
                        return -EINVAL;
                default:
                        break;
                }
                if (opt >= OPT_KEY)
                        key = wsgi_config_keys[opt - OPT_KEY].name;
                for (size_t i = 0; !key && i < ARRAY_SIZE(short_opts); i++)
                        if (short_opts[i].c == opt)
                                key = short_opts[i].key;
                if (!key) {
                        usage(stderr);
                        return -EINVAL;
                }
                if (ret->n >= MAX_CMDLINE) {
                        fprintf(stderr, "wharf-wsgi: too many options\n");
                        return -E2BIG;
                }
                const struct config_key *k = config_key_find(wsgi_config_keys, key);
                ret->key[ret->n] = key;
                ret->value[ret->n++] = optarg ? optarg : k->type == CONFIG_BOOL ? "true" : "";
        }
        if (optind < argc) {
                fprintf(stderr, "wharf-wsgi: unexpected argument '%s'\n", argv[optind]);
                return -EINVAL;
        }
        return 0;
}

/* Does the file's text use key as a %(key) placeholder? */
static bool used_as_placeholder(const char *text, const char *key)
{
        char pat[CONFIG_MAX_VALUE];
        snprintf(pat, sizeof(pat), "%%(%s)", key);
        return text && strstr(text, pat);
}

static char *read_text(const char *path)
{
        FILE *f = fopen(path, "re");
        char *text = NULL;
        size_t len = 0;

        if (!f)
                return NULL;
        if (getdelim(&text, &len, '\0', f) < 0) {
                free(text);
                text = NULL;
        }
        fclose(f);
        return text;
}

/*
 * The [uwsgi] section: every key wharf knows is applied, and the ones it does
 * not are named together in one warning. A key used only as a %(name)
 * placeholder (the tutorial's base) is a variable, not an option.
 */
static int apply_uwsgi_section(const struct config_file *f, struct wsgi_settings *s,
                               struct config_diag *diag)
{
        _cleanup_free_ struct config_entry *known = NULL;
        _cleanup_free_ char *text = NULL, *unknown = NULL;
        size_t n = 0, ulen = 0;
        FILE *u;
        int r;

        known = calloc(f->n_entries + 1, sizeof(*known));
        u = open_memstream(&unknown, &ulen);
        if (!known || !u) {
                if (u)
                        fclose(u);
                return -ENOMEM;
        }
        text = read_text(f->path);
        for (size_t i = 0; i < f->n_entries; i++) {
                const struct config_entry *e = &f->entries[i];
                if (!streq(e->section, "uwsgi"))
                        continue;
                if (config_key_find(wsgi_config_keys, e->key))
                        known[n++] = *e;
                else if (!used_as_placeholder(text, e->key))
                        fprintf(u, "%s%s", ftell(u) ? ", " : "", e->key);
        }
        fclose(u);
        if (ulen > 0)
                config_diag_add(diag, false, f->path, 0, NULL,
                                "uWSGI options wharf-wsgi does not implement, ignored: %s",
                                unknown);
        struct config_file view = {.path = f->path, .entries = known, .n_entries = n};
        r = config_apply(&view, "uwsgi", wsgi_config_keys, CONFIG_UNKNOWN_WARN, s, diag);
        return r < 0 ? r : 0;
}

static void settings_done(struct wsgi_settings *s)
{
        config_strv_done(&s->pythonpath);
        config_strv_done(&s->env);
        config_strv_done(&s->socket);
        config_strv_done(&s->http);
        config_strv_done(&s->touch_reload);
}

static int load_config(const struct cmdline *cl, struct wsgi_settings *s,
                       struct config_file **files, struct config_diag *diag)
{
        int r;

        wsgi_settings_defaults(s);
        for (unsigned i = 0; i < cl->n_ini; i++) {
                r = config_load(cl->ini[i], &files[i], diag);
                if (r < 0)
                        return r;
                if (!config_has_section(files[i], "uwsgi") &&
                    !config_has_section(files[i], "wharf-wsgi"))
                        config_diag_add(diag, true, cl->ini[i], 0, NULL,
                                        "no [uwsgi] or [wharf-wsgi] section");
                r = apply_uwsgi_section(files[i], s, diag);
                if (r < 0)
                        return r;
                r = config_apply(files[i], "wharf-wsgi", wsgi_config_keys, CONFIG_UNKNOWN_ERROR, s,
                                 diag);
                if (r < 0)
                        return r;
        }
        for (unsigned i = 0; i < cl->n; i++) {
                char origin[64];
                snprintf(origin, sizeof(origin), "--%s", cl->key[i]);
                r = config_set(config_key_find(wsgi_config_keys, cl->key[i]), cl->value[i], s,
                               origin, diag);
                if (r == -ENOMEM)
                        return r;
        }
        (void) wsgi_settings_check(s, diag);
        return diag->errors ? -EINVAL : 0;
}

static void print_diag(const struct config_diag *d)
{
        for (size_t i = 0; i < d->n_messages; i++)
                log_msg(strstr(d->messages[i], ": warning: ") ? LOG_WARNING : LOG_ERR, "%s",
                        d->messages[i]);
}

static int parse_level(const char *s)
{
        static const struct {
                const char *name;
                int level;
        } levels[] = {
            {"debug", LOG_DEBUG},     {"info", LOG_INFO}, {"notice", LOG_NOTICE},
            {"warning", LOG_WARNING}, {"error", LOG_ERR},
        };
        for (size_t i = 0; i < ARRAY_SIZE(levels); i++)
                if (streq(s, levels[i].name))
                        return levels[i].level;
        return -EINVAL;
}

static int open_log(const struct wsgi_settings *s)
{
        int level = parse_level(s->log_level);

        if (level < 0)
                return log_errno(-EINVAL,
                                 "log-level '%s': not one of debug, info, notice, "
                                 "warning, error",
                                 s->log_level);
        log_set_max_level(level);
        if (s->logger) {
                char target[PATH_MAX + 8];
                /* uWSGI's logto takes a bare path. */
                snprintf(target, sizeof(target), "%s%s", s->logger[0] == '/' ? "file:" : "",
                         s->logger);
                int r = log_open(target);
                if (r < 0)
                        return log_errno(r, "cannot open the log '%s': %m", s->logger);
        }
        return 0;
}

static int add_listener(struct wsgi_server *srv, size_t *cap, struct wsgi_listener **ret)
{
        if (srv->n_listeners == *cap) {
                size_t ncap = *cap ? *cap * 2 : 4;
                struct wsgi_listener *l = reallocarray(srv->listeners, ncap, sizeof(*l));
                if (!l)
                        return -ENOMEM;
                srv->listeners = l;
                *cap = ncap;
        }
        *ret = &srv->listeners[srv->n_listeners];
        **ret = (struct wsgi_listener){0};
        return 0;
}

static int open_sockets(const struct wsgi_settings *s, struct wsgi_server *srv)
{
        struct listener *passed = NULL;
        size_t n_passed = 0, cap = 0;
        struct wsgi_listener *wl;
        bool own = getenv(WSGI_OWN_SOCKETS_ENV) != NULL;
        int r;

        r = listen_from_systemd(&passed, &n_passed);
        if (r < 0)
                return log_errno(r, "cannot use the sockets from systemd: %m");
        if (n_passed > 0) {
                for (size_t i = 0; i < n_passed; i++) {
                        r = add_listener(srv, &cap, &wl);
                        if (r < 0) {
                                free(passed);
                                return log_errno(r, "out of memory");
                        }
                        wl->l = passed[i];
                        wl->proto =
                            streq(passed[i].name, "http") ? WSGI_PROTO_HTTP : WSGI_PROTO_UWSGI;
                        /* After a reload these are the sockets we bound: vacuum still applies. */
                        if (own)
                                wl->l.from_systemd = false;
                        if (own && wl->l.family == AF_UNIX) {
                                char desc[PATH_MAX + 8];
                                if (listen_describe(wl->l.fd, desc, sizeof(desc)) >= 0 &&
                                    strncmp(desc, "unix:", 5) == 0)
                                        wl->l.unix_path = strdup(desc + 5);
                        }
                        srv->n_listeners++;
                        if (!own)
                                log_info("serving %s on the socket '%s' passed by systemd",
                                         wl->proto == WSGI_PROTO_HTTP ? "HTTP" : "uwsgi",
                                         wl->l.name);
                }
                free(passed);
                srv->own_sockets = own;
                (void) unsetenv(WSGI_OWN_SOCKETS_ENV);
                if (!own)
                        for (size_t i = 0; i < s->socket.n + s->http.n; i++)
                                log_info("'%s' is not bound: the socket passed by systemd is "
                                         "used instead",
                                         i < s->socket.n ? s->socket.v[i]
                                                         : s->http.v[i - s->socket.n]);
                return 0;
        }

        if (s->socket.n + s->http.n == 0)
                return log_errno(-EINVAL, "no socket: give socket = ADDR or http = ADDR, or start "
                                          "from a .socket unit");
        for (size_t i = 0; i < s->socket.n + s->http.n; i++) {
                bool http = i >= s->socket.n;
                const char *addr = http ? s->http.v[i - s->socket.n] : s->socket.v[i];
                r = add_listener(srv, &cap, &wl);
                if (r < 0)
                        return log_errno(r, "out of memory");
                r = listen_bind(addr, SOCK_STREAM, s->chmod_socket, http ? "http" : "uwsgi",
                                &wl->l);
                if (r < 0)
                        return log_errno(r, "cannot listen on '%s': %m", addr);
                wl->proto = http ? WSGI_PROTO_HTTP : WSGI_PROTO_UWSGI;
                srv->n_listeners++;
                srv->own_sockets = true;
                log_info("serving %s on %s", http ? "HTTP" : "uwsgi", addr);
        }
        return 0;
}

static int write_pidfile(const char *path)
{
        char tmp[PATH_MAX];
        FILE *f;

        if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int) sizeof(tmp))
                return -ENAMETOOLONG;
        f = fopen(tmp, "we");
        if (!f)
                return -errno;
        fprintf(f, "%d\n", (int) getpid());
        if (fclose(f) != 0 || rename(tmp, path) < 0) {
                int r = -errno;
                (void) unlink(tmp);
                return r;
        }
        return 0;
}

static int set_env(const struct wsgi_settings *s)
{
        for (size_t i = 0; i < s->env.n; i++) {
                char *kv = strdup(s->env.v[i]);
                if (!kv)
                        return -ENOMEM;
                char *eq = strchr(kv, '=');
                *eq = '\0';
                int r = setenv(kv, eq + 1, 1);
                free(kv);
                if (r < 0)
                        return -errno;
        }
        return 0;
}

/* The one process of a server without master: serves, and re-executes on SIGHUP. */
static int run_single(struct wsgi_server *srv)
{
        struct notify n;
        int r;

        notify_init(&n);
        srv->notify = &n;
        setup_worker_signals();
        notify_mainpid(&n, getpid());
        notify_ready(&n);
        notify_status(&n, "1 worker, serving");
        log_info("ready: one process");
        r = wsgi_worker_run(srv, srv->py, NULL);
        if (r == 0 && reload_flag && !stop_flag) {
                notify_reloading(&n);
                r = wsgi_reexec(srv, NULL, 0);
        }
        notify_stopping(&n);
        return r;
}

int main(int argc, char **argv)
{
        struct cmdline cl;
        struct config_diag diag = {0};
        struct config_file *files[MAX_INI] = {0};
        struct wsgi_settings s;
        struct wsgi_py py = {0};
        struct wsgi_server srv = {
            .s = &s,
            .sig = {&stop_flag, &reload_flag, setup_worker_signals, on_signal},
            .py = &py,
            .argv = argv,
        };
        sigset_t mask;
        int r, sfd = -1;
        bool pidfile_written = false;

        log_set_ident("wharf-wsgi");
        log_open_default();
        if (parse_cmdline(argc, argv, &cl) < 0)
                return EXIT_FAILURE;

        r = load_config(&cl, &s, files, &diag);
        if (cl.check) {
                for (size_t i = 0; i < diag.n_messages; i++)
                        fprintf(stderr, "%s\n", diag.messages[i]);
                if (r < 0)
                        fprintf(stderr, "wharf-wsgi: configuration has errors\n");
                else
                        printf("wharf-wsgi: configuration OK (%s %s, %s)\n",
                               s.module ? "module" : "wsgi-file", s.module ? s.module : s.wsgi_file,
                               s.master ? "master" : "single process");
                goto finish;
        }
        print_diag(&diag);
        if (r < 0) {
                log_error("cannot start: the configuration has errors");
                goto finish;
        }
        r = open_log(&s);
        if (r < 0)
                goto finish;

        /*
         * The master reads signals from a signalfd; a process that serves gets
         * flag-setting handlers instead (setup_worker_signals()).
         */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);

        r = set_env(&s);
        if (r < 0) {
                log_errno(r, "cannot set the environment: %m");
                goto finish;
        }
        r = open_sockets(&s, &srv);
        if (r < 0)
                goto finish;
        if (s.pidfile) {
                r = write_pidfile(s.pidfile);
                if (r < 0) {
                        log_errno(r, "cannot write the pidfile '%s': %m", s.pidfile);
                        goto finish;
                }
                pidfile_written = true;
        }
        if (s.chdir && chdir(s.chdir) < 0) {
                r = log_errno(-errno, "chdir '%s': %m", s.chdir);
                goto finish;
        }
        srv.multiprocess = s.master && s.processes > 1;
        srv.multithread = s.threads > 1;

        r = wsgi_python_init(&s, &py);
        if (r < 0)
                goto finish;
        if (!(s.master && s.lazy_apps)) {
                r = wsgi_python_load_app(&s, &py);
                if (r < 0)
                        goto finish;
        }

        if (s.master) {
                sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
                if (sfd < 0) {
                        r = log_errno(-errno, "signalfd: %m");
                        goto finish;
                }
                r = wsgi_master_run(&srv, sfd);
        } else {
                r = run_single(&srv);
        }

finish:
        if (r < 0 && !cl.check)
                wsgi_master_stop_old_workers();
        wsgi_python_done(&py);
        for (size_t i = 0; i < srv.n_listeners; i++)
                listen_done(&srv.listeners[i].l, s.vacuum);
        free(srv.listeners);
        if (pidfile_written && s.vacuum)
                (void) unlink(s.pidfile);
        if (sfd >= 0)
                (void) close(sfd);
        settings_done(&s);
        for (unsigned i = 0; i < MAX_INI; i++)
                config_file_free(files[i]);
        config_diag_done(&diag);
        if (r == 0 && !cl.check)
                log_info("stopped");
        log_close();
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
