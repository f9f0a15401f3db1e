/* SPDX-License-Identifier: MIT */
/*
 * loops: what a daemon's supervisor thread knows of its event-loop threads,
 * and the supervision every daemon does alike: waiting until all loops run
 * (or one failed to start), feeding the watchdog only while every loop is
 * making progress, and waiting for them to drain on stop.
 *
 * Each loop owns one struct loop_health and writes it; the supervisor only
 * reads it.
 */
#ifndef WHARF_LOOPS_H
#define WHARF_LOOPS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "notify.h"

enum {
        LOOP_STARTING = 0,
        LOOP_RUNNING = 1,
        LOOP_EXITED = 2,
        /* below 0: it could not start, -errno; error_what says what failed */
};

struct loop_health {
        atomic_int state;
        atomic_uint_fast64_t heartbeat_ms; /* monotonic time of the last iteration */
        const char *error_what;            /* written before a failed state */
};

static inline void loop_heartbeat(struct loop_health *h, uint64_t now_ms)
{
        atomic_store_explicit(&h->heartbeat_ms, now_ms, memory_order_relaxed);
}

/* Waits until every loop runs; 0, or the first one's failure (logged), -errno. */
int loops_wait_started(struct loop_health *const *loops, unsigned n);

/*
 * May the watchdog be fed? Only while every running loop iterated within
 * half the watchdog interval (at least a second; 10 s without a watchdog).
 */
bool loops_alive(struct loop_health *const *loops, unsigned n, const struct notify *notify,
                 uint64_t now_usec);

/* After a stop was asked for: waits for every loop to end, feeding the watchdog. */
void loops_wait_exited(struct loop_health *const *loops, unsigned n, struct notify *notify);

/*
 * Blocks SIGTERM, SIGINT, SIGHUP and SIGPIPE in this thread (threads started
 * afterwards inherit it) and returns a signalfd for the first three, or
 * -errno.
 */
int loops_signalfd(void);

#endif
