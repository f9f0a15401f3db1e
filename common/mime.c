/* SPDX-License-Identifier: MIT */
/*
 * mime.c: the extension -> media type table.
 *
 * The format is that of /etc/mime.types: a media type, then the extensions
 * that map to it, separated by whitespace; a word starting with '#' starts
 * a comment that runs to the end of the line (as Python's mimetypes reads
 * it), and a line whose first word is not a valid "type/subtype" is
 * skipped. When an extension appears twice, the later line wins, as in
 * nginx (whose "types" block overrides with a warning) and Apache
 * (mod_mime, a hash table set line by line); Debian's file has a few such
 * pairs, e.g. "sh" under application/x-sh and later text/x-sh.
 *
 * The whole file is kept in one buffer, cut into NUL-terminated words in
 * place, with extensions folded to ASCII lower case; the table is an array
 * of (extension, type) pointers into it, sorted by extension for a binary
 * search that folds the file name's case as it compares, so a lookup
 * allocates nothing.
 *
 * The extension of a file name is what follows its last '.', if that dot
 * is in the last path component and does not start it: "a.tar.gz" has
 * "gz", while ".bashrc", "dir.d/README" and "file." have none (as nginx
 * decides for $exten). So the few extensions the file lists with a dot in
 * them, such as "cwl.json", never match, in nginx either.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mime.h"
#include "util.h"

/* A mime.types this large is not one. */
#define MIME_FILE_MAX (16u * 1024 * 1024)

/* Used only when there is no mime.types at all: what a web site serves most. */
static const char builtin_types[] = "text/html html htm\n"
                                    "text/css css\n"
                                    "text/javascript js mjs\n"
                                    "application/json json map\n"
                                    "text/plain txt\n"
                                    "text/csv csv\n"
                                    "application/xml xml\n"
                                    "image/svg+xml svg\n"
                                    "image/png png\n"
                                    "image/jpeg jpg jpeg\n"
                                    "image/gif gif\n"
                                    "image/webp webp\n"
                                    "image/vnd.microsoft.icon ico\n"
                                    "font/woff woff\n"
                                    "font/woff2 woff2\n"
                                    "font/ttf ttf\n"
                                    "font/otf otf\n"
                                    "application/pdf pdf\n"
                                    "application/zip zip\n"
                                    "application/gzip gz\n"
                                    "application/wasm wasm\n"
                                    "video/mp4 mp4\n"
                                    "video/webm webm\n"
                                    "audio/mpeg mp3\n";

struct mime_entry {
        const char *ext; /* lower case */
        const char *type;
};

struct mime_table {
        char *text; /* the file, cut into words */
        struct mime_entry *entries;
        size_t n_entries;
};

static char ascii_lower(char c)
{
        return c >= 'A' && c <= 'Z' ? (char) (c - 'A' + 'a') : c;
}

/* Word separators within a line; a NUL byte in the file separates words too. */
static bool is_blank(char c)
{
        return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f' || c == '\0';
}

