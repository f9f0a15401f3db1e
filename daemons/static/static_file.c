/* SPDX-License-Identifier: MIT */
/*
 * static_file: what a static request means.
 *
 * A URL is decoded and normalised once (common/http_parse), checked against
 * the prefix, and opened with openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS)
 * relative to the root directory, so no path and no symlink leads outside
 * the root. What was opened is kept in a per-worker cache: small files with
 * their bytes, larger ones with their open fd, misses as negative entries.
 * An entry is trusted for a second, then compared with the file on disk
 * (inode, size, mtime) and reopened if it changed, so an edited file is
 * served fresh within a second at the cost of one stat per file per second.
 */
#include "static.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "mime.h"
#include "wharf-config.h"

#define CACHE_BUCKETS 1024
#define CACHE_MAX_ENTRIES 4096
#define CACHE_REVALIDATE_MS 1000
#define PATH_BUF 4096

const struct config_key static_config_keys[] = {
    {"root", CONFIG_STRING, offsetof(struct static_settings, root)},
    {"prefix", CONFIG_STRING, offsetof(struct static_settings, prefix)},
    {"listen", CONFIG_STRV, offsetof(struct static_settings, listen)},
    {"handoff", CONFIG_STRING, offsetof(struct static_settings, handoff)},
    {"workers", CONFIG_UINT, offsetof(struct static_settings, workers)},
    {"index", CONFIG_STRING, offsetof(struct static_settings, index)},
    {"gzip_static", CONFIG_BOOL, offsetof(struct static_settings, gzip_static)},
    {"internal", CONFIG_BOOL, offsetof(struct static_settings, internal)},
    {"expires", CONFIG_STRING, offsetof(struct static_settings, expires)},
    {"server_tokens", CONFIG_BOOL, offsetof(struct static_settings, server_tokens)},
    {"default_type", CONFIG_STRING, offsetof(struct static_settings, default_type)},
    {"mime_types", CONFIG_STRING, offsetof(struct static_settings, mime_types)},
    {"keepalive_timeout", CONFIG_DURATION, offsetof(struct static_settings, keepalive_timeout)},
    {"keepalive_requests", CONFIG_UINT, offsetof(struct static_settings, keepalive_requests)},
    {"client_header_timeout", CONFIG_DURATION,
     offsetof(struct static_settings, client_header_timeout)},
    {"send_timeout", CONFIG_DURATION, offsetof(struct static_settings, send_timeout)},
    {"max_connections", CONFIG_UINT, offsetof(struct static_settings, max_connections)},
    {"max_header_size", CONFIG_SIZE, offsetof(struct static_settings, max_header_size)},
    {"open_file_cache", CONFIG_SIZE, offsetof(struct static_settings, open_file_cache)},
    {"cache_max_file", CONFIG_SIZE, offsetof(struct static_settings, cache_max_file)},
    {"splice_min", CONFIG_SIZE, offsetof(struct static_settings, splice_min)},
    {"zero_copy", CONFIG_STRING, offsetof(struct static_settings, zero_copy)},
    {"access_log", CONFIG_STRING, offsetof(struct static_settings, access_log)},
    {"error_log", CONFIG_STRING, offsetof(struct static_settings, error_log)},
    {"log_level", CONFIG_STRING, offsetof(struct static_settings, log_level)},
    {"set_real_ip_from", CONFIG_STRV, offsetof(struct static_settings, set_real_ip_from)},
    {"real_ip_header", CONFIG_STRING, offsetof(struct static_settings, real_ip_header)},
    {"real_ip_recursive", CONFIG_BOOL, offsetof(struct static_settings, real_ip_recursive)},
    {NULL, _CONFIG_TYPE_MAX, 0},
};

static int parse_log_level(const char *s)
{
        static const struct {
                const char *name;
                int level;
        } levels[] = {
            {"debug", LOG_DEBUG},     {"info", LOG_INFO},    {"notice", LOG_NOTICE},
            {"warning", LOG_WARNING}, {"warn", LOG_WARNING}, {"error", LOG_ERR},
            {"err", LOG_ERR},         {"crit", LOG_CRIT},
        };
        for (size_t i = 0; i < ARRAY_SIZE(levels); i++)
                if (strcasecmp(s, levels[i].name) == 0)
                        return levels[i].level;
        return -EINVAL;
}

static int parse_expires(const char *s, enum expires_mode *ret_mode, uint64_t *ret_sec)
{
        uint64_t ms;

        if (!s || streq(s, "off")) {
                *ret_mode = EXPIRES_OFF;
                *ret_sec = 0;
        } else if (streq(s, "epoch")) {
                *ret_mode = EXPIRES_EPOCH;
                *ret_sec = 0;
        } else if (streq(s, "max")) {
                *ret_mode = EXPIRES_MAX;
                *ret_sec = 315360000; /* ten years, as nginx */
        } else if (config_parse_duration_ms(s, &ms) == 0) {
                *ret_mode = EXPIRES_SECONDS;
                *ret_sec = ms / 1000;
        } else {
                return -EINVAL;
        }
        return 0;
}

