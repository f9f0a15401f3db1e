/* SPDX-License-Identifier: MIT */
/*
 * config.c: INI files through the distribution's libinih, uWSGI-style
 * interpolation, and the value parsers.
 *
 * inih is built by Debian with its defaults: lines of at most INI_MAX_LINE
 * (200) bytes including the NUL, section names and the key a continuation
 * line repeats cut to 49 bytes, no line number for the handler, and a
 * return value that names only the first bad line. Everything inih would do
 * silently is made visible here: ini_parse_stream() reads through
 * config_reader(), which sees each physical line before inih does. The
 * reader counts lines, rejects lines that do not fit (rather than letting
 * inih cut them and parse the rest as a new line) and lines with NUL bytes,
 * and classifies each line with inih's own rules so that a line inih
 * rejects without calling the handler (no '=', no ']') is reported with its
 * number, and a section whose name inih would cut is dropped with an error.
 *
 * Messages read "file:line: key 'name': text", with "warning: " after the
 * location for warnings; the location is "file:" for the whole file and the
 * option name (e.g. "--root:") for command-line values.
 *
 * Interpolation happens when an entry is stored, so %(name) sees the values
 * of earlier keys already expanded and no recursion is needed. An unknown
 * magic variable such as %k (uWSGI has many wharf does not) is kept as is,
 * as uWSGI does, with a warning naming it; write %% for a literal percent.
 */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>

#include "config.h"
#include "util.h"

/*
 * ini.c keeps the section name and the key a continuation line repeats in
 * 50-byte buffers (MAX_SECTION, MAX_NAME) including the NUL.
 */
#define INI_NAME_MAX 49

/* How much of a value or key a message shows. */
#define QUOTE_MAX 96

static const char utf8_bom[] = "\xef\xbb\xbf";

/*
 * Arrays in config.h carry no capacity field: their capacity is implied by
 * their length, as the next power of two. Returns the capacity to grow to
 * before element n is stored, or 0 when there is room already.
 */
static size_t grow_to(size_t n)
{
        if (n & (n - 1))
                return 0;
        return n ? 2 * n : 1;
}

/*
 * Copies s (len bytes) into buf for a message: control bytes, the quote and
 * the backslash become \xHH, and a long string is cut with "...". Returns buf.
 */
static const char *quote_n(const char *s, size_t len, char buf[static QUOTE_MAX])
{
        static const char hex[] = "0123456789abcdef";
        size_t n = 0;

        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) s[i];
                bool escape = c < 0x20 || c == 0x7f || c == '\'' || c == '\\';

                /* Room for this byte, a "..." that may follow, and the NUL. */
                if (n + (escape ? 4 : 1) + 3 >= QUOTE_MAX) {
                        memcpy(buf + n, "...", 4);
                        return buf;
                }
                if (escape) {
                        buf[n++] = '\\';
                        buf[n++] = 'x';
                        buf[n++] = hex[c >> 4];
                        buf[n++] = hex[c & 0xf];
                } else {
                        buf[n++] = (char) c;
                }
        }
        buf[n] = '\0';
        return buf;
}

static const char *quote(const char *s, char buf[static QUOTE_MAX])
{
        return quote_n(s, strlen(s), buf);
}

void config_diag_done(struct config_diag *d)
{
        if (!d)
                return;
        for (size_t i = 0; i < d->n_messages; i++)
                free(d->messages[i]);
        free(d->messages);
        *d = (struct config_diag){0};
}

static void diag_vadd(struct config_diag *d, bool is_error, const char *file, unsigned line,
                      const char *key, const char *fmt, va_list ap)
{
        char where[16] = "", q[QUOTE_MAX];
        char *text, *msg, **m;
        size_t cap;
        int r;

        /* Counted first: running out of memory loses the words, never the verdict. */
        if (is_error)
                d->errors++;
        else
                d->warnings++;

        r = vasprintf(&text, fmt, ap);
        if (r < 0)
                return;

        if (line > 0)
                (void) snprintf(where, sizeof(where), ":%u", line);
        r = asprintf(&msg, "%s%s: %s%s%s%s%s", file ? file : "config", where,
                     is_error ? "" : "warning: ", key ? "key '" : "", key ? quote(key, q) : "",
                     key ? "': " : "", text);
        free(text);
        if (r < 0)
                return;

        cap = grow_to(d->n_messages);
        if (cap > 0) {
                m = reallocarray(d->messages, cap, sizeof(*m));
                if (!m) {
                        free(msg);
                        return;
                }
                d->messages = m;
        }
        d->messages[d->n_messages++] = msg;
}

