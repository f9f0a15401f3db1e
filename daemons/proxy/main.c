/* SPDX-License-Identifier: MIT */
/*
 * wharf-proxy: the front door. main() reads the configuration, takes or
 * binds the listening sockets, starts one event loop per worker thread and
 * then supervises: signals (SIGTERM and SIGINT drain, SIGHUP reloads),
 * sd_notify status and the watchdog, which it feeds only while every loop
 * is making progress.
 */
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "loops.h"
#include "notify.h"
#include "proxy.h"
#include "util.h"
#include "wharf-config.h"

#define SUPERVISE_TICK_MS 250
#define STATUS_INTERVAL_USEC 1000000
#define DEFAULT_CONFIG WHARF_SYSCONFDIR "/wharf/proxy.ini"

static void usage(FILE *f)
{
        fprintf(f, "Usage: wharf-proxy [OPTIONS]\n"
                   "Take client connections and send each request where its route says:\n"
                   "an upstream (uwsgi or HTTP), wharf-static, or an answer made here.\n"
                   "\n"
                   "  -c, --config FILE        read FILE (default " DEFAULT_CONFIG ")\n"
                   "      --listen ADDR        bind ADDR when not socket-activated (repeatable):\n"
                   "                           :8080, 127.0.0.1:8080, [::1]:8080, unix:/path\n"
                   "      --workers N          event loops (default: one per CPU)\n"
                   "      --access-log TARGET  off, journal, stderr or file:/path\n"
                   "      --log-level LEVEL    debug, info, notice, warning or error\n"
                   "      --check-config       check the configuration, print every problem, exit\n"
                   "  -h, --help               show this help\n"
                   "      --version            show the version\n"
                   "\n"
                   "Under systemd the listening sockets come from wharf-proxy.socket.\n"
                   "See docs/wharf-proxy.md for the configuration file.\n");
}

enum {
        OPT_LISTEN = 0x100,
        OPT_WORKERS,
        OPT_ACCESS_LOG,
        OPT_LOG_LEVEL,
        OPT_CHECK,
        OPT_VERSION,
};

struct cmdline {
        const char *config;
        bool config_given;
        bool check;
        const char *key[64];
        const char *value[64];
        unsigned n;
};

static int parse_cmdline(int argc, char **argv, struct cmdline *ret)
{
        static const struct option options[] = {
            {"config", required_argument, NULL, 'c'},
            {"listen", required_argument, NULL, OPT_LISTEN},
            {"workers", required_argument, NULL, OPT_WORKERS},
            {"access-log", required_argument, NULL, OPT_ACCESS_LOG},
            {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
            {"check-config", no_argument, NULL, OPT_CHECK},
            {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, OPT_VERSION},
            {},
        };
        static const char *const keys[] = {
            [OPT_LISTEN - OPT_LISTEN] = "listen",
            [OPT_WORKERS - OPT_LISTEN] = "workers",
            [OPT_ACCESS_LOG - OPT_LISTEN] = "access_log",
            [OPT_LOG_LEVEL - OPT_LISTEN] = "log_level",
        };
        int opt;

        *ret = (struct cmdline){.config = DEFAULT_CONFIG};
        while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) >= 0) {
                switch (opt) {
                case 'c':
                        ret->config = optarg;
                        ret->config_given = true;
                        break;
                case 'h':
                        usage(stdout);
                        exit(EXIT_SUCCESS);
                case OPT_VERSION:
                        printf("wharf-proxy " WHARF_VERSION "\n");
                        exit(EXIT_SUCCESS);
                case OPT_CHECK:
                        ret->check = true;
                        break;
                case OPT_LISTEN:
                case OPT_WORKERS:
                case OPT_ACCESS_LOG:
                case OPT_LOG_LEVEL:
                        if (ret->n >= ARRAY_SIZE(ret->key)) {
                                fprintf(stderr, "wharf-proxy: too many options\n");
                                return -E2BIG;
                        }
                        ret->key[ret->n] = keys[opt - OPT_LISTEN];
                        ret->value[ret->n++] = optarg;
                        break;
                default:
                        usage(stderr);
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "wharf-proxy: unexpected argument '%s'\n", argv[optind]);
                return -EINVAL;
        }
        return 0;
}

