/* SPDX-License-Identifier: MIT */
/*
 * listen: the sockets a daemon serves on.
 *
 * Under systemd they come from sd_listen_fds_with_names() and are matched by
 * their FileDescriptorName= ("http", "handoff", "uwsgi", ...); such a socket
 * is used as it is and never bound, listened on again or unlinked. Without
 * systemd a daemon binds its own from addresses as uWSGI and nginx spell
 * them: ":8080", "127.0.0.1:8080", "[::1]:8080", "localhost:8080",
 * "unix:/path" or a bare "/path" (a unix socket, created with a mode).
 *
 * A struct listener owns its fd and, for a socket it bound itself at a unix
 * path, that path (so vacuum can remove it).
 */
#ifndef WHARF_LISTEN_H
#define WHARF_LISTEN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#define LISTEN_NAME_MAX 64
#define LISTEN_MAX 64
#define LISTEN_BACKLOG 4096

struct listener {
        int fd;
        char name[LISTEN_NAME_MAX]; /* systemd's FileDescriptorName=, or the given name */
        int family;                 /* AF_INET, AF_INET6, AF_UNIX */
        int type;                   /* SOCK_STREAM, SOCK_SEQPACKET */
        bool from_systemd;
        char *unix_path; /* set only when we bound a unix socket ourselves */
};

/*
 * Takes the sockets systemd passed (and unsets LISTEN_* so children do not
 * see them). Each fd is checked to be a listening socket and made
 * non-blocking and close-on-exec. Returns the count (0 when not socket
 * activated), or a negative errno when LISTEN_FDS is set but wrong.
 * *ret is a malloc'd array (NULL when the count is 0).
 */
int listen_from_systemd(struct listener **ret, size_t *ret_n);

/*
 * Parses an address as above into a sockaddr. Returns 0, or -EINVAL.
 * A "unix:" path longer than sun_path is -ENAMETOOLONG. A host name that
 * does not resolve is -EADDRNOTAVAIL (-EAGAIN when the resolver failed
 * temporarily).
 */
int listen_parse_addr(const char *addr, struct sockaddr_storage *ret_sa, socklen_t *ret_len);

/*
 * Binds and listens on addr (type SOCK_STREAM or SOCK_SEQPACKET), with
 * SO_REUSEADDR for TCP; a unix socket gets mode unix_mode (0 keeps the
 * umask's) after a stale socket file at the path is removed (only a
 * socket, never another kind of file). The fd is non-blocking and
 * close-on-exec. Returns 0 and fills *ret, or a negative errno.
 */
int listen_bind(const char *addr, int type, unsigned unix_mode, const char *name,
                struct listener *ret);

/* The first listener with that name, or NULL. */
struct listener *listen_find(struct listener *l, size_t n, const char *name);

/* Closes the fd; with vacuum, also unlinks a unix path we bound. Frees unix_path. */
void listen_done(struct listener *l, bool vacuum);

/* "127.0.0.1:8080", "[::1]:80", "unix:/run/x.sock" of a bound socket, into out. */
int listen_describe(int fd, char *out, size_t size);

#endif