/*
 * The line of the file that set value: the value's own string is the
 * entry's (config_apply() keeps the pointer), so the match is exact even
 * when two lines say the same. 0 (no line) for a value from the command line.
 */
static unsigned value_line(const struct config_file *file, const char *value)
{
        for (size_t i = 0; file && i < file->n_entries; i++)
                if (file->entries[i].value == value)
                        return file->entries[i].line;
        return 0;
}

/* set_real_ip_from, real_ip_header, real_ip_recursive. Returns 0 (problems in diag) or -ENOMEM. */
static int realip_build(const struct static_settings *s, const struct config_file *file,
                        const char *origin, struct config_diag *diag, struct realip_conf *conf)
{
        int r;

        for (size_t i = 0; i < s->set_real_ip_from.n; i++) {
                const char *v = s->set_real_ip_from.v[i];
                r = realip_conf_add_from(conf, v);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        config_diag_add(diag, true, origin, value_line(file, v), "set_real_ip_from",
                                        "'%s' is not all, unix:, an address or address/prefix", v);
        }
        if (s->real_ip_header) {
                r = realip_conf_set_header(conf, s->real_ip_header);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        config_diag_add(diag, true, origin, value_line(file, s->real_ip_header),
                                        "real_ip_header", "%s: '%s'",
                                        r == -EOPNOTSUPP ? "proxy_protocol is not implemented"
                                                         : "not a header name",
                                        s->real_ip_header);
        }
        conf->recursive = s->real_ip_recursive;
        return 0;
}

int static_config_new(const struct static_settings *s, struct config_file *file,
                      struct config_diag *diag, struct static_config **ret)
{
        const char *origin = file ? file->path : "command line";
        struct static_config *c;
        struct stat st;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c) {
                config_file_free(file);
                return -ENOMEM;
        }
        c->s = *s;
        c->file = file;
        c->root_fd = -1;

        if (!s->root || !*s->root) {
                config_diag_add(diag, true, origin, 0, "root", "no root directory given");
        } else {
                c->root_fd = open(s->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
                if (c->root_fd < 0)
                        config_diag_add(diag, true, origin, 0, "root", "cannot open '%s': %s",
                                        s->root, strerror(errno));
                else if (fstat(c->root_fd, &st) < 0 || !S_ISDIR(st.st_mode))
                        config_diag_add(diag, true, origin, 0, "root", "'%s' is not a directory",
                                        s->root);
        }

        const char *prefix = s->prefix && *s->prefix ? s->prefix : "/";
        size_t plen = strlen(prefix);
        if (prefix[0] != '/' || plen + 2 > sizeof(c->prefix) || strstr(prefix, "/../") ||
            strstr(prefix, "//")) {
                config_diag_add(diag, true, origin, 0, "prefix",
                                "must be an absolute URL path such as /static/: '%s'", prefix);
        } else {
                memcpy(c->prefix, prefix, plen + 1);
                if (c->prefix[plen - 1] != '/')
                        c->prefix[plen++] = '/', c->prefix[plen] = '\0';
                c->prefix_len = plen;
        }

        if (parse_expires(s->expires, &c->expires_mode, &c->expires_sec) < 0)
                config_diag_add(diag, true, origin, 0, "expires",
                                "expected off, epoch, max or a duration such as 30d: '%s'",
                                s->expires);

        c->log_level = parse_log_level(s->log_level ? s->log_level : "info");
        if (c->log_level < 0)
                config_diag_add(diag, true, origin, 0, "log_level", "unknown level '%s'",
                                s->log_level);

        if (s->index && (strchr(s->index, '/') || !*s->index))
                config_diag_add(diag, true, origin, 0, "index", "must be a file name: '%s'",
                                s->index);
        if (s->max_header_size < 1024 || s->max_header_size > 1024 * 1024)
                config_diag_add(diag, true, origin, 0, "max_header_size",
                                "must be between 1k and 1M");
        if (s->max_connections == 0)
                config_diag_add(diag, true, origin, 0, "max_connections", "must be at least 1");
        if (s->workers > 256)
                config_diag_add(diag, true, origin, 0, "workers", "at most 256");
        if (!s->zero_copy || streq(s->zero_copy, "sendfile"))
                c->zero_copy = ZERO_COPY_SENDFILE;
        else if (streq(s->zero_copy, "splice"))
                c->zero_copy = ZERO_COPY_SPLICE;
        else
                config_diag_add(diag, true, origin, 0, "zero_copy",
                                "expected sendfile or splice: '%s'", s->zero_copy);
        if (s->splice_min == 0)
                config_diag_add(diag, true, origin, 0, "splice_min", "must be at least 1");

        snprintf(c->server_header, sizeof(c->server_header), "%s",
                 s->server_tokens ? "wharf-static/" WHARF_VERSION : "wharf");

        r = mime_load(s->mime_types, &c->mime, NULL);
        if (r < 0)
                config_diag_add(diag, true, origin, 0, "mime_types", "cannot load '%s': %s",
                                s->mime_types ? s->mime_types : MIME_TYPES_PATH, strerror(-r));

        r = realip_build(s, file, origin, diag, &c->realip);
        if (r < 0) {
                static_config_free(c);
                return r;
        }

        if (diag->errors) {
                static_config_free(c);
                return -EINVAL;
        }
        *ret = c;
        return 0;
}

