/* SPDX-License-Identifier: MIT */
/*
 * log: the daemon's log and its access log.
 *
 * Targets: "journal" (sd_journal_send with PRIORITY= and fields such as
 * WHARF_STATUS=), "stderr" (with "<N>" priority prefixes that journald and
 * systemd understand), or "file:/path" (appended, with a timestamp).
 * log_open_default() picks the journal when running under systemd
 * (JOURNAL_STREAM or INVOCATION_ID set) and stderr otherwise.
 *
 * Only the log level and target are global; they are set once at start and
 * on reload, from the main thread. log_*() may be called from any thread.
 *
 * The access log is one struct per event loop, buffered and flushed by the
 * loop (so a request costs a formatted line, not a system call), in the
 * combined format nginx and Apache write.
 */
#ifndef WHARF_LOG_H
#define WHARF_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <syslog.h>

/* Opens a target as described above. Returns 0 or -errno (-EINVAL for an unknown form). */
int log_open(const char *target);
void log_open_default(void);
void log_close(void);
void log_set_max_level(int level); /* LOG_DEBUG .. LOG_ERR */
int log_get_max_level(void);
void log_set_ident(const char *ident); /* SYSLOG_IDENTIFIER, e.g. "wharf-static" */

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(int level, const char *fmt, va_list ap);

/* Logs with %m meaning strerror(-r) and returns r (a negative errno), for
 *     return log_errno(r, "accept on '%s': %m", name); */
int log_errno(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* The access log. */
#define ACCESS_LOG_BUF (64 * 1024)

struct access_log {
        int fd;       /* -1: off; the journal is used when journal is set */
        bool journal; /* send each record with sd_journal_send instead */
        char *buf;    /* ACCESS_LOG_BUF bytes */
        size_t len;
};

/* target: "off", "journal", "stderr" or "file:/path" (or a bare path). Returns 0 or -errno. */
int access_log_open(struct access_log *a, const char *target);
void access_log_done(struct access_log *a);

struct access_record {
        const struct sockaddr *peer; /* may be NULL: "-" */
        const char *request_line;    /* "GET /x HTTP/1.1", not NUL-terminated */
        size_t request_line_len;
        int status;
        uint64_t bytes_sent; /* body bytes */
        const char *referer; /* may be NULL: "-" */
        size_t referer_len;
        const char *user_agent; /* may be NULL: "-" */
        size_t user_agent_len;
        const char *upstream;   /* optional: appended as upstream="..." */
        uint64_t upstream_usec; /* with upstream */
        uint64_t request_usec;  /* appended as rt=seconds.millis when non-zero */
};

/* Formats one combined-format line (quotes and control bytes escaped). */
void access_log_write(struct access_log *a, const struct access_record *r);
/*
 * Writes a line formatted elsewhere (without its newline); the journal gets
 * status and peer as fields too.
 */
void access_log_put(struct access_log *a, const char *line, size_t len, int status,
                    const char *peer);
/* Writes what is buffered. Returns 0 or -errno. */
int access_log_flush(struct access_log *a);
/* Now as nginx's $time_local ("07/Dec/2026:10:00:00 +0000"), cached per thread for a second. */
const char *access_time_local(void);

#endif