void config_diag_add(struct config_diag *d, bool is_error, const char *file, unsigned line,
                     const char *key, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        diag_vadd(d, is_error, file, line, key, fmt, ap);
        va_end(ap);
}

/* Where the lines come from: an open file or a string of known length. */
struct line_source {
        FILE *file;
        const char *ptr;
        size_t left;
};

static int source_getc(struct line_source *s)
{
        if (s->file)
                return getc_unlocked(s->file);
        if (s->left == 0)
                return EOF;
        s->left--;
        return (unsigned char) *s->ptr++;
}

/* What inih will make of a line (see classify_line()). */
enum line_kind {
        LINE_BLANK, /* empty, a comment, or replaced by "\n" because it was rejected */
        LINE_SECTION,
        LINE_BAD_SECTION, /* "[" without "]" */
        LINE_KEY,
        LINE_BAD_KEY, /* no "=" or ":" */
        LINE_CONTINUATION,
        _LINE_KIND_MAX
};

/* The file's own magic variables for %d, %p, %s and %n. */
struct magic {
        char *path;       /* %p: absolute path of the file */
        struct span dir;  /* %d: its directory, with the trailing slash */
        struct span name; /* %s: its name */
        struct span stem; /* %n: its name without the extension */
};

struct load_ctx {
        struct config_file *file;
        struct config_diag *diag;
        struct line_source src;
        struct magic magic;
        unsigned line;        /* number of the line inih is working on */
        enum line_kind kind;  /* of that line */
        bool pending_newline; /* the last line filled inih's buffer: its "\n" comes next */
        bool has_key;         /* inih has a previous key: indented lines continue it */
        bool drop_section;    /* the current section header was rejected */
        bool drop_key;        /* the key being continued was rejected */
        bool too_many;        /* CONFIG_MAX_ENTRIES was reported */
        unsigned section_no;  /* section headers seen so far */
        int r;                /* a fatal error (-ENOMEM, read error): stop */
};