struct static_config *static_config_free(struct static_config *c)
{
        if (!c)
                return NULL;
        safe_close(c->root_fd);
        mime_free(c->mime);
        realip_conf_done(&c->realip);
        config_strv_done(&c->s.listen);
        config_strv_done(&c->s.set_real_ip_from);
        config_file_free(c->file);
        free(c);
        return NULL;
}

/* ---- the cache ---- */

struct file_entry {
        struct file_entry *hnext;       /* hash chain */
        struct file_entry *prev, *next; /* LRU list, most recent first */
        uint32_t hash;
        unsigned refs; /* the cache's own (while linked) + one per body in flight */
        bool linked;
        int error; /* a negative errno: a cached miss */
        bool is_dir;
        int fd;     /* larger files: open for splice/read; else -1 */
        char *data; /* small files: the bytes */
        uint64_t size;
        dev_t dev;
        ino_t ino;
        struct timespec mtime;
        uint64_t checked_ms;
        time_t mtime_sec;
        char etag[48];
        char last_modified[HTTP_DATE_LEN + 1];
        char content_type[128]; /* from the path's extension, with charset for text */
        char path[];            /* relative to the root, "" for the root itself */
};

struct file_cache {
        struct file_entry *buckets[CACHE_BUCKETS];
        struct file_entry *lru_head, *lru_tail;
        unsigned n_entries;
        uint64_t bytes; /* of data */
        uint64_t max_bytes;
};

struct file_cache *file_cache_new(uint64_t max_bytes)
{
        struct file_cache *fc = calloc(1, sizeof(*fc));

        if (fc)
                fc->max_bytes = max_bytes;
        return fc;
}

static uint32_t path_hash(const char *s, size_t len)
{
        uint32_t h = 2166136261u; /* FNV-1a */

        for (size_t i = 0; i < len; i++)
                h = (h ^ (unsigned char) s[i]) * 16777619u;
        return h;
}

static void entry_destroy(struct file_entry *e)
{
        safe_close(e->fd);
        free(e->data);
        free(e);
}

static void lru_unlink(struct file_cache *fc, struct file_entry *e)
{
        if (e->prev)
                e->prev->next = e->next;
        else
                fc->lru_head = e->next;
        if (e->next)
                e->next->prev = e->prev;
        else
                fc->lru_tail = e->prev;
        e->prev = e->next = NULL;
}

static void lru_push_front(struct file_cache *fc, struct file_entry *e)
{
        e->prev = NULL;
        e->next = fc->lru_head;
        if (fc->lru_head)
                fc->lru_head->prev = e;
        fc->lru_head = e;
        if (!fc->lru_tail)
                fc->lru_tail = e;
}

/* Takes e out of the table; it is freed once the last body using it is sent. */
static void entry_unlink(struct file_cache *fc, struct file_entry *e)
{
        struct file_entry **pp = &fc->buckets[e->hash % CACHE_BUCKETS];

        while (*pp != e)
                pp = &(*pp)->hnext;
        *pp = e->hnext;
        lru_unlink(fc, e);
        e->linked = false;
        fc->n_entries--;
        fc->bytes -= e->data ? e->size : 0;
        file_entry_release(fc, e);
}

void file_entry_release(struct file_cache *fc, struct file_entry *e)
{
        (void) fc;
        if (--e->refs == 0)
                entry_destroy(e);
}

void file_cache_flush(struct file_cache *fc)
{
        while (fc->lru_head)
                entry_unlink(fc, fc->lru_head);
}

struct file_cache *file_cache_free(struct file_cache *fc)
{
        if (fc) {
                file_cache_flush(fc);
                free(fc);
        }
        return NULL;
}

/* Evicts least recently used entries until the new one fits. */
static void cache_make_room(struct file_cache *fc, uint64_t bytes)
{
        struct file_entry *e = fc->lru_tail;

        while (e && (fc->n_entries >= CACHE_MAX_ENTRIES || fc->bytes + bytes > fc->max_bytes)) {
                struct file_entry *prev = e->prev;
                entry_unlink(fc, e);
                e = prev;
        }
}

