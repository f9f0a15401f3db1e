/* SPDX-License-Identifier: MIT */
/*
 * Tests for common/config.c: inih's limits made visible (long lines,
 * cut names, lines without '='), interpolation, the value parsers, and
 * config_apply()'s messages. Runs in tests/unit (data/ holds the files).
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "tap.h"
#include "util.h"

/* The name string loads go by: absolute, so %d/%p do not depend on the working directory. */
#define NAME "/etc/wharf/wsgi/server_dev.ini"

struct settings {
        const char *name;
        struct config_strv list;
        bool flag;
        unsigned count;
        uint64_t max_size;
        uint64_t timeout_ms;
        unsigned mode;
};

static const struct config_key keys[] = {
    {"name", CONFIG_STRING, offsetof(struct settings, name)},
    {"list", CONFIG_STRV, offsetof(struct settings, list)},
    {"flag", CONFIG_BOOL, offsetof(struct settings, flag)},
    {"count", CONFIG_UINT, offsetof(struct settings, count)},
    {"max-size", CONFIG_SIZE, offsetof(struct settings, max_size)},
    {"timeout", CONFIG_DURATION, offsetof(struct settings, timeout_ms)},
    {"mode", CONFIG_MODE, offsetof(struct settings, mode)},
    {"legacy_option", CONFIG_IGNORED, 0},
    {NULL, CONFIG_IGNORED, 0},
};

static void dump(const struct config_diag *d)
{
        for (size_t i = 0; i < d->n_messages; i++)
                printf("#   diag: %s\n", d->messages[i]);
}

/* Is msg, exactly, among the messages? Prints them all when it is not. */
static bool has_msg(const struct config_diag *d, const char *msg)
{
        for (size_t i = 0; i < d->n_messages; i++)
                if (streq(d->messages[i], msg))
                        return true;
        printf("#   wanted: %s\n", msg);
        dump(d);
        return false;
}

static struct config_file *load_n(const char *text, size_t len, struct config_diag *d)
{
        struct config_file *f = NULL;
        int r;

        r = config_load_string(NAME, text, len, &f, d);
        if (r < 0) {
                printf("#   config_load_string: %s\n", strerror(-r));
                return NULL;
        }
        return f;
}

static struct config_file *load(const char *text, struct config_diag *d)
{
        return load_n(text, strlen(text), d);
}

/* The last entry for key in section, or NULL. */
static const struct config_entry *entry(const struct config_file *f, const char *section,
                                        const char *key)
{
        const struct config_entry *found = NULL;

        for (size_t i = 0; f && i < f->n_entries; i++)
                if (streq(f->entries[i].section, section) && streq(f->entries[i].key, key))
                        found = &f->entries[i];
        return found;
}

static const char *value(const struct config_file *f, const char *section, const char *key)
{
        const struct config_entry *e = entry(f, section, key);

        return e ? e->value : NULL;
}

static bool value_is(const struct config_file *f, const char *section, const char *key,
                     const char *want)
{
        const char *v = value(f, section, key);

        if (v && streq(v, want))
                return true;
        printf("#   [%s] %s = '%s', wanted '%s'\n", section, key, v ? v : "(none)", want);
        return false;
}

static char *repeat(char c, size_t n)
{
        char *s = malloc(n + 1);

        if (!s)
                abort();
        memset(s, c, n);
        s[n] = '\0';
        return s;
}