static int load_config(const struct cmdline *cl, struct config_diag *diag,
                       struct proxy_config **ret)
{
        /* Without -c, a missing default file means: only the command line. */
        const char *path = cl->config;

        if (!cl->config_given && access(path, F_OK) < 0)
                path = NULL;
        return proxy_config_load(path, cl->key, cl->value, cl->n, diag, ret);
}

static void print_diag(const struct config_diag *d)
{
        for (size_t i = 0; i < d->n_messages; i++)
                log_msg(strstr(d->messages[i], "warning") ? LOG_WARNING : LOG_ERR, "%s",
                        d->messages[i]);
}

static int open_sockets(const struct proxy_config *cfg, struct server *srv)
{
        int r;

        r = listen_from_systemd(&srv->listeners, &srv->n_listeners);
        if (r < 0)
                return log_errno(r, "cannot use the sockets from systemd: %m");
        if (srv->n_listeners > 0) {
                for (size_t i = 0; i < srv->n_listeners; i++)
                        log_info("serving on socket '%s' from systemd", srv->listeners[i].name);
                if (cfg->listen.n > 0)
                        log_info("socket-activated: 'listen' settings are not used");
                return 0;
        }
        if (cfg->listen.n == 0) {
                log_error("no sockets: give --listen or 'listen =', or start from "
                          "wharf-proxy.socket");
                return -EINVAL;
        }
        srv->listeners = calloc(cfg->listen.n, sizeof(*srv->listeners));
        if (!srv->listeners)
                return log_errno(-ENOMEM, "out of memory");
        for (size_t i = 0; i < cfg->listen.n; i++) {
                r = listen_bind(cfg->listen.v[i], SOCK_STREAM, 0666, "http",
                                &srv->listeners[srv->n_listeners]);
                if (r < 0)
                        return log_errno(r, "cannot listen on '%s': %m", cfg->listen.v[i]);
                srv->n_listeners++;
                log_info("listening on %s", cfg->listen.v[i]);
        }
        return 0;
}

static void apply_logging(const struct proxy_config *cfg)
{
        if (cfg->error_log) {
                int r = log_open(cfg->error_log);
                if (r < 0)
                        log_error("cannot open error log '%s': %s", cfg->error_log, strerror(-r));
        }
        log_set_max_level(cfg->log_level);
}

static void send_status(struct server *srv, struct notify *n, struct notify_rate *rate,
                        uint64_t now_usec)
{
        uint64_t conns = 0, reqs = 0, busy = 0;

        for (unsigned i = 0; i < srv->n_workers; i++) {
                struct worker_stats *st = worker_stats(srv->workers[i]);
                conns += atomic_load(&st->connections);
                reqs += atomic_load(&st->requests);
                busy += atomic_load(&st->upstream_busy);
        }
        notify_rate_update(rate, reqs, now_usec);
        notify_status(n,
                      "%llu connections, %llu upstream requests in flight, %llu requests, "
                      "%.0f req/s",
                      (unsigned long long) conns, (unsigned long long) busy,
                      (unsigned long long) reqs, rate->per_sec);
}

/* Retired configs wait until no worker and no request uses them. */
#define RETIRED_MAX 16

struct retired {
        struct proxy_config *cfg[RETIRED_MAX];
        unsigned n;
};