static int open_beneath(int dirfd, const char *rel)
{
        struct open_how how = {
            .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
            .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
        };
        long fd = syscall(SYS_openat2, dirfd, *rel ? rel : ".", &how, sizeof(how));

        if (fd < 0 && errno == ENOSYS) {
                /*
                 * Every lookup depends on it, so say why everything is 404:
                 * seccomp filters that cannot see into struct open_how refuse
                 * openat2 altogether (systemd's RestrictSUIDSGID= does).
                 */
                static atomic_bool said;
                if (!atomic_exchange(&said, true))
                        log_error("openat2() is refused (ENOSYS), so no file can be opened: a "
                                  "seccomp filter blocks it (systemd's RestrictSUIDSGID=yes does)");
        }
        return fd < 0 ? -errno : (int) fd;
}

/* Content-Type for a path, decided once per cache entry rather than per request. */
static void entry_set_type(const struct static_config *cfg, struct file_entry *e)
{
        const char *type = mime_lookup(cfg->mime, e->path, strlen(e->path));

        if (!type)
                type = cfg->s.default_type ? cfg->s.default_type : "application/octet-stream";
        if (!mime_is_text(type) ||
            snprintf(e->content_type, sizeof(e->content_type), "%s; charset=utf-8", type) >=
                (int) sizeof(e->content_type))
                snprintf(e->content_type, sizeof(e->content_type), "%s", type);
}

/* Opens path (relative to the root) and fills e's file fields. */
static void entry_fill(const struct static_config *cfg, struct file_entry *e, uint64_t now)
{
        struct stat st;
        int fd;

        e->checked_ms = now;
        fd = open_beneath(cfg->root_fd, e->path);
        if (fd < 0) {
                /* ELOOP, EXDEV: a symlink or ".." that tried to leave the root. */
                e->error = fd == -EACCES || fd == -EPERM ? -EACCES : -ENOENT;
                return;
        }
        if (fstat(fd, &st) < 0) {
                e->error = -errno;
                close(fd);
                return;
        }
        e->dev = st.st_dev;
        e->ino = st.st_ino;
        e->mtime = st.st_mtim;
        e->mtime_sec = st.st_mtim.tv_sec;
        if (S_ISDIR(st.st_mode)) {
                e->is_dir = true;
                close(fd);
                return;
        }
        if (!S_ISREG(st.st_mode)) {
                e->error = -ENOENT;
                close(fd);
                return;
        }
        e->size = (uint64_t) st.st_size;
        entry_set_type(cfg, e);
        snprintf(e->etag, sizeof(e->etag), "\"%llx-%llx\"", (unsigned long long) st.st_mtim.tv_sec,
                 (unsigned long long) st.st_size);
        http_date_format(st.st_mtim.tv_sec, e->last_modified);

        if (e->size <= cfg->s.cache_max_file && e->size <= cfg->s.open_file_cache) {
                e->data = malloc(e->size ? e->size : 1);
                if (!e->data) {
                        e->fd = fd; /* serve it from the fd instead */
                        return;
                }
                size_t got = 0;
                while (got < e->size) {
                        ssize_t n = pread(fd, e->data + got, e->size - got, (off_t) got);
                        if (n <= 0) {
                                /* Shrank or failed under us: do not cache a torn copy. */
                                free(e->data);
                                e->data = NULL;
                                e->error = n < 0 ? -errno : -EAGAIN;
                                if (e->error == -EAGAIN)
                                        e->error = -ENOENT;
                                close(fd);
                                return;
                        }
                        got += (size_t) n;
                }
                close(fd);
                return;
        }
        e->fd = fd;
}

/* Is the cached view of e still what is on disk? One stat, no open. */
static bool entry_fresh(const struct static_config *cfg, const struct file_entry *e)
{
        struct stat st;

        if (e->error)
                return false; /* misses are retried by opening again */
        if (fstatat(cfg->root_fd, *e->path ? e->path : ".", &st, 0) < 0)
                return false;
        return st.st_ino == e->ino && st.st_dev == e->dev && st.st_mtim.tv_sec == e->mtime.tv_sec &&
               st.st_mtim.tv_nsec == e->mtime.tv_nsec &&
               (e->is_dir ? S_ISDIR(st.st_mode) : (uint64_t) st.st_size == e->size);
}

/*
 * The entry for path, from the cache or opened now. The returned entry has
 * a reference for the caller. NULL only when memory ran out.
 */
static struct file_entry *cache_get(struct request_ctx *ctx, const char *path, size_t len)
{
        struct file_cache *fc = ctx->cache;
        uint32_t h = path_hash(path, len);
        struct file_entry *e;

