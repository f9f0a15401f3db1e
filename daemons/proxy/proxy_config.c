/* SPDX-License-Identifier: MIT */
/*
 * proxy_config: the tutorial's nginx site as an INI file.
 *
 *   [server]                 a virtual server; the first one is the default
 *   [server NAME]            the same, NAME only labels it in messages
 *   [upstream NAME]          a group of servers to forward to
 *   [location PREFIX]        belongs to the [server] above it; longest wins
 *   [location = /exact]      matches that path only, before any prefix
 *
 * Sections are walked in file order, so which server a location belongs to
 * is simply the last [server] seen. Every problem is reported with the file
 * and line it comes from, and all of them are reported, not just the first.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include "http_parse.h"
#include "log.h"
#include "proxy.h"
#include "proxy_gzip.h"
#include "util.h"
#include "wharf-config.h"

/* Settings as written, before they are checked. */
struct server_settings {
        struct config_strv server_name;
        struct config_strv listen;
        uint64_t client_max_body_size;
        uint64_t client_body_buffer_size;
        const char *client_body_temp_path;
        uint64_t client_header_timeout, client_body_timeout, send_timeout, keepalive_timeout;
        unsigned keepalive_requests;
        bool server_tokens;
        const char *access_log;
        char *log_format; /* its pieces joined, each checked where its line is */
        size_t log_format_slots;
        const char *log_escape;
        const char *error_log;
        const char *log_level;
        unsigned max_connections;
        unsigned workers;
        uint64_t max_header_size;
        uint64_t response_buffer;
        uint64_t splice_min;
        bool gzip;
        const char *gzip_types;
        uint64_t gzip_min_length;
        unsigned gzip_comp_level;
        bool gzip_vary;
        const char *gzip_proxied;
        const char *gzip_http_version;
        struct config_strv gzip_disable;
        struct error_page *error_pages; /* read as their lines come */
        size_t n_error_pages;
        struct realip_rule *rules; /* allow, deny: in the order written */
        size_t n_rules;
        struct realip_rule *real_ip_from;
        size_t n_real_ip_from;
        const char *real_ip_header;
        bool real_ip_recursive;
        const struct config_entry *limit_req[LIMIT_RULES_MAX]; /* resolved when built */
        size_t n_limit_req;
        unsigned limit_req_status;
        const struct config_entry *limit_conn[LIMIT_RULES_MAX]; /* likewise */
        size_t n_limit_conn;
        unsigned limit_conn_status;
        bool limit_req_dry_run, limit_conn_dry_run;
        struct config_strv uwsgi_param; /* for the uwsgi_pass locations without their own */
        struct config_strv uwsgi_hide_header, uwsgi_pass_header; /* likewise */
        struct config_strv proxy_hide_header, proxy_pass_header; /* for proxy_pass ones */
        bool uwsgi_intercept_errors, proxy_intercept_errors;
        struct config_strv proxy_set_header; /* likewise for proxy_pass */
};

#define S(name, type)                                                                              \
        {                                                                                          \
#name, type, offsetof(struct server_settings, name)                                \
        }
static const struct config_key server_keys[] = {
    S(server_name, CONFIG_STRV),
    S(listen, CONFIG_STRV),
    S(client_max_body_size, CONFIG_SIZE),
    S(client_body_buffer_size, CONFIG_SIZE),
    S(client_body_temp_path, CONFIG_STRING),
    S(client_header_timeout, CONFIG_DURATION),
    S(client_body_timeout, CONFIG_DURATION),
    S(send_timeout, CONFIG_DURATION),
    S(keepalive_timeout, CONFIG_DURATION),
    S(keepalive_requests, CONFIG_UINT),
    S(server_tokens, CONFIG_BOOL),
    S(access_log, CONFIG_STRING),
    S(log_escape, CONFIG_STRING),
    S(error_log, CONFIG_STRING),
    S(log_level, CONFIG_STRING),
    S(max_connections, CONFIG_UINT),
    S(workers, CONFIG_UINT),
    S(max_header_size, CONFIG_SIZE),
    S(response_buffer, CONFIG_SIZE),
    S(splice_min, CONFIG_SIZE),
    S(gzip, CONFIG_BOOL),
    S(gzip_types, CONFIG_STRING),
    S(gzip_min_length, CONFIG_SIZE),
    S(gzip_comp_level, CONFIG_UINT),
    S(gzip_vary, CONFIG_BOOL),
    S(gzip_proxied, CONFIG_STRING),
    S(gzip_http_version, CONFIG_STRING),
    S(gzip_disable, CONFIG_STRV),
    S(real_ip_header, CONFIG_STRING),
    S(real_ip_recursive, CONFIG_BOOL),
    S(limit_req_status, CONFIG_UINT),
    S(limit_conn_status, CONFIG_UINT),
    S(limit_req_dry_run, CONFIG_BOOL),
    S(limit_conn_dry_run, CONFIG_BOOL),
    S(uwsgi_param, CONFIG_STRV),
    S(uwsgi_hide_header, CONFIG_STRV),
    S(uwsgi_pass_header, CONFIG_STRV),
    S(proxy_hide_header, CONFIG_STRV),
    S(proxy_pass_header, CONFIG_STRV),
    S(uwsgi_intercept_errors, CONFIG_BOOL),
    S(proxy_intercept_errors, CONFIG_BOOL),
    S(proxy_set_header, CONFIG_STRV),
    {},
};
#undef S

/* Keys that concern the whole process, not one virtual server. */
static bool key_is_global(const char *key)
{
        static const char *const global[] = {
            "listen",          "error_log",       "log_level",  "max_connections",      "workers",
            "max_header_size", "response_buffer", "splice_min", "client_body_temp_path"};
        for (size_t i = 0; i < ARRAY_SIZE(global); i++)
                if (streq(key, global[i]))
                        return true;
        return false;
}

struct upstream_settings {
        struct config_strv server;
        const char *balance;
        unsigned keepalive;
        uint64_t connect_timeout, read_timeout, send_timeout;
};

#define U(name, type)                                                                              \
        {                                                                                          \
#name, type, offsetof(struct upstream_settings, name)                              \
        }
static const struct config_key upstream_keys[] = {
    U(server, CONFIG_STRV),
    U(balance, CONFIG_STRING),
    U(keepalive, CONFIG_UINT),
    U(connect_timeout, CONFIG_DURATION),
    U(read_timeout, CONFIG_DURATION),
    U(send_timeout, CONFIG_DURATION),
    {},
};
#undef U

struct location_settings {
        const char *uwsgi_pass;
        const char *proxy_pass;
        const char *static_;
        const char *return_;
        uint64_t client_max_body_size;
        bool has_body_size;
        struct config_strv add_header;
        bool gzip;
        bool has_gzip;
        struct realip_rule *rules; /* allow, deny: in the order written */
        size_t n_rules;
        const struct config_entry *limit_req[LIMIT_RULES_MAX];
        size_t n_limit_req;
        unsigned limit_req_status;
        bool has_limit_req_status;
        const struct config_entry *limit_conn[LIMIT_RULES_MAX];
        size_t n_limit_conn;
        unsigned limit_conn_status;
        bool has_limit_conn_status;
        bool limit_req_dry_run, has_limit_req_dry_run;
        bool limit_conn_dry_run, has_limit_conn_dry_run;
        bool internal;
        bool x_accel_redirect;
        bool request_buffering;
        struct config_strv uwsgi_param;
        struct config_strv proxy_set_header;
        struct config_strv uwsgi_hide_header, uwsgi_pass_header;
        struct config_strv proxy_hide_header, proxy_pass_header;
        bool uwsgi_intercept_errors, has_uwsgi_intercept_errors;
        bool proxy_intercept_errors, has_proxy_intercept_errors;
};

#define L(name, key, type)                                                                         \
        {                                                                                          \
                key, type, offsetof(struct location_settings, name)                                \
        }
static const struct config_key location_keys[] = {
    L(uwsgi_pass, "uwsgi_pass", CONFIG_STRING),
    L(proxy_pass, "proxy_pass", CONFIG_STRING),
    L(static_, "static", CONFIG_STRING),
    L(return_, "return", CONFIG_STRING),
    L(client_max_body_size, "client_max_body_size", CONFIG_SIZE),
    L(add_header, "add_header", CONFIG_STRV),
    L(gzip, "gzip", CONFIG_BOOL),
    L(limit_req_status, "limit_req_status", CONFIG_UINT),
    L(limit_conn_status, "limit_conn_status", CONFIG_UINT),
    L(limit_req_dry_run, "limit_req_dry_run", CONFIG_BOOL),
    L(limit_conn_dry_run, "limit_conn_dry_run", CONFIG_BOOL),
    L(internal, "internal", CONFIG_BOOL),
    L(x_accel_redirect, "x_accel_redirect", CONFIG_BOOL),
    L(request_buffering, "request_buffering", CONFIG_BOOL),
    L(uwsgi_param, "uwsgi_param", CONFIG_STRV),
    L(uwsgi_hide_header, "uwsgi_hide_header", CONFIG_STRV),
    L(uwsgi_pass_header, "uwsgi_pass_header", CONFIG_STRV),
    L(proxy_hide_header, "proxy_hide_header", CONFIG_STRV),
    L(proxy_pass_header, "proxy_pass_header", CONFIG_STRV),
    L(uwsgi_intercept_errors, "uwsgi_intercept_errors", CONFIG_BOOL),
    L(proxy_intercept_errors, "proxy_intercept_errors", CONFIG_BOOL),
    L(proxy_set_header, "proxy_set_header", CONFIG_STRV),
    {},
};
#undef L

/* What kind of section a name is, and its argument. */
enum section_kind { SEC_NONE, SEC_SERVER, SEC_UPSTREAM, SEC_LOCATION, SEC_BAD };

