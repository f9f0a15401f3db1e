/* SPDX-License-Identifier: MIT */
/*
 * fuzz_http_request: http_parse_request() on any bytes.
 *
 * Beyond "does not crash", it checks what the parser promises: a head that
 * parses lies inside the input with every span in it; a shorter max_head
 * only ever turns the result into -E2BIG; a shorter input only ever turns
 * it into -EAGAIN; and the helpers that run on parsed fields (path
 * normalisation, header lookup, lists) accept whatever the parser let
 * through.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool span_inside(struct span s, const char *buf, size_t len)
{
        if (s.len == 0)
                return true;
        /* The one span not in the input: "/" for "http://host" without a path. */
        if (s.len == 1 && s.ptr[0] == '/' && (s.ptr < buf || s.ptr >= buf + len))
                return true;
        return s.ptr >= buf && s.ptr + s.len <= buf + len;
}

static bool is_parse_error(ssize_t r)
{
        return r == -EAGAIN || r == -EBADMSG || r == -E2BIG || r == -ENOSYS || r == -EMSGSIZE;
}

static void check_request(const struct http_request *req, const char *buf, size_t size, ssize_t r)
{
        static char path[HTTP_MAX_TARGET + 1];

        assert((size_t) r <= size);
        assert(req->head_len == (size_t) r);
        assert(req->n_headers <= HTTP_MAX_HEADERS);
        assert(req->minor_version == 0 || req->minor_version == 1);
        assert((unsigned) req->method < _HTTP_METHOD_MAX);
        assert((unsigned) req->body < _HTTP_BODY_MAX);
        assert(req->body != HTTP_BODY_LENGTH || req->content_length > 0);
        assert(req->body != HTTP_BODY_CHUNKED || req->minor_version == 1);
        assert(req->target.len > 0 && req->target.len <= HTTP_MAX_TARGET);
        assert(req->method_name.len > 0);
        assert(span_inside(req->method_name, buf, size) && span_inside(req->target, buf, size) &&
               span_inside(req->path, buf, size) && span_inside(req->query, buf, size) &&
               span_inside(req->host, buf, size));
        assert(!req->has_query || req->path.len > 0);

        for (size_t i = 0; i < req->n_headers; i++) {
                const struct http_header *h = &req->headers[i];
                char name[64];

                assert(h->name.len > 0);
                assert(span_inside(h->name, buf, size) && span_inside(h->value, buf, size));
                assert(memchr(h->value.ptr, '\r', h->value.len) == NULL);
                assert(memchr(h->value.ptr, '\n', h->value.len) == NULL);
                assert(h->value.len == 0 ||
                       (h->value.ptr[0] != ' ' && h->value.ptr[h->value.len - 1] != ' '));
                (void) http_list_has_token(h->value, "gzip");
                if (h->name.len < sizeof(name)) {
                        const struct http_header *found;

                        memcpy(name, h->name.ptr, h->name.len);
                        name[h->name.len] = '\0';
                        found = http_find_header(req, name);
                        assert(found && found <= h && found->name.len == h->name.len);
                }
        }

        if (req->path.len > 0 && req->path.ptr[0] == '/') {
                ssize_t n = http_path_normalize(req->path.ptr, req->path.len, path, sizeof(path),
                                                HTTP_PATH_REJECT_ENCODED_SLASH);
                assert(n == -EBADMSG || (n >= 1 && path[0] == '/'));
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static struct http_request req, other;
        const char *buf = (const char *) data;
        ssize_t r, q;
        size_t step;

        r = http_parse_request(buf, size, HTTP_DEFAULT_MAX_HEAD, &req);
        assert(r >= 0 || is_parse_error(r));
        if (r >= 0)
                check_request(&req, buf, size, r);

        /*
         * Every smaller max_head (with a stride above 1 KiB, which keeps the
         * cost linear for long inputs): the parser either still gets as far
         * as it did, or stops at the limit with -E2BIG.
         */
        for (size_t m = 0; m < size && m < HTTP_DEFAULT_MAX_HEAD; m += step) {
                step = m < 1024 ? 1 : size / 64 + 1;
                q = http_parse_request(buf, size, m, &other);
                if (r >= 0 && (size_t) r <= m)
                        assert(q == r && other.head_len == req.head_len &&
                               other.n_headers == req.n_headers);
                else
                        assert(q == -E2BIG || q == r);
        }

        /* A prefix: -EAGAIN until the head is complete, never an error the whole has not. */
        for (size_t k = size / 2; k < size; k += (size - k + 1) / 2) {
                q = http_parse_request(buf, k, HTTP_DEFAULT_MAX_HEAD, &other);
                if (r >= 0 && (size_t) r <= k)
                        assert(q == r);
                else
                        assert(q == -EAGAIN || q == r);
        }
        return 0;
}
