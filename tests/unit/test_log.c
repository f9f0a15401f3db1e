/* SPDX-License-Identifier: MIT */
/*
 * Tests for common/log.c: the stderr and file formats, %m and log_errno(),
 * and the access log's combined format, escaping and buffering, read back
 * from files. The time zone is fixed to UTC+05:30 so that the offsets in
 * timestamps are known (and not whole hours).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "tap.h"
#include "util.h"

static char dir[] = "/tmp/wharf-test-log.XXXXXX";

static char *path_in_dir(const char *name)
{
        char *p;

        if (asprintf(&p, "%s/%s", dir, name) < 0)
                abort();
        return p;
}

/* The whole file, NUL-terminated ("" if it cannot be read). */
static char *slurp(const char *path)
{
        size_t len = 0, cap = 4096;
        char *buf = malloc(cap);
        FILE *f = fopen(path, "re");

        if (!buf)
                abort();
        if (!f) {
                buf[0] = '\0';
                return buf;
        }
        /* Doubling, not a realloc per byte: ASan makes each realloc a copy. */
        for (size_t n; (n = fread(buf + len, 1, cap - len - 1, f)) > 0;) {
                len += n;
                if (cap - len - 1 == 0) {
                        buf = realloc(buf, cap *= 2);
                        if (!buf)
                                abort();
                }
        }
        buf[len] = '\0';
        fclose(f);
        return buf;
}

static bool str_is(const char *got, const char *want)
{
        if (streq(got, want))
                return true;
        printf("#   got:    '%s'\n#   wanted: '%s'\n", got, want);
        return false;
}

/*
 * Runs fn with stderr going to a fresh file and returns what it wrote.
 * With journal_stream set, JOURNAL_STREAM names that file, as systemd
 * names the stream it connects stderr to.
 */
static char *capture_stderr(void (*fn)(void), bool journal_stream)
{
        char *path = path_in_dir("stderr"), *out, env[64];
        int saved, fd;
        struct stat st;

        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        saved = dup(STDERR_FILENO);
        if (fd < 0 || saved < 0 || fstat(fd, &st) < 0)
                abort();
        (void) snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long) st.st_dev,
                        (unsigned long long) st.st_ino);
        if (journal_stream)
                (void) setenv("JOURNAL_STREAM", env, 1);
        else
                (void) unsetenv("JOURNAL_STREAM");

        fflush(stderr);
        if (dup2(fd, STDERR_FILENO) < 0)
                abort();
        if (log_open("stderr") < 0)
                abort();
        fn();
        if (dup2(saved, STDERR_FILENO) < 0)
                abort();
        close(saved);
        close(fd);
        (void) unsetenv("JOURNAL_STREAM");

        out = slurp(path);
        unlink(path);
        free(path);
        return out;
}

static void log_some(void)
{
        log_set_max_level(LOG_INFO);
        log_error("boom %d", 42);
        log_warning("careful");
        log_info("fyi");
        log_debug("not shown at LOG_INFO");
        errno = EACCES;
        log_msg(LOG_NOTICE, "open: %m");
}

static void log_errno_some(void)
{
        int r;

        errno = EBADF;
        r = log_errno(-ENOENT, "open '%s': %m", "x");
        ok(r == -ENOENT, "log_errno() returns r");
        ok(errno == EBADF, "and leaves errno as it was");
        ok(log_errno(-EPERM, "again") == -EPERM, "for any r");
}

static void log_filtered(void)
{
        log_set_max_level(LOG_WARNING);
        ok(log_get_max_level() == LOG_WARNING, "log_get_max_level() returns what was set");
        log_info("filtered");
        log_warning("kept");
        log_set_max_level(LOG_DEBUG);
        log_debug("debug %s", "now");
        log_set_max_level(LOG_INFO);
}

static char *long_message;

static void log_long(void)
{
        log_info("%s", long_message);
}

static void log_default(void)
{
        log_open_default();
        log_info("default");
}