static enum section_kind section_parse(const char *name, const char **ret_arg)
{
        static const struct {
                const char *word;
                enum section_kind kind;
        } kinds[] = {
            {"server", SEC_SERVER}, {"upstream", SEC_UPSTREAM}, {"location", SEC_LOCATION}};

        *ret_arg = "";
        if (!*name)
                return SEC_NONE;
        for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
                size_t n = strlen(kinds[i].word);
                if (strncmp(name, kinds[i].word, n) != 0)
                        continue;
                if (name[n] == '\0') {
                        *ret_arg = "";
                        return kinds[i].kind;
                }
                if (name[n] == ' ') {
                        *ret_arg = name + n + 1 + strspn(name + n + 1, " ");
                        return kinds[i].kind;
                }
        }
        return SEC_BAD;
}

/* A growable array, for the few lists built here. */
static void *grow(void *v, size_t *n, size_t size)
{
        void *p = realloc(v, (*n + 1) * size);

        if (!p)
                return NULL;
        memset((char *) p + *n * size, 0, size);
        (*n)++;
        return p;
}

static void diag_at(struct config_diag *d, const struct config_file *f,
                    const struct config_entry *e, const char *fmt, const char *arg)
{
        /* About the section as a whole: the line of its first key (inih reports no headers). */
        config_diag_add(d, true, f->path, e ? e->line : 0, NULL, fmt, arg);
}

/* ---- upstream servers ---- */

/* "unix:/path weight=2 max_fails=3 fail_timeout=10s backup" */
static int server_parse(const char *value, struct upstream_server *s, const char **ret_problem)
{
        _cleanup_free_ char *copy = strdup(value);
        char *save = NULL, *tok;
        int r;

        if (!copy)
                return -ENOMEM;
        s->weight = 1;
        s->max_fails = 1;
        s->fail_timeout = 10000;
        tok = strtok_r(copy, " \t", &save);
        if (!tok) {
                *ret_problem = "empty server address";
                return -EINVAL;
        }
        if (strlen(tok) >= sizeof(s->addr)) {
                *ret_problem = "server address too long";
                return -EINVAL;
        }
        strcpy(s->addr, tok);
        r = listen_parse_addr(tok, &s->sa, &s->sa_len);
        if (r < 0) {
                *ret_problem = "not an address (unix:/path, host:port, [v6]:port)";
                return -EINVAL;
        }
        while ((tok = strtok_r(NULL, " \t", &save))) {
                if (streq(tok, "backup")) {
                        s->backup = true;
                } else if (!strncmp(tok, "weight=", 7)) {
                        if (config_parse_uint(tok + 7, &s->weight) < 0 || s->weight == 0 ||
                            s->weight > 1000) {
                                *ret_problem = "weight must be 1..1000";
                                return -EINVAL;
                        }
                } else if (!strncmp(tok, "max_fails=", 10)) {
                        if (config_parse_uint(tok + 10, &s->max_fails) < 0) {
                                *ret_problem = "max_fails is not a number";
                                return -EINVAL;
                        }
                } else if (!strncmp(tok, "fail_timeout=", 13)) {
                        if (config_parse_duration_ms(tok + 13, &s->fail_timeout) < 0) {
                                *ret_problem = "fail_timeout is not a duration";
                                return -EINVAL;
                        }
                } else {
                        *ret_problem = "unknown server parameter (weight=, max_fails=, "
                                       "fail_timeout=, backup)";
                        return -EINVAL;
                }
        }
        return 0;
}

/* ---- building ---- */

struct builder {
        const struct config_file *f;
        struct config_diag *diag;
        struct proxy_config *c;
        struct server_settings global;
        /* per section, while it is being read */
        struct server_settings *server_settings; /* one per vserver */
        struct location_settings *loc_settings;  /* one per location, in order */
        size_t n_loc_settings;
        const struct config_entry **loc_first; /* the entry that opened each location */
        unsigned *loc_server;                  /* which vserver each location is in */
        struct upstream_settings *up_settings;
        const struct config_entry **up_first;
};

static void server_defaults(struct server_settings *s)
{
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);

        *s = (struct server_settings){
            .client_max_body_size = 1024 * 1024,
            .client_body_buffer_size = 16 * 1024,
            .client_body_temp_path = "/var/tmp",
            .client_header_timeout = 60000,
            .client_body_timeout = 60000,
            .send_timeout = 60000,
            .keepalive_timeout = 75000,
            .keepalive_requests = 1000,
            .server_tokens = true,
            .access_log = "off",
            .log_escape = "default",
            .max_connections = 4096,
            .workers = cpus > 0 ? (unsigned) cpus : 1,
            .max_header_size = 16 * 1024,
            .response_buffer = 1024 * 1024,
            .splice_min = 256 * 1024,
            .gzip_types = "text/html",
            .gzip_min_length = 20,
            .gzip_comp_level = 1,
            .gzip_proxied = "off",
            .gzip_http_version = "1.1",
            .real_ip_header = "X-Real-IP",
            .limit_req_status = 503,
            .limit_conn_status = 503,
        };
}

static int add_vserver(struct builder *b)
{
        struct proxy_config *c = b->c;
        size_t n = c->n_servers;
        void *p;

        p = grow(c->servers, &n, sizeof(*c->servers));
        if (!p)
                return -ENOMEM;
        c->servers = p;
        n = c->n_servers;
        p = grow(b->server_settings, &n, sizeof(*b->server_settings));
        if (!p)
                return -ENOMEM;
        b->server_settings = p;
        c->n_servers = n;
        server_defaults(&b->server_settings[n - 1]);
        return 0;
}

/*
 * gzip_types as nginx writes it ("text/css application/json", or "*"),
 * kept lowercase and space-separated with text/html always first.
 */
static int gzip_types_build(const char *list, char **ret)
{
        size_t n = strlen(list);
        char *out = malloc(n + sizeof("text/html ")), *o = out;

        if (!out)
                return -ENOMEM;
        o = stpcpy(o, "text/html");
        for (const char *p = list; *p;) {
                size_t len = strcspn(p, " \t");
                if (len == 0) {
                        p++;
                        continue;
                }
                const char *slash = memchr(p, '/', len);
                bool any = len == 1 && *p == '*';
                if (!any && (!slash || slash == p || slash == p + len - 1)) {
                        free(out);
                        return -EINVAL;
                }
                if (len != 9 || strncasecmp(p, "text/html", 9) != 0) {
                        *o++ = ' ';
                        for (size_t i = 0; i < len; i++)
                                *o++ = (char) tolower((unsigned char) p[i]);
                }
                p += len;
        }
        *o = '\0';
        *ret = out;
        return 0;
}

/*
 * A gzip_ key's value, checked where it is written; config_set() checked its
 * syntax. Returns 0 or -ENOMEM.
 */
static int gzip_value_check(struct builder *b, const struct config_entry *e)
{
        const char *v = e->value, *why = NULL;
        char *types = NULL, disable_why[256];
        unsigned level;
        int r = 0;

        if (streq(e->key, "gzip_comp_level") && config_parse_uint(v, &level) == 0 &&
            (level < 1 || level > 9))
                why = "is not a level from 1 to 9";
        else if (streq(e->key, "gzip_proxied") && !streq(v, "off") && !streq(v, "any"))
                why = "is not off or any (nginx's finer choices are not implemented)";
        else if (streq(e->key, "gzip_http_version") && !streq(v, "1.0") && !streq(v, "1.1"))
                why = "is not 1.0 or 1.1";
        else if (streq(e->key, "gzip_types") && gzip_types_build(v, &types) == -EINVAL)
                why = "is not a list of MIME types (type/subtype) or *";
        free(types);
        if (why)
                config_diag_add(b->diag, true, b->f->path, e->line, e->key, "'%s' %s", v, why);
        if (streq(e->key, "gzip_disable")) {
                struct gzip_conf g = {0};
                r = gzip_disable_add(&g, v, disable_why, sizeof(disable_why));
                gzip_disable_done(&g);
                if (r == -EINVAL)
                        config_diag_add(b->diag, true, b->f->path, e->line, e->key, "%s",
                                        disable_why);
        }
        return r == -ENOMEM ? r : 0;
}

static void log_format_drop(struct log_format **f)
{
        log_format_free(*f);
        free(*f);
        *f = NULL;
}

/*
 * log_format = TEXT with $variables, repeatable: the pieces are joined as
 * written, as nginx joins the strings of its log_format, so that a long
 * format spans lines (inih takes at most 199 bytes a line). A piece in
 * single quotes keeps the spaces at its ends. Each is checked where its
 * line is.
 */
static int log_format_add(struct builder *b, const struct config_entry *e, char **text,
                          size_t *slots)
{
        struct log_format f = {0};
        const char *v = e->value, *bad = NULL;
        size_t len = strlen(v), bad_len = 0;

        if (len >= 2 && v[0] == '\'' && v[len - 1] == '\'') {
                v++;
                len -= 2;
        }
        _cleanup_free_ char *piece = strndup(v, len);
        if (!piece)
                return -ENOMEM;
        int r = log_format_compile(piece, &f, &bad, &bad_len);
        if (r == -ENOMEM)
                return r;
        if (r == 0 && *slots + f.n_slots > LOG_FORMAT_SLOTS)
                r = -E2BIG;
        if (r == 0)
                *slots += f.n_slots;
        log_format_free(&f);
        if (r == -E2BIG) {
                config_diag_add(b->diag, true, b->f->path, e->line, e->key,
                                "more than %d variables of the request head", LOG_FORMAT_SLOTS);
                return 0;
        }
        if (r < 0) {
                config_diag_add(b->diag, true, b->f->path, e->line, e->key,
                                "unknown variable %.*s (docs/wharf-proxy.md lists them)",
                                (int) bad_len, bad);
                return 0;
        }
        size_t have = *text ? strlen(*text) : 0;
        char *joined = realloc(*text, have + len + 1);
        if (!joined)
                return -ENOMEM;
        memcpy(joined + have, piece, len + 1);
        *text = joined;
        return 0;
}

