/* SPDX-License-Identifier: MIT */
/*
 * wsgi_master: the master process of master = true.
 *
 * It forks `processes` workers after importing the application once (so
 * they share it copy-on-write; with lazy-apps each worker imports), then
 * supervises them from one poll() loop over a signalfd: SIGCHLD reaps and
 * respawns (at once, with a growing delay for a worker that keeps dying
 * young), a 250 ms tick checks harakiri, sends STATUS= and feeds the
 * watchdog. Workers report through a shared memory page (struct wsgi_slot).
 *
 * Reload (SIGHUP) re-executes the master in place: same pid (MAINPID stays
 * right), the listen sockets passed on as systemd passes them, and the old
 * workers, still serving, passed on as children to stop. The new image
 * imports the fresh code, forks its workers and only once they all serve
 * tells the old ones to finish their request and exit. The queue in the
 * listen socket bridges the gap, so no request fails.
 */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "notify.h"
#include "wsgi.h"

#define TICK_MS 250
#define STATUS_INTERVAL_USEC 1000000
#define YOUNG_DEATH_MS 1000
#define BACKOFF_MAX_MS 5000
#define OLD_WORKERS_ENV "WHARF_WSGI_OLD_WORKERS"

struct worker_info {
        uint64_t started_ms;
        uint64_t spawn_at_ms; /* when a dead worker is due to be respawned */
        unsigned young_deaths;
        bool harakiri_sent;
        bool recycling; /* asked to stop: reload-on-rss, max-worker-lifetime */
};

/* touch-reload: a file and the change time it had when the master started. */
struct touched {
        const char *path;
        struct timespec mtime; /* zero: missing */
};

struct master {
        struct wsgi_server *srv;
        struct wsgi_slot *slots; /* shared with the workers */
        struct worker_info *info;
        unsigned n;
        pid_t old[WSGI_MAX_PROCESSES * 4];
        size_t n_old;
        struct notify notify;
        uint64_t requests_gone; /* served by workers that have exited */
        unsigned respawns;
        struct touched *touch;
        size_t n_touch;
        bool ready;
        bool stopping;
};

static void worker_main(struct master *m, unsigned i, int sfd)
{
        struct wsgi_server *srv = m->srv;
        int r;

        wsgi_python_after_fork();
        (void) close(sfd);
        srv->notify = NULL;
        srv->sig.setup_worker();
        if (srv->s->lazy_apps && wsgi_python_load_app(srv->s, srv->py) < 0) {
                log_close();
                _exit(EXIT_FAILURE);
        }
        r = wsgi_worker_run(srv, srv->py, &m->slots[i]);
        wsgi_python_done(srv->py);
        log_close();
        _exit(r < 0 ? EXIT_FAILURE : EXIT_SUCCESS);
}

static int spawn(struct master *m, unsigned i, int sfd)
{
        struct wsgi_slot *slot = &m->slots[i];
        pid_t pid;

        memset(slot, 0, sizeof(*slot));
        if (m->srv->s->max_requests)
                slot->max_requests =
                    m->srv->s->max_requests + (i + 1) * m->srv->s->max_requests_delta;
        PyOS_BeforeFork();
        pid = fork();
        if (pid == 0)
                worker_main(m, i, sfd);
        PyOS_AfterFork_Parent();
        if (pid < 0)
                return log_errno(-errno, "cannot fork worker %u: %m", i + 1);
        atomic_store(&slot->pid, pid);
        m->info[i].started_ms = now_ms();
        m->info[i].harakiri_sent = false;
        m->info[i].recycling = false;
        log_debug("worker %u started (pid %d)", i + 1, (int) pid);
        return 0;
}

