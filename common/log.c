/* SPDX-License-Identifier: MIT */
/*
 * log.c: the daemon log (journal, stderr or a file) and the access log.
 *
 * The daemon log's state is global, the one place in wharf where that is
 * allowed: the level, the target, the file descriptor of a "file:" target
 * and the identifier. Each is an atomic, so that log_*() can be called from
 * any thread without a lock (and without a lock a fork() could leave taken).
 * A line is written with one writev(), so lines from several threads or
 * processes do not interleave (in O_APPEND files, and in pipes up to
 * PIPE_BUF bytes). Reopening a file target dup3()s the new file onto the
 * old descriptor number, so a thread that is writing at that moment writes
 * to a valid descriptor (the old file or the new one, never a reused
 * number); the descriptor stays open until log_close(). log_set_ident()
 * keeps the pointer it is given: pass a string that lives as long as the
 * process.
 *
 * %m works in every log_*() format as glibc's printf defines it,
 * strerror(errno) at the time of the call; log_errno() sets errno to -r for
 * the call and restores it, so "%m" there means strerror(-r). Logging never
 * changes errno.
 *
 * The access log writes nginx's "combined" format with escape=default
 * (", \ and bytes outside 0x20..0x7e as \xHH). Its time string changes once
 * a second, so each thread keeps the last one it formatted: a request costs
 * a time() call (vDSO) and a memcpy, not a localtime_r().
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "log.h"
#include "util.h"

/* A message longer than this is formatted again into a buffer of its size. */
#define LOG_LINE_MAX 2048

enum log_target { LOG_TARGET_STDERR, LOG_TARGET_JOURNAL, LOG_TARGET_FILE, _LOG_TARGET_MAX };

static const char *const level_names[] = {
    [LOG_EMERG] = "emergency", [LOG_ALERT] = "alert",     [LOG_CRIT] = "critical",
    [LOG_ERR] = "error",       [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
    [LOG_INFO] = "info",       [LOG_DEBUG] = "debug",
};

static atomic_int log_max_level = LOG_INFO;
static atomic_int log_target = LOG_TARGET_STDERR;
static atomic_int log_file_fd = -1;
/* stderr is the journal stream systemd gave us: prefix "<N>", the journal adds the rest. */
static atomic_bool log_stderr_is_journal = false;
static const char *_Atomic log_ident = NULL;

static const char *ident(void)
{
        const char *i = atomic_load(&log_ident);

        return i ? i : program_invocation_short_name;
}

/*
 * Is stderr the stream systemd connected to the journal? JOURNAL_STREAM
 * names its device and inode; a child that redirected stderr elsewhere
 * inherits the variable but not the stream.
 */
static bool stderr_is_journal_stream(void)
{
        unsigned long long dev, ino;
        const char *e = getenv("JOURNAL_STREAM");
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return st.st_dev == (dev_t) dev && st.st_ino == (ino_t) ino;
}

static int open_append(const char *path)
{
        int fd;

        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0640);
        return fd < 0 ? -errno : fd;
}

int log_open(const char *target)
{
        int fd, old;

        /* Also for the journal, whose messages go to stderr when it cannot be reached. */
        atomic_store(&log_stderr_is_journal, stderr_is_journal_stream());
        if (streq(target, "journal")) {
                atomic_store(&log_target, LOG_TARGET_JOURNAL);
                return 0;
        }
        if (streq(target, "stderr")) {
                atomic_store(&log_target, LOG_TARGET_STDERR);
                return 0;
        }
        if (strncmp(target, "file:", 5) != 0 || target[5] == '\0')
                return -EINVAL;

        fd = open_append(target + 5);
        if (fd < 0)
                return fd;
        old = atomic_load(&log_file_fd);
        if (old < 0) {
                atomic_store(&log_file_fd, fd);
        } else {
                /* Reopen in place: writers racing with us keep a valid descriptor. */
                if (dup3(fd, old, O_CLOEXEC) < 0) {
                        int r = -errno;

                        (void) close(fd);
                        return r;
                }
                (void) close(fd);
        }
        atomic_store(&log_target, LOG_TARGET_FILE);
        return 0;
}