/*
 * error_page = CODE... /path: the codes (300..599) and the file. Returns 0,
 * or -EINVAL with *why set.
 */
#define ERROR_PAGE_CODES 16
#define ERROR_PAGE_MAX (1024 * 1024)
static int error_page_parse(const char *value, int codes[ERROR_PAGE_CODES], size_t *n,
                            const char **path, const char **why)
{
        const char *p = value;

        *n = 0;
        *path = NULL;
        while (*p) {
                size_t len = strcspn(p, " \t");
                if (len == 0) {
                        p++;
                        continue;
                }
                if (*p == '/') {
                        if (p[len] != '\0') {
                                *why = "has words after its file";
                                return -EINVAL;
                        }
                        *path = p;
                        break;
                }
                if (*p == '=') {
                        *why = "changes the status (=CODE), which is not implemented";
                        return -EINVAL;
                }
                if (len != 3 || !isdigit((unsigned char) p[0]) || !isdigit((unsigned char) p[1]) ||
                    !isdigit((unsigned char) p[2]) || *n == ERROR_PAGE_CODES) {
                        *why = "is not 'CODE... /path/to/file' (up to 16 codes)";
                        return -EINVAL;
                }
                int code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
                if (code < 300 || code > 599) {
                        *why = "names a status outside 300..599";
                        return -EINVAL;
                }
                codes[(*n)++] = code;
                p += len;
        }
        if (*n == 0 || !*path) {
                *why = "is not 'CODE... /path/to/file' (the file's absolute path last)";
                return -EINVAL;
        }
        return 0;
}

/* The whole file at path, at most ERROR_PAGE_MAX bytes. 0 or -errno (-EFBIG). */
static int error_page_read(const char *path, char **ret, size_t *ret_len)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        struct stat st;
        char *buf;
        size_t got = 0;

        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        if (st.st_size > ERROR_PAGE_MAX)
                return -EFBIG;
        buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        while (got < (size_t) st.st_size) {
                ssize_t k = read(fd, buf + got, (size_t) st.st_size - got);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0) {
                        int e = k < 0 ? -errno : -EIO;
                        free(buf);
                        return e;
                }
                got += (size_t) k;
        }
        *ret = buf;
        *ret_len = got;
        return 0;
}

static const char *error_page_type(const char *path)
{
        static const struct {
                const char *ext, *type;
        } types[] = {
            {".html", "text/html; charset=utf-8"}, {".htm", "text/html; charset=utf-8"},
            {".txt", "text/plain; charset=utf-8"}, {".json", "application/json"},
            {".xml", "application/xml"},
        };
        const char *dot = strrchr(path, '.');

        for (size_t i = 0; dot && i < ARRAY_SIZE(types); i++)
                if (strcasecmp(dot, types[i].ext) == 0)
                        return types[i].type;
        return "application/octet-stream";
}

/* An error_page line: its file read now, one entry per code, all sharing the bytes. */
static int error_page_add(struct builder *b, const struct config_entry *e,
                          struct error_page **pages, size_t *n_pages)
{
        int codes[ERROR_PAGE_CODES];
        const char *path, *why = NULL;
        size_t n, len = 0;
        char *body = NULL;

        if (error_page_parse(e->value, codes, &n, &path, &why) < 0) {
                config_diag_add(b->diag, true, b->f->path, e->line, e->key, "'%s' %s", e->value,
                                why);
                return 0;
        }
        int r = error_page_read(path, &body, &len);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                config_diag_add(b->diag, true, b->f->path, e->line, e->key, "cannot read '%s': %s",
                                path,
                                r == -EFBIG    ? "larger than 1 MiB"
                                : r == -EINVAL ? "not a regular file"
                                               : strerror(-r));
                return 0;
        }
        struct error_page *p = realloc(*pages, (*n_pages + n) * sizeof(*p));
        if (!p) {
                free(body);
                return -ENOMEM;
        }
        *pages = p;
        for (size_t j = 0; j < n; j++)
                p[(*n_pages)++] = (struct error_page){
                    .status = codes[j],
                    .body = body,
                    .len = len,
                    .owns_body = j == 0,
                    .type = error_page_type(path),
                };
        return 0;
}

static void error_pages_free(struct error_page *pages, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (pages[i].owns_body)
                        free(pages[i].body);
        free(pages);
}

/* An allow, deny or set_real_ip_from line, kept in order with the others of its section. */
static int access_rule_add(struct builder *b, const struct config_entry *e,
                           struct realip_rule **rules, size_t *n)
{
        int r = realip_rules_add(rules, n, e->value, streq(e->key, "allow"));

        if (r == -EINVAL)
                config_diag_add(b->diag, true, b->f->path, e->line, e->key,
                                "'%s' is not all, unix:, an address or address/prefix", e->value);
        return r == -ENOMEM ? r : 0;
}

/* "10m" of zone=NAME:10m, "1r/s" or "30r/m" of rate=. */
static int limit_rate_parse(const char *v, uint64_t *ret)
{
        char *end;
        errno = 0;
        unsigned long long n = strtoull(v, &end, 10);

        if (end == v || errno || n == 0 || n > 1000000 || end[0] != 'r' || end[1] != '/' ||
            (end[2] != 's' && end[2] != 'm') || end[3])
                return -EINVAL;
        *ret = end[2] == 's' ? n * 1000 : n * 1000 / 60;
        return *ret ? 0 : -EINVAL;
}

/*
 * limit_req_zone = $binary_remote_addr zone=NAME:SIZE rate=RATE, or
 * limit_conn_zone = $binary_remote_addr zone=NAME:SIZE, nginx's lines as
 * they are. The key is the client's address ($remote_addr is taken as the
 * same); it is the one set_real_ip_from trusts, when there is one.
 */
static int limit_zone_add(struct builder *b, const struct config_entry *e)
{
        struct proxy_config *c = b->c;
        struct limit_zone z = {0};
        _cleanup_free_ char *copy = strdup(e->value);
        const char *why = NULL;
        bool has_key = false;
        char *save = NULL;

        z.conn = streq(e->key, "limit_conn_zone");
        const char *usage = z.conn ? "is not '$binary_remote_addr zone=NAME:SIZE'"
                                   : "is not '$binary_remote_addr zone=NAME:SIZE rate=RATE'";
        if (!copy)
                return -ENOMEM;
        for (char *t = strtok_r(copy, " \t", &save); t && !why; t = strtok_r(NULL, " \t", &save)) {
                char *colon;
                if (streq(t, "$binary_remote_addr") || streq(t, "$remote_addr"))
                        has_key = true;
                else if (t[0] == '$')
                        why = "keys other than $binary_remote_addr are not implemented";
                else if (!strncmp(t, "zone=", 5) && (colon = strchr(t + 5, ':')) && colon > t + 5) {
                        *colon = '\0';
                        free(z.name);
                        z.name = strdup(t + 5);
                        if (!z.name)
                                return -ENOMEM;
                        if (config_parse_size(colon + 1, &z.size) < 0 ||
                            z.size < 16 * LIMIT_ENTRY_BYTES || z.size > LIMIT_ZONE_MAX)
                                why = "has a zone size that is not a size from 1k to 1g";
                } else if (!strncmp(t, "rate=", 5) && !z.conn) {
                        if (limit_rate_parse(t + 5, &z.rate) < 0)
                                why = "has a rate that is not Nr/s or Nr/m (1 to 1000000)";
                } else {
                        why = usage;
                }
        }
        if (!why && (!has_key || !z.name || (!z.conn && !z.rate)))
                why = usage;
        for (size_t i = 0; !why && i < c->n_zones; i++)
                if (streq(c->zones[i].name, z.name))
                        why = "names a zone that is already defined";
        if (why) {
                config_diag_add(b->diag, true, b->f->path, e->line, e->key, "'%s' %s", e->value,
                                why);
                free(z.name);
                return 0;
        }
        size_t n = c->n_zones;
        struct limit_zone *p = grow(c->zones, &n, sizeof(*c->zones));
        if (!p || limit_table_new(z.size, &z.table) < 0) {
                if (p)
                        c->zones = p;
                free(z.name);
                return -ENOMEM;
        }
        c->zones = p;
        c->zones[c->n_zones++] = z;
        return 0;
}

/*
 * limit_req = zone=NAME [burst=N] [nodelay | delay=N], nginx's line, into
 * *r. The zone may be defined anywhere in the file. False when refused.
 */
static bool limit_req_build(struct builder *b, const struct config_entry *e, struct limit_req *r)
{
        _cleanup_free_ char *copy = strdup(e->value);
        const struct proxy_config *c = b->c;
        const char *why = NULL, *zone = NULL;
        char *save = NULL;
        unsigned n;

        *r = (struct limit_req){0};
        if (!copy)
                why = "cannot be read: out of memory";
        for (char *t = copy ? strtok_r(copy, " \t", &save) : NULL; t && !why;
             t = strtok_r(NULL, " \t", &save)) {
                if (!strncmp(t, "zone=", 5) && t[5])
                        zone = t + 5;
                else if (!strncmp(t, "burst=", 6) && config_parse_uint(t + 6, &n) == 0 &&
                         n <= 1000000)
                        r->burst = (uint64_t) n * 1000;
                else if (!strncmp(t, "delay=", 6) && config_parse_uint(t + 6, &n) == 0 &&
                         n <= 1000000)
                        r->delay = (uint64_t) n * 1000;
                else if (streq(t, "nodelay"))
                        r->delay = UINT64_MAX;
                else
                        why = "is not 'zone=NAME [burst=N] [nodelay | delay=N]'";
        }
        if (!why && !zone)
                why = "names no zone=";
        for (size_t i = 0; !why && i < c->n_zones; i++)
                if (streq(c->zones[i].name, zone) && !c->zones[i].conn)
                        r->zone = &c->zones[i];
        if (!why && !r->zone)
                why = "names a zone no limit_req_zone defines";
        if (why) {
                config_diag_add(b->diag, true, b->f->path, e->line, e->key, "'%s' %s", e->value,
                                why);
                return false;
        }
        return true;
}

