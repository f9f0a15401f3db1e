/* SPDX-License-Identifier: MIT */
/* proxy_logfmt: compiling a log_format, and nginx's escapes (see proxy_logfmt.h). */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"
#include "proxy_logfmt.h"
#include "util.h"

/* The length of the text at p: up to the next '$' that starts a name (p[0] is part of it). */
static size_t text_run(const char *p)
{
        const char *q = p + 1;

        for (;; q++) {
                size_t l;
                q += strcspn(q, "$");
                if (!*q || proxy_var_parse(q + 1, &l) >= 0 || l > 0)
                        return (size_t) (q - p);
        }
}

/* $http_X_Forwarded_For names the header x-forwarded-for, as in nginx. */
static void header_name(const char *name, size_t len, char *out)
{
        for (size_t i = 0; i < len; i++)
                out[i] = name[i] == '_' ? '-' : (char) tolower((unsigned char) name[i]);
        out[len] = '\0';
}

/*
 * Two passes over spec: the first (text NULL, f->pieces NULL) counts the
 * pieces and the bytes their texts need, the second fills them in. A text
 * piece is a run of plain bytes (a '$' that starts no name is plain).
 */
static int compile_pass(const char *spec, struct log_format *f, char *text, const char **bad,
                        size_t *bad_len, size_t *ret_text)
{
        size_t n = 0, used = 0, slots = 0;

        f->request_id = false;
        for (const char *p = spec; *p; n++) {
                size_t len = 0;
                int var = *p == '$' ? proxy_var_parse(p + 1, &len) : -1;
                struct log_piece piece = {.var = var, .slot = -1};

                if (*p == '$' && var < 0 && len > 0) {
                        *bad = p;
                        *bad_len = len + 1;
                        return -ENOENT;
                }
                if (var < 0) {
                        piece.len = text_run(p);
                        if (text)
                                piece.text = memcpy(text + used, p, piece.len);
                        used += piece.len;
                        p += piece.len;
                } else {
                        if (var == PV_HTTP_HEADER) {
                                bool braced = p[1] == '{';
                                piece.len = len - 5 - 2 * braced;
                                if (text) {
                                        header_name(p + 1 + braced + 5, piece.len, text + used);
                                        piece.text = text + used;
                                }
                                used += piece.len + 1;
                        }
                        if (proxy_var_in_head(var)) {
                                if (slots == LOG_FORMAT_SLOTS) {
                                        *bad = p;
                                        *bad_len = len + 1;
                                        return -E2BIG;
                                }
                                piece.slot = (int) slots++;
                        }
                        f->request_id |= var == PV_REQUEST_ID;
                        p += len + 1;
                }
                if (f->pieces)
                        f->pieces[n] = piece;
        }
        f->n = n;
        f->n_slots = slots;
        *ret_text = used;
        return 0;
}

int log_format_compile(const char *spec, struct log_format *ret, const char **bad, size_t *bad_len)
{
        struct log_format f = {0};
        size_t text_len;
        int r;

        r = compile_pass(spec, &f, NULL, bad, bad_len, &text_len);
        if (r < 0)
                return r;
        f.pieces = calloc(f.n ? f.n : 1, sizeof(*f.pieces));
        f.text = malloc(text_len ? text_len : 1);
        if (!f.pieces || !f.text) {
                log_format_free(&f);
                return -ENOMEM;
        }
        (void) compile_pass(spec, &f, f.text, bad, bad_len, &text_len);
        *ret = f;
        return 0;
}

void log_format_free(struct log_format *f)
{
        if (!f)
                return;
        free(f->pieces);
        free(f->text);
        *f = (struct log_format){0};
}

int log_escape_parse(const char *s, enum log_escape *ret)
{
        if (streq(s, "default"))
                *ret = LOG_ESCAPE_DEFAULT;
        else if (streq(s, "json"))
                *ret = LOG_ESCAPE_JSON;
        else if (streq(s, "none"))
                *ret = LOG_ESCAPE_NONE;
        else
                return -EINVAL;
        return 0;
}

/* The escape for byte c, into e; its length, or 0 when c goes as it is. */
static size_t escape_one(enum log_escape esc, unsigned char c, char e[static 6])
{
        static const char upper[] = "0123456789ABCDEF", lower[] = "0123456789abcdef";

        if (esc == LOG_ESCAPE_DEFAULT) {
                if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
                        return 0;
                e[0] = '\\';
                e[1] = 'x';
                e[2] = upper[c >> 4];
                e[3] = upper[c & 0xf];
                return 4;
        }
        if (c == '"' || c == '\\') {
                e[0] = '\\';
                e[1] = (char) c;
                return 2;
        }
        if (c >= 0x20)
                return 0;
        const char *short_form = c == '\n'   ? "n"
                                 : c == '\r' ? "r"
                                 : c == '\t' ? "t"
                                 : c == '\b' ? "b"
                                 : c == '\f' ? "f"
                                             : NULL;
        e[0] = '\\';
        if (short_form) {
                e[1] = short_form[0];
                return 2;
        }
        memcpy(e + 1, "u00", 3);
        e[4] = lower[c >> 4];
        e[5] = lower[c & 0xf];
        return 6;
}

void log_escape_append(enum log_escape esc, const char *v, size_t n, char *out, size_t *len,
                       size_t cap)
{
        size_t o = *len;

        if (esc == LOG_ESCAPE_NONE) {
                size_t k = min_size(n, cap - o);
                if (k > 0)
                        memcpy(out + o, v, k);
                *len = o + k;
                return;
        }
        for (size_t i = 0; i < n; i++) {
                char e[6];
                size_t k = escape_one(esc, (unsigned char) v[i], e);
                if (k == 0) {
                        if (o == cap)
                                break;
                        out[o++] = v[i];
                        continue;
                }
                if (k > cap - o)
                        break;
                memcpy(out + o, e, k);
                o += k;
        }
        *len = o;
}