static void retired_collect(struct server *srv, struct retired *r, bool force)
{
        for (unsigned i = 0; i < r->n;) {
                struct proxy_config *c = r->cfg[i];
                bool used = atomic_load(&c->refs) > 0;
                for (unsigned j = 0; j < srv->n_workers && !used; j++) {
                        struct worker_stats *st = worker_stats(srv->workers[j]);
                        used = atomic_load(&st->health.state) == LOOP_RUNNING &&
                               atomic_load(&st->cfg_seen) == c;
                }
                if (used && !force) {
                        i++;
                        continue;
                }
                proxy_config_free(c);
                r->cfg[i] = r->cfg[--r->n];
        }
}

static void reload(const struct cmdline *cl, struct server *srv, struct notify *n,
                   struct retired *retired)
{
        struct config_diag diag = {0};
        struct proxy_config *cfg = NULL;
        int r;

        notify_reloading(n);
        if (retired->n == RETIRED_MAX) {
                log_error("reload refused: %u earlier configurations are still in use",
                          RETIRED_MAX);
                notify_ready(n);
                return;
        }
        r = load_config(cl, &diag, &cfg);
        print_diag(&diag);
        config_diag_done(&diag);
        if (r < 0) {
                log_error("reload failed, keeping the running configuration");
        } else {
                struct proxy_config *old = atomic_load(&srv->cfg);
                if (old->max_connections != cfg->max_connections || old->workers != cfg->workers)
                        log_warning("max_connections and workers change with a restart, not a "
                                    "reload");
                cfg->max_connections = old->max_connections;
                cfg->workers = old->workers;
                proxy_config_adopt(cfg, old);
                retired->cfg[retired->n++] = old;
                apply_logging(cfg);
                atomic_store(&srv->cfg, cfg);
                for (unsigned i = 0; i < srv->n_workers; i++)
                        worker_poke(srv->workers[i]);
                log_info("configuration reloaded");
        }
        notify_ready(n);
}

static int supervise(const struct cmdline *cl, struct server *srv, int sfd)
{
        struct notify n;
        struct notify_rate rate = {0};
        struct retired retired = {0};
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
                retired_collect(srv, &retired, false);
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
        loops_wait_exited(srv->health, srv->n_workers, &n);
        retired_collect(srv, &retired, true);
        return 0;
}

int main(int argc, char **argv)
{
        struct cmdline cl;
        struct config_diag diag = {0};
        struct proxy_config *cfg = NULL;
        struct server srv = {0};
        int r, sfd = -1;

        log_set_ident("wharf-proxy");
        log_open_default();
        if (parse_cmdline(argc, argv, &cl) < 0)
                return EXIT_FAILURE;

        r = load_config(&cl, &diag, &cfg);
        if (cl.check) {
                for (size_t i = 0; i < diag.n_messages; i++)
                        fprintf(stderr, "%s\n", diag.messages[i]);
                config_diag_done(&diag);
                if (r < 0) {
                        fprintf(stderr, "wharf-proxy: configuration has errors\n");
                        return EXIT_FAILURE;
                }
                size_t routes = 0;
                for (size_t i = 0; i < cfg->n_servers; i++)
                        routes += cfg->servers[i].n_locations;
                printf("wharf-proxy: configuration OK (%zu servers, %zu upstreams, %zu "
                       "locations)\n",
                       cfg->n_servers, cfg->n_upstreams, routes);
                proxy_config_free(cfg);
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

        sfd = loops_signalfd();
        if (sfd < 0) {
                r = log_errno(sfd, "signalfd: %m");
                goto finish;
        }

        r = open_sockets(cfg, &srv);
        if (r < 0)
                goto finish;

        srv.workers = calloc(cfg->workers, sizeof(*srv.workers));
        srv.health = calloc(cfg->workers, sizeof(*srv.health));
        if (!srv.workers || !srv.health) {
                r = log_errno(-ENOMEM, "out of memory");
                goto finish;
        }
        for (unsigned i = 0; i < cfg->workers; i++) {
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
        proxy_config_free(atomic_load(&srv.cfg));
        if (sfd >= 0)
                close(sfd);
        if (r == 0)
                log_info("stopped");
        log_close();
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