static void load_error(struct load_ctx *ctx, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void load_error(struct load_ctx *ctx, const char *key, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        diag_vadd(ctx->diag, true, ctx->file->path, ctx->line, key, fmt, ap);
        va_end(ap);
}

/*
 * inih's search for one of chars or an inline comment (a ';' right after
 * whitespace), in [s, end). Returns where it stopped.
 */
static const char *find_chars_or_comment(const char *s, const char *end, const char *chars)
{
        bool was_space = false;

        for (; s < end; s++) {
                if (strchr(chars, *s) || (was_space && *s == ';'))
                        break;
                was_space = isspace((unsigned char) *s);
        }
        return s;
}

/*
 * Classifies line (len bytes, no NUL, no newline) exactly as ini.c's
 * ini_parse_stream() does, in the same order: blank or comment, then a
 * continuation (leading whitespace while a previous key is set), then a
 * section header, then "name = value" or "name: value". Sets *ret_section
 * to the name between the brackets for LINE_SECTION.
 */
static enum line_kind classify_line(const char *line, size_t len, bool has_key,
                                    struct span *ret_section)
{
        const char *start = line, *end = line + len, *p;

        while (end > start && isspace((unsigned char) end[-1]))
                end--;
        while (start < end && isspace((unsigned char) *start))
                start++;

        if (start == end || *start == ';' || *start == '#')
                return LINE_BLANK;
        if (has_key && start > line)
                return LINE_CONTINUATION;
        if (*start == '[') {
                p = find_chars_or_comment(start + 1, end, "]");
                if (p == end || *p != ']')
                        return LINE_BAD_SECTION;
                *ret_section = (struct span){start + 1, (size_t) (p - start - 1)};
                return LINE_SECTION;
        }
        p = find_chars_or_comment(start, end, "=:");
        if (p == end || (*p != '=' && *p != ':'))
                return LINE_BAD_KEY;
        return LINE_KEY;
}

/* Reports what inih would skip or cut in the line just read, and tracks its sections. */
static void note_line(struct load_ctx *ctx, const char *line, size_t len)
{
        const size_t bom_len = sizeof(utf8_bom) - 1;
        struct span section = {NULL, 0};
        char q[QUOTE_MAX];

        /* As inih does: a UTF-8 BOM that starts the first line is not part of it. */
        if (ctx->line == 1 && len >= bom_len && memcmp(line, utf8_bom, bom_len) == 0) {
                line += bom_len;
                len -= bom_len;
        }

        ctx->kind = classify_line(line, len, ctx->has_key, &section);
        switch (ctx->kind) {
        case LINE_SECTION:
                ctx->has_key = false;
                ctx->section_no++;
                ctx->drop_section = section.len > INI_NAME_MAX;
                if (ctx->drop_section)
                        load_error(ctx, NULL,
                                   "section name longer than %d bytes, its keys are ignored",
                                   INI_NAME_MAX);
                break;
        case LINE_BAD_SECTION:
                /* inih would file the keys that follow under the previous section. */
                ctx->drop_section = true;
                load_error(ctx, NULL, "missing ']' in section header, its keys are ignored: '%s'",
                           quote_n(line, len, q));
                break;
        case LINE_BAD_KEY:
                load_error(ctx, NULL, "expected 'key = value': '%s'", quote_n(line, len, q));
                break;
        case LINE_BLANK:
        case LINE_KEY:
        case LINE_CONTINUATION:
        case _LINE_KIND_MAX:
        default:
                break;
        }
}

/*
 * The ini_reader: like fgets(), one physical line per call. str has room
 * for num bytes with the NUL; a line must fit without its "\n" (or "\r\n"),
 * so the limit is num - 1 bytes. A line that fills the buffer gets its "\n"
 * from the next call, because newer inih releases read on to the end of a
 * line that does not end in "\n" within the buffer. Rejected lines reach
 * inih as "\n", so they change nothing in its state.
 */
static char *config_reader(char *str, int num, void *stream)
{
        struct load_ctx *ctx = stream;
        size_t max, len = 0;
        bool nul = false, cr = false, eol = false;
        int c;

        if (ctx->r < 0 || num < 2)
                return NULL;
        if (ctx->pending_newline) {
                ctx->pending_newline = false;
                ctx->kind = LINE_BLANK;
                memcpy(str, "\n", 2);
                return str;
        }

        max = (size_t) num - 1;
        for (;;) {
                c = source_getc(&ctx->src);
                if (c == EOF)
                        break;
                if (c == '\n') {
                        eol = true;
                        break;
                }
                if (len < max)
                        str[len] = (char) c;
                len++;
                nul = nul || c == '\0';
                cr = c == '\r';
        }
        if (ctx->src.file && ferror(ctx->src.file)) {
                ctx->r = errno > 0 ? -errno : -EIO;
                config_diag_add(ctx->diag, true, ctx->file->path, 0, NULL, "read error: %s",
                                strerror(-ctx->r));
                return NULL;
        }
        if (len == 0 && !eol)
                return NULL;

        ctx->line++;
        if (cr)
                len--;

        if (len > max || nul) {
                if (nul)
                        load_error(ctx, NULL, "NUL byte in line");
                else
                        load_error(ctx, NULL, "line longer than %zu bytes", max);
                ctx->kind = LINE_BLANK;
                memcpy(str, "\n", 2);
                return str;
        }

        str[len] = '\0';
        note_line(ctx, str, len);
        if (len < max)
                str[len++] = '\n';
        else
                ctx->pending_newline = true;
        str[len] = '\0';
        return str;
}

/* Do two key names match, with '-' and '_' taken as the same (uWSGI accepts both)? */
static bool key_eq_n(const char *a, const char *b, size_t b_len)
{
        size_t i;

        for (i = 0; i < b_len; i++) {
                if (a[i] == b[i] && a[i] != '\0')
                        continue;
                if ((a[i] == '-' || a[i] == '_') && (b[i] == '-' || b[i] == '_'))
                        continue;
                return false;
        }
        return a[i] == '\0';
}

static bool key_eq(const char *a, const char *b)
{
        return key_eq_n(a, b, strlen(b));
}

/* The latest value of name stored so far in section, or NULL. */
static const char *lookup_earlier(const struct config_file *f, const char *section,
                                  struct span name)
{
        for (size_t i = f->n_entries; i > 0; i--) {
                const struct config_entry *e = &f->entries[i - 1];

                if (streq(e->section, section) && key_eq_n(e->key, name.ptr, name.len))
                        return e->value;
        }
        return NULL;
}

static const char *lookup_env(struct span name)
{
        char buf[256];

        if (name.len >= sizeof(buf))
                return NULL;
        memcpy(buf, name.ptr, name.len);
        buf[name.len] = '\0';
        return getenv(buf);
}

/* A bounded string builder for one interpolated value. */
struct value_buf {
        char *buf; /* CONFIG_MAX_VALUE + 1 bytes */
        size_t len;
        bool overflow;
};

static void value_add(struct value_buf *v, const char *s, size_t n)
{
        if (v->overflow || n > CONFIG_MAX_VALUE - v->len) {
                v->overflow = true;
                return;
        }
        memcpy(v->buf + v->len, s, n);
        v->len += n;
}

static void value_add_span(struct value_buf *v, struct span s)
{
        value_add(v, s.ptr, s.len);
}

/*
 * Expands %(name), $(NAME) and the magic variables of value into out
 * (CONFIG_MAX_VALUE + 1 bytes). Returns 0, or -EINVAL after reporting.
 */
static int expand(struct load_ctx *ctx, const char *section, const char *key, const char *value,
                  char *out)
{
        struct value_buf v = {.buf = out};
        const char *p = value, *special, *close, *found;
        char q[QUOTE_MAX], magic[3];
        struct span name;

        while (*p) {
                special = strpbrk(p, "%$");
                if (!special) {
                        value_add(&v, p, strlen(p));
                        break;
                }
                value_add(&v, p, (size_t) (special - p));
                p = special;

                if (p[1] == '(') {
                        close = strchr(p + 2, ')');
                        if (!close) {
                                load_error(ctx, key, "unterminated %c( in '%s'", *p,
                                           quote(value, q));
                                return -EINVAL;
                        }
                        name = (struct span){p + 2, (size_t) (close - p - 2)};
                        if (name.len == 0) {
                                load_error(ctx, key, "empty name in %c() in '%s'", *p,
                                           quote(value, q));
                                return -EINVAL;
                        }
                        found = *p == '%' ? lookup_earlier(ctx->file, section, name) : NULL;
                        if (!found)
                                found = lookup_env(name);
                        if (!found) {
                                if (*p == '%')
                                        load_error(ctx, key,
                                                   "%%(%s) is neither an earlier key of this "
                                                   "section nor an environment variable",
                                                   quote_n(name.ptr, name.len, q));
                                else
                                        load_error(ctx, key,
                                                   "environment variable $(%s) is not set",
                                                   quote_n(name.ptr, name.len, q));
                                return -EINVAL;
                        }
                        value_add(&v, found, strlen(found));
                        p = close + 1;
                        continue;
                }

                /* A '$' alone, or a '%' at the end, is just that character. */
                if (*p == '$' || p[1] == '\0') {
                        value_add(&v, p, 1);
                        p++;
                        continue;
                }

                switch (p[1]) {
                case '%':
                        value_add(&v, "%", 1);
                        break;
                case 'd':
                        value_add_span(&v, ctx->magic.dir);
                        break;
                case 'p':
                        value_add(&v, ctx->magic.path, strlen(ctx->magic.path));
                        break;
                case 's':
                        value_add_span(&v, ctx->magic.name);
                        break;
                case 'n':
                        value_add_span(&v, ctx->magic.stem);
                        break;
                default:
                        magic[0] = '%';
                        magic[1] = p[1];
                        magic[2] = '\0';
                        config_diag_add(
                            ctx->diag, false, ctx->file->path, ctx->line, key,
                            "unknown magic variable '%s' kept as is (write %%%% for a literal %%)",
                            quote(magic, q));
                        value_add(&v, p, 2);
                        break;
                }
                p += 2;
        }

        if (v.overflow) {
                load_error(ctx, key, "value longer than %d bytes after interpolation",
                           CONFIG_MAX_VALUE);
                return -EINVAL;
        }
        out[v.len] = '\0';
        return 0;
}

static int entry_add(struct load_ctx *ctx, const char *section, const char *key, const char *value)
{
        struct config_file *f = ctx->file;
        struct config_entry e = {.line = ctx->line, .section_no = ctx->section_no}, *entries;
        char buf[CONFIG_MAX_VALUE + 1];
        size_t cap;

        if (f->n_entries >= CONFIG_MAX_ENTRIES) {
                if (!ctx->too_many)
                        load_error(ctx, NULL, "more than %d keys, the rest is ignored",
                                   CONFIG_MAX_ENTRIES);
                ctx->too_many = true;
                return 0;
        }
        if (expand(ctx, section, key, value, buf) < 0)
                return 0;

        cap = grow_to(f->n_entries);
        if (cap > 0) {
                entries = reallocarray(f->entries, cap, sizeof(*entries));
                if (!entries)
                        return -ENOMEM;
                f->entries = entries;
        }
        e.section = strdup(section);
        e.key = strdup(key);
        e.value = strdup(buf);
        if (!e.section || !e.key || !e.value) {
                free(e.section);
                free(e.key);
                free(e.value);
                return -ENOMEM;
        }
        f->entries[f->n_entries++] = e;
        return 0;
}

/* The ini_handler: called for each "key = value" line and each continuation line. */
static int config_handler(void *user, const char *section, const char *name, const char *value)
{
        struct load_ctx *ctx = user;
        char buf[CONFIG_MAX_VALUE + 1];
        int r;

        /* inih remembers name (cut to 49 bytes) for continuation lines unless it is empty. */
        ctx->has_key = name[0] != '\0';
        if (ctx->r < 0)
                return 0;

        if (ctx->kind != LINE_CONTINUATION) {
                ctx->drop_key = true;
                if (name[0] == '\0')
                        load_error(ctx, NULL, "missing key name before '='");
                else if (strlen(name) > INI_NAME_MAX)
                        load_error(ctx, NULL, "key name longer than %d bytes", INI_NAME_MAX);
                else
                        ctx->drop_key = false;
        }
        if (ctx->drop_section || ctx->drop_key)
                return 1;

        if (ctx->kind == LINE_CONTINUATION && value[0] != '\0') {
                /*
                 * inih 55 passes a continuation line with its inline comment,
                 * later releases cut it as on a key line: cut it here, the
                 * same way, so that the result does not depend on the release.
                 */
                const char *end = value + strlen(value);
                const char *cut = find_chars_or_comment(value, end, "");

                while (cut > value && isspace((unsigned char) cut[-1]))
                        cut--;
                if (cut < end) {
                        size_t n = min_size((size_t) (cut - value), CONFIG_MAX_VALUE);

                        memcpy(buf, value, n);
                        buf[n] = '\0';
                        value = buf;
                }
        }

        r = entry_add(ctx, section, name, value);
        if (r < 0) {
                ctx->r = r;
                return 0;
        }
        return 1;
}

/* Fills m from the name the file was loaded as. Returns 0 or -ENOMEM. */
static int magic_init(struct magic *m, const char *name)
{
        const char *slash, *dot;
        char *abs, *cwd;
        int r;

        /* uWSGI resolves the path; a name that is not a file is made absolute as written. */
        abs = realpath(name, NULL);
        if (!abs && errno == ENOMEM)
                return -ENOMEM;
        if (!abs && name[0] != '/') {
                cwd = getcwd(NULL, 0);
                if (!cwd && errno == ENOMEM)
                        return -ENOMEM;
                if (cwd) {
                        r = asprintf(&abs, "%s%s%s", cwd, streq(cwd, "/") ? "" : "/", name);
                        free(cwd);
                        if (r < 0)
                                return -ENOMEM;
                }
        }
        if (!abs) {
                abs = strdup(name);
                if (!abs)
                        return -ENOMEM;
        }

        m->path = abs;
        slash = strrchr(abs, '/');
        m->dir = (struct span){abs, slash ? (size_t) (slash - abs) + 1 : 0};
        m->name = span_from_str(slash ? slash + 1 : abs);
        dot = strrchr(m->name.ptr, '.');
        m->stem = (struct span){m->name.ptr, dot ? (size_t) (dot - m->name.ptr) : m->name.len};
        return 0;
}

static int load(const char *name, struct line_source src, struct config_file **ret,
                struct config_diag *diag)
{
        struct load_ctx ctx = {.diag = diag, .src = src};
        struct config_file *f;
        int r;

        f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        f->path = strdup(name);
        if (!f->path) {
                r = -ENOMEM;
                goto fail;
        }
        ctx.file = f;
        r = magic_init(&ctx.magic, name);
        if (r < 0)
                goto fail;

        r = ini_parse_stream(config_reader, &ctx, config_handler, &ctx);
        if (ctx.r < 0) {
                r = ctx.r;
                goto fail;
        }
        /*
         * A positive result names the first line inih rejected; the reader
         * has reported every such line with its own number already (inih's
         * count also includes the "\n" sent after a line that filled its
         * buffer). -2 is inih failing to allocate its line buffer.
         */
        if (r == -2) {
                r = -ENOMEM;
                goto fail;
        }
        if (r < 0) {
                r = -EIO;
                goto fail;
        }

        free(ctx.magic.path);
        *ret = f;
        return 0;

fail:
        free(ctx.magic.path);
        config_file_free(f);
        return r;
}

int config_load(const char *path, struct config_file **ret, struct config_diag *diag)
{
        FILE *file;
        int r;

        assert(path && ret && diag);

        file = fopen(path, "re");
        if (!file) {
                r = -errno;
                config_diag_add(diag, true, path, 0, NULL, "cannot open: %s", strerror(-r));
                return r;
        }
        r = load(path, (struct line_source){.file = file}, ret, diag);
        (void) fclose(file);
        return r;
}

int config_load_string(const char *name, const char *text, size_t len, struct config_file **ret,
                       struct config_diag *diag)
{
        assert(name && (text || len == 0) && ret && diag);

        return load(name, (struct line_source){.ptr = text, .left = len}, ret, diag);
}

struct config_file *config_file_free(struct config_file *f)
{
        if (!f)
                return NULL;
        for (size_t i = 0; i < f->n_entries; i++) {
                free(f->entries[i].section);
                free(f->entries[i].key);
                free(f->entries[i].value);
        }
        free(f->entries);
        free(f->path);
        free(f);
        return NULL;
}

/*
 * Only sections that have at least one key are seen: inih reports keys,
 * not headers, and an empty section configures nothing.
 */
bool config_has_section(const struct config_file *f, const char *section)
{
        for (size_t i = 0; i < f->n_entries; i++)
                if (streq(f->entries[i].section, section))
                        return true;
        return false;
}

const struct config_key *config_key_find(const struct config_key *keys, const char *name)
{
        for (const struct config_key *k = keys; k->name; k++)
                if (key_eq(k->name, name))
                        return k;
        return NULL;
}

void config_strv_done(struct config_strv *v)
{
        if (!v)
                return;
        free(v->v);
        v->v = NULL;
        v->n = 0;
}

/* Appends s; v->v stays NULL-terminated, for callers that want a plain string array. */
static int strv_append(struct config_strv *v, const char *s)
{
        const char **n;

        n = reallocarray(v->v, v->n + 2, sizeof(*n));
        if (!n)
                return -ENOMEM;
        n[v->n++] = s;
        n[v->n] = NULL;
        v->v = n;
        return 0;
}

/*
 * Reads decimal digits at *s. Returns 0, -EINVAL if there are none, or
 * -ERANGE when they exceed UINT64_MAX; *s is moved past all digits either
 * way, so that callers report bad syntax before a bad range.
 */
static int parse_digits(const char **s, uint64_t *ret)
{
        const char *p = *s;
        uint64_t v = 0;
        bool overflow = false;

        if (*p < '0' || *p > '9')
                return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
                unsigned d = (unsigned) (*p - '0');

                if (v > (UINT64_MAX - d) / 10)
                        overflow = true;
                else
                        v = v * 10 + d;
        }
        *s = p;
        if (overflow)
                return -ERANGE;
        *ret = v;
        return 0;
}

