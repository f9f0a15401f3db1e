/* SPDX-License-Identifier: MIT */
/*
 * config: INI files (through inih, and only here), uWSGI-style %(name)
 * interpolation, and the value syntaxes every daemon shares.
 *
 * Loading is two steps. config_load() reads a file into a list of
 * (section, key, value, line) entries with interpolation done, and
 * config_apply() stores the entries of one section into a settings struct
 * through a table of keys. Both report every problem into a struct
 * config_diag as "file:line: key: message" and go on, so --check-config can
 * print all problems at once; the caller decides by diag.errors.
 *
 * Interpolation, as uWSGI does it: %(name) is the value of an option set
 * earlier in the same section (or of an environment variable of that name
 * when no option has it: uWSGI's $(NAME) is accepted too), %d the directory
 * of the file with a trailing slash, %n the file name without extension,
 * %s the file name, %p the absolute path of the file, %% a percent sign.
 * An undefined %(name) is an error.
 *
 * Lines longer than Debian's libinih accepts (INI_MAX_LINE, 200 bytes) are
 * rejected with an error naming the line, never silently cut.
 *
 * Ownership: a struct config_file owns all its strings; values handed out by
 * config_apply() for CONFIG_STRING point into it, so keep the file alive (or
 * copy them) for as long as the settings are used.
 */
#ifndef WHARF_CONFIG_H
#define WHARF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CONFIG_MAX_ENTRIES 4096
#define CONFIG_MAX_VALUE 4096 /* after interpolation */

struct config_entry {
        char *section; /* "" before the first [section] */
        char *key;
        char *value; /* interpolated */
        unsigned line;
        unsigned section_no; /* which section header this entry follows: tells apart
                                two sections of the same name */
};

struct config_file {
        char *path;
        struct config_entry *entries;
        size_t n_entries;
};

/* Problems found while loading and applying; messages are kept in order. */
struct config_diag {
        char **messages; /* "file:line: key: text", each malloc'd */
        size_t n_messages;
        unsigned errors;
        unsigned warnings;
};

void config_diag_done(struct config_diag *d);
/* Adds a message; level is "error" or "warning" (counted accordingly). */
void config_diag_add(struct config_diag *d, bool is_error, const char *file, unsigned line,
                     const char *key, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/*
 * Reads path. Returns 0 with *ret set (even if diag got errors about single
 * lines: the good entries are kept), -ENOENT/-EACCES/... when the file cannot
 * be opened (also reported into diag), -ENOMEM.
 */
int config_load(const char *path, struct config_file **ret, struct config_diag *diag);

/* The same from memory (name is used in messages); for tests and fuzzing. */
int config_load_string(const char *name, const char *text, size_t len, struct config_file **ret,
                       struct config_diag *diag);

struct config_file *config_file_free(struct config_file *f);

/* Does the file have a section with this exact name? */
bool config_has_section(const struct config_file *f, const char *section);

enum config_type {
        CONFIG_STRING,   /* const char *, points into the config_file */
        CONFIG_STRV,     /* repeatable: struct config_strv, each value appended */
        CONFIG_BOOL,     /* bool: true/yes/on/1, false/no/off/0 */
        CONFIG_UINT,     /* unsigned, decimal */
        CONFIG_SIZE,     /* uint64_t bytes: 512, 4k, 75M, 1G (powers of 1024) */
        CONFIG_DURATION, /* uint64_t milliseconds: 65s, 1m, 500ms, 2h; bare number = seconds */
        CONFIG_MODE,     /* unsigned file mode in octal: 666, 0660 */
        CONFIG_IGNORED,  /* accepted and deliberately without effect (warning-free) */
        _CONFIG_TYPE_MAX
};

struct config_strv {
        const char **v;
        size_t n;
};

struct config_key {
        const char *name;
        enum config_type type;
        size_t offset; /* offsetof() into the settings struct */
};

/*
 * What to say about a key that is not in the table: wharf's own sections
 * make it an error (typos never pass); a [uwsgi] section makes it a
 * warning, since uWSGI has hundreds of options wharf does not implement.
 */
enum config_unknown { CONFIG_UNKNOWN_ERROR, CONFIG_UNKNOWN_WARN, _CONFIG_UNKNOWN_MAX };

/*
 * Stores every entry of section into settings through keys (terminated by
 * an entry with name NULL). Returns the number of entries applied or a
 * negative errno (-ENOMEM); bad values and unknown keys go into diag.
 */
int config_apply(const struct config_file *f, const char *section, const struct config_key *keys,
                 enum config_unknown unknown, void *settings, struct config_diag *diag);

/*
 * One key's value from a string, for command-line options: the same
 * syntax and checks as in a file. Returns 0, -EINVAL with a message in diag
 * (named by origin, e.g. "--root"), or -ENOMEM.
 */
int config_set(const struct config_key *key, const char *value, void *settings, const char *origin,
               struct config_diag *diag);

void config_strv_done(struct config_strv *v);

/* Finds name in keys (NULL if absent). */
const struct config_key *config_key_find(const struct config_key *keys, const char *name);

/* The value parsers, exported for the daemons and the tests. 0 or -EINVAL/-ERANGE. */
int config_parse_bool(const char *s, bool *ret);
int config_parse_uint(const char *s, unsigned *ret);
int config_parse_size(const char *s, uint64_t *ret);
int config_parse_duration_ms(const char *s, uint64_t *ret);
int config_parse_mode(const char *s, unsigned *ret);

#endif
