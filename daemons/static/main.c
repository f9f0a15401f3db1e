/* SPDX-License-Identifier: MIT */
/*
 * wharf-static: serves files under a root, to its own clients and to the
 * connections wharf-proxy hands over. main() reads the configuration, takes
 * or binds the sockets, starts one event loop per worker thread and then
 * supervises: signals (SIGTERM, SIGINT, SIGHUP), sd_notify status and the
 * watchdog, which it feeds only while every loop is making progress.
 */
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

#include "loops.h"
#include "notify.h"
#include "static.h"
#include "wharf-config.h"

#define SUPERVISE_TICK_MS 250
#define STATUS_INTERVAL_USEC 1000000

static void usage(FILE *f)
{
        fprintf(f, "Usage: wharf-static [OPTIONS]\n"
                   "Serve static files, directly or on connections handed over by wharf-proxy.\n"
                   "\n"
                   "  -c, --config FILE        read settings from FILE ([static] section)\n"
                   "      --root DIR           directory to serve (nginx alias)\n"
                   "      --prefix PATH        URL prefix mapped onto DIR (default /)\n"
                   "      --listen ADDR        bind ADDR when not socket-activated (repeatable):\n"
                   "                           :8080, 127.0.0.1:8080, [::1]:8080, unix:/path\n"
                   "      --handoff PATH       bind the handoff socket when not socket-activated\n"
                   "      --workers N          event loops (default: one per CPU)\n"
                   "      --access-log TARGET  off, journal, stderr or file:/path\n"
                   "      --log-level LEVEL    debug, info, notice, warning or error\n"
                   "      --check-config       check the configuration and exit\n"
                   "  -h, --help               show this help\n"
                   "      --version            show the version\n"
                   "\n"
                   "Under systemd the sockets come from the .socket unit: FileDescriptorName=http\n"
                   "for HTTP listeners and handoff for the SOCK_SEQPACKET handoff socket.\n"
                   "See docs/wharf-static.md for every setting.\n");
}

enum {
        OPT_ROOT = 0x100,
        OPT_PREFIX,
        OPT_LISTEN,
        OPT_HANDOFF,
        OPT_WORKERS,
        OPT_ACCESS_LOG,
        OPT_LOG_LEVEL,
        OPT_CHECK,
        OPT_VERSION,
};

struct cmdline {
        const char *config;
        bool check;
        /* option values, applied over the file in order */
        const char *key[64];
        const char *value[64];
        unsigned n;
};

static void settings_defaults(struct static_settings *s)
{
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);

        *s = (struct static_settings){
            .prefix = "/",
            .workers = cpus > 0 ? (unsigned) cpus : 1,
            .index = "index.html",
            .gzip_static = true,
            .expires = "off",
            .server_tokens = true,
            .default_type = "application/octet-stream",
            .keepalive_timeout = 65000,
            .keepalive_requests = 1000,
            .client_header_timeout = 60000,
            .send_timeout = 60000,
            .max_connections = 4096,
            .max_header_size = 16 * 1024,
            .open_file_cache = 64 * 1024 * 1024,
            .cache_max_file = 64 * 1024,
            .splice_min = 256 * 1024,
            .access_log = "off",
        };
}