void log_open_default(void)
{
        if (getenv("JOURNAL_STREAM") || getenv("INVOCATION_ID"))
                (void) log_open("journal");
        else
                (void) log_open("stderr");
}

void log_close(void)
{
        atomic_store(&log_target, LOG_TARGET_STDERR);
        (void) safe_close(atomic_exchange(&log_file_fd, -1));
}

void log_set_max_level(int level)
{
        atomic_store(&log_max_level, LOG_PRI(level));
}

int log_get_max_level(void)
{
        return atomic_load(&log_max_level);
}

void log_set_ident(const char *i)
{
        atomic_store(&log_ident, i);
}

/* Writes all of iov, continuing after short writes; a log line has nowhere to report failure. */
static void write_all(int fd, struct iovec *iov, int n)
{
        ssize_t k;

        while (n > 0) {
                k = writev(fd, iov, n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return;
                iov = iov_advance(iov, &n, (size_t) k);
        }
}

static struct iovec iov_str(const char *s, size_t len)
{
        return (struct iovec){.iov_base = (void *) s, .iov_len = len};
}

static void emit_stderr(int level, const char *msg, size_t len)
{
        char prefix[128];
        struct iovec iov[3];
        int n;

        if (atomic_load(&log_stderr_is_journal))
                n = snprintf(prefix, sizeof(prefix), "<%d>", level);
        else
                n = snprintf(prefix, sizeof(prefix), "%s: %s: ", ident(), level_names[level]);
        iov[0] = iov_str(prefix, min_size((size_t) n, sizeof(prefix) - 1));
        iov[1] = iov_str(msg, len);
        iov[2] = iov_str("\n", 1);
        write_all(STDERR_FILENO, iov, 3);
}

/* The hours and minutes of a UTC offset (tm_gmtoff, in seconds; real ones are under a day). */
static unsigned offset_hours(long gmtoff)
{
        return (unsigned) (labs(gmtoff) / 3600 % 100);
}

static unsigned offset_minutes(long gmtoff)
{
        return (unsigned) (labs(gmtoff) / 60 % 60);
}

/* "2024-05-01T12:34:56.789+02:00": ISO 8601 local time with the UTC offset. */
static void format_iso8601(char *buf, size_t size)
{
        struct timespec ts;
        struct tm tm;

        (void) clock_gettime(CLOCK_REALTIME, &ts);
        if (!localtime_r(&ts.tv_sec, &tm)) {
                (void) snprintf(buf, size, "-");
                return;
        }
        (void) snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03u%c%02u:%02u",
                        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                        tm.tm_sec, (unsigned) (ts.tv_nsec / 1000000) % 1000u,
                        tm.tm_gmtoff < 0 ? '-' : '+', offset_hours(tm.tm_gmtoff),
                        offset_minutes(tm.tm_gmtoff));
}

/* "<time> <ident>[<pid>]: <level>: <message>": several processes may share the file. */
static void emit_file(int fd, int level, const char *msg, size_t len)
{
        char stamp[64], prefix[256];
        struct iovec iov[3];
        int n;

        format_iso8601(stamp, sizeof(stamp));
        n = snprintf(prefix, sizeof(prefix), "%s %s[%d]: %s: ", stamp, ident(), (int) getpid(),
                     level_names[level]);
        iov[0] = iov_str(prefix, min_size((size_t) n, sizeof(prefix) - 1));
        iov[1] = iov_str(msg, len);
        iov[2] = iov_str("\n", 1);
        write_all(fd, iov, 3);
}

