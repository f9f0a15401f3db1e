/* SPDX-License-Identifier: MIT */
/*
 * listen: sockets from systemd, or bound from a uWSGI/nginx style address.
 *
 * Two rules shape this file. A socket systemd passed belongs to systemd: it
 * is checked and made non-blocking, never bound, listened on again (that is
 * an SELinux denial and resets the backlog) or unlinked. And a unix socket
 * path is removed only when it is provably a dead socket: a live one belongs
 * to another process and any other file to the administrator.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include "listen.h"
#include "util.h"

/* "unknown" is what sd_listen_fds_with_names() reports when systemd passed no name. */
#define LISTEN_NAME_UNKNOWN "unknown"

/* RFC 1035: a host name is at most 253 characters. */
#define LISTEN_HOST_MAX 253

static void strv_freep(char ***p)
{
        if (!*p)
                return;
        for (char **s = *p; *s; s++)
                free(*s);
        free(*p);
}

/*
 * A port is 0..65535 in plain decimal: no sign, no spaces, no leading zero
 * ("080" is a typo, not octal). 0 asks the kernel for any free port, which
 * tests use; listen_describe() then tells the real one.
 */
static int parse_port(const char *s, uint16_t *ret_port)
{
        size_t len = strlen(s);
        unsigned long v = 0;

        if (len == 0 || len > 5)
                return -EINVAL;
        if (s[0] == '0' && len > 1)
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                v = v * 10 + (unsigned long) (s[i] - '0');
        }
        if (v > 65535)
                return -EINVAL;

        *ret_port = (uint16_t) v;
        return 0;
}

/*
 * "/path" (a file system socket) or "@name" (Linux's abstract namespace:
 * sun_path starts with a NUL and the name is not NUL-terminated). A path
 * must be absolute: a relative one would depend on the working directory,
 * which daemons change.
 */
static int parse_unix(const char *path, struct sockaddr_storage *ret_sa, socklen_t *ret_len)
{
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        size_t len = strlen(path);
        socklen_t sa_len;

        if (path[0] == '@') {
                /* The name follows the leading NUL, so it may use every other byte of sun_path. */
                if (len < 2)
                        return -EINVAL;
                if (len > sizeof(sun.sun_path))
                        return -ENAMETOOLONG;
                memcpy(sun.sun_path + 1, path + 1, len - 1);
                sa_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len);
        } else if (path[0] == '/') {
                if (len >= sizeof(sun.sun_path))
                        return -ENAMETOOLONG;
                memcpy(sun.sun_path, path, len + 1);
                sa_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len + 1);
        } else
                return -EINVAL;

        memset(ret_sa, 0, sizeof(*ret_sa));
        memcpy(ret_sa, &sun, sizeof(sun));
        *ret_len = sa_len;
        return 0;
}

static int gai_error_to_errno(int r)
{
        switch (r) {
        case EAI_SYSTEM:
                return errno > 0 ? -errno : -EIO;
        case EAI_MEMORY:
                return -ENOMEM;
        case EAI_AGAIN:
                return -EAGAIN;
        default:
                return -EADDRNOTAVAIL;
        }
}

/* Runs getaddrinfo() and copies the first address, for numeric IPv6 and for host names. */
static int resolve_first(const char *host, const char *port, int family, int flags,
                         struct sockaddr_storage *ret_sa, socklen_t *ret_len)
{
        struct addrinfo hints = {
            .ai_family = family,
            .ai_socktype = SOCK_STREAM,
            .ai_flags = flags | AI_NUMERICSERV,
        };
        struct addrinfo *ai = NULL;
        int r;

        errno = 0;
        r = getaddrinfo(host, port, &hints, &ai);
        if (r != 0)
                return gai_error_to_errno(r);
        if (!ai || ai->ai_addrlen > sizeof(*ret_sa)) {
                freeaddrinfo(ai);
                return -EADDRNOTAVAIL;
        }

        memset(ret_sa, 0, sizeof(*ret_sa));
        memcpy(ret_sa, ai->ai_addr, ai->ai_addrlen);
        *ret_len = ai->ai_addrlen;
        freeaddrinfo(ai);
        return 0;
}