static void test_stderr(void)
{
        char *out, *want;

        log_set_ident("test-log");
        out = capture_stderr(log_some, false);
        ok(str_is(out, "test-log: error: boom 42\n"
                       "test-log: warning: careful\n"
                       "test-log: info: fyi\n"
                       "test-log: notice: open: Permission denied\n"),
           "stderr: 'ident: level: message', up to the maximum level, %%m is strerror(errno)");
        free(out);

        out = capture_stderr(log_some, true);
        ok(str_is(out, "<3>boom 42\n<4>careful\n<6>fyi\n<5>open: Permission denied\n"),
           "stderr that is the journal stream: '<N>message'");
        free(out);

        out = capture_stderr(log_errno_some, false);
        ok(str_is(out, "test-log: error: open 'x': No such file or directory\n"
                       "test-log: error: again\n"),
           "log_errno(): %%m is strerror(-r), at LOG_ERR");
        free(out);

        out = capture_stderr(log_filtered, false);
        ok(str_is(out, "test-log: warning: kept\ntest-log: debug: debug now\n"),
           "the maximum level filters");
        free(out);

        long_message = malloc(10001);
        if (!long_message)
                abort();
        memset(long_message, 'L', 10000);
        long_message[10000] = '\0';
        if (asprintf(&want, "test-log: info: %s\n", long_message) < 0)
                abort();
        out = capture_stderr(log_long, false);
        ok(str_is(out, want), "a message of 10000 bytes is written whole, as one line");
        free(out);
        free(want);
        free(long_message);

        (void) unsetenv("INVOCATION_ID");
        out = capture_stderr(log_default, false);
        ok(str_is(out, "test-log: info: default\n"), "outside systemd the default is stderr");
        free(out);

        log_set_ident(NULL);
}

/* Is line "YYYY-MM-DDTHH:MM:SS.mmm+05:30 <rest>"? */
static bool is_stamped(const char *line, const char *rest)
{
        static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddd+05:30 ";
        size_t i;

        for (i = 0; shape[i]; i++) {
                if (shape[i] == 'd' ? (line[i] < '0' || line[i] > '9') : line[i] != shape[i]) {
                        printf("#   not a timestamp: '%s'\n", line);
                        return false;
                }
        }
        return str_is(line + i, rest);
}

/* Cuts text into lines in place; returns how many there are (each ended by '\n'). */
static size_t split_lines(char *text, char **lines, size_t max)
{
        size_t n = 0;
        char *nl;

        while ((nl = strchr(text, '\n'))) {
                *nl = '\0';
                if (n < max)
                        lines[n] = text;
                n++;
                text = nl + 1;
        }
        return *text ? max + 1 : n;
}

static void test_file(void)
{
        char *a = path_in_dir("a.log"), *b = path_in_dir("b.log"), *target, *out, *lines[4];
        char want[128];
        FILE *f;

        ok(log_open("bogus") == -EINVAL, "an unknown target is -EINVAL");
        ok(log_open("file:") == -EINVAL, "so is an empty path");
        ok(log_open("/tmp/bare.log") == -EINVAL, "and a bare path");
        ok(log_open("file:/nonexistent-dir/x.log") == -ENOENT, "an unopenable file is -errno");

        f = fopen(a, "we");
        if (!f || fputs("existing line\n", f) < 0 || fclose(f) != 0)
                abort();

        log_set_ident("test-log");
        if (asprintf(&target, "file:%s", a) < 0)
                abort();
        ok(log_open(target) == 0, "file:/path opens");
        free(target);
        log_info("hello %s", "file");
        log_error("second");
        if (asprintf(&target, "file:%s", b) < 0)
                abort();
        ok(log_open(target) == 0, "opening another file replaces the first");
        free(target);
        log_warning("to b");
        log_close();
        log_set_ident(NULL);

        out = slurp(a);
        ok(split_lines(out, lines, 4) == 3, "the file is appended to, a line per message");
        ok(str_is(lines[0], "existing line"), "what was in it is kept");
        (void) snprintf(want, sizeof(want), "test-log[%d]: info: hello file", (int) getpid());
        ok(is_stamped(lines[1], want),
           "lines read '<ISO 8601 local time> ident[pid]: level: text'");
        (void) snprintf(want, sizeof(want), "test-log[%d]: error: second", (int) getpid());
        ok(is_stamped(lines[2], want), "for each message");
        free(out);

        out = slurp(b);
        ok(split_lines(out, lines, 4) == 1, "the second file has what came after");
        (void) snprintf(want, sizeof(want), "test-log[%d]: warning: to b", (int) getpid());
        ok(is_stamped(lines[0], want), "in the same format");
        free(out);

        unlink(a);
        unlink(b);
        free(a);
        free(b);
}

/* nginx's $time_local for t, formatted independently of log.c. */
static void time_local(time_t t, char *buf, size_t size)
{
        struct tm tm;

        if (!localtime_r(&t, &tm) || strftime(buf, size, "%d/%b/%Y:%H:%M:%S %z", &tm) == 0)
                abort();
}

