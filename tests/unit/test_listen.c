/* SPDX-License-Identifier: MIT */
/*
 * Tests for common/listen.c: address parsing, binding (TCP, unix paths
 * with modes, stale/live/foreign files at the path, vacuum) and taking
 * sockets from systemd, with LISTEN_* set in-process and real listening
 * sockets placed at fds 3 and 4 as systemd would place them.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "listen.h"
#include "tap.h"
#include "util.h"

static char tmpdir[64];

static void tmp_path(char *out, size_t size, const char *name)
{
        (void) snprintf(out, size, "%s/%s", tmpdir, name);
}

static bool path_exists(const char *path)
{
        struct stat st;

        return lstat(path, &st) == 0;
}

static void test_parse_inet(void)
{
        struct sockaddr_storage sa;
        socklen_t len = 0;
        const struct sockaddr_in *sin = (const struct sockaddr_in *) &sa;
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) &sa;

        ok(listen_parse_addr(":8080", &sa, &len) == 0, "\":8080\" parses");
        ok(sa.ss_family == AF_INET && len == sizeof(*sin), "\":8080\" is IPv4");
        ok(sin->sin_addr.s_addr == htonl(INADDR_ANY), "\":8080\" is every address");
        ok(ntohs(sin->sin_port) == 8080, "\":8080\" has port 8080");

        ok(listen_parse_addr("*:80", &sa, &len) == 0 && sa.ss_family == AF_INET &&
               sin->sin_addr.s_addr == htonl(INADDR_ANY) && ntohs(sin->sin_port) == 80,
           "\"*:80\" is IPv4 any, port 80");

        ok(listen_parse_addr("127.0.0.1:8080", &sa, &len) == 0 && sa.ss_family == AF_INET &&
               sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK) && ntohs(sin->sin_port) == 8080,
           "\"127.0.0.1:8080\"");
        ok(listen_parse_addr("10.1.2.3:65535", &sa, &len) == 0 &&
               sin->sin_addr.s_addr == htonl(0x0a010203) && ntohs(sin->sin_port) == 65535,
           "\"10.1.2.3:65535\": the highest port");
        ok(listen_parse_addr("127.0.0.1:1", &sa, &len) == 0 && ntohs(sin->sin_port) == 1, "port 1");
        ok(listen_parse_addr(":0", &sa, &len) == 0 && ntohs(sin->sin_port) == 0,
           "\":0\" is any free port");

        ok(listen_parse_addr("[::1]:8080", &sa, &len) == 0, "\"[::1]:8080\" parses");
        ok(sa.ss_family == AF_INET6 && len == sizeof(*sin6) &&
               memcmp(&sin6->sin6_addr, &in6addr_loopback, sizeof(struct in6_addr)) == 0 &&
               ntohs(sin6->sin6_port) == 8080,
           "\"[::1]:8080\" is IPv6 loopback, port 8080");
        ok(listen_parse_addr("[::]:443", &sa, &len) == 0 && sa.ss_family == AF_INET6 &&
               memcmp(&sin6->sin6_addr, &in6addr_any, sizeof(struct in6_addr)) == 0 &&
               ntohs(sin6->sin6_port) == 443,
           "\"[::]:443\" is IPv6 any");

        ok(listen_parse_addr("localhost:8080", &sa, &len) == 0, "\"localhost:8080\" resolves");
        ok((sa.ss_family == AF_INET && sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK) &&
            ntohs(sin->sin_port) == 8080) ||
               (sa.ss_family == AF_INET6 &&
                memcmp(&sin6->sin6_addr, &in6addr_loopback, sizeof(struct in6_addr)) == 0 &&
                ntohs(sin6->sin6_port) == 8080),
           "\"localhost:8080\" is a loopback address with port 8080");
}

static void test_parse_unix(void)
{
        struct sockaddr_storage sa;
        socklen_t len = 0;
        const struct sockaddr_un *sun = (const struct sockaddr_un *) &sa;
        char path[sizeof(sun->sun_path) + 16];

        ok(listen_parse_addr("unix:/run/wharf/x.sock", &sa, &len) == 0 && sa.ss_family == AF_UNIX &&
               streq(sun->sun_path, "/run/wharf/x.sock") &&
               len == offsetof(struct sockaddr_un, sun_path) + sizeof("/run/wharf/x.sock"),
           "\"unix:/run/wharf/x.sock\"");
        ok(listen_parse_addr("/tmp/django.sock", &sa, &len) == 0 && sa.ss_family == AF_UNIX &&
               streq(sun->sun_path, "/tmp/django.sock"),
           "a bare absolute path is a unix socket");
        ok(listen_parse_addr("@wharf", &sa, &len) == 0 && sa.ss_family == AF_UNIX &&
               sun->sun_path[0] == '\0' && memcmp(sun->sun_path + 1, "wharf", 5) == 0 &&
               len == offsetof(struct sockaddr_un, sun_path) + 6,
           "\"@wharf\" is abstract, without a trailing NUL");
        ok(listen_parse_addr("unix:@wharf", &sa, &len) == 0 && sun->sun_path[0] == '\0',
           "\"unix:@wharf\" is abstract too");

        /* The longest path that fits sun_path with its NUL, and one byte more. */
        path[0] = '/';
        memset(path + 1, 'a', sizeof(sun->sun_path) - 2);
        path[sizeof(sun->sun_path) - 1] = '\0';
        ok(listen_parse_addr(path, &sa, &len) == 0 && strlen(sun->sun_path) == 107,
           "a 107-byte path fits");
        path[sizeof(sun->sun_path) - 1] = 'a';
        path[sizeof(sun->sun_path)] = '\0';
        ok(listen_parse_addr(path, &sa, &len) == -ENAMETOOLONG, "a 108-byte path is too long");
}

