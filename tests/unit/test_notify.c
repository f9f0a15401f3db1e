/* SPDX-License-Identifier: MIT */
/*
 * Tests for common/notify.c: a datagram socket in a temporary directory
 * plays the service manager (NOTIFY_SOCKET), and every message is read back
 * byte for byte. Watchdog timing is driven by explicit clock values.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "notify.h"
#include "tap.h"
#include "util.h"

static char tmpdir[64];
static char sock_path[128];
static int manager = -1;

/* The next datagram the "service manager" got, or "" when none is waiting. */
static const char *received(void)
{
        static char buf[1024];
        ssize_t n = recv(manager, buf, sizeof(buf) - 1, MSG_DONTWAIT);

        if (n < 0)
                n = 0;
        buf[n] = '\0';
        return buf;
}

static bool nothing_received(void)
{
        char c;

        return recv(manager, &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN;
}

static void set_watchdog_env(const char *usec, pid_t pid)
{
        char buf[32];

        (void) snprintf(buf, sizeof(buf), "%ld", (long) pid);
        setenv("WATCHDOG_USEC", usec, 1);
        setenv("WATCHDOG_PID", buf, 1);
}

static void test_messages(void)
{
        struct notify n;
        const char *msg;
        uint64_t before, after, mono = 0;
        char long_status[600];

        unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");
        setenv("NOTIFY_SOCKET", sock_path, 1);
        ok(notify_init(&n) == 0 && n.enabled && n.watchdog_usec == 0,
           "NOTIFY_SOCKET set: enabled, no watchdog");

        ok(notify_ready(&n) == 0 && streq(received(), "READY=1"), "READY=1");
        ok(notify_status(&n, "%d connections, %s", 3, "idle") == 0 &&
               streq(received(), "STATUS=3 connections, idle"),
           "STATUS= formatted");
        ok(notify_status(&n, "x") == 0 && streq(received(), "STATUS=x"), "STATUS=x");
        ok(notify_status(&n, "%s", "app\nREADY=1\tx") == 0 &&
               streq(received(), "STATUS=app READY=1 x"),
           "a newline cannot smuggle another assignment into STATUS=");
        ok(notify_stopping(&n) == 0 && streq(received(), "STOPPING=1"), "STOPPING=1");
        ok(notify_mainpid(&n, 4242) == 0 && streq(received(), "MAINPID=4242"), "MAINPID=4242");
        ok(notify_mainpid(&n, 0) == -EINVAL && nothing_received(), "MAINPID=0 is refused");

        before = now_us();
        ok(notify_reloading(&n) == 0, "RELOADING sent");
        after = now_us();
        msg = received();
        ok(strncmp(msg, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0 &&
               sscanf(msg + 27, "%" SCNu64, &mono) == 1 && mono >= before && mono <= after,
           "RELOADING=1 with the CLOCK_MONOTONIC time (%s)", msg + 12);

        /* 300 'a's then a two-byte character across the cut: no half character goes out. */
        memset(long_status, 'a', 255);
        memcpy(long_status + 255, "\xc3\xa9", 2);
        memset(long_status + 257, 'b', 300);
        long_status[557] = '\0';
        ok(notify_status(&n, "%s", long_status) == 0, "a long STATUS= is sent");
        msg = received();
        ok(strncmp(msg, "STATUS=", 7) == 0 && strlen(msg + 7) == 255 && strspn(msg + 7, "a") == 255,
           "cut to 256 bytes at a character boundary (%zu)", strlen(msg + 7));

        long_status[256] = '\0';
        memset(long_status, 'c', 256);
        ok(notify_status(&n, "%s", long_status) == 0 && strlen(received()) == 7 + 256,
           "exactly 256 bytes are kept whole");
        ok(notify_status(&n, "%s!", long_status) == 0 && strlen(received()) == 7 + 256,
           "257 ASCII bytes are cut to 256");

        ok(nothing_received(), "nothing else was sent");
}

static void test_watchdog(void)
{
        struct notify n;
        const uint64_t t0 = 1000000;

        setenv("NOTIFY_SOCKET", sock_path, 1);
        set_watchdog_env("200000", getpid());
        ok(notify_init(&n) == 0 && n.watchdog_usec == 200000, "WATCHDOG_USEC=200000 read");
        ok(notify_next_due(&n, t0) == 0, "the first ping is due at once");

        ok(notify_tick(&n, t0) == 1 && streq(received(), "WATCHDOG=1"), "tick at t0 pings");
        ok(notify_next_due(&n, t0) == 100000, "next ping in half the interval");
        ok(notify_tick(&n, t0 + 50000) == 0 && nothing_received(), "tick at t0+50ms does not");
        ok(notify_next_due(&n, t0 + 50000) == 50000, "due in 50ms");
        ok(notify_tick(&n, t0 + 99999) == 0 && nothing_received(), "nor 1us early");
        ok(notify_tick(&n, t0 + 100000) == 1 && streq(received(), "WATCHDOG=1"),
           "tick at t0+100ms pings");
        ok(notify_tick(&n, t0 + 100001) == 0 && nothing_received(), "and then waits again");
        ok(notify_next_due(&n, t0 + 500000) == 0, "overdue is due now");
        ok(notify_tick(&n, t0 + 500000) == 1 && streq(received(), "WATCHDOG=1") &&
               notify_next_due(&n, t0 + 500000) == 100000,
           "a late tick pings and schedules from now, not from the missed time");

        set_watchdog_env("200000", getppid());
        ok(notify_init(&n) == 0 && n.watchdog_usec == 0 && n.enabled,
           "WATCHDOG_PID of another process: no watchdog");
        ok(notify_tick(&n, t0) == 0 && nothing_received() && notify_next_due(&n, t0) == UINT64_MAX,
           "tick is a no-op, nothing is due");

        set_watchdog_env("bogus", getpid());
        ok(notify_init(&n) < 0, "a malformed WATCHDOG_USEC is an error");

        unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");
}

static void test_disabled(void)
{
        struct notify n;

        unsetenv("NOTIFY_SOCKET");
        set_watchdog_env("200000", getpid());
        ok(notify_init(&n) == 0 && !n.enabled && n.watchdog_usec == 0,
           "no NOTIFY_SOCKET: disabled, and no watchdog to feed");
        ok(notify_ready(&n) == 0 && notify_status(&n, "x") == 0 && notify_stopping(&n) == 0 &&
               notify_reloading(&n) == 0 && notify_mainpid(&n, 1) == 0,
           "every message is a no-op returning 0");
        ok(notify_tick(&n, 0) == 0 && notify_tick(&n, UINT64_MAX) == 0, "tick never pings");
        ok(notify_next_due(&n, 0) == UINT64_MAX, "nothing is ever due");
        ok(nothing_received(), "nothing was sent");

        setenv("NOTIFY_SOCKET", "", 1);
        ok(notify_init(&n) == 0 && !n.enabled, "an empty NOTIFY_SOCKET is unset");

        unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");
}

static void test_send_error(void)
{
        struct notify n;
        char gone[160];

        (void) snprintf(gone, sizeof(gone), "%s/gone", tmpdir);
        setenv("NOTIFY_SOCKET", gone, 1);
        set_watchdog_env("1000", getpid());
        ok(notify_init(&n) == 0 && n.enabled, "NOTIFY_SOCKET points nowhere");
        ok(notify_ready(&n) < 0, "READY=1 reports the error");
        ok(notify_tick(&n, 10) < 0 && notify_next_due(&n, 10) == 500,
           "a failed ping is an error and still schedules the next");
        ok(notify_tick(&n, 11) == 0, "so the loop is not flooded with errors");
        unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");
        unsetenv("NOTIFY_SOCKET");
}

static void test_rate(void)
{
        struct notify_rate r = {0};

        notify_rate_update(&r, 50, 10000000);
        ok(r.per_sec == 0.0 && r.last_count == 50 && r.last_usec == 10000000,
           "the first update sets the baseline");
        notify_rate_update(&r, 150, 11000000);
        ok(r.per_sec == 100.0, "100 requests in 1s: 100/s (%g)", r.per_sec);
        notify_rate_update(&r, 1150, 11200000);
        ok(r.per_sec == 100.0 && r.last_count == 150, "an interval under 0.5s is ignored");
        notify_rate_update(&r, 1150, 11500000);
        ok(r.per_sec == 2000.0 && r.last_count == 1150,
           "its requests count over the longer interval: 1000 in 0.5s (%g)", r.per_sec);
        notify_rate_update(&r, 1150, 13500000);
        ok(r.per_sec == 0.0, "idle: 0/s");
        notify_rate_update(&r, 10, 14500000);
        ok(r.per_sec == 0.0 && r.last_count == 10 && r.last_usec == 14500000,
           "a counter that went backwards restarts the baseline");
        notify_rate_update(&r, 60, 15000000);
        ok(r.per_sec == 100.0, "and counts from there (%g)", r.per_sec);
}

int main(void)
{
        struct sockaddr_un sun = {.sun_family = AF_UNIX};

        (void) snprintf(tmpdir, sizeof(tmpdir), "/tmp/wharf-test-notify-XXXXXX");
        if (!mkdtemp(tmpdir)) {
                printf("1..0 # SKIP cannot create a temporary directory: %s\n", strerror(errno));
                return 0;
        }
        (void) snprintf(sock_path, sizeof(sock_path), "%s/notify", tmpdir);
        memcpy(sun.sun_path, sock_path, strlen(sock_path) + 1);
        manager = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (manager < 0 || bind(manager, (struct sockaddr *) &sun, sizeof(sun)) < 0) {
                printf("1..0 # SKIP cannot bind a notify socket: %s\n", strerror(errno));
                return 0;
        }

        subtest("messages", test_messages);
        subtest("watchdog", test_watchdog);
        subtest("disabled", test_disabled);
        subtest("send error", test_send_error);
        subtest("rate", test_rate);

        (void) close(manager);
        (void) unlink(sock_path);
        (void) rmdir(tmpdir);
        return done_testing();
}