/* want with every "%T" replaced by the local time of t. */
static char *at(const char *want, time_t t)
{
        char stamp[64], *out, *p;
        size_t n = 0;

        time_local(t, stamp, sizeof(stamp));
        out = malloc(strlen(want) * 2 + 64 * 8);
        if (!out)
                abort();
        for (p = out; want[n]; n++) {
                if (strncmp(want + n, "%T", 2) == 0) {
                        p = stpcpy(p, stamp);
                        n++;
                } else {
                        *p++ = want[n];
                }
        }
        *p = '\0';
        return out;
}

/* Does got equal want with "%T" meaning the local time of t0 or of t1? */
static bool is_at(const char *got, const char *want, time_t t0, time_t t1)
{
        char *w0 = at(want, t0), *w1 = at(want, t1);
        bool r = streq(got, w0) || streq(got, w1);

        if (!r)
                printf("#   got:    '%s'\n#   wanted: '%s'\n", got, w0);
        free(w0);
        free(w1);
        return r;
}

static off_t file_size(const char *path)
{
        struct stat st;

        return stat(path, &st) < 0 ? -1 : st.st_size;
}

static void test_access_format(void)
{
        static const char request[] = "GET /x?\"q\"\\ HTTP/1.1\r\nHost: example.com";
        static const char agent[] = "curl/8.0 \x01\xff\x7f";
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(40000)};
        struct access_record r = {
            .peer = (const struct sockaddr *) &sin,
            .request_line = request,
            .request_line_len = strlen("GET /x?\"q\"\\ HTTP/1.1"),
            .status = 200,
            .bytes_sent = 1234,
            .referer = "http://example.com/",
            .referer_len = strlen("http://example.com/"),
            .user_agent = agent,
            .user_agent_len = sizeof(agent) - 1,
            .upstream = "unix:/run/wharf/wsgi/app.sock",
            .upstream_usec = 3456,
            .request_usec = 1004999,
        };
        struct access_record bare = {.status = 400};
        struct access_record timed = {.status = 204, .request_usec = 999};
        char *path = path_in_dir("access.log"), *target, *out;
        struct access_log a;
        time_t t0, t1;

        if (inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr) != 1)
                abort();
        if (asprintf(&target, "file:%s", path) < 0)
                abort();
        ok(access_log_open(&a, target) == 0 && a.fd >= 0 && !a.journal && a.buf && a.len == 0,
           "access_log_open(\"file:...\")");
        free(target);

        t0 = time(NULL);
        access_log_write(&a, &r);
        access_log_write(&a, &bare);
        access_log_write(&a, &timed);
        t1 = time(NULL);
        ok(a.len > 0 && file_size(path) == 0, "records are buffered");
        ok(access_log_flush(&a) == 0 && a.len == 0, "access_log_flush() writes them");

        out = slurp(path);
        ok(is_at(out,
                 "192.0.2.1 - - [%T] \"GET /x?\\x22q\\x22\\x5C HTTP/1.1\" 200 1234 "
                 "\"http://example.com/\" \"curl/8.0 \\x01\\xFF\\x7F\" "
                 "upstream=\"unix:/run/wharf/wsgi/app.sock\" ut=0.003 rt=1.004\n"
                 "- - - [%T] \"-\" 400 0 \"-\" \"-\"\n"
                 "- - - [%T] \"-\" 204 0 \"-\" \"-\" rt=0.000\n",
                 t0, t1),
           "the combined format, escaped as nginx does, with upstream, ut and rt");
        free(out);
        access_log_done(&a);
        ok(a.fd == -1 && a.buf == NULL && a.len == 0, "access_log_done() resets the struct");
        access_log_done(&a);
        unlink(path);
        free(path);
}

static void test_access_peers(void)
{
        struct sockaddr_in6 v6 = {.sin6_family = AF_INET6}, mapped = {.sin6_family = AF_INET6};
        struct sockaddr_un un = {.sun_family = AF_UNIX, .sun_path = "/run/x.sock"};
        struct sockaddr other = {.sa_family = AF_APPLETALK};
        const struct sockaddr *peers[] = {
            (const struct sockaddr *) &v6,
            (const struct sockaddr *) &mapped,
            (const struct sockaddr *) &un,
            &other,
        };
        static const char *const want[] = {"2001:db8::1 - - [", "198.51.100.7 - - [", "unix: - - [",
                                           "- - - ["};
        char *path = path_in_dir("peers.log"), *out, *lines[8];
        struct access_log a;

        if (inet_pton(AF_INET6, "2001:db8::1", &v6.sin6_addr) != 1 ||
            inet_pton(AF_INET6, "::ffff:198.51.100.7", &mapped.sin6_addr) != 1)
                abort();
        if (access_log_open(&a, path) < 0)
                abort();
        for (size_t i = 0; i < ARRAY_SIZE(peers); i++)
                access_log_write(&a, &(struct access_record){.peer = peers[i], .status = 200});
        access_log_done(&a);

        out = slurp(path);
        ok(split_lines(out, lines, 8) == ARRAY_SIZE(peers),
           "a bare absolute path is a file target");
        for (size_t i = 0; i < ARRAY_SIZE(peers); i++)
                ok(strncmp(lines[i], want[i], strlen(want[i])) == 0, "peer shown as '%s'", want[i]);
        free(out);
        unlink(path);
        free(path);
}

