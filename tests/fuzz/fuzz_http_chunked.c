/* SPDX-License-Identifier: MIT */
/*
 * fuzz_http_chunked: http_chunked_decode() on any bytes, whole and split.
 *
 * The first input byte picks where the rest is cut in two. Decoding the two
 * parts one after the other must give exactly what decoding it in one piece
 * gives: the same result, the same data, the same end of the body. Both
 * run with and without a max_total.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct outcome {
        ssize_t r;       /* the last result */
        size_t consumed; /* where the body ended in the input, when r >= 0 */
        size_t data_len;
        uint64_t total;
};

/*
 * Decodes in[0..len) cut at split, each part in a buffer of its own exact
 * size so that any over-read is caught. The data is gathered in out.
 */
static struct outcome decode(const uint8_t *in, size_t len, size_t split, uint64_t max_total,
                             char *out)
{
        struct outcome o = {.r = -EAGAIN};
        struct http_chunked c;
        size_t bounds[2] = {split, len}, start = 0;

        http_chunked_init(&c, max_total);
        for (size_t i = 0; i < 2 && o.r == -EAGAIN; i++) {
                size_t n = bounds[i] - start, got = 0;
                char *part = malloc(n > 0 ? n : 1);

                assert(part);
                memcpy(part, in + start, n);
                o.r = http_chunked_decode(&c, part, n, &got);
                assert(o.r == -EAGAIN || o.r == -EBADMSG || o.r == -EFBIG ||
                       (o.r >= 0 && (size_t) o.r <= n));
                if (o.r == -EAGAIN || o.r >= 0) {
                        /* Data never outruns what was consumed. */
                        assert(got <= (o.r >= 0 ? (size_t) o.r : n));
                        memcpy(out + o.data_len, part, got);
                        o.data_len += got;
                }
                if (o.r >= 0)
                        o.consumed = start + (size_t) o.r;
                free(part);
                start = bounds[i];
        }
        o.total = c.total;
        /* After an error the data of the failing call is not reported, so it is not counted. */
        assert(o.r < 0 && o.r != -EAGAIN ? o.total >= o.data_len : o.total == o.data_len);
        assert(max_total == 0 || o.total <= max_total);
        return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const uint64_t limits[] = {0, 64};
        char *whole_out, *split_out;
        size_t len, split;

        if (size == 0)
                return 0;
        len = size - 1;
        split = (size_t) data[0] * len / 255;

        whole_out = malloc(len + 1);
        split_out = malloc(len + 1);
        assert(whole_out && split_out);
        for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
                struct outcome whole = decode(data + 1, len, len, limits[i], whole_out);
                struct outcome parts = decode(data + 1, len, split, limits[i], split_out);

                assert(whole.r == parts.r || (whole.r >= 0 && parts.r >= 0));
                if (whole.r < 0 && whole.r != -EAGAIN)
                        continue; /* the same error; how much data came before it may differ */
                assert(whole.data_len == parts.data_len && whole.total == parts.total);
                assert(memcmp(whole_out, split_out, whole.data_len) == 0);
                if (whole.r >= 0)
                        assert(whole.consumed == parts.consumed && whole.consumed <= len);
        }
        free(whole_out);
        free(split_out);
        return 0;
}
