/* SPDX-License-Identifier: MIT */
/*
 * notify: the service manager protocol (sd_notify), READY/STATUS/WATCHDOG/
 * RELOADING/STOPPING, each a no-op when NOTIFY_SOCKET is not set.
 *
 * The watchdog is fed from the event loop itself: the loop calls
 * notify_tick() every iteration (cheap: one compare), and a ping goes out at
 * half the interval systemd asked for, so a loop that stops making progress
 * stops pinging and systemd kills and restarts the service.
 */
#ifndef WHARF_NOTIFY_H
#define WHARF_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct notify {
        uint64_t watchdog_usec;  /* 0: no watchdog */
        uint64_t next_ping_usec; /* monotonic */
        uint64_t next_status_usec;
        bool enabled; /* NOTIFY_SOCKET is set */
};

/* Reads NOTIFY_SOCKET and WATCHDOG_USEC (sd_watchdog_enabled()). Returns 0 or -errno. */
int notify_init(struct notify *n);

int notify_ready(struct notify *n);
int notify_reloading(struct notify *n); /* RELOADING=1 with MONOTONIC_USEC */
int notify_stopping(struct notify *n);
int notify_status(struct notify *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int notify_mainpid(struct notify *n, pid_t pid);

/*
 * Sends WATCHDOG=1 when half the interval has passed since the last ping.
 * Returns 1 when it pinged, 0 when not due, or -errno.
 */
int notify_tick(struct notify *n, uint64_t now_usec);

/* Microseconds until the next ping is due (UINT64_MAX without a watchdog),
 * so a loop can bound its wait. */
uint64_t notify_next_due(const struct notify *n, uint64_t now_usec);

/* Requests per second over the last interval, for STATUS lines. */
struct notify_rate {
        uint64_t last_count;
        uint64_t last_usec;
        double per_sec;
};
void notify_rate_update(struct notify_rate *r, uint64_t count, uint64_t now_usec);

#endif
