/* SPDX-License-Identifier: MIT */
/*
 * wsgi_config: the options of wharf-wsgi, spelled as uWSGI spells them, so
 * that an existing [uwsgi] section loads unchanged.
 */
#include <stddef.h>

#include "wsgi.h"

#define KEY(n, t, f)                                                                               \
        {                                                                                          \
                n, t, offsetof(struct wsgi_settings, f)                                            \
        }

const struct config_key wsgi_config_keys[] = {
    KEY("module", CONFIG_STRING, module),
    KEY("wsgi-file", CONFIG_STRING, wsgi_file),
    KEY("file", CONFIG_STRING, wsgi_file),
    KEY("callable", CONFIG_STRING, callable),
    KEY("chdir", CONFIG_STRING, chdir),
    KEY("home", CONFIG_STRING, home),
    KEY("virtualenv", CONFIG_STRING, home),
    KEY("venv", CONFIG_STRING, home),
    KEY("pythonpath", CONFIG_STRV, pythonpath),
    KEY("python-path", CONFIG_STRV, pythonpath),
    KEY("env", CONFIG_STRV, env),
    KEY("socket", CONFIG_STRV, socket),
    KEY("uwsgi-socket", CONFIG_STRV, socket),
    KEY("http", CONFIG_STRV, http),
    KEY("http-socket", CONFIG_STRV, http),
    KEY("chmod-socket", CONFIG_MODE, chmod_socket),
    KEY("master", CONFIG_BOOL, master),
    KEY("processes", CONFIG_UINT, processes),
    KEY("workers", CONFIG_UINT, processes),
    KEY("threads", CONFIG_UINT, threads),
    KEY("enable-threads", CONFIG_BOOL, enable_threads),
    KEY("pidfile", CONFIG_STRING, pidfile),
    KEY("vacuum", CONFIG_BOOL, vacuum),
    KEY("logger", CONFIG_STRING, logger),
    KEY("logto", CONFIG_STRING, logger),
    KEY("max-requests", CONFIG_UINT, max_requests),
    KEY("max-requests-delta", CONFIG_UINT, max_requests_delta),
    KEY("max-worker-lifetime", CONFIG_UINT, max_worker_lifetime),
    KEY("max-worker-lifetime-delta", CONFIG_UINT, max_worker_lifetime_delta),
    KEY("touch-reload", CONFIG_STRV, touch_reload),
    KEY("reload-on-rss", CONFIG_UINT, reload_on_rss),
    KEY("harakiri", CONFIG_UINT, harakiri),
    KEY("lazy-apps", CONFIG_BOOL, lazy_apps),
    KEY("buffer-size", CONFIG_SIZE, buffer_size),
    KEY("socket-timeout", CONFIG_UINT, socket_timeout),
    KEY("reload-mercy", CONFIG_UINT, reload_mercy),
    KEY("worker-reload-mercy", CONFIG_UINT, reload_mercy),
    KEY("log-level", CONFIG_STRING, log_level),
    KEY("post-buffering", CONFIG_SIZE, post_buffering),
    KEY("limit-post", CONFIG_SIZE, limit_post),
    /* What uWSGI needs and wharf does by design: accepted without effect. */
    {"die-on-term", CONFIG_IGNORED, 0},
    /* wharf-wsgi logs no requests: the front's access log has them. */
    {"disable-logging", CONFIG_IGNORED, 0},
    /* The backlog is the socket's: systemd's Backlog=, or wharf's own default. */
    {"listen", CONFIG_IGNORED, 0},
    {"strict", CONFIG_IGNORED, 0},
    {"need-app", CONFIG_IGNORED, 0},
    {"single-interpreter", CONFIG_IGNORED, 0},
    {"plugin", CONFIG_IGNORED, 0},
    {"plugins", CONFIG_IGNORED, 0},
    {NULL, 0, 0},
};

void wsgi_settings_defaults(struct wsgi_settings *s)
{
        *s = (struct wsgi_settings){
            .callable = "application",
            .processes = 1,
            .threads = 1,
            .buffer_size = WSGI_DEFAULT_BUFFER,
            .socket_timeout = 30,
            .reload_mercy = 30,
            .log_level = "info",
        };
}

int wsgi_settings_check(const struct wsgi_settings *s, struct config_diag *diag)
{
        unsigned errors = diag->errors;

        if (!s->module && !s->wsgi_file)
                config_diag_add(diag, true, NULL, 0, NULL,
                                "no application: set module (pkg.mod:callable) or wsgi-file");
        if (s->module && s->wsgi_file)
                config_diag_add(diag, true, NULL, 0, NULL,
                                "module and wsgi-file are both set: choose one");
        if (s->processes == 0 || s->processes > WSGI_MAX_PROCESSES)
                config_diag_add(diag, true, NULL, 0, "processes", "must be 1..%d",
                                WSGI_MAX_PROCESSES);
        if (s->processes > 1 && !s->master)
                config_diag_add(diag, true, NULL, 0, "processes", "%u processes need master = true",
                                s->processes);
        if (s->threads == 0 || s->threads > WSGI_MAX_THREADS)
                config_diag_add(diag, true, NULL, 0, "threads", "must be 1..%d", WSGI_MAX_THREADS);
        if (s->buffer_size < 4096 || s->buffer_size > 1024 * 1024)
                config_diag_add(diag, true, NULL, 0, "buffer-size", "must be 4k..1M");
        if (s->harakiri && !s->master)
                config_diag_add(diag, false, NULL, 0, "harakiri", "needs master = true, ignored");
        if (s->max_worker_lifetime && !s->master)
                config_diag_add(diag, false, NULL, 0, "max-worker-lifetime",
                                "needs master = true, ignored");
        if (s->touch_reload.n && !s->master)
                config_diag_add(diag, false, NULL, 0, "touch-reload",
                                "needs master = true, ignored");
        if (s->socket_timeout == 0)
                config_diag_add(diag, true, NULL, 0, "socket-timeout", "must be at least 1");
        for (size_t i = 0; i < s->env.n; i++)
                if (!strchr(s->env.v[i], '=') || s->env.v[i][0] == '=')
                        config_diag_add(diag, true, NULL, 0, "env", "'%s' is not KEY=VALUE",
                                        s->env.v[i]);
        return diag->errors > errors ? -EINVAL : 0;
}