static void test_parse_errors(void)
{
        static const char *const bad[] = {
            "",
            ":",
            ":0080",
            ":65536",
            ":99999999999",
            ":-1",
            ":+80",
            ": 80",
            ":80 ",
            ":8o",
            "1.2.3.4",
            "1.2.3.4:",
            "127.0.0.1:http",
            "256.1.1.1:80",
            "1.2.3:80",
            "[::1",
            "[::1]",
            "[::1]8080",
            "[]:80",
            "[1.2.3.4]:80",
            "[::1]:",
            "::1:8080",
            "exa mple:80",
            "-host:80",
            "host/x:80",
            "unix:",
            "unix:relative.sock",
            "relative/path.sock",
            "@",
            "unix:@",
        };
        struct sockaddr_storage sa;
        char lng[300];
        socklen_t len;

        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                memset(&sa, 0xa5, sizeof(sa));
                len = 12345;
                ok(listen_parse_addr(bad[i], &sa, &len) == -EINVAL && len == 12345 &&
                       ((const unsigned char *) &sa)[0] == 0xa5,
                   "\"%s\" is -EINVAL and writes nothing", bad[i]);
        }

        (void) snprintf(lng, sizeof(lng), "unix:/%0200d", 0);
        ok(listen_parse_addr(lng, &sa, &len) == -ENAMETOOLONG, "a 200-byte unix path");
        lng[0] = '@';
        memset(lng + 1, 'x', 120);
        lng[121] = '\0';
        ok(listen_parse_addr(lng, &sa, &len) == -ENAMETOOLONG, "a 120-byte abstract name");
}

static int local_port(int fd)
{
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);

        if (getsockname(fd, (struct sockaddr *) &sa, &len) < 0)
                return -1;
        if (sa.ss_family == AF_INET)
                return ntohs(((struct sockaddr_in *) &sa)->sin_port);
        if (sa.ss_family == AF_INET6)
                return ntohs(((struct sockaddr_in6 *) &sa)->sin6_port);
        return -1;
}

static bool is_listening(int fd)
{
        int v = 0;
        socklen_t len = sizeof(v);

        return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v == 1;
}

