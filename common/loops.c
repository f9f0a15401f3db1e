/* SPDX-License-Identifier: MIT */
/*
 * loops.c: the supervision of event-loop threads (see loops.h).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>

#include "log.h"
#include "loops.h"
#include "util.h"

#define POLL_STARTED_MS 5
#define POLL_EXITED_MS 50

int loops_wait_started(struct loop_health *const *loops, unsigned n)
{
        for (;;) {
                bool all = true;
                for (unsigned i = 0; i < n; i++) {
                        int st = atomic_load(&loops[i]->state);
                        if (st < 0) {
                                const char *what = loops[i]->error_what;
                                return log_errno(st, "worker %u cannot start: %s: %m", i,
                                                 what ? what : "setup");
                        }
                        if (st == LOOP_STARTING)
                                all = false;
                }
                if (all)
                        return 0;
                (void) poll(NULL, 0, POLL_STARTED_MS);
        }
}

bool loops_alive(struct loop_health *const *loops, unsigned n, const struct notify *notify,
                 uint64_t now_usec)
{
        uint64_t max_age = notify->watchdog_usec ? notify->watchdog_usec / 2000 : 10000;
        uint64_t now = now_usec / 1000;

        if (max_age < 1000)
                max_age = 1000;
        for (unsigned i = 0; i < n; i++) {
                if (atomic_load(&loops[i]->state) != LOOP_RUNNING)
                        continue;
                if (now - atomic_load(&loops[i]->heartbeat_ms) > max_age)
                        return false;
        }
        return true;
}

void loops_wait_exited(struct loop_health *const *loops, unsigned n, struct notify *notify)
{
        for (unsigned i = 0; i < n; i++) {
                while (atomic_load(&loops[i]->state) == LOOP_RUNNING) {
                        (void) poll(NULL, 0, POLL_EXITED_MS);
                        notify_tick(notify, now_us());
                }
        }
}

int loops_signalfd(void)
{
        sigset_t mask;
        int fd;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &mask, NULL);
        sigdelset(&mask, SIGPIPE);
        fd = signalfd(-1, &mask, SFD_CLOEXEC);
        return fd < 0 ? -errno : fd;
}