static void emit(int level, const char *msg, size_t len)
{
        int fd;

        switch (atomic_load(&log_target)) {
        case LOG_TARGET_JOURNAL:
                if (sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", level, "SYSLOG_IDENTIFIER=%s",
                                    ident(), NULL) >= 0)
                        return;
                /* No journal to talk to: stderr still reaches someone. */
                break;
        case LOG_TARGET_FILE:
                fd = atomic_load(&log_file_fd);
                if (fd >= 0) {
                        emit_file(fd, level, msg, len);
                        return;
                }
                break;
        default:
                break;
        }
        emit_stderr(level, msg, len);
}

void log_vmsg(int level, const char *fmt, va_list ap)
{
        char stack[LOG_LINE_MAX], *msg = stack, *heap = NULL;
        int saved_errno = errno, n;
        va_list aq;

        level = LOG_PRI(level);
        if (level > atomic_load(&log_max_level))
                return;

        va_copy(aq, ap);
        n = vsnprintf(stack, sizeof(stack), fmt, aq);
        va_end(aq);
        if (n < 0) {
                errno = saved_errno;
                return;
        }
        if ((size_t) n >= sizeof(stack)) {
                heap = malloc((size_t) n + 1);
                if (heap) {
                        /* For %m: malloc() may have changed errno. */
                        errno = saved_errno;
                        n = vsnprintf(heap, (size_t) n + 1, fmt, ap);
                        msg = heap;
                } else {
                        /* Out of memory: the message is cut, but still logged. */
                        n = (int) sizeof(stack) - 1;
                }
        }
        if (n >= 0)
                emit(level, msg, (size_t) n);
        free(heap);
        errno = saved_errno;
}

void log_msg(int level, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        log_vmsg(level, fmt, ap);
        va_end(ap);
}

int log_errno(int r, const char *fmt, ...)
{
        int saved_errno = errno;
        va_list ap;

        errno = r < 0 ? -r : r;
        va_start(ap, fmt);
        log_vmsg(LOG_ERR, fmt, ap);
        va_end(ap);
        errno = saved_errno;
        return r;
}

/* The access log. */

/* "255.255.255.255" and "ffff:...:255.255.255.255" fit INET6_ADDRSTRLEN. */
#define PEER_MAX INET6_ADDRSTRLEN
/* "10/Oct/2000:13:55:36 -0700" */
#define ACCESS_TIME_MAX 32

/* A bounded line being built in the access log's buffer. */
struct line {
        char *p;
        size_t len, cap;
        bool overflow;
};

static void line_add(struct line *l, const char *s, size_t n)
{
        if (n > l->cap - l->len) {
                n = l->cap - l->len;
                l->overflow = true;
        }
        memcpy(l->p + l->len, s, n);
        l->len += n;
}

static void line_str(struct line *l, const char *s)
{
        line_add(l, s, strlen(s));
}

static bool needs_escape(unsigned char c)
{
        return c < 0x20 || c >= 0x7f || c == '"' || c == '\\';
}

/* Adds s (n bytes) as nginx's escape=default does; NULL is written as "-". */
static void line_escaped(struct line *l, const char *s, size_t n)
{
        static const char hex[] = "0123456789ABCDEF";
        char esc[4] = {'\\', 'x', 0, 0};
        size_t i = 0, run;

        if (!s) {
                line_add(l, "-", 1);
                return;
        }
        while (i < n) {
                for (run = i; run < n && !needs_escape((unsigned char) s[run]); run++)
                        ;
                line_add(l, s + i, run - i);
                if (run == n)
                        break;
                esc[2] = hex[(unsigned char) s[run] >> 4];
                esc[3] = hex[(unsigned char) s[run] & 0xf];
                line_add(l, esc, sizeof(esc));
                i = run + 1;
        }
}

/* Microseconds as nginx's $request_time: seconds with milliseconds, "0.004". */
static void line_seconds(struct line *l, uint64_t usec)
{
        char buf[32];
        int n;

        n = snprintf(buf, sizeof(buf), "%" PRIu64 ".%03u", usec / 1000000,
                     (unsigned) (usec / 1000 % 1000));
        line_add(l, buf, (size_t) n);
}

