/* SPDX-License-Identifier: MIT */
/*
 * Tests for common/mime.c against the real /etc/mime.types (Debian's
 * media-types), a small file with the nasty cases (data/small.types), and
 * the built-in table used when the file is missing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mime.h"
#include "tap.h"
#include "util.h"

static bool type_is(const struct mime_table *t, const char *filename, const char *want)
{
        const char *got = mime_lookup(t, filename, strlen(filename));

        if (want ? got && streq(got, want) : !got)
                return true;
        printf("#   '%s' is '%s', wanted '%s'\n", filename, got ? got : "(none)",
               want ? want : "(none)");
        return false;
}

struct pair {
        char ext[64];
        char type[128];
};

/*
 * Checks every extension of the file against a reading of it done here,
 * word by word, where the later line wins. Returns the number of extensions
 * checked, or 0 after the first mismatch.
 */
static size_t check_all(const struct mime_table *t, const char *path)
{
        char line[4096], name[80], *word, *type, *save;
        struct pair *pairs = NULL, *p;
        size_t n = 0, checked = 0;
        FILE *f = fopen(path, "re");

        if (!f)
                return 0;
        while (fgets(line, sizeof(line), f)) {
                type = strtok_r(line, " \t\r\n", &save);
                if (!type || type[0] == '#' || !strchr(type, '/'))
                        continue;
                while ((word = strtok_r(NULL, " \t\r\n", &save)) && word[0] != '#') {
                        p = realloc(pairs, (n + 1) * sizeof(*pairs));
                        if (!p)
                                abort();
                        pairs = p;
                        (void) snprintf(pairs[n].ext, sizeof(pairs[n].ext), "%s", word);
                        (void) snprintf(pairs[n].type, sizeof(pairs[n].type), "%s", type);
                        n++;
                }
        }
        fclose(f);

        for (size_t i = 0; i < n; i++) {
                const char *want = pairs[i].type;

                /* "cwl.json" can never be the part after the last dot. */
                if (strchr(pairs[i].ext, '.'))
                        continue;

                for (size_t j = i + 1; j < n; j++)
                        if (strcasecmp(pairs[j].ext, pairs[i].ext) == 0)
                                want = pairs[j].type;
                (void) snprintf(name, sizeof(name), "file.%s", pairs[i].ext);
                if (!type_is(t, name, want)) {
                        checked = 0;
                        break;
                }
                checked++;
        }
        free(pairs);
        return checked;
}

static void test_system(void)
{
        struct mime_table *t = NULL;
        bool builtin = true;
        size_t n;
        int r;

        if (access(MIME_TYPES_PATH, R_OK) < 0) {
                printf("# skipped: no %s (package media-types)\n", MIME_TYPES_PATH);
                return;
        }
        r = mime_load(NULL, &t, &builtin);
        ok(r == 0 && t, "mime_load(NULL) reads " MIME_TYPES_PATH);
        ok(!builtin, "which is installed (media-types), so the built-in table is not used");

        ok(type_is(t, "index.html", "text/html"), "index.html");
        ok(type_is(t, "INDEX.HTML", "text/html"), "case-insensitively");
        ok(type_is(t, "/srv/www/static/app.Js", "text/javascript"), "by the last path component");
        ok(type_is(t, "module.mjs", "text/javascript"), "mjs");
        ok(type_is(t, "data.json", "application/json"), "json");
        ok(type_is(t, "logo.svg", "image/svg+xml"), "svg");
        ok(type_is(t, "font.woff2", "font/woff2"), "woff2");
        ok(type_is(t, "app.wasm", "application/wasm"), "wasm");
        ok(type_is(t, "archive.tar.gz", "application/gzip"), "archive.tar.gz is gz");
        ok(type_is(t, "script.sh", "text/x-sh"),
           "an extension listed twice takes the later line's type, as nginx and Apache do");
        ok(type_is(t, ".bashrc", NULL) && type_is(t, "/home/u/.html", NULL),
           "a leading dot starts no extension");
        ok(type_is(t, "dir.html/README", NULL), "a dot in a directory name does not count");
        ok(type_is(t, "file.", NULL) && type_is(t, "noext", NULL) && type_is(t, "", NULL),
           "no extension, no type");
        ok(type_is(t, "x.no-such-extension", NULL), "an unknown extension has no type");
        ok(mime_lookup(t, "page.html.gz", 9) != NULL &&
               streq(mime_lookup(t, "page.html.gz", 9), "text/html"),
           "the name is length-bounded");
        ok(mime_lookup(t, "x.ht\0ml", 7) == NULL, "a NUL in the extension matches nothing");

        n = check_all(t, MIME_TYPES_PATH);
        ok(n > 1000, "each of the file's %zu extensions has its last line's type", n);
        ok(mime_free(t) == NULL, "mime_free() returns NULL");
        ok(mime_free(NULL) == NULL, "and accepts NULL");
}