static bool fd_is_nonblock_cloexec(int fd)
{
        int fl = fcntl(fd, F_GETFL), fdf = fcntl(fd, F_GETFD);

        return fl >= 0 && fdf >= 0 && (fl & O_NONBLOCK) && (fdf & FD_CLOEXEC);
}

static void test_bind_tcp(void)
{
        struct listener l;
        char desc[64], want[64];
        int port, v = 0;
        socklen_t vlen = sizeof(v);
        int r;

        r = listen_bind("127.0.0.1:0", SOCK_STREAM, 0, "http", &l);
        ok(r == 0, "bind 127.0.0.1:0: %d", r);
        if (r < 0)
                return;
        ok(l.fd >= 0 && is_listening(l.fd), "the socket listens");
        ok(fd_is_nonblock_cloexec(l.fd), "non-blocking and close-on-exec");
        ok(streq(l.name, "http") && l.family == AF_INET && l.type == SOCK_STREAM &&
               !l.from_systemd && !l.unix_path,
           "name, family and type recorded; not from systemd; no path");
        ok(getsockopt(l.fd, SOL_SOCKET, SO_REUSEADDR, &v, &vlen) == 0 && v == 1, "SO_REUSEADDR");
        v = 0;
        ok(getsockopt(l.fd, IPPROTO_TCP, TCP_NODELAY, &v, &vlen) == 0 && v == 1, "TCP_NODELAY");

        port = local_port(l.fd);
        ok(port > 0, "the kernel picked a real port (%d)", port);
        (void) snprintf(want, sizeof(want), "127.0.0.1:%d", port);
        ok(listen_describe(l.fd, desc, sizeof(desc)) == 0 && streq(desc, want),
           "listen_describe: \"%s\"", desc);
        ok(listen_describe(l.fd, desc, 5) == -ENOBUFS, "listen_describe into a short buffer");

        {
                struct sockaddr_in sin = {
                    .sin_family = AF_INET,
                    .sin_port = htons((uint16_t) port),
                    .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                };
                int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

                ok(c >= 0 && connect(c, (struct sockaddr *) &sin, sizeof(sin)) == 0,
                   "a client connects");
                int a = accept4(l.fd, NULL, NULL, SOCK_CLOEXEC);
                v = 0;
                ok(a >= 0 && getsockopt(a, IPPROTO_TCP, TCP_NODELAY, &v, &vlen) == 0 && v == 1,
                   "its connection inherits TCP_NODELAY");
                safe_close(a);
                safe_close(c);
        }

        listen_done(&l, true);
        ok(l.fd == -1 && !l.unix_path, "listen_done clears the listener");
        listen_done(&l, true);
        listen_done(NULL, true);
        ok(true, "listen_done twice and on NULL is harmless");

        ok(listen_bind("127.0.0.1:0", SOCK_DGRAM, 0, "x", &l) == -EINVAL, "SOCK_DGRAM refused");
        ok(listen_bind("127.0.0.1:0", SOCK_STREAM, 010000, "x", &l) == -EINVAL,
           "a mode beyond 07777 refused");
        {
                char name[LISTEN_NAME_MAX + 1];

                memset(name, 'n', LISTEN_NAME_MAX);
                name[LISTEN_NAME_MAX] = '\0';
                ok(listen_bind("127.0.0.1:0", SOCK_STREAM, 0, name, &l) == -ENAMETOOLONG,
                   "a name of LISTEN_NAME_MAX bytes refused");
        }
        ok(listen_bind("1.2.3", SOCK_STREAM, 0, "x", &l) == -EINVAL, "a bad address refused");
}