/* limit_conn = ZONE N, nginx's line, into *r. False when refused. */
static bool limit_conn_build(struct builder *b, const struct config_entry *e, struct limit_conn *r)
{
        _cleanup_free_ char *copy = strdup(e->value);
        const struct proxy_config *c = b->c;
        const char *why = NULL, *name = NULL, *count = NULL;
        char *save = NULL;
        unsigned max = 0;

        *r = (struct limit_conn){0};
        if (copy) {
                name = strtok_r(copy, " \t", &save);
                count = name ? strtok_r(NULL, " \t", &save) : NULL;
        }
        if (!copy)
                why = "cannot be read: out of memory";
        else if (!count || strtok_r(NULL, " \t", &save) || config_parse_uint(count, &max) < 0 ||
                 max == 0 || max > 65535)
                why = "is not 'ZONE N' (N from 1 to 65535)";
        for (size_t i = 0; !why && i < c->n_zones; i++)
                if (streq(c->zones[i].name, name) && c->zones[i].conn)
                        r->zone = &c->zones[i];
        if (!why && !r->zone)
                why = "names a zone no limit_conn_zone defines";
        if (why) {
                config_diag_add(b->diag, true, b->f->path, e->line, e->key, "'%s' %s", e->value,
                                why);
                return false;
        }
        r->max = max;
        return true;
}

/*
 * uwsgi_param = NAME VALUE [if_not_empty] or proxy_set_header = Name [VALUE],
 * as nginx's: VALUE is a template with the variables a request has before
 * its response. Returns 0, -ENOMEM, or -EINVAL with *why.
 */