        for (e = fc->buckets[h % CACHE_BUCKETS]; e; e = e->hnext) {
                if (e->hash != h || strncmp(e->path, path, len) != 0 || e->path[len] != '\0')
                        continue;
                if (ctx->now_ms - e->checked_ms < CACHE_REVALIDATE_MS) {
                        /* Fresh enough: most recently used goes to the front. */
                } else if (entry_fresh(ctx->cfg, e)) {
                        e->checked_ms = ctx->now_ms;
                } else {
                        entry_unlink(fc, e);
                        break;
                }
                lru_unlink(fc, e);
                lru_push_front(fc, e);
                e->refs++;
                return e;
        }

        e = calloc(1, sizeof(*e) + len + 1);
        if (!e)
                return NULL;
        memcpy(e->path, path, len);
        e->hash = h;
        e->fd = -1;
        entry_fill(ctx->cfg, e, ctx->now_ms);

        uint64_t bytes = e->data ? e->size : 0;
        if (bytes > fc->max_bytes) {
                /* Larger than the whole cache: use it once, do not keep it. */
                e->refs = 1;
                return e;
        }
        cache_make_room(fc, bytes);
        e->hnext = fc->buckets[h % CACHE_BUCKETS];
        fc->buckets[h % CACHE_BUCKETS] = e;
        lru_push_front(fc, e);
        e->linked = true;
        fc->n_entries++;
        fc->bytes += bytes;
        e->refs = 2; /* the cache's and the caller's */
        return e;
}

/* ---- request handling ---- */

static void write_common_headers(struct request_ctx *ctx, struct http_writer *w, int minor,
                                 int status)
{
        http_write_status(w, minor, status);
        http_write_header_str(w, "Server", ctx->cfg->server_header);
        http_write_header_str(w, "Date", ctx->date);
}

static void write_connection(struct request_ctx *ctx, struct http_writer *w, int minor)
{
        if (!ctx->keep_alive)
                http_write_header_str(w, "Connection", "close");
        else if (minor == 0)
                http_write_header_str(w, "Connection", "keep-alive");
}

static enum plan error_plan(struct request_ctx *ctx, const struct http_request *req, int status,
                            const char *extra, struct http_writer *w)
{
        ctx->status = status;
        if (status >= 500 || status == 400)
                ctx->keep_alive = false;
        (void) http_write_error(w, req->minor_version, status, ctx->keep_alive,
                                ctx->cfg->server_header, ctx->date, extra,
                                req->method == HTTP_HEAD);
        return ctx->keep_alive ? PLAN_RESPOND : PLAN_RESPOND_CLOSE;
}

void static_error_response(struct request_ctx *ctx, int minor_version, int status,
                           struct http_writer *w)
{
        ctx->status = status;
        ctx->keep_alive = false;
        (void) http_write_error(w, minor_version, status, false, ctx->cfg->server_header, ctx->date,
                                NULL, false);
}

/* Weak comparison (RFC 9110 8.8.3.2): does the If-None-Match list hold etag? */
static bool etag_list_matches(struct span list, const char *etag, bool weak_ok)
{
        size_t elen = strlen(etag);
        const char *p = list.ptr, *end = list.ptr + list.len;

        while (p < end) {
                while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                        p++;
                if (p >= end)
                        break;
                if (*p == '*')
                        return true;
                bool weak = false;
                if (end - p >= 2 && p[0] == 'W' && p[1] == '/') {
                        weak = true;
                        p += 2;
                }
                const char *start = p;
                if (p < end && *p == '"') {
                        p++;
                        while (p < end && *p != '"')
                                p++;
                        if (p < end)
                                p++;
                } else {
                        while (p < end && *p != ',')
                                p++;
                }
                if ((size_t) (p - start) == elen && memcmp(start, etag, elen) == 0 &&
                    (weak_ok || !weak))
                        return true;
        }
        return false;
}

/*
 * One byte range of a file of size bytes. Returns 1 and the range, 0 when
 * the header is to be ignored (malformed, or several ranges: the whole file
 * is sent), -ERANGE when it cannot be satisfied (416).
 */