static const char *format_peer(const struct sockaddr *sa, char buf[static PEER_MAX])
{
        struct sockaddr_in6 sin6;
        struct sockaddr_in sin;
        const char *ok;

        if (!sa)
                return "-";
        switch (sa->sa_family) {
        case AF_INET:
                memcpy(&sin, sa, sizeof(sin));
                ok = inet_ntop(AF_INET, &sin.sin_addr, buf, PEER_MAX);
                break;
        case AF_INET6:
                memcpy(&sin6, sa, sizeof(sin6));
                /* A v4 client on a dual-stack socket is logged as v4, as nginx does. */
                if (IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr))
                        ok = inet_ntop(AF_INET, &sin6.sin6_addr.s6_addr[12], buf, PEER_MAX);
                else
                        ok = inet_ntop(AF_INET6, &sin6.sin6_addr, buf, PEER_MAX);
                break;
        case AF_UNIX:
                return "unix:";
        default:
                return "-";
        }
        return ok ? buf : "-";
}

/* "10/Oct/2000:13:55:36 -0700", nginx's $time_local, in the C locale whatever LC_TIME says. */
static void format_time_local(time_t t, char buf[static ACCESS_TIME_MAX])
{
        static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
        struct tm tm;

        if (!localtime_r(&t, &tm)) {
                (void) snprintf(buf, ACCESS_TIME_MAX, "-");
                return;
        }
        (void) snprintf(buf, ACCESS_TIME_MAX, "%02d/%s/%04d:%02d:%02d:%02d %c%02u%02u", tm.tm_mday,
                        months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
                        tm.tm_gmtoff < 0 ? '-' : '+', offset_hours(tm.tm_gmtoff),
                        offset_minutes(tm.tm_gmtoff));
}

/*
 * The time string for now. Each thread runs one event loop with its own
 * access log, so the cache is per thread and needs no lock.
 */
const char *access_time_local(void)
{
        static _Thread_local time_t cached_sec = -1;
        static _Thread_local char cached[ACCESS_TIME_MAX];
        time_t now = time(NULL);

        if (now != cached_sec) {
                format_time_local(now, cached);
                cached_sec = now;
        }
        return cached;
}

/*
 * $remote_addr - - [$time_local] "$request" $status $body_bytes_sent
 * "$http_referer" "$http_user_agent", then upstream="..." ut=... and rt=...
 * when there is something to say.
 */
static void format_record(struct line *l, const struct access_record *r, const char *peer,
                          const char *time_local)
{
        char num[64];
        int n;

        line_str(l, peer);
        line_str(l, " - - [");
        line_str(l, time_local);
        line_str(l, "] \"");
        line_escaped(l, r->request_line, r->request_line_len);
        n = snprintf(num, sizeof(num), "\" %d %" PRIu64 " \"", r->status, r->bytes_sent);
        line_add(l, num, (size_t) n);
        line_escaped(l, r->referer, r->referer_len);
        line_str(l, "\" \"");
        line_escaped(l, r->user_agent, r->user_agent_len);
        line_str(l, "\"");
        if (r->upstream) {
                line_str(l, " upstream=\"");
                line_escaped(l, r->upstream, strlen(r->upstream));
                line_str(l, "\" ut=");
                line_seconds(l, r->upstream_usec);
        }
        if (r->request_usec > 0) {
                line_str(l, " rt=");
                line_seconds(l, r->request_usec);
        }
}