static void test_tutorial(void)
{
        /* The wsgi daemon's keys for the tutorial's file; "base" is only a variable. */
        struct uwsgi {
                const char *home, *chdir, *module, *socket, *pidfile, *logger;
                unsigned chmod_socket;
                bool master, enable_threads, vacuum;
        } u = {0};
        static const struct config_key uwsgi_keys[] = {
            {"home", CONFIG_STRING, offsetof(struct uwsgi, home)},
            {"chdir", CONFIG_STRING, offsetof(struct uwsgi, chdir)},
            {"module", CONFIG_STRING, offsetof(struct uwsgi, module)},
            {"socket", CONFIG_STRING, offsetof(struct uwsgi, socket)},
            {"chmod-socket", CONFIG_MODE, offsetof(struct uwsgi, chmod_socket)},
            {"master", CONFIG_BOOL, offsetof(struct uwsgi, master)},
            {"enable-threads", CONFIG_BOOL, offsetof(struct uwsgi, enable_threads)},
            {"pidfile", CONFIG_STRING, offsetof(struct uwsgi, pidfile)},
            {"vacuum", CONFIG_BOOL, offsetof(struct uwsgi, vacuum)},
            {"logger", CONFIG_STRING, offsetof(struct uwsgi, logger)},
            {NULL, CONFIG_IGNORED, 0},
        };
        struct config_diag d = {0};
        struct config_file *f = NULL;
        int r;

        r = config_load("data/uwsgi_tutorial.ini", &f, &d);
        ok(r == 0 && f, "the tutorial's uwsgi file loads");
        ok(d.errors == 0 && d.warnings == 0, "without a message");
        ok(f && f->n_entries == 11, "11 entries");
        ok(f && streq(f->path, "data/uwsgi_tutorial.ini"), "the file keeps its path as given");
        ok(config_has_section(f, "uwsgi"), "has [uwsgi]");
        ok(!config_has_section(f, "wsgi") && !config_has_section(f, ""), "and no other section");
        ok(value_is(f, "uwsgi", "home", "/home/ubuntu/server_dev/venv"),
           "home = %%(base)/venv comes out as /home/ubuntu/server_dev/venv");
        ok(value_is(f, "uwsgi", "chdir", "/home/ubuntu/server_dev"), "chdir = %%(base)");
        ok(entry(f, "uwsgi", "home") && entry(f, "uwsgi", "home")->line == 3, "home is on line 3");

        r = config_apply(f, "uwsgi", uwsgi_keys, CONFIG_UNKNOWN_WARN, &u, &d);
        ok(r == 10, "10 entries applied (%d)", r);
        ok(d.errors == 0 && d.warnings == 1, "one warning");
        ok(has_msg(
               &d,
               "data/uwsgi_tutorial.ini:2: warning: key 'base': not supported by wharf, ignored"),
           "naming the key wharf does not know, with file and line");
        ok(u.home && streq(u.home, "/home/ubuntu/server_dev/venv"), "home stored");
        ok(u.module && streq(u.module, "server_dev.wsgi:application"), "module stored");
        ok(u.socket && streq(u.socket, "/tmp/django.sock"), "socket stored");
        ok(u.chmod_socket == 0666, "chmod-socket = 666 is mode 0666");
        ok(u.master && u.enable_threads && u.vacuum, "booleans stored");
        ok(u.pidfile && streq(u.pidfile, "/tmp/django.pid"), "pidfile stored");
        ok(u.logger && streq(u.logger, "file:/tmp/uwsgi.log"), "logger stored");
        ok(u.home == value(f, "uwsgi", "home"), "strings point into the config_file");

        config_diag_done(&d);
        ok(d.messages == NULL && d.n_messages == 0 && d.errors == 0 && d.warnings == 0,
           "config_diag_done() resets the diag");
        ok(config_file_free(f) == NULL, "config_file_free() returns NULL");
        ok(config_file_free(NULL) == NULL, "and accepts NULL");
        config_diag_done(NULL);
}

static void test_load_file_errors(void)
{
        struct config_diag d = {0};
        struct config_file *f = NULL;
        int r;

        r = config_load("data/does-not-exist.ini", &f, &d);
        ok(r == -ENOENT, "a missing file is -ENOENT");
        ok(f == NULL, "*ret is not written on failure");
        ok(d.errors == 1 &&
               has_msg(&d, "data/does-not-exist.ini: cannot open: No such file or directory"),
           "and reported");
        config_diag_done(&d);

        r = config_load("data", &f, &d);
        ok(r == -EISDIR, "a directory is -EISDIR (%d)", r);
        ok(f == NULL && d.errors == 1 && has_msg(&d, "data: read error: Is a directory"),
           "reported as a read error");
        config_diag_done(&d);
}

static void test_magic(void)
{
        struct config_diag d = {0};
        struct config_file *f;
        char *abs, *dir, *want;

        f = load("a = %d|%p|%s|%n|%%|%%d|100%\n", &d);
        ok(value_is(f, "", "a",
                    "/etc/wharf/wsgi/|/etc/wharf/wsgi/"
                    "server_dev.ini|server_dev.ini|server_dev|%|%d|100%"),
           "%%d %%p %%s %%n %%%% and a final %%");
        ok(d.errors == 0 && d.warnings == 0, "without a message");
        f = config_file_free(f);

        f = load("a = %k and %2F\n", &d);
        ok(value_is(f, "", "a", "%k and %2F"), "unknown magic variables are kept as uWSGI does");
        ok(d.errors == 0 && d.warnings == 2, "with a warning each");
        ok(has_msg(&d,
                   NAME ":1: warning: key 'a': unknown magic variable '%k' kept as is (write %% "
                        "for a literal %)"),
           "naming it");
        f = config_file_free(f);
        config_diag_done(&d);

        /* From a real file named relative to the working directory: resolved, as uWSGI does. */
        abs = realpath("data/magic.ini", NULL);
        dir = realpath("data", NULL);
        if (!abs || !dir)
                abort();
        ok(config_load("data/magic.ini", &f, &d) == 0, "data/magic.ini loads");
        ok(d.errors == 0 && d.warnings == 0, "without a message");
        if (asprintf(&want, "%s/", dir) < 0)
                abort();
        ok(value_is(f, "app", "dir", want), "%%d is the absolute directory with a slash");
        ok(value_is(f, "app", "path", abs), "%%p is the absolute path");
        ok(value_is(f, "app", "name", "magic.ini"), "%%s is the file name");
        ok(value_is(f, "app", "stem", "magic"), "%%n is the name without extension");
        free(want);
        if (asprintf(&want, "%s/logs/magic.log", dir) < 0)
                abort();
        ok(value_is(f, "app", "log", want), "magic variables inside a value");
        free(want);
        free(abs);
        free(dir);
        config_file_free(f);
        config_diag_done(&d);
}