int config_parse_bool(const char *s, bool *ret)
{
        static const struct {
                const char *word;
                bool value;
        } words[] = {
            {"true", true},   {"yes", true}, {"on", true},   {"1", true},
            {"false", false}, {"no", false}, {"off", false}, {"0", false},
        };

        for (size_t i = 0; i < ARRAY_SIZE(words); i++)
                if (strcasecmp(s, words[i].word) == 0) {
                        *ret = words[i].value;
                        return 0;
                }
        return -EINVAL;
}

int config_parse_uint(const char *s, unsigned *ret)
{
        uint64_t v = 0;
        int r;

        r = parse_digits(&s, &v);
        if (r == -EINVAL || *s != '\0')
                return -EINVAL;
        if (r == -ERANGE || v > UINT_MAX)
                return -ERANGE;
        *ret = (unsigned) v;
        return 0;
}

int config_parse_size(const char *s, uint64_t *ret)
{
        uint64_t v = 0;
        unsigned shift = 0;
        int r;

        r = parse_digits(&s, &v);
        if (r == -EINVAL)
                return r;
        switch (*s) {
        case 'k':
        case 'K':
                shift = 10;
                break;
        case 'm':
        case 'M':
                shift = 20;
                break;
        case 'g':
        case 'G':
                shift = 30;
                break;
        case 't':
        case 'T':
                shift = 40;
                break;
        default:
                break;
        }
        if (shift > 0)
                s++;
        if (*s == 'b' || *s == 'B')
                s++;
        if (*s != '\0')
                return -EINVAL;
        if (r == -ERANGE || v > UINT64_MAX >> shift)
                return -ERANGE;
        *ret = v << shift;
        return 0;
}