static void test_bind_tcp6(void)
{
        struct listener l;
        char desc[64], want[64];
        int v = 0;
        socklen_t vlen = sizeof(v);
        int r;

        r = listen_bind("[::1]:0", SOCK_STREAM, 0, "http6", &l);
        if (r == -EAFNOSUPPORT || r == -EADDRNOTAVAIL) {
                printf("# no IPv6 loopback here (%s): skipped\n", strerror(-r));
                return;
        }
        ok(r == 0, "bind [::1]:0: %d", r);
        if (r < 0)
                return;
        ok(l.family == AF_INET6 && is_listening(l.fd), "IPv6 listener");
        ok(getsockopt(l.fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &vlen) == 0 && v == 1, "IPV6_V6ONLY");
        (void) snprintf(want, sizeof(want), "[::1]:%d", local_port(l.fd));
        ok(listen_describe(l.fd, desc, sizeof(desc)) == 0 && streq(desc, want),
           "listen_describe: \"%s\"", desc);
        listen_done(&l, true);
}

static void test_bind_unix(void)
{
        struct listener l, l2;
        char path[128], addr[140], desc[160];
        struct stat st;
        mode_t old;
        int r;

        tmp_path(path, sizeof(path), "a.sock");
        (void) snprintf(addr, sizeof(addr), "unix:%s", path);

        r = listen_bind(addr, SOCK_STREAM, 0660, "uwsgi", &l);
        ok(r == 0, "bind %s: %d", addr, r);
        if (r < 0)
                return;
        ok(lstat(path, &st) == 0 && S_ISSOCK(st.st_mode), "a socket file exists");
        ok((st.st_mode & 07777) == 0660, "its mode is 0660 (%o)", (unsigned) (st.st_mode & 07777));
        ok(l.family == AF_UNIX && l.type == SOCK_STREAM && is_listening(l.fd) &&
               fd_is_nonblock_cloexec(l.fd),
           "a listening, non-blocking, close-on-exec unix socket");
        ok(l.unix_path && streq(l.unix_path, path), "unix_path recorded");
        ok(listen_describe(l.fd, desc, sizeof(desc)) == 0 && streq(desc, addr),
           "listen_describe: \"%s\"", desc);

        /* Live: another instance must not steal the path. */
        ok(listen_bind(addr, SOCK_STREAM, 0, "again", &l2) == -EADDRINUSE,
           "a live socket at the path is -EADDRINUSE");
        ok(listen_bind(addr, SOCK_SEQPACKET, 0, "again", &l2) == -EADDRINUSE,
           "a live socket of another type is -EADDRINUSE");
        ok(path_exists(path) && is_listening(l.fd), "and stays in place");

        listen_done(&l, false);
        ok(path_exists(path), "listen_done without vacuum leaves the file");

        /* Now the file is a stale socket: nobody listens on it. */
        old = umask(022);
        r = listen_bind(path, SOCK_SEQPACKET, 0, "handoff", &l);
        umask(old);
        ok(r == 0, "a stale socket is replaced (%d)", r);
        memset(&st, 0, sizeof(st));
        (void) lstat(path, &st);
        ok(r == 0 && l.type == SOCK_SEQPACKET && (st.st_mode & 07777) == 0755,
           "mode 0 keeps the umask's (%o)", (unsigned) (st.st_mode & 07777));
        listen_done(&l, true);
        ok(!path_exists(path), "vacuum removes the file");

        /* A regular file is the administrator's. */
        {
                int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

                ok(fd >= 0 && write(fd, "keep", 4) == 4, "a regular file at the path");
                safe_close(fd);
        }
        ok(listen_bind(path, SOCK_STREAM, 0666, "x", &l) == -EEXIST, "is -EEXIST");
        ok(lstat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 4 &&
               (st.st_mode & 07777) == 0644,
           "and stays untouched");
        (void) unlink(path);

        ok(mkdir(path, 0755) == 0 && listen_bind(path, SOCK_STREAM, 0, "x", &l) == -EEXIST,
           "a directory at the path is -EEXIST");
        (void) rmdir(path);

        tmp_path(path, sizeof(path), "missing/a.sock");
        ok(listen_bind(path, SOCK_STREAM, 0, "x", &l) == -ENOENT, "a missing directory: -ENOENT");
}

