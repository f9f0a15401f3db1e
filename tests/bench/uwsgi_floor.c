/* SPDX-License-Identifier: MIT */
/*
 * uwsgi_floor: the least any uwsgi application server can do for one request
 * from nginx, and the wsgi benchmark's floor row. It runs no Python and
 * parses nothing: accept the connection nginx opens, read the uwsgi packet,
 * write a fixed hello response, close. Whatever wharf-wsgi or uWSGI spend
 * above this row is theirs; what this row costs, every server behind
 * `uwsgi_pass` pays (nginx opens a connection per request).
 *
 *   uwsgi_floor --ini FILE    serves on the `socket = PATH` named in FILE
 *   uwsgi_floor --version
 *
 * bench.py compiles it with cc at run time; it is not part of the build.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static const char response[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Type: text/plain\r\n"
                               "Content-Length: 14\r\n"
                               "\r\n"
                               "Hello, World!\n";

/* Reads the whole uwsgi packet: the 4-byte header, then its datasize. */
static int read_packet(int fd, char *buf, size_t cap)
{
        size_t have = 0, want = 4;

        while (have < want) {
                ssize_t n = recv(fd, buf + have, cap - have, 0);
                if (n <= 0)
                        return -1;
                have += (size_t) n;
                if (want == 4 && have >= 4)
                        want = 4 + ((size_t) (uint8_t) buf[1] | (size_t) (uint8_t) buf[2] << 8);
                if (want > cap)
                        return -1;
        }
        return 0;
}

static int socket_path(const char *ini, char *path, size_t size)
{
        char line[512], fmt[32];
        FILE *f = fopen(ini, "r");

        if (!f)
                return -1;
        snprintf(fmt, sizeof(fmt), " socket = %%%zus", size - 1);
        int r = -1;
        while (r < 0 && fgets(line, sizeof(line), f))
                if (sscanf(line, fmt, path) == 1)
                        r = 0;
        fclose(f);
        return r;
}

int main(int argc, char **argv)
{
        static char buf[65536];
        struct sockaddr_un addr = {.sun_family = AF_UNIX};

        if (argc == 2 && strcmp(argv[1], "--version") == 0) {
                puts("uwsgi_floor (accept, recv, send, close)");
                return 0;
        }
        if (argc != 3 || strcmp(argv[1], "--ini") != 0 ||
            socket_path(argv[2], addr.sun_path, sizeof(addr.sun_path)) < 0) {
                fprintf(stderr, "usage: uwsgi_floor --ini FILE (with a `socket = PATH` line)\n");
                return 2;
        }
        (void) unlink(addr.sun_path);
        int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (l < 0 || bind(l, (struct sockaddr *) &addr, sizeof(addr)) < 0 || listen(l, 1024) < 0 ||
            chmod(addr.sun_path, 0666) < 0) {
                fprintf(stderr, "uwsgi_floor: %s: %s\n", addr.sun_path, strerror(errno));
                return 1;
        }
        for (;;) {
                int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0)
                        continue;
                if (read_packet(fd, buf, sizeof(buf)) == 0)
                        (void) send(fd, response, sizeof(response) - 1, MSG_NOSIGNAL);
                (void) close(fd);
        }
}
