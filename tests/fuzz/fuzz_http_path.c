/* SPDX-License-Identifier: MIT */
/*
 * fuzz_http_path: http_path_normalize() on any bytes.
 *
 * What comes out must be a clean absolute path: starting with '/', no NUL,
 * no "." or ".." segment, no empty segment but a trailing one; and a clean
 * path without '%' (nothing left to decode) must normalise to itself.
 * The strict mode may only refuse more, never answer differently.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_clean(const char *out, size_t n)
{
        assert(n >= 1 && out[0] == '/');
        assert(out[n] == '\0' && strlen(out) == n);
        for (size_t i = 0; i < n; i++) {
                size_t seg_len;

                if (out[i] != '/')
                        continue;
                /* The segment that starts after this '/'. */
                seg_len = strcspn(out + i + 1, "/");
                if (i + 1 + seg_len < n)
                        assert(seg_len > 0); /* no "//" */
                assert(!(seg_len == 1 && out[i + 1] == '.'));
                assert(!(seg_len == 2 && out[i + 1] == '.' && out[i + 2] == '.'));
        }
}

static bool has_encoded_slash(const char *in, size_t len)
{
        for (size_t i = 0; i + 2 < len; i++)
                if (in[i] == '%' && in[i + 1] == '2' && (in[i + 2] | 0x20) == 'f')
                        return true;
        return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *in = (const char *) data;
        char *out = malloc(size + 1), *strict = malloc(size + 1), *again = malloc(size + 1);
        ssize_t r, s;

        assert(out && strict && again);
        r = http_path_normalize(in, size, out, size + 1, 0);
        assert(r == -EBADMSG || (r >= 0 && (size_t) r <= size));
        if (r >= 0) {
                check_clean(out, (size_t) r);
                if (!memchr(out, '%', (size_t) r)) {
                        ssize_t a = http_path_normalize(out, (size_t) r, again, size + 1, 0);

                        assert(a == r && memcmp(again, out, (size_t) r) == 0);
                }
        }

        s = http_path_normalize(in, size, strict, size + 1, HTTP_PATH_REJECT_ENCODED_SLASH);
        assert(s == -EBADMSG || (s >= 0 && (size_t) s <= size));
        if (s >= 0)
                assert(s == r && memcmp(strict, out, (size_t) s + 1) == 0);
        else if (!has_encoded_slash(in, size))
                assert(r == s);

        /* Too small an output buffer is refused, not overrun. */
        if (size > 0)
                assert(http_path_normalize(in, size, out, size, 0) == -ENOBUFS);

        free(out);
        free(strict);
        free(again);
        return 0;
}