static int parse_range(struct span h, uint64_t size, uint64_t *ret_start, uint64_t *ret_len)
{
        const char *p = h.ptr, *end = h.ptr + h.len;
        uint64_t a = 0, b = 0;
        bool have_a = false, have_b = false;

        if (h.len < 6 || strncasecmp(p, "bytes=", 6) != 0)
                return 0;
        p += 6;
        while (p < end && *p == ' ')
                p++;
        for (; p < end && *p >= '0' && *p <= '9'; p++) {
                if (a > (UINT64_MAX - 9) / 10)
                        return 0;
                a = a * 10 + (uint64_t) (*p - '0');
                have_a = true;
        }
        if (p >= end || *p != '-')
                return 0;
        p++;
        for (; p < end && *p >= '0' && *p <= '9'; p++) {
                if (b > (UINT64_MAX - 9) / 10)
                        return 0;
                b = b * 10 + (uint64_t) (*p - '0');
                have_b = true;
        }
        while (p < end && *p == ' ')
                p++;
        if (p != end)
                return 0; /* a list of ranges or junk: serve the whole file */
        if (!have_a && !have_b)
                return 0;
        if (!have_a) {
                /* suffix: the last b bytes */
                if (b == 0 || size == 0)
                        return -ERANGE;
                b = min_u64(b, size);
                *ret_start = size - b;
                *ret_len = b;
                return 1;
        }
        if (have_b && b < a)
                return 0;
        if (a >= size)
                return -ERANGE;
        if (!have_b || b >= size)
                b = size - 1;
        *ret_start = a;
        *ret_len = b - a + 1;
        return 1;
}

/* Should the Range header be honoured given If-Range (RFC 9110 13.1.5)? */
static bool if_range_allows(const struct http_request *req, const struct file_entry *e)
{
        const struct http_header *h = http_find_header(req, "If-Range");
        time_t t;

        if (!h)
                return true;
        if (h->value.len > 0 && (h->value.ptr[0] == '"' || h->value.ptr[0] == 'W'))
                return etag_list_matches(h->value, e->etag, false) && h->value.ptr[0] == '"';
        if (http_date_parse(h->value, &t) < 0)
                return false;
        return t == e->mtime_sec;
}

/* Percent-encodes a clean path for a Location header; false if it does not fit. */
static bool encode_location(const char *path, char *out, size_t size)
{
        static const char hex[] = "0123456789ABCDEF";
        size_t o = 0;

        for (const unsigned char *p = (const unsigned char *) path; *p; p++) {
                bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                             (*p >= '0' && *p <= '9') || strchr("/-._~!$&'()*+,;=:@", *p);
                if (o + 4 >= size)
                        return false;
                if (plain) {
                        out[o++] = (char) *p;
                } else {
                        out[o++] = '%';
                        out[o++] = hex[*p >> 4];
                        out[o++] = hex[*p & 15];
                }
        }
        out[o] = '\0';
        return true;
}

static void write_expires(struct request_ctx *ctx, struct http_writer *w)
{
        const struct static_config *cfg = ctx->cfg;
        char date[HTTP_DATE_LEN + 1];
        char cc[48];

        switch (cfg->expires_mode) {
        case EXPIRES_OFF:
                return;
        case EXPIRES_EPOCH:
                http_write_header_str(w, "Expires", "Thu, 01 Jan 1970 00:00:01 GMT");
                http_write_header_str(w, "Cache-Control", "no-cache");
                return;
        case EXPIRES_MAX:
                http_write_header_str(w, "Expires", "Thu, 31 Dec 2037 23:55:55 GMT");
                http_write_header_str(w, "Cache-Control", "max-age=315360000");
                return;
        case EXPIRES_SECONDS:
                http_date_format(time(NULL) + (time_t) cfg->expires_sec, date);
                http_write_header_str(w, "Expires", date);
                snprintf(cc, sizeof(cc), "max-age=%llu", (unsigned long long) cfg->expires_sec);
                http_write_header_str(w, "Cache-Control", cc);
                return;
        case _EXPIRES_MODE_MAX:
        default:
                return;
        }
}

/*
 * The response headers an internal redirect brings from the application
 * (Wharf-Response-Header: Name: value, one per line; wharf-proxy takes the
 * ones nginx keeps from an X-Accel-Redirect response). Content-Type
 * replaces the file's; Cache-Control and Expires replace what `expires`
 * would say, unless `expires` is set (nginx's expires wins too); the rest
 * (Set-Cookie, Content-Disposition) are added.
 */
struct app_headers {
        struct span content_type;
        bool caching; /* Cache-Control or Expires came */
};

static bool app_header_split(struct span v, struct span *name, struct span *value)
{
        const char *colon = memchr(v.ptr, ':', v.len);

        if (!colon || colon == v.ptr)
                return false;
        *name = (struct span){v.ptr, (size_t) (colon - v.ptr)};
        const char *p = colon + 1, *end = v.ptr + v.len;
        while (p < end && (*p == ' ' || *p == '\t'))
                p++;
        *value = (struct span){p, (size_t) (end - p)};
        return true;
}

static struct app_headers app_headers_scan(const struct http_request *req)
{
        struct app_headers a = {0};