static void test_interpolation(void)
{
        struct config_diag d = {0};
        struct config_file *f;
        char *a, *text;

        f = load("[s]\n"
                 "a = x\n"
                 "b = %(a)y\n"
                 "c = <%(b)z>\n"
                 "a = again\n"
                 "d = %(a)\n"
                 "e-f = dash\n"
                 "g = %(e_f)\n"
                 "h = 1 %(a) 2 %(b) 3\n",
                 &d);
        ok(value_is(f, "s", "c", "<xyz>"), "a chain of references expands");
        ok(value_is(f, "s", "d", "again"), "a reference sees the latest earlier value");
        ok(value_is(f, "s", "g", "dash"), "'-' and '_' name the same key in a reference");
        ok(value_is(f, "s", "h", "1 again 2 xy 3"), "several references in one value");
        ok(d.errors == 0, "without errors");
        f = config_file_free(f);

        f = load("[s]\na = %(later)\nlater = 1\n", &d);
        ok(entry(f, "s", "a") == NULL, "a reference to a later key is undefined");
        ok(d.errors == 1 &&
               has_msg(&d, NAME ":2: key 'a': %(later) is neither an earlier key of this "
                                "section nor an environment variable"),
           "and an error naming it, the file, line and key");
        ok(value_is(f, "s", "later", "1"), "the rest of the file is kept");
        f = config_file_free(f);
        config_diag_done(&d);

        f = load("[one]\nx = 1\n[two]\ny = %(x)\n", &d);
        ok(entry(f, "two", "y") == NULL && d.errors == 1, "another section's key is not visible");
        f = config_file_free(f);
        config_diag_done(&d);

        f = load("a = %(a)\n", &d);
        ok(entry(f, "", "a") == NULL && d.errors == 1, "a key cannot refer to itself");
        f = config_file_free(f);
        config_diag_done(&d);

        if (setenv("WHARF_TEST_VAR", "from-env", 1) < 0)
                abort();
        (void) unsetenv("WHARF_TEST_UNSET");
        f = load("a = %(WHARF_TEST_VAR)/x\n"
                 "b = $(WHARF_TEST_VAR)\n"
                 "WHARF_TEST_VAR = from-file\n"
                 "c = %(WHARF_TEST_VAR)\n"
                 "d = $(WHARF_TEST_VAR)\n"
                 "e = $HOME, $ and $\n",
                 &d);
        ok(value_is(f, "", "a", "from-env/x"), "%%(name) falls back to the environment");
        ok(value_is(f, "", "b", "from-env"), "$(NAME) is the environment");
        ok(value_is(f, "", "c", "from-file"), "an earlier key comes before the environment");
        ok(value_is(f, "", "d", "from-env"), "$(NAME) never looks at keys");
        ok(value_is(f, "", "e", "$HOME, $ and $"), "a '$' without '(' is literal");
        ok(d.errors == 0, "without errors");
        f = config_file_free(f);

        f = load("a = $(WHARF_TEST_UNSET)\nb = %(WHARF_TEST_UNSET)\n", &d);
        ok(f && f->n_entries == 0 && d.errors == 2, "undefined variables are errors");
        ok(has_msg(&d, NAME ":1: key 'a': environment variable $(WHARF_TEST_UNSET) is not set"),
           "naming the variable");
        f = config_file_free(f);
        config_diag_done(&d);

        f = load("a = %(open\nb = $(open\nc = %()\nd = $()\n", &d);
        ok(f && f->n_entries == 0 && d.errors == 4, "unterminated and empty references are errors");
        ok(has_msg(&d, NAME ":1: key 'a': unterminated %( in '%(open'"), "unterminated %%(");
        ok(has_msg(&d, NAME ":4: key 'd': empty name in $() in '$()'"), "empty $()");
        f = config_file_free(f);
        config_diag_done(&d);

        /* 128 bytes doubled five times is exactly CONFIG_MAX_VALUE. */
        a = repeat('v', 128);
        if (asprintf(&text,
                     "a = %s\n"
                     "b = %%(a)%%(a)\n"
                     "c = %%(b)%%(b)\n"
                     "d = %%(c)%%(c)\n"
                     "e = %%(d)%%(d)\n"
                     "f = %%(e)%%(e)\n"
                     "g = %%(f)x\n"
                     "h = %%(f)%%(f)%%(f)\n",
                     a) < 0)
                abort();
        f = load(text, &d);
        ok(value(f, "", "f") && strlen(value(f, "", "f")) == CONFIG_MAX_VALUE,
           "a value of exactly CONFIG_MAX_VALUE bytes after interpolation is kept");
        ok(entry(f, "", "g") == NULL && entry(f, "", "h") == NULL,
           "values that expand past it are not");
        ok(d.errors == 2 &&
               has_msg(&d, NAME ":7: key 'g': value longer than 4096 bytes after interpolation"),
           "with an error each");
        f = config_file_free(f);
        config_diag_done(&d);
        free(text);
        free(a);
}