static void test_bind_abstract(void)
{
        struct listener l;
        char addr[64], desc[80];
        int r;

        (void) snprintf(addr, sizeof(addr), "@wharf-test-listen-%d", (int) getpid());
        r = listen_bind(addr, SOCK_SEQPACKET, 0600, "abstract", &l);
        ok(r == 0, "bind %s: %d", addr, r);
        if (r < 0)
                return;
        ok(!l.unix_path && l.family == AF_UNIX && is_listening(l.fd),
           "an abstract socket has no path to vacuum");
        ok(listen_describe(l.fd, desc, sizeof(desc)) == 0 && strncmp(desc, "unix:", 5) == 0 &&
               streq(desc + 5, addr),
           "listen_describe: \"%s\"", desc);
        listen_done(&l, true);
}

static void test_find(void)
{
        struct listener l[3] = {{.name = "http"}, {.name = "handoff"}, {.name = "http"}};

        ok(listen_find(l, 3, "http") == &l[0], "listen_find returns the first match");
        ok(listen_find(l, 3, "handoff") == &l[1], "listen_find by name");
        ok(listen_find(l, 3, "uwsgi") == NULL, "listen_find: no match is NULL");
        ok(listen_find(NULL, 0, "http") == NULL, "listen_find on nothing");
}

/*
 * systemd passes sockets at fds 3, 4, ...; the test harness may have
 * something there already, so it is moved away for the duration.
 */
struct stashed {
        int fd, moved, flags;
};

static void stash(struct stashed *s, int fd)
{
        s->fd = fd;
        s->flags = fcntl(fd, F_GETFD);
        s->moved = s->flags < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 200);
        if (s->moved >= 0)
                (void) close(fd);
}

static void unstash(const struct stashed *s)
{
        if (s->moved < 0)
                return;
        (void) dup2(s->moved, s->fd);
        (void) fcntl(s->fd, F_SETFD, s->flags);
        (void) close(s->moved);
}

/* Puts fd at target (as systemd does: inheritable, blocking) and closes the original. */
static void place(int fd, int target)
{
        int high = fcntl(fd, F_DUPFD, 200);

        (void) close(fd);
        (void) dup2(high, target);
        (void) close(high);
}

static int tcp_listener(void)
{
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        if (fd < 0 || bind(fd, (struct sockaddr *) &sin, sizeof(sin)) < 0 || listen(fd, 8) < 0)
                return safe_close(fd);
        return fd;
}

static int unix_listener(const char *path, int type)
{
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        int fd;

        if (strlen(path) >= sizeof(sun.sun_path))
                return -1;
        memcpy(sun.sun_path, path, strlen(path) + 1);
        fd = socket(AF_UNIX, type, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *) &sun, sizeof(sun)) < 0 || listen(fd, 8) < 0)
                return safe_close(fd);
        return fd;
}

static void set_listen_env(pid_t pid, const char *fds, const char *names)
{
        char buf[32];

        (void) snprintf(buf, sizeof(buf), "%ld", (long) pid);
        setenv("LISTEN_PID", buf, 1);
        setenv("LISTEN_FDS", fds, 1);
        if (names)
                setenv("LISTEN_FDNAMES", names, 1);
        else
                unsetenv("LISTEN_FDNAMES");
}

static bool listen_env_unset(void)
{
        return !getenv("LISTEN_PID") && !getenv("LISTEN_FDS") && !getenv("LISTEN_FDNAMES");
}

static bool fd_is_open(int fd)
{
        return fcntl(fd, F_GETFD) >= 0;
}

static bool fd_is_blocking(int fd)
{
        int fl = fcntl(fd, F_GETFL);

        return fl >= 0 && !(fl & O_NONBLOCK);
}