static void describe_status(int status, char *out, size_t size)
{
        if (WIFEXITED(status))
                snprintf(out, size, "exited with status %d", WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
                snprintf(out, size, "killed by signal %s", sigabbrev_np(WTERMSIG(status)) ?: "?");
        else
                snprintf(out, size, "ended (status %d)", status);
}

static bool forget_old(struct master *m, pid_t pid)
{
        for (size_t i = 0; i < m->n_old; i++)
                if (m->old[i] == pid) {
                        m->old[i] = m->old[--m->n_old];
                        return true;
                }
        return false;
}

/* Reaps every child that ended. Returns -1 when a worker failed before the first READY. */
static int reap(struct master *m)
{
        int status;
        pid_t pid;

        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                char how[64];
                describe_status(status, how, sizeof(how));
                if (forget_old(m, pid)) {
                        log_info("old worker (pid %d) %s", (int) pid, how);
                        continue;
                }
                unsigned i;
                for (i = 0; i < m->n; i++)
                        if (atomic_load(&m->slots[i].pid) == pid)
                                break;
                if (i == m->n)
                        continue;
                struct wsgi_slot *slot = &m->slots[i];
                struct worker_info *info = &m->info[i];
                bool was_ready = atomic_load(&slot->ready);
                m->requests_gone += atomic_load(&slot->requests);
                atomic_store(&slot->pid, 0);
                for (unsigned t = 0; t < WSGI_MAX_THREADS; t++)
                        atomic_store(&slot->t[t].busy, 0);
                if (m->stopping)
                        continue;
                if (!m->ready && !was_ready) {
                        log_error("worker %u (pid %d) %s before it could serve", i + 1, (int) pid,
                                  how);
                        return -1;
                }
                uint64_t now = now_ms();
                bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
                if (now - info->started_ms < YOUNG_DEATH_MS && !clean)
                        info->young_deaths++;
                else
                        info->young_deaths = 0;
                uint64_t delay = 0;
                if (info->young_deaths > 1)
                        delay = min_u64(BACKOFF_MAX_MS, 100u << min_u64(info->young_deaths - 2, 6));
                info->spawn_at_ms = now + delay;
                m->respawns++;
                if (clean)
                        log_info("worker %u (pid %d) recycled", i + 1, (int) pid);
                else if (delay)
                        log_warning("worker %u (pid %d) %s; respawning in %llu ms", i + 1,
                                    (int) pid, how, (unsigned long long) delay);
                else
                        log_warning("worker %u (pid %d) %s; respawning", i + 1, (int) pid, how);
        }
        return 0;
}

static void check_harakiri(struct master *m, uint64_t now)
{
        uint64_t limit = (uint64_t) m->srv->s->harakiri * 1000;

        if (!limit)
                return;
        for (unsigned i = 0; i < m->n; i++) {
                struct wsgi_slot *slot = &m->slots[i];
                pid_t pid = atomic_load(&slot->pid);
                if (!pid || m->info[i].harakiri_sent)
                        continue;
                /* One request stuck in any thread takes the whole worker with it. */
                for (unsigned t = 0; t < m->srv->s->threads; t++) {
                        struct wsgi_slot_thread *st = &slot->t[t];
                        uint64_t started = atomic_load(&st->request_ms);
                        if (!atomic_load(&st->busy) || now < started || now - started < limit)
                                continue;
                        log_error("harakiri: worker %u (pid %d) spent %llu s on '%s'; killing it",
                                  i + 1, (int) pid, (unsigned long long) ((now - started) / 1000),
                                  st->request);
                        (void) kill(pid, SIGKILL);
                        m->info[i].harakiri_sent = true;
                        break;
                }
        }
}