static void test_long_lines(void)
{
        struct config_diag d = {0};
        struct config_file *f;
        char *v196, *v197, *v497, *text;

        /* "k = " plus the value: 4 + 195 = 199 bytes, 4 + 196 = 200, 4 + 496 = 500. */
        v196 = repeat('x', 195);
        v197 = repeat('y', 196);
        v497 = repeat('z', 496);
        if (asprintf(&text,
                     "a = 1\n"
                     "k = %s\n"
                     "b = 2\n"
                     "l = %s\n"
                     "c = 3\n"
                     "m = %s\n"
                     "d = 4\n"
                     "n = %s\r\n"
                     "e = 5\r\n"
                     "o = %s",
                     v196, v197, v497, v196, v196) < 0)
                abort();
        f = load(text, &d);
        ok(f != NULL, "a file with long lines loads");
        ok(value_is(f, "", "k", v196), "a line of exactly 199 bytes is read whole");
        ok(entry(f, "", "l") == NULL, "a line of 200 bytes is rejected");
        ok(has_msg(&d, NAME ":4: line longer than 199 bytes"), "naming its line");
        ok(entry(f, "", "m") == NULL && has_msg(&d, NAME ":6: line longer than 199 bytes"),
           "and so is one of 500 bytes");
        ok(value_is(f, "", "n", v196), "199 bytes before \"\\r\\n\" fit");
        ok(value_is(f, "", "o", v196), "and before the end of the file");
        ok(d.errors == 2, "two errors");
        ok(value_is(f, "", "a", "1") && value_is(f, "", "b", "2") && value_is(f, "", "c", "3") &&
               value_is(f, "", "d", "4") && value_is(f, "", "e", "5"),
           "the short lines around them are read");
        ok(entry(f, "", "c") && entry(f, "", "c")->line == 5 && entry(f, "", "d")->line == 7 &&
               entry(f, "", "e")->line == 9 && entry(f, "", "o")->line == 10,
           "with their own line numbers (no part of a long line counts as a line)");
        ok(f && f->n_entries == 8, "and nothing else (%zu entries)", f ? f->n_entries : 0);
        f = config_file_free(f);
        config_diag_done(&d);
        free(text);

        /* A long line inside a continued value does not end the value. */
        if (asprintf(&text, "list = a\n  %s\n  b\n", v497) < 0)
                abort();
        f = load(text, &d);
        ok(f && f->n_entries == 2 && d.errors == 1, "a long continuation line is dropped alone");
        ok(f && streq(f->entries[1].value, "b") && f->entries[1].line == 3,
           "the next continuation still continues");
        f = config_file_free(f);
        config_diag_done(&d);
        free(text);
        free(v196);
        free(v197);
        free(v497);
}