static void test_systemd_named(void)
{
        struct listener *l = NULL;
        size_t n = 0;
        char path[128], desc[64], want[64];
        int tcp_port, r;

        tmp_path(path, sizeof(path), "handoff.sock");
        {
                int tcp = tcp_listener();

                tcp_port = local_port(tcp);
                place(tcp, 3);
                place(unix_listener(path, SOCK_SEQPACKET), 4);
        }
        ok(fd_is_open(3) && fd_is_open(4), "fds 3 and 4 hold the passed sockets");

        set_listen_env(getpid(), "2", "http:handoff");
        r = listen_from_systemd(&l, &n);
        ok(r == 2 && n == 2 && l, "two sockets taken (%d)", r);
        ok(listen_env_unset(), "LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES are unset");
        if (r != 2)
                return;

        ok(l[0].fd == 3 && streq(l[0].name, "http") && l[0].family == AF_INET &&
               l[0].type == SOCK_STREAM && l[0].from_systemd && !l[0].unix_path,
           "fd 3: \"http\", TCP, from systemd");
        ok(l[1].fd == 4 && streq(l[1].name, "handoff") && l[1].family == AF_UNIX &&
               l[1].type == SOCK_SEQPACKET && l[1].from_systemd && !l[1].unix_path,
           "fd 4: \"handoff\", unix SOCK_SEQPACKET, from systemd, no path of ours");
        ok(fd_is_nonblock_cloexec(3) && fd_is_nonblock_cloexec(4),
           "both made non-blocking and close-on-exec");
        ok(is_listening(3) && is_listening(4), "both still listening");
        {
                int v = 0;
                socklen_t vlen = sizeof(v);
                ok(getsockopt(3, IPPROTO_TCP, TCP_NODELAY, &v, &vlen) == 0 && v == 1,
                   "the TCP one gets TCP_NODELAY");
        }
        (void) snprintf(want, sizeof(want), "127.0.0.1:%d", tcp_port);
        ok(listen_describe(l[0].fd, desc, sizeof(desc)) == 0 && streq(desc, want),
           "the same socket, not a new one (%s)", desc);
        ok(listen_find(l, n, "handoff") == &l[1], "found by name");

        listen_done(&l[1], true);
        ok(path_exists(path), "vacuum never unlinks a socket systemd passed");
        listen_done(&l[0], true);
        ok(!fd_is_open(3) && !fd_is_open(4), "listen_done closed both fds");
        free(l);
        (void) unlink(path);
}

static void test_systemd_unnamed(void)
{
        struct listener *l = NULL;
        size_t n = 0;
        int r;

        place(tcp_listener(), 3);
        set_listen_env(getpid(), "1", NULL);
        r = listen_from_systemd(&l, &n);
        ok(r == 1 && n == 1 && streq(l[0].name, "unknown"),
           "without LISTEN_FDNAMES the name is \"unknown\"");
        if (r == 1)
                listen_done(&l[0], false);
        free(l);
        ok(!fd_is_open(3), "closed");
}