        for (size_t i = 0; i < req->n_headers; i++) {
                struct span name, value;
                if (!span_eq_case(req->headers[i].name, "Wharf-Response-Header") ||
                    !app_header_split(req->headers[i].value, &name, &value))
                        continue;
                if (span_eq_case(name, "Content-Type"))
                        a.content_type = value;
                else if (span_eq_case(name, "Cache-Control") || span_eq_case(name, "Expires"))
                        a.caching = true;
        }
        return a;
}

/* Writes the application's headers but Content-Type (written in its place). */
static void app_headers_write(struct request_ctx *ctx, const struct http_request *req,
                              struct http_writer *w)
{
        bool caching_ours = ctx->cfg->expires_mode != EXPIRES_OFF;
        char name_buf[64];

        for (size_t i = 0; i < req->n_headers; i++) {
                struct span name, value;
                if (!span_eq_case(req->headers[i].name, "Wharf-Response-Header") ||
                    !app_header_split(req->headers[i].value, &name, &value) ||
                    name.len >= sizeof(name_buf) || span_eq_case(name, "Content-Type"))
                        continue;
                if (caching_ours &&
                    (span_eq_case(name, "Cache-Control") || span_eq_case(name, "Expires")))
                        continue;
                memcpy(name_buf, name.ptr, name.len);
                name_buf[name.len] = '\0';
                http_write_header(w, name_buf, value);
        }
}

static bool client_accepts_gzip(const struct http_request *req)
{
        const struct http_header *h = http_find_header(req, "Accept-Encoding");

        return h && http_list_has_token(h->value, "gzip");
}

enum plan static_handle_request(struct request_ctx *ctx, const struct http_request *req,
                                struct http_writer *w, struct body *ret_body)
{
        const struct static_config *cfg = ctx->cfg;
        char path[PATH_BUF + 16];
        ssize_t n;

        *ret_body = (struct body){.kind = BODY_NONE, .fd = -1};

        if (req->method != HTTP_GET && req->method != HTTP_HEAD) {
                /* A body we would have to skip: simpler and safer to close. */
                if (req->body != HTTP_BODY_NONE)
                        ctx->keep_alive = false;
                return error_plan(ctx, req, 405, "Allow: GET, HEAD\r\n", w);
        }
        if (req->path.len == 1 && req->path.ptr[0] == '*')
                return error_plan(ctx, req, 400, NULL, w);

        n = http_path_normalize(req->path.ptr, req->path.len, path, PATH_BUF,
                                HTTP_PATH_REJECT_ENCODED_SLASH);
        if (n < 0)
                return error_plan(ctx, req, n == -ENOBUFS ? 414 : 400, NULL, w);

        /*
         * Outside the prefix: not ours. The exact prefix without its slash
         * redirects. With `internal`, only wharf-proxy's internal redirects
         * are ours: the client's own requests go back (the proxy says 404).
         */
        if ((size_t) n < cfg->prefix_len || memcmp(path, cfg->prefix, cfg->prefix_len) != 0 ||
            (cfg->s.internal && !ctx->internal)) {
                if (cfg->s.internal && !ctx->internal && !ctx->handed_off)
                        return error_plan(ctx, req, 404, NULL, w);
                if (ctx->handed_off)
                        return PLAN_HANDBACK;
                if ((size_t) n + 1 == cfg->prefix_len && memcmp(path, cfg->prefix, (size_t) n) == 0)
                        goto redirect_slash;
                return error_plan(ctx, req, 404, NULL, w);
        }

        const char *rel = path + cfg->prefix_len;
        size_t rel_len = (size_t) n - cfg->prefix_len;
        bool want_dir = rel_len == 0 || rel[rel_len - 1] == '/';
        if (want_dir) {
                /* "dir/" means dir/index.html; strip the slash for the lookup key. */
                size_t ilen = strlen(cfg->s.index ? cfg->s.index : "index.html");
                if (rel_len + ilen + 1 > PATH_BUF)
                        return error_plan(ctx, req, 414, NULL, w);
                memmove(path, rel, rel_len);
                memcpy(path + rel_len, cfg->s.index ? cfg->s.index : "index.html", ilen + 1);
                rel = path;
                rel_len += ilen;
        } else {
                memmove(path, rel, rel_len + 1);
                rel = path;
        }