static void test_syntax(void)
{
        static const char nul_text[] = "a = 1\nb = x\0y\nc = 3\n";
        struct config_diag d = {0};
        struct config_file *f;
        char *name50, *name49, *text;

        f = load("a = 1\n"
                 "no equals sign\n"
                 "b: colon\n"
                 "[open\n"
                 "c = dropped\n"
                 "[s]\n"
                 "   e = indented first key\n"
                 "d = kept\n"
                 "= no key\n"
                 "   f = not a continuation\n",
                 &d);
        ok(f != NULL, "a file with bad lines loads");
        ok(has_msg(&d, NAME ":2: expected 'key = value': 'no equals sign'"),
           "a line without '=' is an error naming the line");
        ok(value_is(f, "", "b", "colon"), "'key: value' is accepted, as inih does");
        ok(has_msg(&d, NAME ":4: missing ']' in section header, its keys are ignored: '[open'"),
           "a section header without ']' is an error");
        ok(entry(f, "", "c") == NULL, "and its keys are not filed under the previous section");
        ok(value_is(f, "s", "d", "kept"), "the next section is read");
        ok(has_msg(&d, NAME ":9: missing key name before '='"), "'= value' is an error");
        ok(value_is(f, "s", "e", "indented first key"),
           "an indented line right after a header is a key, not a continuation");
        ok(value_is(f, "s", "f", "not a continuation"), "nor is one after a key without name");
        ok(d.errors == 3, "three errors");
        ok(f && f->n_entries == 5, "five entries");
        f = config_file_free(f);
        config_diag_done(&d);

        f = load_n(nul_text, sizeof(nul_text) - 1, &d);
        ok(value_is(f, "", "a", "1") && value_is(f, "", "c", "3") && entry(f, "", "b") == NULL,
           "a line with a NUL byte is dropped");
        ok(d.errors == 1 && has_msg(&d, NAME ":2: NUL byte in line"), "with an error");
        f = config_file_free(f);
        config_diag_done(&d);

        f = load("\xef\xbb\xbf[s]\r\na = 1\r\nb = two words  \r\n", &d);
        ok(value_is(f, "s", "a", "1") && value_is(f, "s", "b", "two words"),
           "a UTF-8 BOM and CRLF line ends");
        ok(d.errors == 0, "without errors");
        f = config_file_free(f);

        f = load("\xef\xbb\xbf"
                 "a = 1\n",
                 &d);
        ok(value_is(f, "", "a", "1"), "a BOM before a key is not part of it");
        f = config_file_free(f);

        f = load("; comment\n"
                 "# comment\n"
                 "   ; indented comment\n"
                 "\n"
                 "  \t \n"
                 "a = 1 ; inline comment\n"
                 "b = x;y\n"
                 "c = #not a comment\n"
                 "d =\n"
                 "e =    spaced   out   \n",
                 &d);
        ok(value_is(f, "", "a", "1"), "an inline comment after whitespace is cut");
        ok(value_is(f, "", "b", "x;y"), "a ';' without whitespace before it is kept");
        ok(value_is(f, "", "c", "#not a comment"), "'#' starts a comment only at line start");
        ok(value_is(f, "", "d", ""), "an empty value");
        ok(value_is(f, "", "e", "spaced   out"), "values are trimmed");
        ok(d.errors == 0 && f && f->n_entries == 5, "comments and blank lines are no entries");
        f = config_file_free(f);

        f = load("list = a\n"
                 "  b\n"
                 "\tc ; comment\n"
                 "other = x\n",
                 &d);
        ok(f && f->n_entries == 4, "continuation lines are entries of their own");
        ok(f && streq(f->entries[1].key, "list") && streq(f->entries[1].value, "b") &&
               f->entries[1].line == 2,
           "for the same key, on their own lines");
        ok(f && streq(f->entries[2].value, "c"), "with inline comments cut, as on key lines");
        ok(d.errors == 0, "without errors");
        f = config_file_free(f);

        /* inih keeps 49 bytes of a section name and of a continued key. */
        name49 = repeat('s', 49);
        name50 = repeat('t', 50);
        if (asprintf(&text,
                     "[%s]\n"
                     "a = 1\n"
                     "[%s]\n"
                     "b = 2\n"
                     "[s]\n"
                     "%s = 3\n"
                     "  4\n"
                     "%s = 5\n",
                     name49, name50, name50, name49) < 0)
                abort();
        f = load(text, &d);
        ok(value_is(f, name49, "a", "1"), "a section name of 49 bytes is fine");
        ok(has_msg(&d, NAME ":3: section name longer than 49 bytes, its keys are ignored"),
           "a longer one is an error");
        ok(entry(f, "", "b") == NULL && !config_has_section(f, name50) && f && f->n_entries == 2,
           "and its keys are not filed under a cut name");
        ok(has_msg(&d, NAME ":6: key name longer than 49 bytes"),
           "a key name longer than 49 bytes");
        ok(value_is(f, "s", name49, "5"), "a key name of 49 bytes is fine");
        ok(d.errors == 2, "two errors (the continuation of a rejected key goes with it)");
        f = config_file_free(f);
        config_diag_done(&d);
        free(text);
        free(name49);
        free(name50);

        f = load("", &d);
        ok(f && f->n_entries == 0 && d.errors == 0, "an empty file");
        f = config_file_free(f);
        f = load_n(NULL, 0, &d);
        ok(f && f->n_entries == 0 && d.errors == 0, "no text at all");
        f = config_file_free(f);
}

static void test_sections(void)
{
        struct config_diag d = {0};
        struct settings s = {0};
        struct config_file *f;
        int r;

        f = load("count = 1\n"
                 "[a]\n"
                 "count = 2\n"
                 "[b]\n"
                 "count = 3\n"
                 "[a]\n"
                 "flag = yes\n"
                 "[ a ]\n"
                 "count = 4\n",
                 &d);
        ok(config_has_section(f, "") && config_has_section(f, "a") && config_has_section(f, "b"),
           "sections, and keys before any section in \"\"");
        ok(config_has_section(f, " a ") && !config_has_section(f, "c"),
           "section names are taken as written");
        r = config_apply(f, "", keys, CONFIG_UNKNOWN_ERROR, &s, &d);
        ok(r == 1 && s.count == 1, "section \"\" applies alone");
        r = config_apply(f, "a", keys, CONFIG_UNKNOWN_ERROR, &s, &d);
        ok(r == 2 && s.count == 2 && s.flag, "a section given twice is one section");
        ok(d.errors == 0 && d.warnings == 0, "without messages");
        config_file_free(f);
        config_diag_done(&d);
}

