/* SPDX-License-Identifier: MIT */
/*
 * uwsgi: the request packet nginx's uwsgi_pass sends (layout in uwsgi.h).
 *
 * Lengths are read and written byte by byte in little-endian order, never
 * through a struct cast, so a packet can sit at any alignment in a receive
 * buffer and the code does not depend on the host's byte order.
 *
 * The parser makes two passes over the variable block: the first checks
 * every length against the end of the block and counts the variables
 * without writing anything, the second (which cannot fail) fills in the
 * caller's struct. So *ret is written only on success without an 8 KiB
 * copy, and a malformed block is -EBADMSG however many variables precede
 * the fault (-E2BIG only ever means "well formed, but too many").
 *
 * The format leaves no freedom (no padding, no optional fields), so the
 * writer produces the one spelling of a list of variables: re-encoding what
 * the parser returned gives back the same bytes.
 *
 * All size arithmetic is in size_t and checked before it is narrowed to the
 * 16-bit fields; Apache's mod_proxy_uwsgi summed the block in a u16 and
 * overflowed (CVE-2020-11984).
 */
#include <assert.h>

#include "uwsgi.h"

/* Each variable carries two 16-bit lengths. */
#define UWSGI_VAR_OVERHEAD 4
#define UWSGI_MAX_FIELD UINT16_MAX

_Static_assert(UWSGI_MAX_BLOCK == UINT16_MAX, "datasize is a 16-bit field");
_Static_assert(UWSGI_MAX_HEAD == UWSGI_HEADER_SIZE + UWSGI_MAX_BLOCK,
               "a head is the header and at most one full block");

static uint16_t get_le16(const char *p)
{
        const uint8_t *u = (const uint8_t *) p;

        return (uint16_t) (u[0] | (unsigned) u[1] << 8);
}

static void put_le16(char *p, size_t v)
{
        assert(v <= UINT16_MAX);
        p[0] = (char) (uint8_t) v;
        p[1] = (char) (uint8_t) (v >> 8);
}

/*
 * First pass over block[0..len): every length inside the block, every key
 * non-empty, nothing left over. Returns the number of variables (which may
 * exceed UWSGI_MAX_VARS) or -EBADMSG.
 */
static ssize_t check_block(const char *block, size_t len)
{
        size_t pos = 0, n = 0;

        while (pos < len) {
                size_t key_len, value_len;

                /* A lone byte or two cannot start a variable with its two lengths. */
                if (len - pos < 2)
                        return -EBADMSG;
                key_len = get_le16(block + pos);
                pos += 2;
                if (key_len == 0 || key_len > len - pos)
                        return -EBADMSG;
                pos += key_len;

                if (len - pos < 2)
                        return -EBADMSG;
                value_len = get_le16(block + pos);
                pos += 2;
                if (value_len > len - pos)
                        return -EBADMSG;
                pos += value_len;

                n++;
        }
        /* A u16 block holds at most 65535 / 5 variables: no overflow of the count. */
        return (ssize_t) n;
}

ssize_t uwsgi_parse_request(const char *buf, size_t len, struct uwsgi_request *ret)
{
        const char *block;
        size_t datasize, pos = 0;
        ssize_t n;

        assert(buf || len == 0);
        assert(ret);

        if (len < UWSGI_HEADER_SIZE)
                return -EAGAIN;
        datasize = get_le16(buf + 1);
        /*
         * The whole block must be there before any of it is judged: a
         * prefix of a valid packet is only ever incomplete, and a buffer of
         * UWSGI_MAX_HEAD bytes always suffices.
         */
        if (len - UWSGI_HEADER_SIZE < datasize)
                return -EAGAIN;

        block = buf + UWSGI_HEADER_SIZE;
        n = check_block(block, datasize);
        if (n < 0)
                return n;
        if ((size_t) n > UWSGI_MAX_VARS)
                return -E2BIG;

        /* Second pass: the block is known to be well formed. */
        ret->modifier1 = (uint8_t) buf[0];
        ret->modifier2 = (uint8_t) buf[3];
        ret->head_len = UWSGI_HEADER_SIZE + datasize;
        ret->n_vars = (size_t) n;
        for (size_t i = 0; i < ret->n_vars; i++) {
                struct uwsgi_var *v = &ret->vars[i];

                v->key.len = get_le16(block + pos);
                v->key.ptr = block + pos + 2;
                pos += 2 + v->key.len;
                /* An empty value still points into the buffer: only absence is NULL. */
                v->value.len = get_le16(block + pos);
                v->value.ptr = block + pos + 2;
                pos += 2 + v->value.len;
        }
        assert(pos == datasize);

        return (ssize_t) ret->head_len;
}

struct span uwsgi_get(const struct uwsgi_request *req, const char *key)
{
        size_t key_len;

        assert(req);
        assert(key);

        key_len = strlen(key);
        for (size_t i = 0; i < req->n_vars; i++) {
                struct span k = req->vars[i].key;

                if (k.len == key_len && memcmp(k.ptr, key, key_len) == 0)
                        return req->vars[i].value;
        }
        return (struct span){NULL, 0};
}

void uwsgi_writer_init(struct uwsgi_writer *w, char *buf, size_t cap, uint8_t modifier1,
                       uint8_t modifier2)
{
        assert(w);
        assert(buf || cap == 0);

        *w = (struct uwsgi_writer){.buf = buf, .cap = cap};
        if (cap < UWSGI_HEADER_SIZE) {
                w->error = -E2BIG;
                return;
        }
        /* datasize stays 0 until uwsgi_finish(), so even an unfinished packet parses. */
        buf[0] = (char) modifier1;
        put_le16(buf + 1, 0);
        buf[3] = (char) modifier2;
        w->len = UWSGI_HEADER_SIZE;
}

void uwsgi_add(struct uwsgi_writer *w, struct span key, struct span value)
{
        size_t need;
        char *p;

        assert(w);
        /* Keys come from configuration or "HTTP_" + a header name, never from nowhere. */
        assert(key.ptr && key.len > 0);
        assert(value.ptr || value.len == 0);

        if (w->error < 0)
                return;

        /* Each length alone first, so that need cannot wrap. */
        if (key.len > UWSGI_MAX_FIELD || value.len > UWSGI_MAX_FIELD) {
                w->error = -E2BIG;
                return;
        }
        need = UWSGI_VAR_OVERHEAD + key.len + value.len;
        if (need > UWSGI_MAX_BLOCK - (w->len - UWSGI_HEADER_SIZE) || need > w->cap - w->len) {
                w->error = -E2BIG;
                return;
        }

        p = w->buf + w->len;
        put_le16(p, key.len);
        memcpy(p + 2, key.ptr, key.len);
        p += 2 + key.len;
        put_le16(p, value.len);
        /* An empty value may be {NULL, 0}, and memcpy() from NULL is undefined even for 0 bytes. */
        if (value.len > 0)
                memcpy(p + 2, value.ptr, value.len);
        w->len += need;
}

void uwsgi_add_str(struct uwsgi_writer *w, const char *key, const char *value)
{
        assert(key);

        uwsgi_add(w, span_from_str(key), span_from_str(value));
}

ssize_t uwsgi_finish(struct uwsgi_writer *w)
{
        assert(w);

        if (w->error < 0)
                return w->error;
        /* uwsgi_add() kept the block within UWSGI_MAX_BLOCK. */
        put_le16(w->buf + 1, w->len - UWSGI_HEADER_SIZE);
        return (ssize_t) w->len;
}
