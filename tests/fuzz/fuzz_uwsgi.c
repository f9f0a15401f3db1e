/* SPDX-License-Identifier: MIT */
/*
 * fuzz_uwsgi: uwsgi_parse_request() on any bytes, and the writer on what
 * it accepts.
 *
 * Beyond "does not crash", it checks what the parser promises: the result
 * depends only on the header and the block it announces (never on the body
 * after it), every prefix of a packet is -EAGAIN, and a parsed packet has
 * every span inside its head. The format has one spelling per list of
 * variables, so re-encoding the parsed variables with the writer must give
 * back exactly the head, which parses to the same variables; a buffer one
 * byte short must make the writer fail without writing past it.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "uwsgi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool span_inside(struct span s, const char *buf, size_t len)
{
        return s.ptr && s.ptr >= buf && s.len <= len && s.ptr - buf <= (ptrdiff_t) (len - s.len);
}

static bool span_same(struct span a, struct span b)
{
        return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

static void check_request(const struct uwsgi_request *req, const char *buf, size_t size, ssize_t r)
{
        assert(r >= UWSGI_HEADER_SIZE && (size_t) r <= size && (size_t) r <= UWSGI_MAX_HEAD);
        assert(req->head_len == (size_t) r);
        assert(req->n_vars <= UWSGI_MAX_VARS);
        assert(req->modifier1 == (uint8_t) buf[0] && req->modifier2 == (uint8_t) buf[3]);

        for (size_t i = 0; i < req->n_vars; i++) {
                const struct uwsgi_var *v = &req->vars[i];

                assert(v->key.len > 0);
                assert(span_inside(v->key, buf + UWSGI_HEADER_SIZE,
                                   req->head_len - UWSGI_HEADER_SIZE));
                assert(span_inside(v->value, buf + UWSGI_HEADER_SIZE,
                                   req->head_len - UWSGI_HEADER_SIZE));
                /* In order and back to back: each key starts 2 bytes after the previous value. */
                if (i > 0)
                        assert(v->key.ptr ==
                               req->vars[i - 1].value.ptr + req->vars[i - 1].value.len + 2);
        }
}

/* What uwsgi_get() must return for key: the value of its first variable, or {NULL, 0}. */
static void check_get(const struct uwsgi_request *req, const char *key)
{
        struct span k = span_from_str(key), found = uwsgi_get(req, key);

        for (size_t i = 0; i < req->n_vars; i++)
                if (span_same(req->vars[i].key, k)) {
                        assert(found.ptr == req->vars[i].value.ptr &&
                               found.len == req->vars[i].value.len);
                        return;
                }
        assert(found.ptr == NULL && found.len == 0);
}

/* Every (NUL-free) key of the request, and a few names that may or may not be there. */
static void check_lookup(const struct uwsgi_request *req)
{
        static const char *const probes[] = {"PATH_INFO", "REQUEST_METHOD", "X", "K", ""};
        static char key[UWSGI_MAX_BLOCK + 1];

        for (size_t i = 0; i < req->n_vars; i++) {
                const struct uwsgi_var *v = &req->vars[i];

                if (memchr(v->key.ptr, '\0', v->key.len))
                        continue;
                memcpy(key, v->key.ptr, v->key.len);
                key[v->key.len] = '\0';
                check_get(req, key);
        }
        for (size_t i = 0; i < ARRAY_SIZE(probes); i++)
                check_get(req, probes[i]);
}

/* Writes req's variables into a malloc'd buffer of exactly cap bytes. */
static ssize_t encode(const struct uwsgi_request *req, size_t cap, char **ret_buf)
{
        struct uwsgi_writer w;
        char *buf;
        ssize_t r;

        /* At least one byte, so that cap 0 still has a valid pointer. */
        buf = malloc(cap > 0 ? cap : 1);
        assert(buf);
        uwsgi_writer_init(&w, buf, cap, req->modifier1, req->modifier2);
        for (size_t i = 0; i < req->n_vars; i++)
                uwsgi_add(&w, req->vars[i].key, req->vars[i].value);
        r = uwsgi_finish(&w);
        assert(r == -E2BIG || (r >= 0 && (size_t) r == w.len && w.len <= cap));
        *ret_buf = buf;
        return r;
}

static void check_reencode(const struct uwsgi_request *req, const char *buf)
{
        static struct uwsgi_request again;
        char *out;
        ssize_t r;

        r = encode(req, req->head_len, &out);
        assert(r >= 0 && (size_t) r == req->head_len);
        assert(memcmp(out, buf, req->head_len) == 0);

        r = uwsgi_parse_request(out, req->head_len, &again);
        assert(r >= 0 && (size_t) r == req->head_len);
        assert(again.n_vars == req->n_vars);
        assert(again.modifier1 == req->modifier1 && again.modifier2 == req->modifier2);
        for (size_t i = 0; i < again.n_vars; i++) {
                assert(span_same(again.vars[i].key, req->vars[i].key));
                assert(span_same(again.vars[i].value, req->vars[i].value));
        }
        free(out);

        /* One byte short: refused, and ASan sees any write past the buffer. */
        r = encode(req, req->head_len - 1, &out);
        assert(r == -E2BIG);
        free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static struct uwsgi_request req, other;
        const char *buf = (const char *) data;
        size_t head;
        ssize_t r;

        r = uwsgi_parse_request(buf, size, &req);
        assert(r > 0 || r == -EAGAIN || r == -EBADMSG || r == -E2BIG);
        if (size < UWSGI_HEADER_SIZE) {
                assert(r == -EAGAIN);
                return 0;
        }

        /* Only the announced head is read: cut to it, the answer is the same. */
        head = UWSGI_HEADER_SIZE + ((size_t) data[1] | (size_t) data[2] << 8);
        assert(r == -EAGAIN ? size < head : head <= size);
        if (head <= size)
                assert(uwsgi_parse_request(buf, head, &other) == r);

        /*
         * Any prefix of the head is incomplete, whatever the whole turns out
         * to be: 0, then halfway to the end each time, down to head - 1.
         */
        for (size_t k = 0; k < head && k < size; k += (head - k + 1) / 2)
                assert(uwsgi_parse_request(buf, k, &other) == -EAGAIN);

        if (r < 0)
                return 0;
        check_request(&req, buf, size, r);
        check_lookup(&req);
        check_reencode(&req, buf);
        return 0;
}
