/* SPDX-License-Identifier: MIT */
/*
 * tap.h: a tiny TAP producer for the unit tests (in the spirit of picotest).
 *
 *     ok(cond, "what holds");
 *     subtest("parser", test_parser);
 *     return done_testing();
 *
 * Each test file is one executable run by meson with protocol: 'tap'.
 */
#ifndef WHARF_TAP_H
#define WHARF_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_count;
static int tap_failed;
static int tap_depth;

static void tap_indent(void)
{
        for (int i = 0; i < tap_depth; i++)
                fputs("    ", stdout);
}

__attribute__((format(printf, 4, 5))) static int tap_ok(int cond, const char *file, int line,
                                                        const char *fmt, ...)
{
        va_list ap;

        tap_count++;
        if (!cond)
                tap_failed++;
        tap_indent();
        printf("%sok %d - ", cond ? "" : "not ", tap_count);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
        if (!cond) {
                tap_indent();
                printf("# failed at %s:%d\n", file, line);
        }
        fflush(stdout);
        return cond;
}

#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

/* Runs fn as a group; its checks count in the flat plan, the name is a comment. */
static inline void subtest(const char *name, void (*fn)(void))
{
        printf("# %s\n", name);
        tap_depth = 0;
        fn();
}

static inline int done_testing(void)
{
        printf("1..%d\n", tap_count);
        return tap_failed ? 1 : 0;
}

#endif