        struct file_entry *e = cache_get(ctx, rel, rel_len);
        if (!e)
                return error_plan(ctx, req, 503, NULL, w);
        if (e->error) {
                int status = e->error == -EACCES ? 403 : 404;
                file_entry_release(ctx->cache, e);
                return error_plan(ctx, req, status, NULL, w);
        }
        if (e->is_dir) {
                file_entry_release(ctx->cache, e);
                if (want_dir) /* "dir/index.html" is itself a directory */
                        return error_plan(ctx, req, 404, NULL, w);
                /* Rebuild the clean URL path: prefix + rel, then add the slash. */
                n = http_path_normalize(req->path.ptr, req->path.len, path, PATH_BUF,
                                        HTTP_PATH_REJECT_ENCODED_SLASH);
                if (n < 0)
                        return error_plan(ctx, req, 400, NULL, w);
        redirect_slash:;
                char loc[PATH_BUF * 3 + 8];
                if ((size_t) n + 2 > PATH_BUF || !encode_location(path, loc, sizeof(loc) - 2))
                        return error_plan(ctx, req, 414, NULL, w);
                strcat(loc, "/");
                char extra[sizeof(loc) + 16];
                snprintf(extra, sizeof(extra), "Location: %s\r\n", loc);
                return error_plan(ctx, req, 301, extra, w);
        }

        /* gzip_static: the .gz sibling, when there is one and the client takes it. */
        struct file_entry *gz = NULL;
        bool vary = false;
        if (cfg->s.gzip_static && rel_len + 3 < PATH_BUF) {
                char gzpath[PATH_BUF + 4];
                memcpy(gzpath, rel, rel_len);
                memcpy(gzpath + rel_len, ".gz", 4);
                gz = cache_get(ctx, gzpath, rel_len + 3);
                if (gz && (gz->error || gz->is_dir)) {
                        file_entry_release(ctx->cache, gz);
                        gz = NULL;
                }
                if (gz) {
                        vary = true;
                        if (!client_accepts_gzip(req)) {
                                file_entry_release(ctx->cache, gz);
                                gz = NULL;
                        }
                }
        }
        struct file_entry *send = gz ? gz : e;

        /* Conditionals, in RFC 9110 13.2.2 order. */
        const struct http_header *inm = http_find_header(req, "If-None-Match");
        const struct http_header *ims = inm ? NULL : http_find_header(req, "If-Modified-Since");
        bool not_modified = false;
        time_t since;
        if (inm)
                not_modified = etag_list_matches(inm->value, send->etag, true);
        else if (ims && http_date_parse(ims->value, &since) == 0)
                not_modified = send->mtime_sec <= since;

        uint64_t start = 0, length = send->size;
        int status = 200;
        const struct http_header *range = NULL;
        if (!not_modified && req->method == HTTP_GET)
                range = http_find_header(req, "Range");
        if (range && if_range_allows(req, send)) {
                int r = parse_range(range->value, send->size, &start, &length);
                if (r < 0) {
                        char extra[64];
                        snprintf(extra, sizeof(extra), "Content-Range: bytes */%llu\r\n",
                                 (unsigned long long) send->size);
                        if (gz)
                                file_entry_release(ctx->cache, gz);
                        file_entry_release(ctx->cache, e);
                        return error_plan(ctx, req, 416, extra, w);
                }
                if (r > 0)
                        status = 206;
        }

        struct app_headers app = ctx->internal ? app_headers_scan(req) : (struct app_headers){0};
        ctx->status = not_modified ? 304 : status;
        write_common_headers(ctx, w, req->minor_version, ctx->status);
        if (!not_modified) {
                if (app.content_type.len)
                        http_write_header(w, "Content-Type", app.content_type);
                else
                        http_write_header_str(w, "Content-Type", e->content_type);
                http_write_header_u64(w, "Content-Length", length);
        }
        http_write_header_str(w, "Last-Modified", send->last_modified);
        http_write_header_str(w, "ETag", send->etag);
        if (!not_modified)
                http_write_header_str(w, "Accept-Ranges", "bytes");
        if (status == 206) {
                char cr[96];
                snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long) start,
                         (unsigned long long) (start + length - 1),
                         (unsigned long long) send->size);
                http_write_header_str(w, "Content-Range", cr);
        }
        if (gz)
                http_write_header_str(w, "Content-Encoding", "gzip");
        if (vary)
                http_write_header_str(w, "Vary", "Accept-Encoding");
        if (!app.caching || ctx->cfg->expires_mode != EXPIRES_OFF)
                write_expires(ctx, w);
        if (ctx->internal)
                app_headers_write(ctx, req, w);
        write_connection(ctx, w, req->minor_version);
        (void) http_write_end(w);

        if (gz)
                file_entry_release(ctx->cache, e);
        if (not_modified || req->method == HTTP_HEAD || length == 0) {
                file_entry_release(ctx->cache, send);
                return ctx->keep_alive ? PLAN_RESPOND : PLAN_RESPOND_CLOSE;
        }
        ret_body->entry = send;
        ret_body->offset = start;
        ret_body->length = length;
        if (send->data) {
                ret_body->kind = BODY_MEMORY;
                ret_body->data = send->data + start;
        } else {
                ret_body->kind = BODY_FILE;
                ret_body->fd = send->fd;
        }
        return ctx->keep_alive ? PLAN_RESPOND : PLAN_RESPOND_CLOSE;
}
