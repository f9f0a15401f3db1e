/* SPDX-License-Identifier: MIT */
/*
 * notify: sd_notify() for READY/STATUS/RELOADING/STOPPING/MAINPID and the
 * watchdog, driven by the event loop.
 *
 * Everything is a no-op returning 0 when NOTIFY_SOCKET was not set at
 * notify_init(), so daemons call these unconditionally. Messages are
 * formatted into stack buffers: a STATUS= line every second allocates
 * nothing.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

#include "notify.h"
#include "util.h"

/*
 * STATUS= text longer than this is cut (at a UTF-8 character boundary):
 * systemctl status shows one line, and a status is not worth an allocation.
 */
#define NOTIFY_STATUS_MAX 256

/*
 * notify_rate_update() ignores an interval shorter than this: over a few
 * milliseconds, one request more or less swings the rate wildly. The counts
 * are not lost; the next update measures over the longer interval.
 */
#define NOTIFY_RATE_MIN_INTERVAL_USEC 500000u

int notify_init(struct notify *n)
{
        const char *e = getenv("NOTIFY_SOCKET");
        /* next_ping_usec = 0: the first tick pings at once. */
        struct notify new = {.enabled = e && e[0] != '\0'};

        assert(n);

        /* A watchdog without a socket to ping through cannot be served: leave it off. */
        if (new.enabled) {
                uint64_t usec = 0;
                int r;

                /* unset_environment=0: it also checks WATCHDOG_PID against our pid. */
                r = sd_watchdog_enabled(0, &usec);
                if (r < 0)
                        return r;
                if (r > 0)
                        new.watchdog_usec = usec;
        }

        *n = new;
        return 0;
}

static int notify_send(const struct notify *n, const char *msg)
{
        int r;

        assert(n);

        if (!n->enabled)
                return 0;
        /* sd_notify() returns > 0 when sent, 0 when NOTIFY_SOCKET has gone since init. */
        r = sd_notify(0, msg);
        return r < 0 ? r : 0;
}

int notify_ready(struct notify *n)
{
        return notify_send(n, "READY=1");
}

int notify_reloading(struct notify *n)
{
        char msg[sizeof("RELOADING=1\nMONOTONIC_USEC=") + 20];

        if (!n->enabled)
                return 0;
        /* Type=notify-reload (systemd 253) wants the CLOCK_MONOTONIC time of the reload. */
        (void) snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, now_us());
        return notify_send(n, msg);
}

int notify_stopping(struct notify *n)
{
        return notify_send(n, "STOPPING=1");
}

int notify_status(struct notify *n, const char *fmt, ...)
{
        /* Room for one byte past the limit, to see whether the cut splits a character. */
        char msg[sizeof("STATUS=") - 1 + NOTIFY_STATUS_MAX + 2] = "STATUS=";
        char *text = msg + sizeof("STATUS=") - 1;
        va_list ap;
        int len;

        assert(fmt);

        if (!n->enabled)
                return 0;

        va_start(ap, fmt);
        len = vsnprintf(text, NOTIFY_STATUS_MAX + 2, fmt, ap);
        va_end(ap);
        if (len < 0)
                return -EINVAL;

        if (len > NOTIFY_STATUS_MAX) {
                size_t end = NOTIFY_STATUS_MAX;

                /* text[end] is the first byte cut: back up while it continues a character. */
                while (end > 0 && ((unsigned char) text[end] & 0xc0) == 0x80)
                        end--;
                text[end] = '\0';
        }

        /*
         * The protocol is newline-separated assignments: a '\n' in the text
         * (a path, an app name) would smuggle in "READY=1" or "MAINPID=".
         */
        for (char *p = text; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        *p = ' ';

        return notify_send(n, msg);
}

int notify_mainpid(struct notify *n, pid_t pid)
{
        char msg[sizeof("MAINPID=") + 20];

        if (pid <= 0)
                return -EINVAL;
        if (!n->enabled)
                return 0;
        (void) snprintf(msg, sizeof(msg), "MAINPID=%ld", (long) pid);
        return notify_send(n, msg);
}

int notify_tick(struct notify *n, uint64_t now_usec)
{
        uint64_t half;
        int r;

        assert(n);

        if (!n->enabled || n->watchdog_usec == 0 || now_usec < n->next_ping_usec)
                return 0;

        /*
         * The next ping is scheduled even when this one fails, so a broken
         * socket costs one error per half interval, not one per iteration.
         */
        half = n->watchdog_usec / 2;
        n->next_ping_usec = now_usec + (half > 0 ? half : 1);

        r = sd_notify(0, "WATCHDOG=1");
        if (r < 0)
                return r;
        return r > 0 ? 1 : 0;
}

uint64_t notify_next_due(const struct notify *n, uint64_t now_usec)
{
        assert(n);

        if (!n->enabled || n->watchdog_usec == 0)
                return UINT64_MAX;
        if (now_usec >= n->next_ping_usec)
                return 0;
        return n->next_ping_usec - now_usec;
}

/*
 * A zeroed struct notify_rate is ready: the first update only records the
 * baseline (per_sec stays 0). A count that went backwards (a counter reset
 * on reload) or a clock that did restarts the baseline and keeps the last
 * rate.
 */
void notify_rate_update(struct notify_rate *r, uint64_t count, uint64_t now_usec)
{
        uint64_t elapsed;

        assert(r);

        if (r->last_usec == 0 || now_usec < r->last_usec || count < r->last_count) {
                r->last_count = count;
                r->last_usec = now_usec;
                return;
        }

        elapsed = now_usec - r->last_usec;
        if (elapsed < NOTIFY_RATE_MIN_INTERVAL_USEC)
                return;

        r->per_sec = (double) (count - r->last_count) * 1e6 / (double) elapsed;
        r->last_count = count;
        r->last_usec = now_usec;
}