/* ASCII letters, digits, '-', '_' and '.': anything else is refused before it reaches DNS. */
static bool host_name_is_valid(const char *host)
{
        size_t len = strlen(host);
        bool all_numeric = true;

        if (len == 0 || len > LISTEN_HOST_MAX || host[0] == '-' || host[0] == '.')
                return false;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) host[i];
                bool digit = c >= '0' && c <= '9';
                bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');

                if (!digit && !letter && c != '-' && c != '_' && c != '.')
                        return false;
                if (!digit && c != '.')
                        all_numeric = false;
        }

        /* "256.1.1.1" or "1.2.3" is a mistyped IPv4 address, not a name to look up. */
        return !all_numeric;
}

static void store_inet4(struct in_addr a, uint16_t port, struct sockaddr_storage *ret_sa,
                        socklen_t *ret_len)
{
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = a};

        memset(ret_sa, 0, sizeof(*ret_sa));
        memcpy(ret_sa, &sin, sizeof(sin));
        *ret_len = sizeof(sin);
}

/*
 * "host:port", "[v6]:port", ":port" or "*:port". A bare ":port" means every
 * IPv4 address, as in nginx's "listen 8080" and uWSGI's "--http :8080";
 * "[::]:port" is the IPv6 wildcard.
 */
static int parse_inet(const char *addr, struct sockaddr_storage *ret_sa, socklen_t *ret_len)
{
        char host[LISTEN_HOST_MAX + 1], port_buf[sizeof("65535")];
        const char *port_str, *host_end;
        struct in_addr in4;
        size_t host_len;
        uint16_t port;
        int r;

        if (addr[0] == '[') {
                host_end = strchr(addr, ']');
                if (!host_end || host_end[1] != ':')
                        return -EINVAL;
                addr++;
                port_str = host_end + 2;
        } else {
                host_end = strrchr(addr, ':');
                if (!host_end)
                        return -EINVAL;
                port_str = host_end + 1;
        }

        host_len = (size_t) (host_end - addr);
        if (host_len >= sizeof(host))
                return -EINVAL;
        memcpy(host, addr, host_len);
        host[host_len] = '\0';

        r = parse_port(port_str, &port);
        if (r < 0)
                return r;
        /* getaddrinfo() takes the port as a string: give it the validated, canonical one. */
        (void) snprintf(port_buf, sizeof(port_buf), "%u", (unsigned) port);

        if (host_end[0] == ']') {
                if (host_len == 0)
                        return -EINVAL;
                /* AI_NUMERICHOST: a literal only, never a lookup; it also takes "%scope". */
                r = resolve_first(host, port_buf, AF_INET6, AI_NUMERICHOST, ret_sa, ret_len);
                return r == -EADDRNOTAVAIL ? -EINVAL : r;
        }

        /* An unbracketed IPv6 address: "::1:80" is ambiguous, so it is refused. */
        if (strchr(host, ':'))
                return -EINVAL;

        if (host_len == 0 || streq(host, "*")) {
                in4.s_addr = htonl(INADDR_ANY);
                store_inet4(in4, port, ret_sa, ret_len);
                return 0;
        }

        /* inet_pton() takes a dotted quad only, not inet_aton()'s "127.1" or "0x7f.1". */
        if (inet_pton(AF_INET, host, &in4) == 1) {
                store_inet4(in4, port, ret_sa, ret_len);
                return 0;
        }

        if (!host_name_is_valid(host))
                return -EINVAL;

        /* A name such as "localhost": the first address the resolver gives, as uWSGI does. */
        return resolve_first(host, port_buf, AF_UNSPEC, 0, ret_sa, ret_len);
}

int listen_parse_addr(const char *addr, struct sockaddr_storage *ret_sa, socklen_t *ret_len)
{
        assert(addr);
        assert(ret_sa);
        assert(ret_len);

        if (strncmp(addr, "unix:", 5) == 0)
                return parse_unix(addr + 5, ret_sa, ret_len);
        if (addr[0] == '/' || addr[0] == '@')
                return parse_unix(addr, ret_sa, ret_len);
        return parse_inet(addr, ret_sa, ret_len);
}