/* A bare path must be absolute, so that a misspelt "jornal" is an error, not a file. */
int access_log_open(struct access_log *a, const char *target)
{
        const char *path = NULL;
        bool journal = false;
        int fd = -1;

        *a = (struct access_log){.fd = -1};
        if (streq(target, "off"))
                return 0;

        if (streq(target, "journal"))
                journal = true;
        else if (strncmp(target, "file:", 5) == 0 && target[5] != '\0')
                path = target + 5;
        else if (target[0] == '/')
                path = target;
        else if (!streq(target, "stderr"))
                return -EINVAL;

        if (path) {
                fd = open_append(path);
                if (fd < 0)
                        return fd;
        } else if (!journal) {
                /* A copy, so that access_log_done() closes what it owns either way. */
                fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
                if (fd < 0)
                        return -errno;
        }

        a->buf = malloc(ACCESS_LOG_BUF);
        if (!a->buf) {
                (void) safe_close(fd);
                return -ENOMEM;
        }
        a->fd = fd;
        a->journal = journal;
        return 0;
}

void access_log_done(struct access_log *a)
{
        if (!a)
                return;
        (void) access_log_flush(a);
        (void) safe_close(a->fd);
        free(a->buf);
        *a = (struct access_log){.fd = -1};
}

int access_log_flush(struct access_log *a)
{
        size_t off = 0;
        ssize_t n;
        int r = 0;

        if (a->fd < 0 || a->len == 0)
                return 0;
        while (off < a->len) {
                n = write(a->fd, a->buf + off, a->len - off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = -errno;
                        break;
                }
                if (n == 0) {
                        r = -EIO;
                        break;
                }
                off += (size_t) n;
        }
        /* Lines that could not be written are dropped: the log must not stop the server. */
        a->len = 0;
        return r;
}

void access_log_put(struct access_log *a, const char *line, size_t len, int status,
                    const char *peer)
{
        if (!a->buf || (a->fd < 0 && !a->journal))
                return;
        if (a->journal) {
                (void) sd_journal_send("MESSAGE=%.*s", (int) min_size(len, INT_MAX), line,
                                       "PRIORITY=%d", LOG_INFO, "SYSLOG_IDENTIFIER=%s", ident(),
                                       "WHARF_STATUS=%d", status, "WHARF_REMOTE_ADDR=%s", peer,
                                       NULL);
                return;
        }
        len = min_size(len, ACCESS_LOG_BUF - 1);
        if (len + 1 > ACCESS_LOG_BUF - a->len)
                (void) access_log_flush(a); /* empties the buffer, also when the write fails */
        memcpy(a->buf + a->len, line, len);
        a->buf[a->len + len] = '\n';
        a->len += len + 1;
}

static void access_log_send_journal(struct access_log *a, const struct access_record *r,
                                    const char *peer, const char *time_local)
{
        struct line l = {.p = a->buf, .cap = ACCESS_LOG_BUF - 1};

        format_record(&l, r, peer, time_local);
        a->buf[l.len] = '\0';
        (void) sd_journal_send("MESSAGE=%s", a->buf, "PRIORITY=%d", LOG_INFO,
                               "SYSLOG_IDENTIFIER=%s", ident(), "WHARF_STATUS=%d", r->status,
                               "WHARF_REMOTE_ADDR=%s", peer, NULL);
}

void access_log_write(struct access_log *a, const struct access_record *r)
{
        char peer_buf[PEER_MAX];
        const char *peer, *time_local;
        struct line l;

        if (!a->buf || (a->fd < 0 && !a->journal))
                return;

        peer = format_peer(r->peer, peer_buf);
        time_local = access_time_local();
        if (a->journal) {
                access_log_send_journal(a, r, peer, time_local);
                return;
        }

        for (;;) {
                l = (struct line){.p = a->buf + a->len, .cap = ACCESS_LOG_BUF - a->len};
                format_record(&l, r, peer, time_local);
                line_add(&l, "\n", 1);
                if (!l.overflow) {
                        a->len += l.len;
                        return;
                }
                if (a->len == 0) {
                        /* Longer than the whole buffer: what fits, still as one line. */
                        a->buf[ACCESS_LOG_BUF - 1] = '\n';
                        a->len = ACCESS_LOG_BUF;
                        return;
                }
                /* Make room; flushing empties the buffer even when the write fails. */
                (void) access_log_flush(a);
        }
}