static void test_apply(void)
{
        struct config_diag d = {0};
        struct settings s = {.count = 7, .mode = 0600};
        struct config_file *f;
        char *sevens, *text;
        const char *cut;
        int r;

        f = load("[main]\n"
                 "name = wharf\n"
                 "list = one\n"
                 "list = two\n"
                 "  three\n"
                 "flag = on\n"
                 "count = 4\n"
                 "max_size = 75M\n"
                 "timeout = 65s\n"
                 "mode = 0660\n"
                 "legacy-option = whatever\n"
                 "wokers = 4\n"
                 "count = x\n"
                 "mode = 8\n"
                 "max-size = 99999999999999999999\n"
                 "count = 10\n"
                 "name = \x1b[31mred'\n",
                 &d);
        r = config_apply(f, "main", keys, CONFIG_UNKNOWN_ERROR, &s, &d);
        ok(r == 12, "12 entries applied (%d)", r);
        ok(s.list.n == 3 && streq(s.list.v[0], "one") && streq(s.list.v[1], "two") &&
               streq(s.list.v[2], "three") && s.list.v[3] == NULL,
           "a repeatable key collects every value, continuation lines too, NULL-terminated");
        ok(s.flag && s.max_size == 75u << 20 && s.timeout_ms == 65000 && s.mode == 0660,
           "bool, size, duration and mode");
        ok(s.count == 10, "the last good value of a key wins");
        ok(s.name && streq(s.name, "\x1b[31mred'"), "strings are stored as they are");
        ok(d.errors == 4, "four errors (%u)", d.errors);
        ok(has_msg(&d, NAME ":12: key 'wokers': unknown key"),
           "an unknown key is an error naming it");
        ok(has_msg(&d, NAME ":13: key 'count': not a number: 'x'"),
           "a bad number names file, line, key and value");
        ok(has_msg(&d, NAME ":14: key 'mode': not an octal file mode (e.g. 0660): '8'"),
           "a bad mode");
        ok(has_msg(&d, NAME ":15: key 'max-size': size too large: '99999999999999999999'"),
           "a size out of range");
        ok(d.warnings == 2, "two warnings (%u)", d.warnings);
        ok(has_msg(&d, NAME ":16: warning: key 'count': set again, overriding line 7"),
           "setting a key again is a warning naming the earlier line");
        ok(has_msg(&d, NAME ":17: warning: key 'name': set again, overriding line 2"),
           "for every single-valued key");
        config_diag_done(&d);

        r = config_apply(f, "main", keys, CONFIG_UNKNOWN_WARN, &s, &d);
        ok(has_msg(&d, NAME ":12: warning: key 'wokers': not supported by wharf, ignored"),
           "with CONFIG_UNKNOWN_WARN an unknown key is a warning");
        ok(d.errors == 3, "and the bad values still errors");
        ok(s.list.n == 6, "applying again appends to a repeatable key");
        config_strv_done(&s.list);
        ok(s.list.v == NULL && s.list.n == 0, "config_strv_done() empties it");
        config_strv_done(NULL);
        config_diag_done(&d);

        r = config_apply(f, "absent", keys, CONFIG_UNKNOWN_ERROR, &s, &d);
        ok(r == 0 && d.n_messages == 0, "an absent section applies nothing");
        config_file_free(f);

        /* Messages show control bytes escaped, and long values cut. */
        sevens = repeat('7', 150);
        if (asprintf(&text, "count = a\x1b\\'b\nmode = %s\n", sevens) < 0)
                abort();
        f = load(text, &d);
        r = config_apply(f, "", keys, CONFIG_UNKNOWN_ERROR, &s, &d);
        ok(r == 0, "nothing applied");
        ok(has_msg(&d, NAME ":1: key 'count': not a number: 'a\\x1b\\x5c\\x27b'"),
           "control bytes, backslashes and quotes are escaped in messages");
        cut = d.n_messages == 2 ? d.messages[1] : "";
        ok(strncmp(cut, NAME ":2: key 'mode': file mode out of range (at most 07777): '7777", 70) ==
                   0 &&
               !strstr(cut, sevens) && strcmp(cut + strlen(cut) - 5, "7...'") == 0,
           "long values are cut");
        config_file_free(f);
        config_diag_done(&d);
        free(sevens);
        free(text);
}