/*
 * Makes room to bind at a unix socket path. Nothing there is fine. A socket
 * nobody listens on (connect() says ECONNREFUSED: the previous instance died
 * without vacuum) is removed. A live socket is -EADDRINUSE and any other
 * kind of file -EEXIST; both are left alone. When connect() fails for
 * another reason (EACCES, ...) nothing is removed either: we cannot tell.
 */
static int unix_path_make_room(const struct sockaddr_un *sun, socklen_t len, int type)
{
        _cleanup_close_ int probe = -1;
        struct stat st;

        if (lstat(sun->sun_path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISSOCK(st.st_mode))
                return -EEXIST;

        /* Non-blocking, so that a live listener with a full backlog answers EAGAIN at once. */
        probe = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (probe < 0)
                return -errno;
        if (connect(probe, (const struct sockaddr *) sun, len) >= 0)
                return -EADDRINUSE;

        switch (errno) {
        case ECONNREFUSED:
                if (unlink(sun->sun_path) < 0 && errno != ENOENT)
                        return -errno;
                return 0;
        case ENOENT:
                return 0; /* removed since the lstat(): the path is free */
        case EAGAIN:      /* listening, backlog full */
        case EPROTOTYPE:  /* listening, with another socket type */
                return -EADDRINUSE;
        default:
                return -errno;
        }
}

/*
 * TCP_NODELAY on a TCP listener: every connection accepted from it inherits
 * the option (Linux), so no response that leaves in pieces, a streamed one
 * or a pipeline's, waits on Nagle for the client's delayed ACK. nginx's
 * tcp_nodelay, at no cost per connection.
 */
static int tcp_set_nodelay(int fd, int family, int type)
{
        const int one = 1;

        if ((family != AF_INET && family != AF_INET6) || type != SOCK_STREAM)
                return 0;
        return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ? -errno : 0;
}

int listen_bind(const char *addr, int type, unsigned unix_mode, const char *name,
                struct listener *ret)
{
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *path = NULL;
        struct sockaddr_storage sa;
        socklen_t sa_len;
        size_t name_len;
        int r;

        assert(addr);
        assert(name);
        assert(ret);

        if (type != SOCK_STREAM && type != SOCK_SEQPACKET)
                return -EINVAL;
        if (unix_mode & ~07777u)
                return -EINVAL;
        name_len = strlen(name);
        if (name_len >= LISTEN_NAME_MAX)
                return -ENAMETOOLONG;

        r = listen_parse_addr(addr, &sa, &sa_len);
        if (r < 0)
                return r;

        fd = socket(sa.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;

        if (sa.ss_family == AF_INET || sa.ss_family == AF_INET6) {
                const int one = 1;

                /* A restart must not wait for TIME_WAIT connections of the previous instance. */
                if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                        return -errno;
                /*
                 * An IPv6 socket serves IPv6 only, whatever net.ipv6.bindv6only
                 * says, so "[::]:80" and ":80" can both be bound (nginx's
                 * ipv6only=on default).
                 */
                if (sa.ss_family == AF_INET6 &&
                    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
                        return -errno;
                r = tcp_set_nodelay(fd, sa.ss_family, type);
                if (r < 0)
                        return r;
        } else if (sa.ss_family == AF_UNIX) {
                const struct sockaddr_un *sun = (const struct sockaddr_un *) &sa;

                /* An abstract name (sun_path[0] == '\0') has no file: nothing to clear or chmod. */
                if (sun->sun_path[0] != '\0') {
                        path = strdup(sun->sun_path);
                        if (!path)
                                return -ENOMEM;
                        r = unix_path_make_room(sun, sa_len, type);
                        if (r < 0)
                                return r;
                }
        }

        if (bind(fd, (const struct sockaddr *) &sa, sa_len) < 0)
                return -errno;

        /*
         * fchmod() on a socket fd does not reach the file on Linux, so the
         * path is chmod'ed. Doing it before listen() means nobody can
         * connect while the umask's mode is still in place.
         */
        if (path && unix_mode != 0 && chmod(path, (mode_t) unix_mode) < 0) {
                r = -errno;
                goto fail_unlink;
        }

        if (listen(fd, LISTEN_BACKLOG) < 0) {
                r = -errno;
                goto fail_unlink;
        }

        *ret = (struct listener){
            .fd = TAKE_FD(fd),
            .family = sa.ss_family,
            .type = type,
            .from_systemd = false,
            .unix_path = TAKE_PTR(path),
        };
        memcpy(ret->name, name, name_len + 1);
        return 0;

fail_unlink:
        if (path)
                (void) unlink(path);
        return r;
}

/*
 * Checks one fd systemd passed and describes it, without changing it:
 * -ENOTSOCK when it is not a socket, -EINVAL when it is a socket nobody
 * listen()ed on (an Accept=yes connection, a datagram socket),
 * -EAFNOSUPPORT or -ESOCKTNOSUPPORT for a family or type wharf does not
 * serve on, -ENAMETOOLONG for a name of LISTEN_NAME_MAX bytes or more.
 */
static int listener_from_fd(int fd, const char *name, struct listener *ret)
{
        struct sockaddr_storage sa;
        socklen_t sa_len = sizeof(sa);
        int type;
        socklen_t type_len = sizeof(type);
        size_t name_len;
        int r;

        r = sd_is_socket(fd, AF_UNSPEC, 0, -1);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENOTSOCK;
        /* SO_ACCEPTCONN: a passed socket is never listen()ed on again, so it must be already. */
        r = sd_is_socket(fd, AF_UNSPEC, 0, 1);
        if (r < 0)
                return r;
        if (r == 0)
                return -EINVAL;

        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) < 0)
                return -errno;
        if (type != SOCK_STREAM && type != SOCK_SEQPACKET)
                return -ESOCKTNOSUPPORT;
        if (getsockname(fd, (struct sockaddr *) &sa, &sa_len) < 0)
                return -errno;
        if (sa.ss_family != AF_INET && sa.ss_family != AF_INET6 && sa.ss_family != AF_UNIX)
                return -EAFNOSUPPORT;

        /* LISTEN_FDNAMES="a::b" gives an empty name: treat it as systemd does a missing one. */
        if (!name || name[0] == '\0')
                name = LISTEN_NAME_UNKNOWN;
        name_len = strlen(name);
        if (name_len >= LISTEN_NAME_MAX)
                return -ENAMETOOLONG;

        *ret = (struct listener){
            .fd = fd,
            .family = sa.ss_family,
            .type = type,
            .from_systemd = true,
            .unix_path = NULL,
        };
        memcpy(ret->name, name, name_len + 1);
        return 0;
}

static int fd_set_nonblock_cloexec(int fd)
{
        int flags;

        flags = fcntl(fd, F_GETFL);
        if (flags < 0)
                return -errno;
        if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return -errno;

        flags = fcntl(fd, F_GETFD);
        if (flags < 0)
                return -errno;
        if (!(flags & FD_CLOEXEC) && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
                return -errno;
        return 0;
}

/*
 * Errors, besides sd_listen_fds_with_names()'s own (-EINVAL for a malformed
 * LISTEN_PID/LISTEN_FDS or a LISTEN_FDNAMES with another count): -E2BIG for
 * more than LISTEN_MAX fds, then those of listener_from_fd() for the first
 * fd (in order from SD_LISTEN_FDS_START) that fails its check. Every fd is
 * checked before any is changed, so on failure all passed fds are left open
 * and untouched (systemd still owns them; the caller exits) and the caller's
 * message says what kind of socket is wrong, for example "a socket passed
 * by systemd is not listening (Accept=yes?)".
 */
int listen_from_systemd(struct listener **ret, size_t *ret_n)
{
        _cleanup_(strv_freep) char **names = NULL;
        _cleanup_free_ struct listener *l = NULL;
        int n, r;

        assert(ret);
        assert(ret_n);

        /* unset_environment=1: workers and exec'd children must not take these fds for theirs. */
        n = sd_listen_fds_with_names(1, &names);
        if (n < 0)
                return n;
        if (n == 0) {
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        if (n > LISTEN_MAX)
                return -E2BIG;

        l = calloc((size_t) n, sizeof(*l));
        if (!l)
                return -ENOMEM;

        for (int i = 0; i < n; i++) {
                r = listener_from_fd(SD_LISTEN_FDS_START + i, names ? names[i] : NULL, &l[i]);
                if (r < 0)
                        return r;
        }

        for (int i = 0; i < n; i++) {
                r = fd_set_nonblock_cloexec(l[i].fd);
                if (r < 0)
                        return r;
                r = tcp_set_nodelay(l[i].fd, l[i].family, l[i].type);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(l);
        *ret_n = (size_t) n;
        return n;
}

struct listener *listen_find(struct listener *l, size_t n, const char *name)
{
        assert(l || n == 0);
        assert(name);

        for (size_t i = 0; i < n; i++)
                if (streq(l[i].name, name))
                        return &l[i];
        return NULL;
}

void listen_done(struct listener *l, bool vacuum)
{
        if (!l)
                return;

        /* unix_path is set only for a socket we bound: a systemd socket's file is systemd's. */
        if (vacuum && l->unix_path && !l->from_systemd)
                (void) unlink(l->unix_path);
        free(l->unix_path);
        l->unix_path = NULL;
        l->fd = safe_close(l->fd);
}

/* snprintf() into out, or -ENOBUFS when it does not fit. */
__attribute__((format(printf, 3, 4))) static int format_into(char *out, size_t size,
                                                             const char *fmt, ...)
{
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(out, size, fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        if ((size_t) n >= size)
                return -ENOBUFS;
        return 0;
}

/*
 * "unix:/path", "unix:@name" for an abstract socket (bytes that are not
 * printable ASCII shown as '?', as a name may hold any byte), or "unix:"
 * for an unnamed one.
 */
static int describe_unix(const struct sockaddr_un *sun, socklen_t sa_len, char *out, size_t size)
{
        size_t path_len = sa_len > offsetof(struct sockaddr_un, sun_path)
                              ? sa_len - offsetof(struct sockaddr_un, sun_path)
                              : 0;
        char name[sizeof(sun->sun_path) + 1];

        if (path_len == 0)
                return format_into(out, size, "unix:");

        if (sun->sun_path[0] != '\0')
                return format_into(out, size, "unix:%.*s", (int) strnlen(sun->sun_path, path_len),
                                   sun->sun_path);

        for (size_t i = 1; i < path_len; i++) {
                unsigned char c = (unsigned char) sun->sun_path[i];

                name[i - 1] = c >= 0x20 && c < 0x7f ? (char) c : '?';
        }
        name[path_len - 1] = '\0';
        return format_into(out, size, "unix:@%s", name);
}

int listen_describe(int fd, char *out, size_t size)
{
        struct sockaddr_storage sa;
        socklen_t sa_len = sizeof(sa);
        char host[NI_MAXHOST], serv[NI_MAXSERV];
        int r;

        assert(out || size == 0);

        if (getsockname(fd, (struct sockaddr *) &sa, &sa_len) < 0)
                return -errno;

        switch (sa.ss_family) {
        case AF_INET:
        case AF_INET6:
                r = getnameinfo((const struct sockaddr *) &sa, sa_len, host, sizeof(host), serv,
                                sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV);
                if (r != 0)
                        return gai_error_to_errno(r);
                if (sa.ss_family == AF_INET6)
                        return format_into(out, size, "[%s]:%s", host, serv);
                return format_into(out, size, "%s:%s", host, serv);
        case AF_UNIX:
                return describe_unix((const struct sockaddr_un *) &sa, sa_len, out, size);
        default:
                return -EAFNOSUPPORT;
        }
}
