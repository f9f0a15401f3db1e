/* SPDX-License-Identifier: MIT */
/*
 * fuzz_http_response: any bytes as an upstream's response head, parsed as
 * the answer to GET and to HEAD and at every cut of the input. The head
 * length stays within the input, every span points into it, the framing is
 * one of the four, and a prefix of a complete head is never complete.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_response.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_span(struct span s, const char *buf, size_t len)
{
        if (s.len && (s.ptr < buf || s.ptr + s.len > buf + len))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *buf = (const char *) data;
        struct http_response resp;

        for (int head = 0; head < 2; head++) {
                ssize_t r = http_parse_response(buf, size, 8192, head, &resp);
                if (r == -EAGAIN || r == -EBADMSG || r == -E2BIG || r == -ENOSYS)
                        continue;
                if (r <= 0 || (size_t) r > size || (size_t) r != resp.head_len)
                        abort();
                if (resp.status < 100 || resp.status > 999 || resp.n_headers > HTTP_MAX_HEADERS)
                        abort();
                if (resp.body >= _HTTP_RESP_BODY_MAX || (head && resp.body != HTTP_RESP_NONE))
                        abort();
                if (resp.body == HTTP_RESP_CLOSE && resp.keep_alive)
                        abort();
                check_span(resp.reason, buf, size);
                for (size_t i = 0; i < resp.n_headers; i++) {
                        check_span(resp.headers[i].name, buf, size);
                        check_span(resp.headers[i].value, buf, size);
                        if (resp.headers[i].name.len == 0)
                                abort();
                }
                /* Any shorter input is incomplete, never a different head. */
                ssize_t shorter = http_parse_response(buf, (size_t) r - 1, 8192, head, &resp);
                if (shorter != -EAGAIN)
                        abort();
        }
        return 0;
}
