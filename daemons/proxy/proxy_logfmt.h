/* SPDX-License-Identifier: MIT */
/*
 * proxy_logfmt: nginx's log_format, for wharf-proxy's access log.
 *
 * A format is text with $variables in nginx's names ($remote_addr,
 * $time_local, $request, $status, $http_user_agent, ...), compiled once into
 * pieces. The variables read from the request head (proxy_var_in_head())
 * are copied when the head is parsed, because the input buffer is reused by
 * the time the response ends; the others are read when the line is written.
 * As in nginx, a value that does not exist ($http_referer without a Referer)
 * is "-" (nothing with escape json or none); an empty one is nothing.
 */
#ifndef WHARF_PROXY_LOGFMT_H
#define WHARF_PROXY_LOGFMT_H

#include <stdbool.h>
#include <stddef.h>

#define LOG_FORMAT_SLOTS 32   /* head variables in one format */
#define LOG_FORMAT_VALUE 4096 /* bytes kept of one head variable */
#define LOG_FORMAT_LINE 16384 /* longest line written; longer ones are cut */

/* nginx's escape= of log_format. */
enum log_escape {
        LOG_ESCAPE_DEFAULT, /* '"', '\' and bytes outside 0x20..0x7e as \xXX */
        LOG_ESCAPE_JSON,    /* for JSON strings: \" \\ \n \r \t \b \f, \u00XX */
        LOG_ESCAPE_NONE,
};

struct log_piece {
        int var;          /* enum proxy_var, or -1: text */
        const char *text; /* the text; for $http_NAME the header's name (NUL-terminated) */
        size_t len;
        int slot; /* a head variable's place among the values kept; else -1 */
};

struct log_format {
        struct log_piece *pieces;
        size_t n;
        size_t n_slots;
        bool request_id; /* $request_id is used: make one per request */
        enum log_escape escape;
        char *text; /* owns the pieces' texts */
};

/*
 * Compiles spec into *ret. Returns 0, -ENOMEM, -ENOENT for a variable wharf
 * does not know (*bad points at its '$', *bad_len covers it), or -E2BIG for
 * more than LOG_FORMAT_SLOTS head variables.
 */
int log_format_compile(const char *spec, struct log_format *ret, const char **bad, size_t *bad_len);
void log_format_free(struct log_format *f);

/* "default", "json" or "none". 0 or -EINVAL. */
int log_escape_parse(const char *s, enum log_escape *ret);

/*
 * Appends v[0..n) escaped as esc to out, which holds *len of cap bytes. What
 * does not fit is left out, never a part of one escape.
 */
void log_escape_append(enum log_escape esc, const char *v, size_t n, char *out, size_t *len,
                       size_t cap);

#endif