/*
 * "500ms", "65s", "2m", "1h30m", "1d": one or more numbers, each with a
 * unit, in any order and without spaces; a number alone means seconds.
 */
int config_parse_duration_ms(const char *s, uint64_t *ret)
{
        static const struct {
                const char *unit;
                uint64_t ms;
        } units[] = {
            /* "ms" before "m". */
            {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000}, {"d", 86400 * 1000},
        };
        uint64_t total = 0, v = 0;
        bool range = false;
        size_t i;
        int r;

        r = parse_digits(&s, &v);
        if (r == -EINVAL)
                return r;
        if (*s == '\0') {
                if (r == -ERANGE || v > UINT64_MAX / 1000)
                        return -ERANGE;
                *ret = v * 1000;
                return 0;
        }

        for (;;) {
                for (i = 0; i < ARRAY_SIZE(units); i++)
                        if (strncmp(s, units[i].unit, strlen(units[i].unit)) == 0)
                                break;
                if (i == ARRAY_SIZE(units))
                        return -EINVAL;
                s += strlen(units[i].unit);

                if (r == -ERANGE || v > (UINT64_MAX - total) / units[i].ms)
                        range = true;
                else if (!range)
                        total += v * units[i].ms;

                if (*s == '\0')
                        break;
                r = parse_digits(&s, &v);
                if (r == -EINVAL)
                        return r;
        }
        if (range)
                return -ERANGE;
        *ret = total;
        return 0;
}

