/* SPDX-License-Identifier: MIT */
/*
 * uwsgi: the binary protocol nginx's uwsgi_pass speaks to an application
 * server (https://uwsgi-docs.readthedocs.io/en/latest/Protocol.html).
 *
 * A request is a 4-byte header { modifier1, datasize (u16 little-endian),
 * modifier2 } followed by datasize bytes of variables, each
 * { key_size u16le, key, val_size u16le, val }, then the request body
 * (CONTENT_LENGTH bytes), raw. The answer is plain HTTP/1.x, as a server
 * would write it to a client.
 *
 * The parser never allocates: variables are spans into the caller's buffer,
 * valid while those bytes are. Limits are enforced here: at most
 * UWSGI_MAX_VARS variables, the whole block at most 65535 bytes (the u16),
 * keys non-empty, every length inside the block.
 */
#ifndef WHARF_UWSGI_H
#define WHARF_UWSGI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

#define UWSGI_HEADER_SIZE 4
#define UWSGI_MAX_VARS 256
#define UWSGI_MAX_BLOCK 65535
/* A receive buffer of this size always holds a complete header and block. */
#define UWSGI_MAX_HEAD (UWSGI_HEADER_SIZE + UWSGI_MAX_BLOCK)

/* modifier1 values wharf knows. */
enum {
        UWSGI_MOD_WSGI = 0,   /* a WSGI request, the only kind served */
        UWSGI_MOD_PING = 100, /* ping: answered with an empty packet of modifier 100 */
};

struct uwsgi_var {
        struct span key;
        struct span value;
};

struct uwsgi_request {
        uint8_t modifier1; /* as sent: the parser does not judge modifiers */
        uint8_t modifier2;
        size_t head_len; /* UWSGI_HEADER_SIZE + datasize: the body starts here */
        struct uwsgi_var vars[UWSGI_MAX_VARS]; /* in packet order, duplicates kept */
        size_t n_vars;
};

/*
 * Parses one packet header and variable block from buf[0..len); bytes
 * after the block (the body) are not looked at. Returns head_len (> 0) on
 * success, -EAGAIN when more bytes are needed (the whole block is awaited
 * before any of it is judged, so every prefix of a valid packet is
 * -EAGAIN), -EBADMSG when the block is malformed (a length past the block,
 * an empty key, bytes left over that do not make a variable), -E2BIG for a
 * well-formed block of more than UWSGI_MAX_VARS variables. datasize 0 is a
 * valid empty block. An empty value has a non-NULL ptr. ret is written
 * only on success.
 */
ssize_t uwsgi_parse_request(const char *buf, size_t len, struct uwsgi_request *ret);

/*
 * The value of the first variable named exactly key (case-sensitive), or a
 * span with ptr NULL when absent.
 */
struct span uwsgi_get(const struct uwsgi_request *req, const char *key);

/*
 * Encoding, for senders (wharf-proxy, tests): a writer over a caller buffer
 * that latches overflow like struct http_writer. A variable that does not
 * fit is not written at all, and nothing after it is.
 */
struct uwsgi_writer {
        char *buf;
        size_t len; /* includes the 4-byte header */
        size_t cap;
        int error; /* 0, or -E2BIG once the block passed 65535 or the buffer */
};

/* Writes the header with datasize 0; a cap below UWSGI_HEADER_SIZE latches -E2BIG. */
void uwsgi_writer_init(struct uwsgi_writer *w, char *buf, size_t cap, uint8_t modifier1,
                       uint8_t modifier2);
/*
 * Appends one variable. key must not be empty (the parser refuses empty
 * keys); value may be {NULL, 0}. A key or value over 65535 bytes, a block
 * over UWSGI_MAX_BLOCK or a full buffer latch -E2BIG.
 */
void uwsgi_add(struct uwsgi_writer *w, struct span key, struct span value);
/* uwsgi_add() for C strings; a NULL value is empty. */
void uwsgi_add_str(struct uwsgi_writer *w, const char *key, const char *value);
/* Fills in datasize. Returns the packet length or -E2BIG. */
ssize_t uwsgi_finish(struct uwsgi_writer *w);

#endif