static void test_set(void)
{
        struct config_diag d = {0};
        struct settings s = {0};
        const struct config_key *k;
        const char *root = "/srv/www";
        int r;

        k = config_key_find(keys, "max_size");
        ok(k && streq(k->name, "max-size"), "'_' finds a key spelled with '-'");
        ok(config_key_find(keys, "legacy-option") == &keys[7], "and '-' one spelled with '_'");
        ok(config_key_find(keys, "MAX-SIZE") == NULL, "names are case-sensitive");
        ok(config_key_find(keys, "max") == NULL && config_key_find(keys, "max-size-x") == NULL,
           "and compared whole");
        ok(config_key_find(keys, "") == NULL, "the empty name is no key");

        r = config_set(config_key_find(keys, "count"), "12", &s, "--count", &d);
        ok(r == 0 && s.count == 12, "config_set() parses like a file");
        r = config_set(config_key_find(keys, "count"), "12x", &s, "--count", &d);
        ok(r == -EINVAL && s.count == 12, "a bad value is -EINVAL and changes nothing");
        ok(d.errors == 1 && has_msg(&d, "--count: not a number: '12x'"),
           "with a message named by the option");
        r = config_set(config_key_find(keys, "count"), "4294967296", &s, "--count", &d);
        ok(r == -EINVAL && has_msg(&d, "--count: number too large (at most 4294967295): "
                                       "'4294967296'"),
           "a value out of range is -EINVAL too");
        r = config_set(config_key_find(keys, "name"), root, &s, "--root", &d);
        ok(r == 0 && s.name == root, "a string is stored as the pointer given");
        r = config_set(config_key_find(keys, "list"), "a", &s, "--list", &d);
        r += config_set(config_key_find(keys, "list"), "b", &s, "--list", &d);
        ok(r == 0 && s.list.n == 2 && streq(s.list.v[1], "b"), "repeatable options append");
        r = config_set(config_key_find(keys, "legacy_option"), "x", &s, "--legacy", &d);
        ok(r == 0, "an ignored key accepts anything");
        ok(d.errors == 2 && d.warnings == 0, "two errors in all");
        config_strv_done(&s.list);
        config_diag_done(&d);

        config_diag_add(&d, false, "f.ini", 0, NULL, "plain %d", 1);
        config_diag_add(&d, true, "f.ini", 3, "k", "with key");
        ok(d.warnings == 1 && d.errors == 1, "config_diag_add() counts by level");
        ok(d.n_messages == 2 && streq(d.messages[0], "f.ini: warning: plain 1") &&
               streq(d.messages[1], "f.ini:3: key 'k': with key"),
           "and formats the location");
        config_diag_done(&d);
}

static void test_many_entries(void)
{
        struct config_diag d = {0};
        struct config_file *f;
        size_t n = CONFIG_MAX_ENTRIES + 10, len = 0;
        char *text = malloc(n * 8);

        if (!text)
                abort();
        for (size_t i = 0; i < n; i++)
                len += (size_t) sprintf(text + len, "k = %zu\n", i % 100);
        f = load_n(text, len, &d);
        ok(f && f->n_entries == CONFIG_MAX_ENTRIES, "at most CONFIG_MAX_ENTRIES entries are kept");
        ok(d.errors == 1 && has_msg(&d, NAME ":4097: more than 4096 keys, the rest is ignored"),
           "and one error says so");
        config_file_free(f);
        config_diag_done(&d);
        free(text);
}

static void test_parse_bool(void)
{
        static const char *const yes[] = {"true", "yes", "on", "1", "TRUE", "Yes", "oN"};
        static const char *const no[] = {"false", "no", "off", "0", "FALSE", "No", "OFF"};
        static const char *const bad[] = {"", "2", " true", "true ", "yes!", "tru", "01", "y"};
        bool b;

        for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
                b = false;
                ok(config_parse_bool(yes[i], &b) == 0 && b, "bool '%s' is true", yes[i]);
        }
        for (size_t i = 0; i < ARRAY_SIZE(no); i++) {
                b = true;
                ok(config_parse_bool(no[i], &b) == 0 && !b, "bool '%s' is false", no[i]);
        }
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                b = true;
                ok(config_parse_bool(bad[i], &b) == -EINVAL && b, "bool '%s' is -EINVAL", bad[i]);
        }
}

static void test_parse_uint(void)
{
        static const struct {
                const char *s;
                int r;
                unsigned v;
        } cases[] = {
            {"0", 0, 0},
            {"007", 0, 7},
            {"4294967295", 0, UINT_MAX},
            {"4294967296", -ERANGE, 0},
            {"99999999999999999999999", -ERANGE, 0},
            {"", -EINVAL, 0},
            {"-1", -EINVAL, 0},
            {"+1", -EINVAL, 0},
            {" 1", -EINVAL, 0},
            {"1 ", -EINVAL, 0},
            {"1x", -EINVAL, 0},
            {"0x10", -EINVAL, 0},
            {"1k", -EINVAL, 0},
            {"99999999999999999999999x", -EINVAL, 0},
        };
        unsigned v;

        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                v = 12345;
                ok(config_parse_uint(cases[i].s, &v) == cases[i].r &&
                       v == (cases[i].r == 0 ? cases[i].v : 12345u),
                   "uint '%s'", cases[i].s);
        }
}