int config_parse_mode(const char *s, unsigned *ret)
{
        unsigned v = 0;
        bool range = false;

        if (*s == '\0')
                return -EINVAL;
        for (; *s; s++) {
                if (*s < '0' || *s > '7')
                        return -EINVAL;
                if (!range)
                        v = v * 8 + (unsigned) (*s - '0');
                range = range || v > 07777;
        }
        if (range)
                return -ERANGE;
        *ret = v;
        return 0;
}

/* What is wrong with a value of each type that can be wrong, for messages. */
static const char *const type_syntax[_CONFIG_TYPE_MAX] = {
    [CONFIG_BOOL] = "not a boolean (true/false, yes/no, on/off, 1/0)",
    [CONFIG_UINT] = "not a number",
    [CONFIG_SIZE] = "not a size (a number with an optional k, M, G or T suffix)",
    [CONFIG_DURATION] =
        "not a duration (e.g. 500ms, 65s, 2m, 1h30m, 1d; a number alone is seconds)",
    [CONFIG_MODE] = "not an octal file mode (e.g. 0660)",
};

static const char *const type_range[_CONFIG_TYPE_MAX] = {
    [CONFIG_UINT] = "number too large (at most 4294967295)",
    [CONFIG_SIZE] = "size too large",
    [CONFIG_DURATION] = "duration too long",
    [CONFIG_MODE] = "file mode out of range (at most 07777)",
};