/* Resident set size of a process in MiB, or 0 when it cannot be read. */
static uint64_t rss_mib(pid_t pid)
{
        char path[64];
        unsigned long size, resident;
        FILE *f;
        int n;

        snprintf(path, sizeof(path), "/proc/%d/statm", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return 0;
        n = fscanf(f, "%lu %lu", &size, &resident);
        fclose(f);
        if (n != 2)
                return 0;
        return (uint64_t) resident * (uint64_t) sysconf(_SC_PAGESIZE) / (1024 * 1024);
}

/*
 * reload-on-rss and max-worker-lifetime: a worker that grew past the limit,
 * or lived its time (worker N: the lifetime + N * max-worker-lifetime-delta,
 * so that they do not all go at once), is asked to stop. It finishes its
 * request first and is replaced like a recycled one.
 */
static void check_recycle(struct master *m, uint64_t now)
{
        const struct wsgi_settings *s = m->srv->s;

        for (unsigned i = 0; i < m->n; i++) {
                pid_t pid = atomic_load(&m->slots[i].pid);
                if (!pid || m->info[i].recycling || !atomic_load(&m->slots[i].ready))
                        continue;
                uint64_t lifetime = s->max_worker_lifetime
                                        ? ((uint64_t) s->max_worker_lifetime +
                                           (uint64_t) (i + 1) * s->max_worker_lifetime_delta) *
                                              1000
                                        : 0;
                uint64_t rss = s->reload_on_rss ? rss_mib(pid) : 0;
                if (s->reload_on_rss && rss > s->reload_on_rss)
                        log_info("worker %u (pid %d) uses %llu MiB, more than reload-on-rss %u "
                                 "MiB: recycling it",
                                 i + 1, (int) pid, (unsigned long long) rss, s->reload_on_rss);
                else if (lifetime && now - m->info[i].started_ms >= lifetime)
                        log_info("worker %u (pid %d) lived %llu s (max-worker-lifetime): "
                                 "recycling it",
                                 i + 1, (int) pid,
                                 (unsigned long long) ((now - m->info[i].started_ms) / 1000));
                else
                        continue;
                (void) kill(pid, SIGTERM);
                m->info[i].recycling = true;
        }
}

static struct timespec mtime_of(const char *path)
{
        struct stat st;

        return stat(path, &st) == 0 ? st.st_mtim : (struct timespec){0};
}

static int touch_start(struct master *m)
{
        const struct config_strv *files = &m->srv->s->touch_reload;

        if (!files->n)
                return 0;
        m->touch = calloc(files->n, sizeof(*m->touch));
        if (!m->touch)
                return -ENOMEM;
        for (size_t i = 0; i < files->n; i++)
                m->touch[m->n_touch++] = (struct touched){files->v[i], mtime_of(files->v[i])};
        return 0;
}

/*
 * touch-reload: the file that changed (or came, or went) since it was last
 * looked at, if any. Its new time is kept, so that a reload that fails is
 * not tried again until the file is touched again.
 */
static const char *touched(struct master *m)
{
        for (size_t i = 0; i < m->n_touch; i++) {
                struct timespec t = mtime_of(m->touch[i].path);
                if (t.tv_sec != m->touch[i].mtime.tv_sec ||
                    t.tv_nsec != m->touch[i].mtime.tv_nsec) {
                        m->touch[i].mtime = t;
                        return m->touch[i].path;
                }
        }
        return NULL;
}

static void send_status(struct master *m)
{
        unsigned alive = 0, busy = 0;
        uint64_t requests = m->requests_gone;

        for (unsigned i = 0; i < m->n; i++) {
                if (!atomic_load(&m->slots[i].pid))
                        continue;
                alive++;
                for (unsigned t = 0; t < m->srv->s->threads; t++)
                        busy += atomic_load(&m->slots[i].t[t].busy) ? 1 : 0;
                requests += atomic_load(&m->slots[i].requests);
        }
        notify_status(&m->notify, "%u workers, %u busy, %llu requests, %u respawns", alive, busy,
                      (unsigned long long) requests, m->respawns);
}

static bool all_ready(struct master *m)
{
        for (unsigned i = 0; i < m->n; i++)
                if (!atomic_load(&m->slots[i].pid) || !atomic_load(&m->slots[i].ready))
                        return false;
        return true;
}

static unsigned live_children(struct master *m)
{
        unsigned n = (unsigned) m->n_old;
        for (unsigned i = 0; i < m->n; i++)
                n += atomic_load(&m->slots[i].pid) ? 1 : 0;
        return n;
}

static void signal_all(struct master *m, int sig)
{
        for (unsigned i = 0; i < m->n; i++) {
                pid_t pid = atomic_load(&m->slots[i].pid);
                if (pid)
                        (void) kill(pid, sig);
        }
        for (size_t i = 0; i < m->n_old; i++)
                (void) kill(m->old[i], sig);
}

/* The workers of the image before a reload, from the environment. */
static void take_old_workers(struct master *m)
{
        const char *e = getenv(OLD_WORKERS_ENV);

        if (!e)
                return;
        for (const char *p = e; *p && m->n_old < ARRAY_SIZE(m->old);) {
                char *end;
                long pid = strtol(p, &end, 10);
                if (end == p)
                        break;
                if (pid > 0)
                        m->old[m->n_old++] = (pid_t) pid;
                p = *end == ',' ? end + 1 : end;
        }
        (void) unsetenv(OLD_WORKERS_ENV);
}

void wsgi_master_stop_old_workers(void)
{
        struct master m = {0};

        take_old_workers(&m);
        if (m.n_old == 0)
                return;
        log_error("reload failed: stopping the %zu workers of the previous code", m.n_old);
        for (size_t i = 0; i < m.n_old; i++)
                (void) kill(m.old[i], SIGTERM);
}

/* SIGTERM for every worker, then SIGKILL for those still there after reload-mercy. */
static void stop_workers(struct master *m, int sfd)
{
        uint64_t deadline = now_ms() + (uint64_t) m->srv->s->reload_mercy * 1000;
        bool killed = false;

        m->stopping = true;
        signal_all(m, SIGTERM);
        while (live_children(m) > 0) {
                struct pollfd p = {.fd = sfd, .events = POLLIN};
                (void) poll(&p, 1, 50);
                if (p.revents & POLLIN) {
                        struct signalfd_siginfo si;
                        (void) read(sfd, &si, sizeof(si));
                }
                (void) reap(m);
                notify_tick(&m->notify, now_us());
                if (!killed && now_ms() > deadline) {
                        log_warning("%u workers still busy after %u s; killing them",
                                    live_children(m), m->srv->s->reload_mercy);
                        signal_all(m, SIGKILL);
                        killed = true;
                }
        }
}

int wsgi_reexec(const struct wsgi_server *srv, const pid_t *old_workers, size_t n_old)
{
        char names[LISTEN_MAX * (LISTEN_NAME_MAX + 1)] = "", num[32];
        char *pids = NULL;
        size_t plen = 0;
        FILE *f;
        int high[LISTEN_MAX];
        size_t n = min_size(srv->n_listeners, LISTEN_MAX);

        f = open_memstream(&pids, &plen);
        if (!f)
                return -ENOMEM;
        for (size_t i = 0; i < n_old; i++)
                fprintf(f, "%s%d", i ? "," : "", (int) old_workers[i]);
        fclose(f);

        /* The log's fd may be one of 3, 4, ...: it goes first. */
        log_info("reloading: executing a fresh wharf-wsgi");
        log_close();
        /* Sockets to 3, 4, ...: copies first, so no dup2 overwrites one still to move. */
        for (size_t i = 0; i < n; i++) {
                high[i] = fcntl(srv->listeners[i].l.fd, F_DUPFD_CLOEXEC, 3 + (int) n);
                if (high[i] < 0) {
                        int r = -errno;
                        free(pids);
                        log_open_default();
                        return log_errno(r, "reload: cannot duplicate a socket: %m");
                }
                if (i)
                        strcat(names, ":");
                strcat(names, srv->listeners[i].l.name);
        }
        for (size_t i = 0; i < n; i++)
                if (dup2(high[i], 3 + (int) i) < 0) {
                        int r = -errno;
                        free(pids);
                        log_open_default();
                        return log_errno(r, "reload: cannot move a socket: %m");
                }
        for (size_t i = 0; i < n; i++)
                (void) close(high[i]);
        snprintf(num, sizeof(num), "%zu", n);
        setenv("LISTEN_FDS", num, 1);
        setenv("LISTEN_FDNAMES", names, 1);
        snprintf(num, sizeof(num), "%d", (int) getpid());
        setenv("LISTEN_PID", num, 1);
        if (n_old)
                setenv(OLD_WORKERS_ENV, pids, 1);
        if (srv->own_sockets)
                setenv(WSGI_OWN_SOCKETS_ENV, "1", 1);
        free(pids);
        execv("/proc/self/exe", srv->argv);
        int r = -errno;
        log_open_default();
        return log_errno(r, "cannot execute /proc/self/exe: %m");
}

static void reload(struct master *m)
{
        pid_t pids[ARRAY_SIZE(m->old)];
        size_t n = 0;

        notify_reloading(&m->notify);
        for (unsigned i = 0; i < m->n; i++) {
                pid_t pid = atomic_load(&m->slots[i].pid);
                if (pid && n < ARRAY_SIZE(pids))
                        pids[n++] = pid;
        }
        for (size_t i = 0; i < m->n_old && n < ARRAY_SIZE(pids); i++)
                pids[n++] = m->old[i];
        (void) wsgi_reexec(m->srv, pids, n);
        /* Still here: the running workers go on. */
        notify_ready(&m->notify);
}

int wsgi_master_run(struct wsgi_server *srv, int sfd)
{
        struct master m = {.srv = srv, .n = srv->s->processes};
        uint64_t next_status = 0;
        int r = 0;

        m.slots = mmap(NULL, sizeof(*m.slots) * m.n, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (m.slots == MAP_FAILED)
                return log_errno(-errno, "cannot map the worker table: %m");
        m.info = calloc(m.n, sizeof(*m.info));
        if (!m.info) {
                munmap(m.slots, sizeof(*m.slots) * m.n);
                return log_errno(-ENOMEM, "out of memory");
        }
        notify_init(&m.notify);
        notify_mainpid(&m.notify, getpid());
        take_old_workers(&m);
        if (touch_start(&m) < 0)
                log_error("touch-reload: out of memory: no file is watched");

        for (unsigned i = 0; i < m.n && r == 0; i++)
                r = spawn(&m, i, sfd);

        while (r == 0) {
                struct pollfd p = {.fd = sfd, .events = POLLIN};
                int k = poll(&p, 1, TICK_MS);
                if (k < 0 && errno != EINTR) {
                        r = log_errno(-errno, "poll: %m");
                        break;
                }
                bool stop = false, hup = false;
                if (k > 0 && (p.revents & POLLIN)) {
                        struct signalfd_siginfo si;
                        while (read(sfd, &si, sizeof(si)) == (ssize_t) sizeof(si)) {
                                if (si.ssi_signo == SIGHUP)
                                        hup = true;
                                else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
                                        stop = true;
                        }
                }
                if (reap(&m) < 0) {
                        r = -ECHILD;
                        break;
                }
                if (stop) {
                        log_info("stopping: letting the workers finish their requests");
                        notify_stopping(&m.notify);
                        break;
                }
                uint64_t now = now_ms();
                for (unsigned i = 0; i < m.n && r == 0; i++)
                        if (!atomic_load(&m.slots[i].pid) && now >= m.info[i].spawn_at_ms)
                                r = spawn(&m, i, sfd);
                if (!m.ready && all_ready(&m)) {
                        m.ready = true;
                        if (m.n_old > 0) {
                                log_info("reloaded: %u new workers serve; stopping %zu old ones",
                                         m.n, m.n_old);
                                for (size_t i = 0; i < m.n_old; i++)
                                        (void) kill(m.old[i], SIGTERM);
                        }
                        notify_ready(&m.notify);
                        log_info("ready: %u workers", m.n);
                }
                const char *file = m.ready && !hup ? touched(&m) : NULL;
                if (file)
                        log_info("touch-reload: '%s' changed", file);
                if ((hup || file) && m.ready)
                        reload(&m);
                check_harakiri(&m, now);
                if (m.ready)
                        check_recycle(&m, now);
                notify_tick(&m.notify, now_us());
                if (now_us() >= next_status) {
                        send_status(&m);
                        next_status = now_us() + STATUS_INTERVAL_USEC;
                }
        }

        stop_workers(&m, sfd);
        free(m.touch);
        free(m.info);
        munmap(m.slots, sizeof(*m.slots) * m.n);
        return r;
}