static int param_parse(const char *v, bool uwsgi, struct upstream_param *ret, const char **why)
{
        static const char *const ours[] = {"Content-Length", "Transfer-Encoding",
                                           "Connection",     "Upgrade",
                                           "Keep-Alive",     "TE",
                                           "Trailer",        "Expect"};
        size_t n = strcspn(v, " \t");
        const char *value = v + n + strspn(v + n, " \t");
        size_t vlen = strlen(value);
        bool if_not_empty = false;

        *ret = (struct upstream_param){0};
        if (uwsgi) {
                for (size_t i = 0; i < n; i++)
                        if (!isalnum((unsigned char) v[i]) && v[i] != '_')
                                n = 0;
                if (vlen >= 12 && streq(value + vlen - 12, "if_not_empty") &&
                    (vlen == 12 || value[vlen - 13] == ' ' || value[vlen - 13] == '\t')) {
                        if_not_empty = true;
                        vlen -= 12;
                        while (vlen > 0 && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
                                vlen--;
                }
        } else if (!http_is_token(v, n)) {
                n = 0;
        }
        if (n == 0) {
                *why = uwsgi ? "is not 'NAME VALUE' (a NAME of letters, digits and _)"
                             : "is not 'Name VALUE' (a header name)";
                return -EINVAL;
        }
        for (size_t k = 0; !uwsgi && k < ARRAY_SIZE(ours); k++)
                if (n == strlen(ours[k]) && !strncasecmp(v, ours[k], n)) {
                        *why = "names a header wharf-proxy sets itself";
                        return -EINVAL;
                }
        for (const char *p = value; (p = memchr(p, '$', (size_t) (value + vlen - p)));) {
                size_t len;
                int var = proxy_var_parse(++p, &len);
                if (len > 0 && !proxy_var_before_response(var)) {
                        *why = var < 0 ? "names an unknown variable"
                                       : "names a variable that has no value before the response";
                        return -EINVAL;
                }
                p += len;
        }
        for (size_t k = 0; k < vlen; k++)
                if ((unsigned char) value[k] < 0x20 && value[k] != '\t') {
                        *why = "holds a control character";
                        return -EINVAL;
                }
        ret->name = strndup(v, n);
        ret->value = uwsgi || vlen ? strndup(value, vlen) : NULL;
        ret->if_not_empty = if_not_empty;
        if (!ret->name || ((uwsgi || vlen) && !ret->value)) {
                free(ret->name);
                free(ret->value);
                return -ENOMEM;
        }
        return 0;
}

static void upstream_param_done(struct upstream_param *pm)
{
        free(pm->name);
        free(pm->value);
        *pm = (struct upstream_param){0};
}

/*
 * The [server] lines that are not plain settings: each is taken where its
 * line is (a file read, a format compiled, a zone made). Returns 1 when the
 * line was one of them, 0 when it is a plain setting, or -ENOMEM.
 */
static int server_line(struct builder *b, const struct config_entry *e, struct server_settings *ss)
{
        int r;

        if (streq(e->key, "error_page"))
                r = error_page_add(b, e, &ss->error_pages, &ss->n_error_pages);
        else if (streq(e->key, "log_format"))
                r = log_format_add(b, e, &ss->log_format, &ss->log_format_slots);
        else if (streq(e->key, "set_real_ip_from"))
                r = access_rule_add(b, e, &ss->real_ip_from, &ss->n_real_ip_from);
        else if (streq(e->key, "limit_req_zone") || streq(e->key, "limit_conn_zone"))
                r = limit_zone_add(b, e);
        else
                return 0;
        return r < 0 ? r : 1;
}

/*
 * The values config_set() took as strings or numbers but that mean more,
 * checked where their line is (they are built later). Returns 0 or -ENOMEM.
 */
static int value_check(struct builder *b, const struct config_entry *e, bool server)
{
        const char *v = e->value;
        unsigned st;
        enum log_escape esc;

        if ((streq(e->key, "limit_req_status") || streq(e->key, "limit_conn_status")) &&
            config_parse_uint(v, &st) == 0 && (st < 400 || st > 599))
                config_diag_add(b->diag, true, b->f->path, e->line, e->key,
                                "'%s' is not a status from 400 to 599", v);
        size_t klen = strlen(e->key);
        if (klen > 12 &&
            (streq(e->key + klen - 12, "_hide_header") ||
             streq(e->key + klen - 12, "_pass_header")) &&
            !http_is_token(v, strlen(v)))
                config_diag_add(b->diag, true, b->f->path, e->line, e->key,
                                "'%s' is not one header name (one a line)", v);
        if (!server)
                return 0;
        if (strncmp(e->key, "gzip_", 5) == 0 && gzip_value_check(b, e) < 0)
                return -ENOMEM;
        if (streq(e->key, "log_escape") && log_escape_parse(v, &esc) < 0)
                config_diag_add(b->diag, true, b->f->path, e->line, e->key,
                                "'%s' is not default, json or none", v);
        if (streq(e->key, "uwsgi_param") || streq(e->key, "proxy_set_header")) {
                struct upstream_param pm;
                const char *why = NULL;
                int r = param_parse(v, streq(e->key, "uwsgi_param"), &pm, &why);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        config_diag_add(b->diag, true, b->f->path, e->line, e->key, "'%s' %s", v,
                                        why);
                upstream_param_done(&pm);
        }
        return 0;
}

/* Pass one: sort every entry into the section struct it belongs to. */
static int collect(struct builder *b)
{
        const struct config_file *f = b->f;
        struct proxy_config *c = b->c;
        unsigned prev_section = 0;
        bool started = false;
        enum section_kind kind = SEC_NONE;
        void *target = NULL;
        const struct config_key *keys = NULL;
        bool first_server = true;
        char origin[512];
        int r;

        for (size_t i = 0; f && i < f->n_entries; i++) {
                const struct config_entry *e = &f->entries[i];
                const char *arg;
                size_t n;
                void *p;

                if (!started || e->section_no != prev_section) {
                        started = true;
                        prev_section = e->section_no;
                        kind = section_parse(e->section, &arg);
                        switch (kind) {
                        case SEC_NONE:
                                diag_at(b->diag, f, e, "outside of any section%s", "");
                                target = NULL;
                                break;
                        case SEC_BAD:
                                diag_at(b->diag, f, e,
                                        "unknown section [%s] (server, upstream NAME, "
                                        "location PREFIX)",
                                        e->section);
                                target = NULL;
                                break;
                        case SEC_SERVER:
                                first_server = c->n_servers == 0;
                                r = add_vserver(b);
                                if (r < 0)
                                        return r;
                                target = &b->server_settings[c->n_servers - 1];
                                keys = server_keys;
                                break;
                        case SEC_UPSTREAM:
                                if (!*arg) {
                                        diag_at(b->diag, f, e, "[upstream] needs a name%s", "");
                                        target = NULL;
                                        break;
                                }
                                n = c->n_upstreams;
                                p = grow(c->upstreams, &n, sizeof(*c->upstreams));
                                if (!p)
                                        return -ENOMEM;
                                c->upstreams = p;
                                n = c->n_upstreams;
                                p = grow(b->up_settings, &n, sizeof(*b->up_settings));
                                if (!p)
                                        return -ENOMEM;
                                b->up_settings = p;
                                n = c->n_upstreams;
                                p = grow(b->up_first, &n, sizeof(*b->up_first));
                                if (!p)
                                        return -ENOMEM;
                                b->up_first = p;
                                c->n_upstreams = n;
                                c->upstreams[n - 1].name = strdup(arg);
                                if (!c->upstreams[n - 1].name)
                                        return -ENOMEM;
                                b->up_first[n - 1] = e;
                                b->up_settings[n - 1] = (struct upstream_settings){
                                    .balance = "round_robin",
                                    .connect_timeout = 60000,
                                    .read_timeout = 60000,
                                    .send_timeout = 60000,
                                };
                                target = &b->up_settings[n - 1];
                                keys = upstream_keys;
                                for (size_t j = 0; j + 1 < n; j++)
                                        if (streq(c->upstreams[j].name, arg))
                                                diag_at(b->diag, f, e,
                                                        "upstream '%s' is defined twice", arg);
                                break;
                        case SEC_LOCATION:
                                if (c->n_servers == 0) {
                                        r = add_vserver(b);
                                        if (r < 0)
                                                return r;
                                }
                                n = b->n_loc_settings;
                                p = grow(b->loc_settings, &n, sizeof(*b->loc_settings));
                                if (!p)
                                        return -ENOMEM;
                                b->loc_settings = p;
                                n = b->n_loc_settings;
                                p = grow(b->loc_first, &n, sizeof(*b->loc_first));
                                if (!p)
                                        return -ENOMEM;
                                b->loc_first = p;
                                n = b->n_loc_settings;
                                p = grow(b->loc_server, &n, sizeof(*b->loc_server));
                                if (!p)
                                        return -ENOMEM;
                                b->loc_server = p;
                                b->n_loc_settings = n;
                                b->loc_first[n - 1] = e;
                                b->loc_server[n - 1] = (unsigned) c->n_servers - 1;
                                target = &b->loc_settings[n - 1];
                                /* As nginx: X-Accel-Redirect followed, bodies buffered. */
                                b->loc_settings[n - 1].x_accel_redirect = true;
                                b->loc_settings[n - 1].request_buffering = true;
                                keys = location_keys;
                                break;
                        }
                }
                if (!target)
                        continue;

                if (kind == SEC_SERVER) {
                        r = server_line(b, e, target);
                        if (r < 0)
                                return r;
                        if (r > 0)
                                continue;
                }
                if ((kind == SEC_SERVER || kind == SEC_LOCATION) &&
                    (streq(e->key, "limit_req") || streq(e->key, "limit_conn"))) {
                        struct server_settings *ss = target;
                        struct location_settings *ls = target;
                        bool req = streq(e->key, "limit_req");
                        const struct config_entry **v =
                            kind == SEC_SERVER ? (req ? ss->limit_req : ss->limit_conn)
                                               : (req ? ls->limit_req : ls->limit_conn);
                        size_t *count = kind == SEC_SERVER
                                            ? (req ? &ss->n_limit_req : &ss->n_limit_conn)
                                            : (req ? &ls->n_limit_req : &ls->n_limit_conn);
                        if (*count == LIMIT_RULES_MAX)
                                config_diag_add(b->diag, true, f->path, e->line, e->key,
                                                "more than %d in one section", LIMIT_RULES_MAX);
                        else
                                v[(*count)++] = e;
                        continue;
                }
                if ((kind == SEC_SERVER || kind == SEC_LOCATION) &&
                    (streq(e->key, "allow") || streq(e->key, "deny"))) {
                        if (kind == SEC_SERVER) {
                                struct server_settings *ss = target;
                                r = access_rule_add(b, e, &ss->rules, &ss->n_rules);
                        } else {
                                struct location_settings *ls = target;
                                r = access_rule_add(b, e, &ls->rules, &ls->n_rules);
                        }
                        if (r < 0)
                                return r;
                        continue;
                }
                const struct config_key *k = config_key_find(keys, e->key);
                if (!k) {
                        config_diag_add(b->diag, true, f->path, e->line, e->key,
                                        "unknown key in [%s]", e->section);
                        continue;
                }
                if (kind == SEC_SERVER && !first_server && key_is_global(e->key)) {
                        config_diag_add(b->diag, true, f->path, e->line, e->key,
                                        "applies to the whole daemon: set it in the first "
                                        "[server] section");
                        continue;
                }
                snprintf(origin, sizeof(origin), "%s:%u: %s", f->path, e->line, e->key);
                r = config_set(k, e->value, target, origin, b->diag);
                if (r == -ENOMEM)
                        return r;
                if (kind == SEC_LOCATION) {
                        struct location_settings *ls = target;
                        ls->has_body_size |= streq(e->key, "client_max_body_size");
                        ls->has_gzip |= streq(e->key, "gzip");
                        ls->has_limit_req_status |= streq(e->key, "limit_req_status");
                        ls->has_limit_conn_status |= streq(e->key, "limit_conn_status");
                        ls->has_limit_req_dry_run |= streq(e->key, "limit_req_dry_run");
                        ls->has_uwsgi_intercept_errors |= streq(e->key, "uwsgi_intercept_errors");
                        ls->has_proxy_intercept_errors |= streq(e->key, "proxy_intercept_errors");
                        ls->has_limit_conn_dry_run |= streq(e->key, "limit_conn_dry_run");
                }
                r = value_check(b, e, kind == SEC_SERVER);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int build_upstreams(struct builder *b)
{
        struct proxy_config *c = b->c;

        for (size_t i = 0; i < c->n_upstreams; i++) {
                struct upstream *u = &c->upstreams[i];
                struct upstream_settings *s = &b->up_settings[i];
                const struct config_entry *e = b->up_first[i];

                if (s->server.n == 0)
                        diag_at(b->diag, b->f, e, "upstream '%s' has no server", u->name);
                u->servers = calloc(s->server.n ? s->server.n : 1, sizeof(*u->servers));
                if (!u->servers)
                        return -ENOMEM;
                for (size_t j = 0; j < s->server.n; j++) {
                        const char *problem = NULL;
                        int r = server_parse(s->server.v[j], &u->servers[j], &problem);
                        if (r == -ENOMEM)
                                return r;
                        if (r < 0) {
                                config_diag_add(b->diag, true, b->f->path, e->line, "server",
                                                "%s: '%s'", problem, s->server.v[j]);
                                continue;
                        }
                        if (!u->servers[j].backup)
                                u->total_weight += u->servers[j].weight;
                        u->n_servers++;
                }
                if (u->n_servers > 0 && u->total_weight == 0)
                        diag_at(b->diag, b->f, e, "upstream '%s' has only backup servers", u->name);
                if (streq(s->balance, "round_robin"))
                        u->balance = BALANCE_ROUND_ROBIN;
                else if (streq(s->balance, "least_conn"))
                        u->balance = BALANCE_LEAST_CONN;
                else
                        config_diag_add(b->diag, true, b->f->path, e->line, "balance",
                                        "'%s' is not round_robin or least_conn", s->balance);
                u->keepalive = s->keepalive;
                u->connect_timeout = s->connect_timeout;
                u->read_timeout = s->read_timeout;
                u->send_timeout = s->send_timeout;
        }
        return 0;
}

static struct upstream *upstream_find(struct proxy_config *c, const char *name)
{
        for (size_t i = 0; i < c->n_upstreams; i++)
                if (streq(c->upstreams[i].name, name))
                        return &c->upstreams[i];
        return NULL;
}

int proxy_var_parse(const char *s, size_t *len)
{
        static const char *const names[] = {
            [PV_HOST] = "host",
            [PV_HTTP_HOST] = "http_host",
            [PV_REQUEST_URI] = "request_uri",
            [PV_URI] = "uri",
            [PV_ARGS] = "args",
            [PV_SCHEME] = "scheme",
            [PV_SERVER_NAME] = "server_name",
            [PV_SERVER_PORT] = "server_port",
            [PV_REMOTE_ADDR] = "remote_addr",
            [PV_REQUEST_METHOD] = "request_method",
            [PV_REQUEST] = "request",
            [PV_SERVER_PROTOCOL] = "server_protocol",
            [PV_REMOTE_PORT] = "remote_port",
            [PV_REMOTE_USER] = "remote_user",
            [PV_STATUS] = "status",
            [PV_BODY_BYTES_SENT] = "body_bytes_sent",
            [PV_REQUEST_TIME] = "request_time",
            [PV_UPSTREAM_ADDR] = "upstream_addr",
            [PV_UPSTREAM_RESPONSE_TIME] = "upstream_response_time",
            [PV_TIME_LOCAL] = "time_local",
            [PV_TIME_ISO8601] = "time_iso8601",
            [PV_MSEC] = "msec",
            [PV_REQUEST_ID] = "request_id",
            [PV_CONNECTION_REQUESTS] = "connection_requests",
            [PV_PID] = "pid",
            [PV_LIMIT_REQ_STATUS] = "limit_req_status",
            [PV_LIMIT_CONN_STATUS] = "limit_conn_status",
        };
        bool braced = *s == '{';
        const char *name = s + braced;
        size_t n = 0;

        while (isalnum((unsigned char) name[n]) || name[n] == '_')
                n++;
        if (braced && name[n] != '}')
                n = 0; /* "${" without a closed name: plain text */
        *len = n == 0 ? 0 : n + 2 * braced;
        if (n == 0)
                return -1;
        if (n == 12 && !strncmp(name, "query_string", 12))
                return PV_ARGS;
        for (size_t i = 0; i < ARRAY_SIZE(names); i++)
                if (names[i] && strlen(names[i]) == n && !strncmp(name, names[i], n))
                        return (int) i;
        if (n > 5 && !strncmp(name, "http_", 5))
                return PV_HTTP_HEADER;
        return -1;
}

bool proxy_var_before_response(int var)
{
        switch (var) {
        case PV_STATUS:
        case PV_BODY_BYTES_SENT:
        case PV_REQUEST_TIME:
        case PV_UPSTREAM_ADDR:
        case PV_UPSTREAM_RESPONSE_TIME:
                return false;
        default:
                return var >= 0;
        }
}

bool proxy_var_in_head(int var)
{
        switch (var) {
        case PV_HOST:
        case PV_HTTP_HOST:
        case PV_REQUEST_URI:
        case PV_URI:
        case PV_ARGS:
        case PV_REQUEST_METHOD:
        case PV_HTTP_HEADER:
                return true;
        default:
                return false;
        }
}

/* "301 https://example.com/" or "404" or "200 text", with $variables. */
static int return_parse(const char *v, struct location *l, const char **ret_unknown)
{
        char *end;
        unsigned long st = strtoul(v, &end, 10);

        if (end == v || st < 200 || st > 599 || (*end && *end != ' '))
                return -EINVAL;
        l->return_status = (int) st;
        end += strspn(end, " ");
        if ((st == 301 || st == 302 || st == 303 || st == 307 || st == 308) && !*end)
                return -EINVAL; /* a redirect needs a target */
        for (const char *p = strchr(end, '$'); p; p = strchr(p, '$')) {
                size_t n;
                int var = proxy_var_parse(++p, &n);
                if ((var < 0 || var >= _PV_RETURN_MAX) && n > 0) {
                        *ret_unknown = p - 1;
                        return -ENOENT;
                }
                p += n;
        }
        l->return_target = strdup(end);
        return l->return_target ? 0 : -ENOMEM;
}

/* add_header = Name: value, checked so that it cannot break the response head. */

static int add_header_append(struct location *l, const char *v)
{
        const char *colon = strchr(v, ':');
        size_t n = strlen(v);
        char *p;

        if (!colon || !http_is_token(v, (size_t) (colon - v)))
                return -EINVAL;
        for (const char *q = colon + 1; *q; q++)
                if ((unsigned char) *q < 0x20 && *q != '\t')
                        return -EINVAL;
        p = realloc(l->add_headers, l->add_headers_len + n + 3);
        if (!p)
                return -ENOMEM;
        l->add_headers = p;
        memcpy(p + l->add_headers_len, v, n);
        memcpy(p + l->add_headers_len + n, "\r\n", 3);
        l->add_headers_len += n + 2;
        return 0;
}

/* The line of key in the section that starts at first (first's line if it is not there). */
static unsigned key_line(const struct builder *b, const struct config_entry *first, const char *key)
{
        const struct config_entry *end = b->f->entries + b->f->n_entries;

        for (const struct config_entry *e = first; e < end && e->section_no == first->section_no;
             e++)
                if (streq(e->key, key))
                        return e->line;
        return first->line;
}

/*
 * The location's uwsgi_param or proxy_set_header lines, for the protocol it
 * speaks; without its own, its server's, as nginx inherits them. The
 * server's were checked where their lines are.
 */
static int params_build(struct builder *b, const struct location_settings *s,
                        const struct server_settings *ss, const struct config_entry *e,
                        struct location *l)
{
        bool uwsgi = l->kind == LOC_UWSGI;
        const struct config_strv *lines = NULL;
        const char *key = uwsgi ? "uwsgi_param" : "proxy_set_header";

        if (s->uwsgi_param.n && !uwsgi)
                config_diag_add(b->diag, true, b->f->path, key_line(b, e, "uwsgi_param"),
                                "uwsgi_param", "needs uwsgi_pass here");
        if (s->proxy_set_header.n && l->kind != LOC_HTTP)
                config_diag_add(b->diag, true, b->f->path, key_line(b, e, "proxy_set_header"),
                                "proxy_set_header", "needs proxy_pass here");
        if (uwsgi)
                lines = s->uwsgi_param.n ? &s->uwsgi_param : &ss->uwsgi_param;
        else if (l->kind == LOC_HTTP)
                lines = s->proxy_set_header.n ? &s->proxy_set_header : &ss->proxy_set_header;
        if (!lines || lines->n == 0)
                return 0;
        l->params = calloc(lines->n, sizeof(*l->params));
        if (!l->params)
                return -ENOMEM;
        for (size_t j = 0; j < lines->n; j++) {
                const char *why = NULL;
                int r = param_parse(lines->v[j], uwsgi, &l->params[l->n_params], &why);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        config_diag_add(b->diag, true, b->f->path, e->line, key, "'%s' %s",
                                        lines->v[j], why);
                else
                        l->n_params++;
        }
        return 0;
}

bool name_list_has(const struct name_list *l, const char *name, size_t len)
{
        const char *p = l->names;

        for (size_t i = 0; i < l->n; i++, p += strlen(p) + 1)
                if (strlen(p) == len && strncasecmp(p, name, len) == 0)
                        return true;
        return false;
}

/*
 * nginx's uwsgi_hide_header / proxy_hide_header (what gives the suffix),
 * or _pass_header: a header name a line, for the protocol the location
 * speaks; without lines of its own, its server's. Into *ret.
 */
static int names_build(struct builder *b, const struct config_entry *e, const struct location *l,
                       const char *suffix, const struct config_strv *uwsgi_own,
                       const struct config_strv *http_own, const struct config_strv *uwsgi_server,
                       const struct config_strv *http_server, struct name_list *ret)
{
        bool uwsgi = l->kind == LOC_UWSGI;
        const struct config_strv *lines = NULL;
        char key[32];
        size_t size = 0;

        if (uwsgi_own->n && !uwsgi) {
                snprintf(key, sizeof(key), "uwsgi_%s", suffix);
                config_diag_add(b->diag, true, b->f->path, key_line(b, e, key), key,
                                "needs uwsgi_pass here");
        }
        if (http_own->n && l->kind != LOC_HTTP) {
                snprintf(key, sizeof(key), "proxy_%s", suffix);
                config_diag_add(b->diag, true, b->f->path, key_line(b, e, key), key,
                                "needs proxy_pass here");
        }
        if (uwsgi)
                lines = uwsgi_own->n ? uwsgi_own : uwsgi_server;
        else if (l->kind == LOC_HTTP)
                lines = http_own->n ? http_own : http_server;
        if (!lines || lines->n == 0)
                return 0;
        for (size_t j = 0; j < lines->n; j++)
                size += strlen(lines->v[j]) + 1;
        ret->names = malloc(size);
        if (!ret->names)
                return -ENOMEM;
        char *p = ret->names;
        for (size_t j = 0; j < lines->n; j++) {
                const char *v = lines->v[j];
                if (!http_is_token(v, strlen(v)))
                        continue; /* reported at its line, by value_check() */
                p = stpcpy(p, v) + 1;
                ret->n++;
        }
        return 0;
}

static int build_location(struct builder *b, size_t i, struct location *l)
{
        const struct location_settings *s = &b->loc_settings[i];
        const struct config_entry *e = b->loc_first[i];
        const struct vserver *vs = &b->c->servers[b->loc_server[i]];
        const char *arg;
        unsigned n_actions = !!s->uwsgi_pass + !!s->proxy_pass + !!s->static_ + !!s->return_;
        int r;

        (void) section_parse(e->section, &arg);
        if (arg[0] == '=' && arg[1] == ' ') {
                l->exact = true;
                arg += 2 + strspn(arg + 2, " ");
        }
        if (arg[0] != '/') {
                diag_at(b->diag, b->f, e, "a location is a path starting with '/': [%s]",
                        e->section);
                return 0;
        }
        l->prefix = strdup(arg);
        if (!l->prefix)
                return -ENOMEM;
        l->prefix_len = strlen(arg);
        l->client_max_body_size =
            s->has_body_size ? s->client_max_body_size : vs->client_max_body_size;
        l->gzip = s->has_gzip ? s->gzip : vs->gzip.on;
        l->internal = s->internal;
        l->x_accel = s->x_accel_redirect;
        l->request_buffering = s->request_buffering;
        {
                /* A location without allow/deny of its own has its server's, as in nginx. */
                const struct server_settings *ss = &b->server_settings[b->loc_server[i]];
                const struct realip_rule *rules = s->n_rules ? s->rules : ss->rules;
                size_t n = s->n_rules ? s->n_rules : ss->n_rules;
                if (n) {
                        l->rules = malloc(n * sizeof(*l->rules));
                        if (!l->rules)
                                return -ENOMEM;
                        memcpy(l->rules, rules, n * sizeof(*l->rules));
                        l->n_rules = n;
                }
                /* limit_req likewise: the location's own lines, else its server's. */
                const struct config_entry *const *lim =
                    s->n_limit_req ? s->limit_req : ss->limit_req;
                size_t n_lim = s->n_limit_req ? s->n_limit_req : ss->n_limit_req;
                for (size_t j = 0; j < n_lim; j++)
                        if (limit_req_build(b, lim[j], &l->limits[l->n_limits]))
                                l->n_limits++;
                l->limit_status =
                    (int) (s->has_limit_req_status ? s->limit_req_status : ss->limit_req_status);
                lim = s->n_limit_conn ? s->limit_conn : ss->limit_conn;
                n_lim = s->n_limit_conn ? s->n_limit_conn : ss->n_limit_conn;
                for (size_t j = 0; j < n_lim; j++)
                        if (limit_conn_build(b, lim[j], &l->conn_limits[l->n_conn_limits]))
                                l->n_conn_limits++;
                l->conn_limit_status =
                    (int) (s->has_limit_conn_status ? s->limit_conn_status : ss->limit_conn_status);
                l->limit_dry_run =
                    s->has_limit_req_dry_run ? s->limit_req_dry_run : ss->limit_req_dry_run;
                l->conn_limit_dry_run =
                    s->has_limit_conn_dry_run ? s->limit_conn_dry_run : ss->limit_conn_dry_run;
        }

        if (n_actions != 1) {
                diag_at(b->diag, b->f, e,
                        n_actions ? "[%s] has more than one of uwsgi_pass, proxy_pass, static, "
                                    "return"
                                  : "[%s] needs one of uwsgi_pass, proxy_pass, static, return",
                        e->section);
                return 0;
        }
        if (s->uwsgi_pass || s->proxy_pass) {
                const char *name = s->uwsgi_pass ? s->uwsgi_pass : s->proxy_pass;
                l->kind = s->uwsgi_pass ? LOC_UWSGI : LOC_HTTP;
                l->upstream = upstream_find(b->c, name);
                if (!l->upstream)
                        config_diag_add(b->diag, true, b->f->path, e->line,
                                        s->uwsgi_pass ? "uwsgi_pass" : "proxy_pass",
                                        "no [upstream %s]", name);
        } else if (s->static_) {
                l->kind = LOC_STATIC;
                if (s->static_[0] != '/') {
                        config_diag_add(b->diag, true, b->f->path, e->line, "static",
                                        "'%s' is not the absolute path of wharf-static's "
                                        "handoff socket",
                                        s->static_);
                        return 0;
                }
                if (strlen(s->static_) >= sizeof(((struct sockaddr_un *) 0)->sun_path)) {
                        config_diag_add(b->diag, true, b->f->path, e->line, "static",
                                        "socket path too long%s", "");
                        return 0;
                }
                l->static_path = strdup(s->static_);
                if (!l->static_path)
                        return -ENOMEM;
        } else {
                const char *unknown = NULL;
                l->kind = LOC_RETURN;
                r = return_parse(s->return_, l, &unknown);
                if (r == -ENOMEM)
                        return r;
                if (r == -ENOENT) {
                        size_t n;
                        (void) proxy_var_parse(unknown + 1, &n);
                        config_diag_add(b->diag, true, b->f->path, e->line, "return",
                                        "unknown variable %.*s (known: $host $http_host "
                                        "$request_uri $uri $args $query_string $scheme "
                                        "$server_name $server_port $remote_addr)",
                                        (int) n + 1, unknown);
                } else if (r < 0) {
                        config_diag_add(b->diag, true, b->f->path, e->line, "return",
                                        "'%s' is not 'STATUS [URL or text]' (200..599; a "
                                        "redirect needs its URL)",
                                        s->return_);
                }
        }
        for (size_t j = 0; j < s->add_header.n; j++) {
                r = add_header_append(l, s->add_header.v[j]);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        config_diag_add(b->diag, true, b->f->path, e->line, "add_header",
                                        "'%s' is not 'Name: value'", s->add_header.v[j]);
        }
        const struct server_settings *ss = &b->server_settings[b->loc_server[i]];
        r = params_build(b, s, ss, e, l);
        if (r < 0)
                return r;
        /* uwsgi_ or proxy_intercept_errors, for the protocol the location speaks. */
        if (s->has_uwsgi_intercept_errors && l->kind != LOC_UWSGI)
                config_diag_add(b->diag, true, b->f->path, key_line(b, e, "uwsgi_intercept_errors"),
                                "uwsgi_intercept_errors", "needs uwsgi_pass here");
        if (s->has_proxy_intercept_errors && l->kind != LOC_HTTP)
                config_diag_add(b->diag, true, b->f->path, key_line(b, e, "proxy_intercept_errors"),
                                "proxy_intercept_errors", "needs proxy_pass here");
        if (l->kind == LOC_UWSGI)
                l->intercept_errors = s->has_uwsgi_intercept_errors ? s->uwsgi_intercept_errors
                                                                    : ss->uwsgi_intercept_errors;
        else if (l->kind == LOC_HTTP)
                l->intercept_errors = s->has_proxy_intercept_errors ? s->proxy_intercept_errors
                                                                    : ss->proxy_intercept_errors;
        r = names_build(b, e, l, "hide_header", &s->uwsgi_hide_header, &s->proxy_hide_header,
                        &ss->uwsgi_hide_header, &ss->proxy_hide_header, &l->hide_headers);
        if (r < 0)
                return r;
        return names_build(b, e, l, "pass_header", &s->uwsgi_pass_header, &s->proxy_pass_header,
                           &ss->uwsgi_pass_header, &ss->proxy_pass_header, &l->pass_headers);
}

const struct error_page *proxy_error_page(const struct vserver *vs, int status)
{
        /* The last line for a status wins, as a later error_page does in nginx. */
        for (size_t i = vs ? vs->n_error_pages : 0; i-- > 0;)
                if (vs->error_pages[i].status == status)
                        return &vs->error_pages[i];
        return NULL;
}

static int build_gzip(const struct server_settings *s, struct gzip_conf *g)
{
        g->on = s->gzip;
        g->min_length = s->gzip_min_length;
        g->level = (int) s->gzip_comp_level;
        g->vary = s->gzip_vary;
        g->proxied = streq(s->gzip_proxied, "any");
        g->min_minor = streq(s->gzip_http_version, "1.0") ? 0 : 1;
        int r = gzip_types_build(s->gzip_types, &g->types);
        if (r == -ENOMEM)
                return r; /* a bad list was reported by gzip_value_check(), as below */
        for (size_t i = 0; i < s->gzip_disable.n; i++) {
                char why[256];
                r = gzip_disable_add(g, s->gzip_disable.v[i], why, sizeof(why));
                if (r == -ENOMEM)
                        return r;
        }
        return 0;
}

static int build_servers(struct builder *b)
{
        struct proxy_config *c = b->c;
        char origin[64];

        for (size_t i = 0; i < c->n_servers; i++) {
                struct vserver *vs = &c->servers[i];
                struct server_settings *s = &b->server_settings[i];

                /* server_name = a b c: names are separated by spaces, as in nginx. */
                for (size_t j = 0; j < s->server_name.n; j++) {
                        _cleanup_free_ char *copy = strdup(s->server_name.v[j]);
                        char *save = NULL;
                        if (!copy)
                                return -ENOMEM;
                        for (char *t = strtok_r(copy, " \t", &save); t;
                             t = strtok_r(NULL, " \t", &save)) {
                                char *name = strdup(t);
                                const char **v =
                                    name ? realloc(vs->names.v, (vs->names.n + 1) * sizeof(*v))
                                         : NULL;
                                if (!v) {
                                        free(name);
                                        return -ENOMEM;
                                }
                                v[vs->names.n++] = name;
                                vs->names.v = v;
                        }
                }
                vs->client_max_body_size = s->client_max_body_size;
                vs->client_body_buffer_size = s->client_body_buffer_size;
                vs->client_header_timeout = s->client_header_timeout;
                vs->client_body_timeout = s->client_body_timeout;
                vs->send_timeout = s->send_timeout;
                vs->keepalive_timeout = s->keepalive_timeout;
                vs->keepalive_requests = s->keepalive_requests;
                vs->server_tokens = s->server_tokens;
                vs->access_log = strdup(s->access_log);
                if (!vs->access_log)
                        return -ENOMEM;
                if (s->log_format) {
                        const char *bad;
                        size_t bad_len;
                        vs->log_format = calloc(1, sizeof(*vs->log_format));
                        if (!vs->log_format ||
                            log_format_compile(s->log_format, vs->log_format, &bad, &bad_len) < 0)
                                return -ENOMEM; /* each piece compiled alone already */
                        (void) log_escape_parse(s->log_escape, &vs->log_format->escape);
                }
                snprintf(origin, sizeof(origin), "[server] %zu", i + 1);
                if (!streq(s->access_log, "off") && !streq(s->access_log, "journal") &&
                    !streq(s->access_log, "stderr") && strncmp(s->access_log, "file:", 5) != 0)
                        config_diag_add(b->diag, true, origin, 0, "access_log",
                                        "'%s' is not off, journal, stderr or file:/path",
                                        s->access_log);
                int r = build_gzip(s, &vs->gzip);
                if (r < 0)
                        return r;
                vs->error_pages = TAKE_PTR(s->error_pages);
                vs->n_error_pages = s->n_error_pages;
                s->n_error_pages = 0;
                vs->real_ip.from = TAKE_PTR(s->real_ip_from);
                vs->real_ip.n_from = s->n_real_ip_from;
                vs->real_ip.recursive = s->real_ip_recursive;
                r = realip_conf_set_header(&vs->real_ip, s->real_ip_header);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        config_diag_add(b->diag, true, origin, 0, "real_ip_header",
                                        "'%s' is not a header name (the PROXY protocol is not "
                                        "implemented)",
                                        s->real_ip_header);
        }
        for (size_t i = 0; i < b->n_loc_settings; i++) {
                struct vserver *vs = &c->servers[b->loc_server[i]];
                struct location *p = realloc(vs->locations, (vs->n_locations + 1) * sizeof(*p));
                if (!p)
                        return -ENOMEM;
                vs->locations = p;
                memset(&p[vs->n_locations], 0, sizeof(*p));
                int r = build_location(b, i, &p[vs->n_locations]);
                vs->n_locations++;
                if (r < 0)
                        return r;
                for (size_t j = 0; j + 1 < vs->n_locations; j++)
                        if (p[j].prefix && p[vs->n_locations - 1].prefix &&
                            p[j].exact == p[vs->n_locations - 1].exact &&
                            streq(p[j].prefix, p[vs->n_locations - 1].prefix))
                                diag_at(b->diag, b->f, b->loc_first[i],
                                        "location '%s' is defined twice in this server",
                                        p[j].prefix);
        }
        return 0;
}

static int build_global(struct builder *b)
{
        struct proxy_config *c = b->c;
        const struct server_settings *g = c->n_servers ? &b->server_settings[0] : &b->global;
        static const char *const levels[] = {[LOG_ERR] = "error",
                                             [LOG_WARNING] = "warning",
                                             [LOG_NOTICE] = "notice",
                                             [LOG_INFO] = "info",
                                             [LOG_DEBUG] = "debug"};

        c->workers = g->workers ? g->workers : 1;
        c->max_connections = g->max_connections ? g->max_connections : 1;
        c->max_header_size = g->max_header_size;
        if (c->max_header_size < 1024 || c->max_header_size > 1024 * 1024)
                config_diag_add(b->diag, true, b->f ? b->f->path : "--max-header-size", 0,
                                "max_header_size", "must be between 1k and 1M%s", "");
        c->response_buffer = g->response_buffer < 64 * 1024 ? 64 * 1024 : g->response_buffer;
        c->client_body_temp_path = strdup(g->client_body_temp_path);
        if (!c->client_body_temp_path)
                return -ENOMEM;
        /* Where request bodies are buffered must take a temporary file now, not at the first
         * upload. */
        int fd = open(g->client_body_temp_path, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0)
                config_diag_add(b->diag, true, b->f ? b->f->path : "--client-body-temp-path", 0,
                                "client_body_temp_path", "cannot make a temporary file in '%s': %s",
                                g->client_body_temp_path, strerror(errno));
        else
                (void) close(fd);
        c->splice_min = g->splice_min;
        c->log_level = LOG_INFO;
        if (g->log_level) {
                c->log_level = -1;
                for (size_t i = 0; i < ARRAY_SIZE(levels); i++)
                        if (levels[i] && streq(levels[i], g->log_level))
                                c->log_level = (int) i;
                if (c->log_level < 0) {
                        c->log_level = LOG_INFO;
                        config_diag_add(b->diag, true, b->f ? b->f->path : "--log-level", 0,
                                        "log_level",
                                        "'%s' is not debug, info, notice, warning "
                                        "or error",
                                        g->log_level);
                }
        }
        if (g->error_log) {
                c->error_log = strdup(g->error_log);
                if (!c->error_log)
                        return -ENOMEM;
        }
        c->listen = g->listen;
        if (c->n_servers)
                b->server_settings[0].listen = (struct config_strv){0};
        else
                b->global.listen = (struct config_strv){0};
        snprintf(c->server_header, sizeof(c->server_header), "%s",
                 c->n_servers == 0 || c->servers[0].server_tokens ? "wharf/" WHARF_VERSION
                                                                  : "wharf");
        return 0;
}

static void builder_done(struct builder *b)
{
        for (size_t i = 0; i < b->c->n_servers && b->server_settings; i++) {
                config_strv_done(&b->server_settings[i].server_name);
                config_strv_done(&b->server_settings[i].listen);
                error_pages_free(b->server_settings[i].error_pages,
                                 b->server_settings[i].n_error_pages);
                free(b->server_settings[i].rules);
                free(b->server_settings[i].real_ip_from);
                free(b->server_settings[i].log_format);
                config_strv_done(&b->server_settings[i].uwsgi_param);
                config_strv_done(&b->server_settings[i].uwsgi_hide_header);
                config_strv_done(&b->server_settings[i].uwsgi_pass_header);
                config_strv_done(&b->server_settings[i].proxy_hide_header);
                config_strv_done(&b->server_settings[i].proxy_pass_header);
                config_strv_done(&b->server_settings[i].proxy_set_header);
                config_strv_done(&b->server_settings[i].gzip_disable);
        }
        config_strv_done(&b->global.listen);
        config_strv_done(&b->global.server_name);
        config_strv_done(&b->global.gzip_disable);
        free(b->server_settings);
        for (size_t i = 0; i < b->n_loc_settings; i++) {
                config_strv_done(&b->loc_settings[i].add_header);
                config_strv_done(&b->loc_settings[i].uwsgi_param);
                config_strv_done(&b->loc_settings[i].uwsgi_hide_header);
                config_strv_done(&b->loc_settings[i].uwsgi_pass_header);
                config_strv_done(&b->loc_settings[i].proxy_hide_header);
                config_strv_done(&b->loc_settings[i].proxy_pass_header);
                config_strv_done(&b->loc_settings[i].proxy_set_header);
                free(b->loc_settings[i].rules);
        }
        free(b->loc_settings);
        free(b->loc_first);
        free(b->loc_server);
        for (size_t i = 0; i < b->c->n_upstreams && b->up_settings; i++)
                config_strv_done(&b->up_settings[i].server);
        free(b->up_settings);
        free(b->up_first);
}

/* Command-line overrides go to the first (default) server. */
static int apply_overrides(struct builder *b, const char *const *keys, const char *const *values,
                           size_t n)
{
        char origin[64];
        int r;

        if (n > 0 && b->c->n_servers == 0) {
                r = add_vserver(b);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < n; i++) {
                const struct config_key *k = config_key_find(server_keys, keys[i]);
                snprintf(origin, sizeof(origin), "--%s", keys[i]);
                for (char *p = origin; *p; p++)
                        if (*p == '_')
                                *p = '-';
                if (!k) {
                        config_diag_add(b->diag, true, origin, 0, NULL, "unknown option%s", "");
                        continue;
                }
                r = config_set(k, values[i], &b->server_settings[0], origin, b->diag);
                if (r == -ENOMEM)
                        return r;
        }
        return 0;
}

/* Builds a config from a loaded file (owned from here on, may be NULL) and overrides. */
static int build(struct config_file *file, const char *const *keys, const char *const *values,
                 size_t n, struct config_diag *diag, struct proxy_config **ret)
{
        struct proxy_config *c = calloc(1, sizeof(*c));
        struct builder b = {.diag = diag, .c = c, .f = file};
        int r;

        if (!c) {
                config_file_free(file);
                return -ENOMEM;
        }
        c->file = file;
        server_defaults(&b.global);
        r = collect(&b);
        if (r >= 0)
                r = apply_overrides(&b, keys, values, n);
        if (r >= 0)
                r = build_upstreams(&b);
        if (r >= 0)
                r = build_servers(&b);
        if (r >= 0)
                r = build_global(&b);
        if (r >= 0 && c->n_servers == 0)
                r = add_vserver(&b) < 0 ? -ENOMEM : build_servers(&b);
        if (r >= 0) {
                size_t routes = 0;
                for (size_t i = 0; i < c->n_servers; i++)
                        routes += c->servers[i].n_locations;
                if (routes == 0)
                        config_diag_add(diag, false, file ? file->path : "wharf-proxy", 0, NULL,
                                        "no [location] sections: every request gets 404");
        }
        builder_done(&b);
        if (r < 0 || diag->errors) {
                proxy_config_free(c);
                return r < 0 ? r : -EINVAL;
        }
        *ret = c;
        return 0;
}

int proxy_config_load(const char *path, const char *const *keys, const char *const *values,
                      size_t n, struct config_diag *diag, struct proxy_config **ret)
{
        struct config_file *file = NULL;
        int r;

        if (path) {
                r = config_load(path, &file, diag);
                if (r < 0)
                        return r;
        }
        return build(file, keys, values, n, diag, ret);
}

int proxy_config_from_text(const char *name, const char *text, size_t len, struct config_diag *diag,
                           struct proxy_config **ret)
{
        struct config_file *file = NULL;
        int r = config_load_string(name, text, len, &file, diag);

        if (r < 0)
                return r;
        return build(file, NULL, NULL, 0, diag, ret);
}

void proxy_config_adopt(struct proxy_config *c, const struct proxy_config *old)
{
        for (size_t i = 0; i < c->n_zones; i++)
                for (size_t j = 0; j < old->n_zones; j++) {
                        struct limit_zone *z = &c->zones[i];
                        const struct limit_zone *o = &old->zones[j];
                        if (!streq(z->name, o->name) || z->size != o->size || z->conn != o->conn)
                                continue;
                        limit_table_unref(z->table);
                        z->table = limit_table_ref(o->table);
                }
}

struct proxy_config *proxy_config_free(struct proxy_config *c)
{
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_servers; i++) {
                struct vserver *vs = &c->servers[i];
                for (size_t j = 0; j < vs->n_locations; j++) {
                        free(vs->locations[j].prefix);
                        free(vs->locations[j].static_path);
                        free(vs->locations[j].return_target);
                        free(vs->locations[j].add_headers);
                        free(vs->locations[j].rules);
                        for (size_t k = 0; k < vs->locations[j].n_params; k++)
                                upstream_param_done(&vs->locations[j].params[k]);
                        free(vs->locations[j].params);
                        free(vs->locations[j].hide_headers.names);
                        free(vs->locations[j].pass_headers.names);
                }
                free(vs->locations);
                for (size_t j = 0; j < vs->names.n; j++)
                        free((char *) vs->names.v[j]);
                config_strv_done(&vs->names);
                free(vs->access_log);
                log_format_drop(&vs->log_format);
                free(vs->gzip.types);
                gzip_disable_done(&vs->gzip);
                error_pages_free(vs->error_pages, vs->n_error_pages);
                realip_conf_done(&vs->real_ip);
        }
        free(c->servers);
        for (size_t i = 0; i < c->n_upstreams; i++) {
                free(c->upstreams[i].name);
                free(c->upstreams[i].servers);
        }
        free(c->upstreams);
        for (size_t i = 0; i < c->n_zones; i++) {
                free(c->zones[i].name);
                limit_table_unref(c->zones[i].table);
        }
        free(c->zones);
        free(c->client_body_temp_path);
        config_strv_done(&c->listen);
        free(c->error_log);
        config_file_free(c->file);
        free(c);
        return NULL;
}

size_t proxy_host_name_len(const char *host, size_t len)
{
        /* The port, if any, is not part of the name; a v6 literal keeps its brackets. */
        const char *colon = len ? memrchr(host, ':', len) : NULL;

        if (colon && !memchr(colon, ']', (size_t) (host + len - colon)))
                return (size_t) (colon - host);
        return len;
}

const struct vserver *proxy_find_server(const struct proxy_config *c, const char *host, size_t len)
{
        len = proxy_host_name_len(host, len);

        for (size_t i = 0; i < c->n_servers; i++) {
                const struct vserver *vs = &c->servers[i];
                for (size_t j = 0; j < vs->names.n; j++) {
                        const char *name = vs->names.v[j];
                        size_t n = strlen(name);
                        if (n == len && strncasecmp(name, host, len) == 0)
                                return vs;
                        /* "*.example.com" matches any subdomain */
                        if (name[0] == '*' && name[1] == '.' && len > n - 1 &&
                            strncasecmp(name + 1, host + len - (n - 1), n - 1) == 0)
                                return vs;
                }
        }
        return &c->servers[0];
}

const struct location *proxy_find_location(const struct vserver *s, const char *path, size_t len)
{
        const struct location *best = NULL;

        for (size_t i = 0; i < s->n_locations; i++) {
                const struct location *l = &s->locations[i];
                if (!l->prefix)
                        continue;
                if (l->exact) {
                        if (l->prefix_len == len && memcmp(l->prefix, path, len) == 0)
                                return l;
                        continue;
                }
                if (l->prefix_len <= len && memcmp(l->prefix, path, l->prefix_len) == 0 &&
                    (!best || l->prefix_len > best->prefix_len))
                        best = l;
        }
        return best;
}