/* RFC 9110 tchar: what a type and a subtype may consist of. */
static bool is_tchar(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

/* Is s "type/subtype", safe to send in a Content-Type header as it is? */
static bool type_is_valid(const char *s)
{
        size_t type_len = 0, subtype_len = 0;

        for (; is_tchar(*s); s++)
                type_len++;
        if (*s++ != '/')
                return false;
        for (; is_tchar(*s); s++)
                subtype_len++;
        return *s == '\0' && type_len > 0 && subtype_len > 0;
}

/* Reads all of path into a NUL-terminated buffer. Returns 0 or -errno. */
static int read_all(const char *path, char **ret, size_t *ret_len)
{
        _cleanup_close_ int fd = -1;
        char *buf = NULL, *p;
        size_t len = 0, cap = 0;
        struct stat st;
        ssize_t n;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;

        /* Room for each read and the NUL; a regular file's size is a good start. */
        for (;;) {
                if (cap - len < 2) {
                        if (cap >= MIME_FILE_MAX) {
                                free(buf);
                                return -EFBIG;
                        }
                        if (cap == 0)
                                cap = (S_ISREG(st.st_mode) ? (size_t) st.st_size : 0) + 4096;
                        else
                                cap *= 2;
                        cap = min_size(cap, MIME_FILE_MAX);
                        p = realloc(buf, cap);
                        if (!p) {
                                free(buf);
                                return -ENOMEM;
                        }
                        buf = p;
                }
                n = read(fd, buf + len, cap - len - 1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int r = -errno;

                        free(buf);
                        return r;
                }
                if (n == 0)
                        break;
                len += (size_t) n;
        }
        buf[len] = '\0';
        *ret = buf;
        *ret_len = len;
        return 0;
}

static int entry_add(struct mime_table *t, size_t *cap, const char *ext, const char *type)
{
        struct mime_entry *e;

        if (t->n_entries == *cap) {
                *cap = *cap ? 2 * *cap : 256;
                e = reallocarray(t->entries, *cap, sizeof(*e));
                if (!e)
                        return -ENOMEM;
                t->entries = e;
        }
        t->entries[t->n_entries++] = (struct mime_entry){ext, type};
        return 0;
}

/*
 * Cuts one line [p, end) into NUL-terminated words (*end is writable) and
 * adds its (extension, type) pairs.
 */
static int parse_line(struct mime_table *t, size_t *cap, char *p, char *end)
{
        char *word, *type = NULL;
        int r;

        for (;;) {
                while (p < end && is_blank(*p))
                        p++;
                if (p == end || *p == '#')
                        return 0;
                word = p;
                while (p < end && !is_blank(*p))
                        p++;
                *p = '\0';
                if (p < end)
                        p++;

                if (!type) {
                        if (!type_is_valid(word))
                                return 0;
                        type = word;
                        continue;
                }
                for (char *c = word; *c; c++)
                        *c = ascii_lower(*c);
                r = entry_add(t, cap, word, type);
                if (r < 0)
                        return r;
        }
}

/* Collects the (extension, type) pairs of t->text (len bytes, NUL-terminated) in file order. */
static int parse(struct mime_table *t, size_t len)
{
        char *p = t->text, *end = t->text + len, *eol;
        size_t cap = 0;
        int r;

        while (p < end) {
                eol = memchr(p, '\n', (size_t) (end - p));
                if (!eol)
                        eol = end;
                r = parse_line(t, &cap, p, eol);
                if (r < 0)
                        return r;
                p = eol + 1;
        }
        return 0;
}

/* Compares a table extension with ext (len bytes, any case) as strcmp() would their lower cases. */
static int ext_cmp(const char *key, const char *ext, size_t len)
{
        for (size_t i = 0; i < len; i++) {
                unsigned char a = (unsigned char) key[i], b = (unsigned char) ascii_lower(ext[i]);

                if (a == '\0' || a != b)
                        return a < b || a == '\0' ? -1 : 1;
        }
        return key[len] != '\0';
}

static int entry_cmp(const void *x, const void *y)
{
        const struct mime_entry *a = x, *b = y;
        int c = strcmp(a->ext, b->ext);

        if (c != 0)
                return c;
        /* Words lie in the buffer in file order: keep that order among equal extensions. */
        return a->ext < b->ext ? -1 : a->ext > b->ext;
}

/* Sorts by extension and keeps only the last line's type for each. */
static void sort_unique(struct mime_table *t)
{
        size_t i, n = 0;

        qsort(t->entries, t->n_entries, sizeof(*t->entries), entry_cmp);
        for (i = 0; i < t->n_entries; i++) {
                if (i + 1 < t->n_entries && streq(t->entries[i].ext, t->entries[i + 1].ext))
                        continue;
                t->entries[n++] = t->entries[i];
        }
        t->n_entries = n;
}

int mime_load(const char *path, struct mime_table **ret, bool *ret_builtin)
{
        struct mime_table *t;
        bool builtin = false;
        size_t len = 0;
        int r;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;

        r = read_all(path ? path : MIME_TYPES_PATH, &t->text, &len);
        if (r == -ENOENT) {
                builtin = true;
                len = sizeof(builtin_types) - 1;
                t->text = strdup(builtin_types);
                r = t->text ? 0 : -ENOMEM;
        }
        if (r < 0)
                goto fail;

        r = parse(t, len);
        if (r < 0)
                goto fail;
        sort_unique(t);

        *ret = t;
        if (ret_builtin)
                *ret_builtin = builtin;
        return 0;

fail:
        mime_free(t);
        return r;
}

struct mime_table *mime_free(struct mime_table *t)
{
        if (!t)
                return NULL;
        free(t->entries);
        free(t->text);
        free(t);
        return NULL;
}

/* Finds the extension of filename (len bytes); see the top of this file. */
static bool find_extension(const char *filename, size_t len, struct span *ret)
{
        for (size_t i = len; i > 0; i--) {
                char c = filename[i - 1];

                if (c == '/')
                        return false;
                if (c != '.')
                        continue;
                if (i == 1 || filename[i - 2] == '/' || i == len)
                        return false;
                *ret = (struct span){filename + i, len - i};
                return true;
        }
        return false;
}

const char *mime_lookup(const struct mime_table *t, const char *filename, size_t len)
{
        size_t lo = 0, hi, mid;
        struct span ext;
        int c;

        if (!t || !find_extension(filename, len, &ext))
                return NULL;

        hi = t->n_entries;
        while (lo < hi) {
                mid = lo + (hi - lo) / 2;
                c = ext_cmp(t->entries[mid].ext, ext.ptr, ext.len);
                if (c == 0)
                        return t->entries[mid].type;
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

/* Does s (len bytes) end with suffix, ignoring case? */
static bool has_suffix_case(const char *s, size_t len, const char *suffix)
{
        size_t n = strlen(suffix);

        return len >= n && strncasecmp(s + len - n, suffix, n) == 0;
}

bool mime_is_text(const char *type)
{
        /* Textual, though not text/: scripts, data formats, and their +json/+xml dialects. */
        static const char *const textual[] = {
            "application/javascript", "application/ecmascript", "application/json",
            "application/xml",        "image/svg+xml",
        };
        size_t len;

        if (!type)
                return false;
        /* Parameters such as "; charset=..." do not change the answer. */
        len = strcspn(type, ";");
        while (len > 0 && (type[len - 1] == ' ' || type[len - 1] == '\t'))
                len--;

        if (len > 5 && strncasecmp(type, "text/", 5) == 0)
                return true;
        for (size_t i = 0; i < ARRAY_SIZE(textual); i++)
                if (strlen(textual[i]) == len && strncasecmp(type, textual[i], len) == 0)
                        return true;
        return memchr(type, '/', len) &&
               (has_suffix_case(type, len, "+json") || has_suffix_case(type, len, "+xml"));
}