/*
 * Parses value by key's type and stores it into settings. Returns 0,
 * -EINVAL or -ERANGE with *ret_problem saying what is wrong, or -ENOMEM.
 * Nothing is stored on failure.
 */
static int store(const struct config_key *key, const char *value, void *settings,
                 const char **ret_problem)
{
        void *field = (char *) settings + key->offset;
        uint64_t u64 = 0;
        unsigned u = 0;
        bool b = false;
        int r = 0;

        switch (key->type) {
        case CONFIG_STRING:
                *(const char **) field = value;
                return 0;
        case CONFIG_STRV:
                return strv_append(field, value);
        case CONFIG_BOOL:
                r = config_parse_bool(value, &b);
                if (r == 0)
                        *(bool *) field = b;
                break;
        case CONFIG_UINT:
                r = config_parse_uint(value, &u);
                if (r == 0)
                        *(unsigned *) field = u;
                break;
        case CONFIG_SIZE:
                r = config_parse_size(value, &u64);
                if (r == 0)
                        *(uint64_t *) field = u64;
                break;
        case CONFIG_DURATION:
                r = config_parse_duration_ms(value, &u64);
                if (r == 0)
                        *(uint64_t *) field = u64;
                break;
        case CONFIG_MODE:
                r = config_parse_mode(value, &u);
                if (r == 0)
                        *(unsigned *) field = u;
                break;
        case CONFIG_IGNORED:
                return 0;
        case _CONFIG_TYPE_MAX:
        default:
                assert(!"unknown config_type");
                return -EINVAL;
        }
        if (r < 0)
                *ret_problem = r == -ERANGE ? type_range[key->type] : type_syntax[key->type];
        return r;
}