static void test_systemd_refused(void)
{
        struct listener sentinel, *l = &sentinel;
        size_t n = 777;
        int r;

        place(tcp_listener(), 3);

        /* A stream socket nobody listen()ed on, as Accept=yes would pass. */
        place(socket(AF_INET, SOCK_STREAM, 0), 4);
        set_listen_env(getpid(), "2", "http:other");
        r = listen_from_systemd(&l, &n);
        ok(r == -EINVAL, "a socket that does not listen is -EINVAL (%d)", r);
        ok(l == &sentinel && n == 777, "nothing returned");
        ok(listen_env_unset(), "LISTEN_* unset anyway");
        ok(fd_is_open(3) && fd_is_open(4) && fd_is_blocking(3) && is_listening(3),
           "the passed fds are left open and untouched");
        (void) close(4);

        place(open("/dev/null", O_RDONLY), 4);
        set_listen_env(getpid(), "2", "http:other");
        ok(listen_from_systemd(&l, &n) == -ENOTSOCK && l == &sentinel,
           "a file that is not a socket is -ENOTSOCK");
        (void) close(4);

        {
                struct sockaddr_in sin = {.sin_family = AF_INET,
                                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
                int udp = socket(AF_INET, SOCK_DGRAM, 0);

                ok(udp >= 0 && bind(udp, (struct sockaddr *) &sin, sizeof(sin)) == 0,
                   "a bound UDP socket");
                place(udp, 4);
        }
        set_listen_env(getpid(), "2", "http:other");
        ok(listen_from_systemd(&l, &n) == -EINVAL && l == &sentinel, "a datagram socket: -EINVAL");
        (void) close(4);

        place(tcp_listener(), 4);
        set_listen_env(getpid(), "2", "http");
        ok(listen_from_systemd(&l, &n) == -EINVAL && l == &sentinel && listen_env_unset(),
           "fewer LISTEN_FDNAMES than LISTEN_FDS: -EINVAL");

        set_listen_env(getpid(), "2",
                       "http:a-name-that-is-far-too-long-for-wharf-to-keep-in-its-listener-"
                       "struct");
        ok(listen_from_systemd(&l, &n) == -ENAMETOOLONG && l == &sentinel,
           "a name of LISTEN_NAME_MAX bytes or more: -ENAMETOOLONG");

        /* Meant for another process (our parent): not socket activated at all. */
        set_listen_env(getppid(), "2", "http:handoff");
        r = listen_from_systemd(&l, &n);
        ok(r == 0 && l == NULL && n == 0, "LISTEN_PID of another process: 0 sockets");
        ok(listen_env_unset(), "and LISTEN_* unset");
        ok(fd_is_blocking(3) && fd_is_blocking(4), "and the fds untouched");

        l = &sentinel;
        r = listen_from_systemd(&l, &n);
        ok(r == 0 && l == NULL && n == 0, "no LISTEN_* at all: 0 sockets");

        /* systemd never sends these; libsystemd calls both malformed. */
        l = &sentinel;
        set_listen_env(getpid(), "0", NULL);
        ok(listen_from_systemd(&l, &n) == -EINVAL && l == &sentinel, "LISTEN_FDS=0: -EINVAL");
        set_listen_env(getpid(), "two", NULL);
        ok(listen_from_systemd(&l, &n) == -EINVAL && l == &sentinel, "LISTEN_FDS=two: -EINVAL");
        ok(listen_env_unset(), "and LISTEN_* unset");

        (void) close(4);
        (void) close(3);
}

static void test_systemd_too_many(void)
{
        struct stashed st[LISTEN_MAX + 1];
        struct listener sentinel, *l = &sentinel;
        char count[16];
        size_t n;
        int tcp = tcp_listener(), high = fcntl(tcp, F_DUPFD, 300);

        (void) close(tcp);
        for (int i = 0; i <= LISTEN_MAX; i++) {
                stash(&st[i], 3 + i);
                (void) dup2(high, 3 + i);
        }

        (void) snprintf(count, sizeof(count), "%d", LISTEN_MAX + 1);
        set_listen_env(getpid(), count, NULL);
        ok(listen_from_systemd(&l, &n) == -E2BIG && l == &sentinel,
           "more than LISTEN_MAX sockets: -E2BIG");

        for (int i = LISTEN_MAX; i >= 0; i--) {
                (void) close(3 + i);
                unstash(&st[i]);
        }
        (void) close(high);
}

static void test_systemd(void)
{
        struct stashed s3, s4;

        stash(&s3, 3);
        stash(&s4, 4);
        test_systemd_named();
        test_systemd_unnamed();
        test_systemd_refused();
        unstash(&s4);
        unstash(&s3);
}

int main(void)
{
        (void) snprintf(tmpdir, sizeof(tmpdir), "/tmp/wharf-test-listen-XXXXXX");
        if (!mkdtemp(tmpdir)) {
                printf("1..0 # SKIP cannot create a temporary directory: %s\n", strerror(errno));
                return 0;
        }

        subtest("parse inet", test_parse_inet);
        subtest("parse unix", test_parse_unix);
        subtest("parse errors", test_parse_errors);
        subtest("bind tcp", test_bind_tcp);
        subtest("bind tcp6", test_bind_tcp6);
        subtest("bind unix", test_bind_unix);
        subtest("bind abstract", test_bind_abstract);
        subtest("find", test_find);
        subtest("systemd", test_systemd);
        subtest("systemd: too many", test_systemd_too_many);

        (void) rmdir(tmpdir);
        return done_testing();
}