static void test_access_buffer(void)
{
        struct access_record r = {
            .request_line = "GET / HTTP/1.1", .request_line_len = 14, .status = 200};
        char *path = path_in_dir("buffer.log"), *out, *huge;
        size_t lines = 0, n = 3000;
        struct access_log a;
        off_t before;
        bool whole = true;

        if (access_log_open(&a, path) < 0)
                abort();
        for (size_t i = 0; i < n; i++)
                access_log_write(&a, &r);
        before = file_size(path);
        access_log_done(&a);
        out = slurp(path);
        ok(before > 0 && (size_t) before < strlen(out), "a full buffer is flushed by itself");
        ok(before > 0 && out[before - 1] == '\n', "in whole lines");
        for (char *p = out; (p = strchr(p, '\n')); p++) {
                lines++;
                whole = whole && (p[1] == '\0' || strncmp(p + 1, "- - - [", 7) == 0);
        }
        ok(lines == n && whole, "every record is written once, whole (%zu lines)", lines);
        free(out);
        unlink(path);

        /* One record longer than the whole buffer. */
        huge = malloc(100000);
        if (!huge)
                abort();
        memset(huge, 'A', 100000);
        r.request_line = huge;
        r.request_line_len = 100000;
        if (access_log_open(&a, path) < 0)
                abort();
        access_log_write(&a, &r);
        access_log_done(&a);
        out = slurp(path);
        ok(strlen(out) == ACCESS_LOG_BUF && out[ACCESS_LOG_BUF - 1] == '\n' &&
               strchr(out, '\n') == out + ACCESS_LOG_BUF - 1,
           "a record longer than the buffer is cut to one line of ACCESS_LOG_BUF bytes");
        free(out);
        free(huge);
        unlink(path);
        free(path);
}

static void test_access_targets(void)
{
        struct access_record r = {.status = 200};
        struct access_log a;

        ok(access_log_open(&a, "bogus") == -EINVAL, "an unknown target is -EINVAL");
        ok(access_log_open(&a, "relative.log") == -EINVAL, "so is a relative bare path");
        ok(access_log_open(&a, "file:") == -EINVAL, "and an empty one");
        ok(access_log_open(&a, "/nonexistent-dir/access.log") == -ENOENT,
           "an unopenable file is -errno");
        ok(a.fd == -1 && a.buf == NULL, "which leaves the log off");

        ok(access_log_open(&a, "off") == 0 && a.fd == -1 && !a.journal, "\"off\"");
        access_log_write(&a, &r);
        ok(a.len == 0 && access_log_flush(&a) == 0, "writes nothing");
        access_log_done(&a);

        ok(access_log_open(&a, "stderr") == 0 && a.fd > STDERR_FILENO && !a.journal,
           "\"stderr\" writes to a copy of stderr");
        access_log_done(&a);
        ok(fcntl(STDERR_FILENO, F_GETFD) >= 0, "which access_log_done() closes, not stderr");

        ok(access_log_open(&a, "journal") == 0 && a.journal && a.fd == -1 && a.buf, "\"journal\"");
        access_log_write(&a, &r);
        ok(a.len == 0, "sends each record at once");
        access_log_done(&a);
        access_log_done(NULL);
}

int main(void)
{
        /* UTC+05:30 without tzdata: a POSIX TZ string. */
        if (setenv("TZ", "<+0530>-5:30", 1) < 0)
                abort();
        tzset();
        if (!mkdtemp(dir))
                abort();

        subtest("stderr", test_stderr);
        subtest("file", test_file);
        subtest("access log format", test_access_format);
        subtest("access log peers", test_access_peers);
        subtest("access log buffer", test_access_buffer);
        subtest("access log targets", test_access_targets);

        (void) rmdir(dir);
        return done_testing();
}