static int parse_cmdline(int argc, char **argv, struct cmdline *ret)
{
        static const struct option options[] = {
            {"config", required_argument, NULL, 'c'},
            {"root", required_argument, NULL, OPT_ROOT},
            {"prefix", required_argument, NULL, OPT_PREFIX},
            {"listen", required_argument, NULL, OPT_LISTEN},
            {"handoff", required_argument, NULL, OPT_HANDOFF},
            {"workers", required_argument, NULL, OPT_WORKERS},
            {"access-log", required_argument, NULL, OPT_ACCESS_LOG},
            {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
            {"check-config", no_argument, NULL, OPT_CHECK},
            {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, OPT_VERSION},
            {},
        };
        static const char *const keys[] = {
            [OPT_ROOT - OPT_ROOT] = "root",           [OPT_PREFIX - OPT_ROOT] = "prefix",
            [OPT_LISTEN - OPT_ROOT] = "listen",       [OPT_HANDOFF - OPT_ROOT] = "handoff",
            [OPT_WORKERS - OPT_ROOT] = "workers",     [OPT_ACCESS_LOG - OPT_ROOT] = "access_log",
            [OPT_LOG_LEVEL - OPT_ROOT] = "log_level",
        };
        int opt;

        *ret = (struct cmdline){0};
        while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) >= 0) {
                switch (opt) {
                case 'c':
                        ret->config = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        exit(EXIT_SUCCESS);
                case OPT_VERSION:
                        printf("wharf-static " WHARF_VERSION "\n");
                        exit(EXIT_SUCCESS);
                case OPT_CHECK:
                        ret->check = true;
                        break;
                case OPT_ROOT:
                case OPT_PREFIX:
                case OPT_LISTEN:
                case OPT_HANDOFF:
                case OPT_WORKERS:
                case OPT_ACCESS_LOG:
                case OPT_LOG_LEVEL:
                        if (ret->n >= ARRAY_SIZE(ret->key)) {
                                fprintf(stderr, "wharf-static: too many options\n");
                                return -E2BIG;
                        }
                        ret->key[ret->n] = keys[opt - OPT_ROOT];
                        ret->value[ret->n++] = optarg;
                        break;
                default:
                        usage(stderr);
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "wharf-static: unexpected argument '%s'\n", argv[optind]);
                return -EINVAL;
        }
        return 0;
}

static void print_diag(const struct config_diag *d)
{
        for (size_t i = 0; i < d->n_messages; i++)
                log_msg(strstr(d->messages[i], "warning") ? LOG_WARNING : LOG_ERR, "%s",
                        d->messages[i]);
}

/* Reads the file (if any) and the command line into a ready config. */
static int load_config(const struct cmdline *cl, struct config_diag *diag,
                       struct static_config **ret)
{
        struct static_settings s;
        struct config_file *file = NULL;
        int r;

        settings_defaults(&s);
        if (cl->config) {
                r = config_load(cl->config, &file, diag);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < file->n_entries; i++) {
                        const char *sec = file->entries[i].section;
                        if (!streq(sec, "static"))
                                config_diag_add(diag, true, file->path, file->entries[i].line,
                                                file->entries[i].key,
                                                "not in a [static] section ('%s')", sec);
                }
                r = config_apply(file, "static", static_config_keys, CONFIG_UNKNOWN_ERROR, &s,
                                 diag);
                if (r < 0) {
                        config_file_free(file);
                        return r;
                }
        }
        for (unsigned i = 0; i < cl->n; i++) {
                char origin[64];
                snprintf(origin, sizeof(origin), "--%s", cl->key[i]);
                for (char *p = origin; *p; p++)
                        if (*p == '_')
                                *p = '-';
                (void) config_set(config_key_find(static_config_keys, cl->key[i]), cl->value[i], &s,
                                  origin, diag);
        }
        if (diag->errors) {
                config_strv_done(&s.listen);
                config_strv_done(&s.set_real_ip_from);
                config_file_free(file);
                return -EINVAL;
        }
        if (s.workers == 0)
                s.workers = 1;
        return static_config_new(&s, file, diag, ret);
}

static int open_sockets(const struct static_config *cfg, struct server *srv)
{
        int r;

        r = listen_from_systemd(&srv->listeners, &srv->n_listeners);
        if (r < 0)
                return log_errno(r, "cannot use the sockets from systemd: %m");
        if (srv->n_listeners > 0) {
                for (size_t i = 0; i < srv->n_listeners; i++) {
                        struct listener *l = &srv->listeners[i];
                        log_info("serving on %s socket '%s' from systemd",
                                 l->type == SOCK_SEQPACKET ? "handoff" : "http", l->name);
                }
                if (cfg->s.listen.n > 0 || cfg->s.handoff)
                        log_info("socket-activated: 'listen' and 'handoff' settings are not used");
                return 0;
        }

        size_t n = cfg->s.listen.n + (cfg->s.handoff ? 1 : 0);
        if (n == 0) {
                log_error("no sockets: give --listen or --handoff, or start from a .socket unit");
                return -EINVAL;
        }
        srv->listeners = calloc(n, sizeof(*srv->listeners));
        if (!srv->listeners)
                return log_errno(-ENOMEM, "out of memory");
        for (size_t i = 0; i < cfg->s.listen.n; i++) {
                r = listen_bind(cfg->s.listen.v[i], SOCK_STREAM, 0666, "http",
                                &srv->listeners[srv->n_listeners]);
                if (r < 0)
                        return log_errno(r, "cannot listen on '%s': %m", cfg->s.listen.v[i]);
                srv->n_listeners++;
                log_info("listening on %s", cfg->s.listen.v[i]);
        }
        if (cfg->s.handoff) {
                r = listen_bind(cfg->s.handoff, SOCK_SEQPACKET, 0660, "handoff",
                                &srv->listeners[srv->n_listeners]);
                if (r < 0)
                        return log_errno(r, "cannot bind handoff socket '%s': %m", cfg->s.handoff);
                srv->n_listeners++;
                log_info("handoff socket %s", cfg->s.handoff);
        }
        return 0;
}