/* Can the key be set only once, so that setting it again overrides? */
static bool type_is_scalar(enum config_type type)
{
        return type != CONFIG_STRV && type != CONFIG_IGNORED;
}

int config_apply(const struct config_file *f, const char *section, const struct config_key *keys,
                 enum config_unknown unknown, void *settings, struct config_diag *diag)
{
        _cleanup_free_ unsigned *set_on_line = NULL;
        const struct config_key *k;
        const char *problem = NULL;
        char q[QUOTE_MAX];
        size_t n_keys = 0, i;
        int applied = 0, r;

        assert(f && section && keys && settings && diag);
        assert(unknown == CONFIG_UNKNOWN_ERROR || unknown == CONFIG_UNKNOWN_WARN);

        while (keys[n_keys].name)
                n_keys++;
        /* Where each key was last set, to warn when a later line overrides it. */
        set_on_line = calloc(n_keys + 1, sizeof(*set_on_line));
        if (!set_on_line)
                return -ENOMEM;

        for (i = 0; i < f->n_entries; i++) {
                const struct config_entry *e = &f->entries[i];

                if (!streq(e->section, section))
                        continue;

                k = config_key_find(keys, e->key);
                if (!k) {
                        if (unknown == CONFIG_UNKNOWN_ERROR)
                                config_diag_add(diag, true, f->path, e->line, e->key,
                                                "unknown key");
                        else
                                config_diag_add(diag, false, f->path, e->line, e->key,
                                                "not supported by wharf, ignored");
                        continue;
                }

                r = store(k, e->value, settings, &problem);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        config_diag_add(diag, true, f->path, e->line, e->key, "%s: '%s'", problem,
                                        quote(e->value, q));
                        continue;
                }

                if (type_is_scalar(k->type) && set_on_line[k - keys] > 0)
                        config_diag_add(diag, false, f->path, e->line, e->key,
                                        "set again, overriding line %u", set_on_line[k - keys]);
                set_on_line[k - keys] = e->line;
                applied++;
        }
        return applied;
}

/* A CONFIG_STRING keeps the pointer value, as from a file: it must outlive the settings. */
int config_set(const struct config_key *key, const char *value, void *settings, const char *origin,
               struct config_diag *diag)
{
        const char *problem = NULL;
        char q[QUOTE_MAX];
        int r;

        assert(key && value && settings && origin && diag);

        r = store(key, value, settings, &problem);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                config_diag_add(diag, true, origin, 0, NULL, "%s: '%s'", problem, quote(value, q));
                return -EINVAL;
        }
        return 0;
}