static void test_small(void)
{
        struct mime_table *t = NULL;
        bool builtin = true;

        ok(mime_load("data/small.types", &t, &builtin) == 0 && !builtin, "data/small.types");
        ok(type_is(t, "a.html", "text/html") && type_is(t, "a.htm", "text/html"),
           "several extensions on a line");
        ok(type_is(t, "a.text", "text/plain") && type_is(t, "a.TeXt", "text/plain"),
           "extensions are folded to lower case");
        ok(type_is(t, "a.comment", NULL) && type_is(t, "a.#", NULL),
           "a word starting with '#' starts a comment");
        ok(type_is(t, "a.dup", "application/x-second"), "the later line wins");
        ok(type_is(t, "a.both", "text/x-both"), "whatever the case it was written in");
        ok(type_is(t, "a.nope", NULL), "a line whose type has no '/' is skipped");
        ok(type_is(t, "a.ctl", NULL), "so is a type with a control byte");
        ok(type_is(t, "a.param", NULL) && type_is(t, "a.utf-8", NULL),
           "and a type with parameters");
        ok(type_is(t, "a.json", "application/json"), "lines after skipped ones are read");
        ok(type_is(t, "a.svg", "image/svg+xml"), "a last line without a newline");
        ok(type_is(t, "a.png", NULL), "only what the file lists");
        mime_free(t);

        ok(mime_load("data/crlf.types", &t, NULL) == 0, "CRLF line ends, ret_builtin NULL");
        ok(type_is(t, "a.html", "text/html") && type_is(t, "a.png", "image/png"),
           "the '\\r' is not part of the extension");
        mime_free(t);

        t = NULL;
        ok(mime_load("data", &t, &builtin) == -EISDIR && t == NULL, "a directory is -EISDIR");
        ok(mime_lookup(NULL, "a.html", 6) == NULL, "lookups in no table find nothing");
}

static void test_builtin(void)
{
        static const char *const exts[] = {
            "html", "htm",  "css",  "js",   "mjs", "json", "txt",   "xml", "svg", "png",
            "jpg",  "jpeg", "gif",  "webp", "ico", "woff", "woff2", "ttf", "otf", "pdf",
            "zip",  "gz",   "wasm", "map",  "mp4", "webm", "mp3",   "csv",
        };
        struct mime_table *t = NULL;
        bool builtin = false, all = true;
        char name[32];

        ok(mime_load("data/does-not-exist.types", &t, &builtin) == 0 && builtin,
           "a missing file gives the built-in table");
        for (size_t i = 0; i < ARRAY_SIZE(exts); i++) {
                (void) snprintf(name, sizeof(name), "file.%s", exts[i]);
                all = all && mime_lookup(t, name, strlen(name)) != NULL;
        }
        ok(all, "which knows the %zu common web extensions", ARRAY_SIZE(exts));
        ok(type_is(t, "a.HTML", "text/html") && type_is(t, "a.js", "text/javascript") &&
               type_is(t, "a.map", "application/json") &&
               type_is(t, "a.ico", "image/vnd.microsoft.icon"),
           "with the types Debian's file gives them");
        ok(type_is(t, "a.exe", NULL), "and no others");
        mime_free(t);
}

static void test_is_text(void)
{
        static const char *const text[] = {
            "text/html",
            "TEXT/PLAIN",
            "text/css; charset=utf-8",
            "text/javascript",
            "application/javascript",
            "application/ecmascript",
            "application/json",
            "application/json;charset=utf-8",
            "Application/XML",
            "image/svg+xml",
            "application/ld+json",
            "application/atom+xml",
            "application/xhtml+xml",
            "application/vnd.api+json ",
        };
        static const char *const binary[] = {
            "image/png",
            "application/octet-stream",
            "application/pdf",
            "application/gzip",
            "text",
            "text/",
            "texts/plain",
            "application/jsonx",
            "application/json-seq",
            "+json",
            "application/x-javascriptx",
            "font/woff2",
            "",
        };

        for (size_t i = 0; i < ARRAY_SIZE(text); i++)
                ok(mime_is_text(text[i]), "'%s' is text", text[i]);
        for (size_t i = 0; i < ARRAY_SIZE(binary); i++)
                ok(!mime_is_text(binary[i]), "'%s' is not", binary[i]);
        ok(!mime_is_text(NULL), "NULL is not");
}

int main(void)
{
        subtest(MIME_TYPES_PATH, test_system);
        subtest("data/small.types", test_small);
        subtest("built-in table", test_builtin);
        subtest("mime_is_text", test_is_text);
        return done_testing();
}