static void test_parse_size(void)
{
        static const struct {
                const char *s;
                int r;
                uint64_t v;
        } cases[] = {
            {"0", 0, 0},
            {"512", 0, 512},
            {"512b", 0, 512},
            {"512B", 0, 512},
            {"4k", 0, 4096},
            {"4K", 0, 4096},
            {"4kb", 0, 4096},
            {"4KB", 0, 4096},
            {"75M", 0, 75ull << 20},
            {"75m", 0, 75ull << 20},
            {"1G", 0, 1ull << 30},
            {"1T", 0, 1ull << 40},
            {"0T", 0, 0},
            {"16777215T", 0, 16777215ull << 40},
            {"16777216T", -ERANGE, 0},
            {"17179869183G", 0, 17179869183ull << 30},
            {"17179869184G", -ERANGE, 0},
            {"18446744073709551615", 0, UINT64_MAX},
            {"18446744073709551616", -ERANGE, 0},
            {"", -EINVAL, 0},
            {"k", -EINVAL, 0},
            {"b", -EINVAL, 0},
            {"-1", -EINVAL, 0},
            {" 1", -EINVAL, 0},
            {"1 ", -EINVAL, 0},
            {"1.5G", -EINVAL, 0},
            {"4kk", -EINVAL, 0},
            {"4 k", -EINVAL, 0},
            {"4KiB", -EINVAL, 0},
            {"4bk", -EINVAL, 0},
            {"4bb", -EINVAL, 0},
            {"1x", -EINVAL, 0},
            {"99999999999999999999999Q", -EINVAL, 0},
        };
        uint64_t v;

        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                v = 12345;
                ok(config_parse_size(cases[i].s, &v) == cases[i].r &&
                       v == (cases[i].r == 0 ? cases[i].v : 12345u),
                   "size '%s'", cases[i].s);
        }
}

static void test_parse_duration(void)
{
        static const struct {
                const char *s;
                int r;
                uint64_t v;
        } cases[] = {
            {"0", 0, 0},
            {"65", 0, 65000},
            {"65s", 0, 65000},
            {"500ms", 0, 500},
            {"0ms", 0, 0},
            {"1m", 0, 60000},
            {"2h", 0, 7200000},
            {"1d", 0, 86400000},
            {"1h30m", 0, 5400000},
            {"1m30s", 0, 90000},
            {"1s500ms", 0, 1500},
            {"30s1m", 0, 90000},
            {"18446744073709551", 0, 18446744073709551000ull},
            {"18446744073709552", -ERANGE, 0},
            {"18446744073709551s", 0, 18446744073709551000ull},
            {"18446744073709551615ms", 0, UINT64_MAX},
            {"18446744073709551615ms1ms", -ERANGE, 0},
            {"213503982334d", 0, 213503982334ull * 86400000},
            {"213503982335d", -ERANGE, 0},
            {"99999999999999999999999ms", -ERANGE, 0},
            {"", -EINVAL, 0},
            {"s", -EINVAL, 0},
            {"ms", -EINVAL, 0},
            {"-1", -EINVAL, 0},
            {"-1s", -EINVAL, 0},
            {"1x", -EINVAL, 0},
            {"1h30", -EINVAL, 0},
            {"1 s", -EINVAL, 0},
            {" 1s", -EINVAL, 0},
            {"1s ", -EINVAL, 0},
            {"1S", -EINVAL, 0},
            {"1.5s", -EINVAL, 0},
            {"1mss", -EINVAL, 0},
            {"1min", -EINVAL, 0},
            {"99999999999999999999999xs", -EINVAL, 0},
        };
        uint64_t v;

        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                v = 12345;
                ok(config_parse_duration_ms(cases[i].s, &v) == cases[i].r &&
                       v == (cases[i].r == 0 ? cases[i].v : 12345u),
                   "duration '%s'", cases[i].s);
        }
}

static void test_parse_mode(void)
{
        static const struct {
                const char *s;
                int r;
                unsigned v;
        } cases[] = {
            {"0", 0, 0},
            {"666", 0, 0666},
            {"0660", 0, 0660},
            {"7777", 0, 07777},
            {"07777", 0, 07777},
            {"00007777", 0, 07777},
            {"10000", -ERANGE, 0},
            {"77777777777777777777777", -ERANGE, 0},
            {"", -EINVAL, 0},
            {"8", -EINVAL, 0},
            {"66a", -EINVAL, 0},
            {"-1", -EINVAL, 0},
            {"+644", -EINVAL, 0},
            {" 644", -EINVAL, 0},
            {"644 ", -EINVAL, 0},
            {"0o666", -EINVAL, 0},
            {"7777777777777777779", -EINVAL, 0},
        };
        unsigned v;

        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                v = 12345;
                ok(config_parse_mode(cases[i].s, &v) == cases[i].r &&
                       v == (cases[i].r == 0 ? cases[i].v : 12345u),
                   "mode '%s'", cases[i].s);
        }
}

int main(void)
{
        subtest("the tutorial's uWSGI file", test_tutorial);
        subtest("files that cannot be read", test_load_file_errors);
        subtest("magic variables", test_magic);
        subtest("interpolation", test_interpolation);
        subtest("long lines", test_long_lines);
        subtest("syntax", test_syntax);
        subtest("sections", test_sections);
        subtest("config_apply", test_apply);
        subtest("config_set and config_key_find", test_set);
        subtest("CONFIG_MAX_ENTRIES", test_many_entries);
        subtest("config_parse_bool", test_parse_bool);
        subtest("config_parse_uint", test_parse_uint);
        subtest("config_parse_size", test_parse_size);
        subtest("config_parse_duration_ms", test_parse_duration);
        subtest("config_parse_mode", test_parse_mode);
        return done_testing();
}
