/* SPDX-License-Identifier: MIT */
/*
 * fuzz_config: any bytes through config_load_string(), then config_apply()
 * with a key of every type under both unknown-key policies, and every value
 * through config_set() for every type. Checks the invariants config.h
 * promises; ASan and LeakSanitizer check the rest.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_settings {
        const char *name;
        struct config_strv list;
        bool flag;
        unsigned count;
        uint64_t size;
        uint64_t timeout_ms;
        unsigned mode;
};

static const struct config_key keys[] = {
    {"name", CONFIG_STRING, offsetof(struct fuzz_settings, name)},
    {"list", CONFIG_STRV, offsetof(struct fuzz_settings, list)},
    {"flag", CONFIG_BOOL, offsetof(struct fuzz_settings, flag)},
    {"count", CONFIG_UINT, offsetof(struct fuzz_settings, count)},
    {"max-size", CONFIG_SIZE, offsetof(struct fuzz_settings, size)},
    {"timeout", CONFIG_DURATION, offsetof(struct fuzz_settings, timeout_ms)},
    {"chmod-socket", CONFIG_MODE, offsetof(struct fuzz_settings, mode)},
    {"vacuum", CONFIG_IGNORED, 0},
    {NULL, CONFIG_IGNORED, 0},
};

/* Not assert(): the checks must hold in every build type. */
static void check(bool cond)
{
        if (!cond)
                abort();
}

static void check_file(const struct config_file *f, const uint8_t *data, size_t size)
{
        unsigned lines = 1;

        for (size_t i = 0; i < size; i++)
                lines += data[i] == '\n';

        check(f->n_entries <= CONFIG_MAX_ENTRIES);
        for (size_t i = 0; i < f->n_entries; i++) {
                const struct config_entry *e = &f->entries[i];

                check(e->section && e->key && e->value);
                check(e->key[0] != '\0' && strlen(e->key) <= 49 && strlen(e->section) <= 49);
                check(strlen(e->value) <= CONFIG_MAX_VALUE);
                check(e->line >= 1 && e->line <= lines);
                check(i == 0 || e->line >= f->entries[i - 1].line);
        }
}

static void apply(const struct config_file *f, const char *section, enum config_unknown unknown,
                  struct config_diag *d)
{
        struct fuzz_settings s = {0};
        unsigned errors = d->errors;
        int r;

        r = config_apply(f, section, keys, unknown, &s, d);
        check(r == -ENOMEM || (r >= 0 && (size_t) r <= f->n_entries));
        if (unknown == CONFIG_UNKNOWN_WARN)
                check(r < 0 || d->errors - errors <= f->n_entries);
        check(s.mode <= 07777);
        check(s.list.n == 0 || s.list.v[s.list.n] == NULL);
        config_strv_done(&s.list);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct fuzz_settings s = {0};
        struct config_diag d = {0};
        struct config_file *f = NULL;
        size_t n;
        int r;

        r = config_load_string("/etc/wharf/fuzz.ini", (const char *) data, size, &f, &d);
        check(r == 0 || r == -ENOMEM);
        check(d.n_messages <= (size_t) d.errors + d.warnings);
        if (r < 0) {
                check(f == NULL);
                config_diag_done(&d);
                return 0;
        }
        check_file(f, data, size);

        apply(f, "", CONFIG_UNKNOWN_ERROR, &d);
        apply(f, "uwsgi", CONFIG_UNKNOWN_WARN, &d);
        if (f->n_entries > 0) {
                apply(f, f->entries[0].section, CONFIG_UNKNOWN_ERROR, &d);
                apply(f, f->entries[f->n_entries - 1].section, CONFIG_UNKNOWN_WARN, &d);
        }

        /* The value parsers on whatever the file made of the values. */
        n = f->n_entries < 64 ? f->n_entries : 64;
        for (size_t i = 0; i < n; i++)
                for (const struct config_key *k = keys; k->name; k++) {
                        r = config_set(k, f->entries[i].value, &s, "--fuzz", &d);
                        check(r == 0 || r == -EINVAL || r == -ENOMEM);
                }
        check(s.mode <= 07777);
        check(d.n_messages <= (size_t) d.errors + d.warnings);

        config_strv_done(&s.list);
        config_file_free(f);
        config_diag_done(&d);
        return 0;
}