static void apply_logging(const struct static_config *cfg)
{
        if (cfg->s.error_log) {
                int r = log_open(cfg->s.error_log);
                if (r < 0)
                        log_error("cannot open error log '%s': %s", cfg->s.error_log, strerror(-r));
        }
        log_set_max_level(cfg->log_level);
}

static void send_status(struct server *srv, struct notify *n, struct notify_rate *rate,
                        uint64_t now_usec)
{
        uint64_t conns = 0, reqs = 0;

        for (unsigned i = 0; i < srv->n_workers; i++) {
                struct worker_stats *st = worker_stats(srv->workers[i]);
                conns += atomic_load(&st->connections);
                reqs += atomic_load(&st->requests);
        }
        notify_rate_update(rate, reqs, now_usec);
        notify_status(n, "%llu connections, %llu requests, %.0f req/s", (unsigned long long) conns,
                      (unsigned long long) reqs, rate->per_sec);
}

static void reload(const struct cmdline *cl, struct server *srv, struct notify *n,
                   struct static_config **retired)
{
        struct config_diag diag = {0};
        struct static_config *cfg = NULL;
        int r;

        notify_reloading(n);
        r = load_config(cl, &diag, &cfg);
        print_diag(&diag);
        config_diag_done(&diag);
        if (r < 0) {
                log_error("reload failed, keeping the running configuration");
        } else {
                const struct static_config *old = atomic_load(&srv->cfg);
                if (old->s.max_connections < cfg->s.max_connections)
                        log_warning("max_connections can only grow with a restart");
                if (old->s.workers != cfg->s.workers)
                        log_warning("workers changes with a restart, not a reload");
                /* The previous config is freed once every worker has moved on. */
                static_config_free(*retired);
                *retired = (struct static_config *) old;
                apply_logging(cfg);
                atomic_store(&srv->cfg, cfg);
                for (unsigned i = 0; i < srv->n_workers; i++)
                        worker_poke(srv->workers[i]);
                log_info("configuration reloaded");
        }
        notify_ready(n);
}

static bool retired_unused(struct server *srv, const struct static_config *retired)
{
        for (unsigned i = 0; i < srv->n_workers; i++) {
                struct worker_stats *st = worker_stats(srv->workers[i]);
                if (atomic_load(&st->health.state) == LOOP_RUNNING &&
                    atomic_load(&st->cfg_seen) == retired)
                        return false;
        }
        return true;
}

static int supervise(const struct cmdline *cl, struct server *srv, int sfd)
{
        struct notify n;
        struct notify_rate rate = {0};
        struct static_config *retired = NULL;
        uint64_t next_status = 0;

        notify_init(&n);
        notify_ready(&n);
        log_info("ready: %u workers", srv->n_workers);

        for (;;) {
                struct pollfd p = {.fd = sfd, .events = POLLIN};
                int r = poll(&p, 1, SUPERVISE_TICK_MS);
                if (r < 0 && errno != EINTR)
                        return log_errno(-errno, "poll: %m");
                if (r > 0) {
                        struct signalfd_siginfo si;
                        if (read(sfd, &si, sizeof(si)) == (ssize_t) sizeof(si)) {
                                if (si.ssi_signo == SIGHUP) {
                                        reload(cl, srv, &n, &retired);
                                } else {
                                        log_info("%s: finishing requests in flight",
                                                 strsignal((int) si.ssi_signo));
                                        notify_stopping(&n);
                                        break;
                                }
                        }
                }

                uint64_t now = now_us();
                if (retired && retired_unused(srv, retired))
                        retired = static_config_free(retired);
                /* A loop stuck for more than half the interval stops the pings. */
                if (loops_alive(srv->health, srv->n_workers, &n, now))
                        notify_tick(&n, now);
                if (now >= next_status) {
                        send_status(srv, &n, &rate, now);
                        next_status = now + STATUS_INTERVAL_USEC;
                }
        }

        atomic_store(&srv->stopping, true);
        for (unsigned i = 0; i < srv->n_workers; i++)
                worker_poke(srv->workers[i]);
        /* Keep feeding the watchdog while the loops drain. */
        loops_wait_exited(srv->health, srv->n_workers, &n);
        static_config_free(retired);
        return 0;
}

int main(int argc, char **argv)
{
        struct cmdline cl;
        struct config_diag diag = {0};
        struct static_config *cfg = NULL;
        struct server srv = {0};
        int r, sfd = -1;

        log_set_ident("wharf-static");
        log_open_default();
        if (parse_cmdline(argc, argv, &cl) < 0)
                return EXIT_FAILURE;

        r = load_config(&cl, &diag, &cfg);
        if (cl.check) {
                for (size_t i = 0; i < diag.n_messages; i++)
                        fprintf(stderr, "%s\n", diag.messages[i]);
                config_diag_done(&diag);
                if (r < 0) {
                        fprintf(stderr, "wharf-static: configuration has errors\n");
                        return EXIT_FAILURE;
                }
                printf("wharf-static: configuration OK (root %s, prefix %s)\n", cfg->s.root,
                       cfg->prefix);
                static_config_free(cfg);
                return EXIT_SUCCESS;
        }
        print_diag(&diag);
        config_diag_done(&diag);
        if (r < 0) {
                log_error("cannot start: configuration has errors");
                return EXIT_FAILURE;
        }
        apply_logging(cfg);
        atomic_store(&srv.cfg, cfg);

        /* Signals go to the supervisor's signalfd; the threads inherit the mask. */
        sfd = loops_signalfd();
        if (sfd < 0) {
                r = log_errno(sfd, "signalfd: %m");
                goto finish;
        }

        r = open_sockets(cfg, &srv);
        if (r < 0)
                goto finish;

        srv.workers = calloc(cfg->s.workers, sizeof(*srv.workers));
        srv.health = calloc(cfg->s.workers, sizeof(*srv.health));
        if (!srv.workers || !srv.health) {
                r = log_errno(-ENOMEM, "out of memory");
                goto finish;
        }
        for (unsigned i = 0; i < cfg->s.workers; i++) {
                srv.workers[i] = worker_new(&srv, i);
                if (!srv.workers[i]) {
                        r = log_errno(-ENOMEM, "cannot create worker %u", i);
                        break;
                }
                r = worker_start(srv.workers[i]);
                if (r < 0) {
                        log_errno(r, "cannot start worker %u: %m", i);
                        worker_free(srv.workers[i]);
                        break;
                }
                srv.health[srv.n_workers++] = &worker_stats(srv.workers[i])->health;
        }
        if (r == 0)
                r = loops_wait_started(srv.health, srv.n_workers);
        if (r == 0)
                r = supervise(&cl, &srv, sfd);
        else
                atomic_store(&srv.stopping, true);

finish:
        /* Also the way out of a failed start, so that nothing leaks. */
        for (unsigned i = 0; i < srv.n_workers; i++) {
                worker_poke(srv.workers[i]);
                worker_join(srv.workers[i]);
                worker_free(srv.workers[i]);
        }
        free(srv.workers);
        free(srv.health);
        for (size_t i = 0; i < srv.n_listeners; i++)
                listen_done(&srv.listeners[i], true);
        free(srv.listeners);
        static_config_free((struct static_config *) atomic_load(&srv.cfg));
        if (sfd >= 0)
                close(sfd);
        if (r == 0)
                log_info("stopped");
        log_close();
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
