/* SPDX-License-Identifier: MIT */
/*
 * http_response.c: the response head parser (see http_response.h).
 *
 * An upstream is trusted more than a client, but not with the framing: a
 * response whose end two parties could place differently would let one
 * request's answer leak into the next on a kept-alive connection. So the
 * same refusals apply as to requests.
 */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "http_response.h"

#define CONTENT_LENGTH_MAX ((uint64_t) INT64_MAX)

static bool is_tchar(char c)
{
        unsigned char u = (unsigned char) c;

        if ((u >= '0' && u <= '9') || ((u | 0x20) >= 'a' && (u | 0x20) <= 'z'))
                return true;
        return u && strchr("!#$%&'*+-.^_`|~", u) != NULL;
}

/* field-value bytes: HTAB, SP, VCHAR, obs-text */
static bool is_vchar(char c)
{
        unsigned char u = (unsigned char) c;

        return u == '\t' || (u >= 0x20 && u != 0x7f);
}

static bool name_eq(struct span n, const char *lit)
{
        size_t len = strlen(lit);

        return n.len == len && strncasecmp(n.ptr, lit, len) == 0;
}

/* "5", "5, 5": one length, however often repeated. */
static int content_length_value(struct span v, uint64_t *ret)
{
        const char *p = v.ptr, *end = v.ptr + v.len;
        bool have = false;
        uint64_t first = 0;

        while (p <= end) {
                uint64_t x = 0;
                size_t digits = 0;

                while (p < end && (*p == ' ' || *p == '\t'))
                        p++;
                for (; p < end && *p >= '0' && *p <= '9'; p++, digits++) {
                        unsigned d = (unsigned) (*p - '0');
                        if (x > (CONTENT_LENGTH_MAX - d) / 10)
                                return -EBADMSG;
                        x = x * 10 + d;
                }
                while (p < end && (*p == ' ' || *p == '\t'))
                        p++;
                if (digits == 0 || (have && x != first))
                        return -EBADMSG;
                first = x;
                have = true;
                if (p == end)
                        break;
                if (*p != ',')
                        return -EBADMSG;
                p++;
        }
        *ret = first;
        return 0;
}

/*
 * The last coding of the combined Transfer-Encoding list decides: chunked
 * last means chunked framing; anything else last means the body runs to
 * the close (RFC 9112 6.3 item 4). chunked anywhere but last is malformed.
 */
struct te_state {
        bool present;
        bool chunked_last;
        bool chunked_seen;
};

static int transfer_encoding_value(struct te_state *te, struct span v)
{
        const char *p = v.ptr, *end = v.ptr + v.len;

        te->present = true;
        while (p < end) {
                const char *s;
                struct span el;

                while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                        p++;
                if (p == end)
                        break;
                s = p;
                while (p < end && *p != ',')
                        p++;
                el = (struct span){s, (size_t) (p - s)};
                while (el.len && (el.ptr[el.len - 1] == ' ' || el.ptr[el.len - 1] == '\t'))
                        el.len--;
                if (te->chunked_seen)
                        return -EBADMSG; /* a coding after chunked */
                te->chunked_last = name_eq(el, "chunked");
                te->chunked_seen = te->chunked_last;
        }
        return 0;
}

static ssize_t incomplete(size_t len, size_t max_head)
{
        return len >= max_head ? -E2BIG : -EAGAIN;
}

ssize_t http_parse_response(const char *buf, size_t len, size_t max_head, bool head_request,
                            struct http_response *ret)
{
        const char *p = buf, *end = buf + (len < max_head ? len : max_head);
        struct te_state te = {0};
        bool have_length = false, conn_close = false, conn_keep = false;
        uint64_t length = 0;
        size_t n_headers = 0;
        int minor, status;
        struct span reason;
        const char *s;

        /* "HTTP/1.x SP 3DIGIT" */
        for (size_t i = 0; i < 12; i++) {
                static const char shape[] = "HTTP/1.1 000";
                if (p + i == end)
                        return incomplete(len, max_head);
                bool good =
                    i == 5 || i == 7 || i >= 9 ? (p[i] >= '0' && p[i] <= '9') : p[i] == shape[i];
                if (!good)
                        return -EBADMSG;
        }
        if (p[5] != '1' || p[7] > '1')
                return -ENOSYS;
        minor = p[7] - '0';
        status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
        if (status < 100)
                return -EBADMSG;
        p += 12;

        /* [SP reason-phrase] CRLF; the reason is VCHAR, SP, HTAB, obs-text. */
        if (p == end)
                return incomplete(len, max_head);
        if (*p == ' ')
                p++;
        else if (*p != '\r')
                return -EBADMSG;
        s = p;
        while (p < end && is_vchar(*p))
                p++;
        if (p == end || (p + 1 == end && *p == '\r'))
                return incomplete(len, max_head);
        if (p[0] != '\r' || p[1] != '\n')
                return -EBADMSG;
        reason = (struct span){s, (size_t) (p - s)};
        p += 2;

        for (;;) {
                struct http_header *h;
                const char *name_end, *vs, *ve;

                if (p == end)
                        return incomplete(len, max_head);
                if (*p == '\r') {
                        if (p + 1 == end)
                                return incomplete(len, max_head);
                        if (p[1] != '\n')
                                return -EBADMSG;
                        p += 2;
                        break;
                }
                if (n_headers == HTTP_MAX_HEADERS)
                        return -E2BIG;
                s = p;
                while (p < end && is_tchar(*p))
                        p++;
                if (p == end)
                        return incomplete(len, max_head);
                if (*p != ':' || p == s)
                        return -EBADMSG;
                name_end = p++;
                while (p < end && is_vchar(*p))
                        p++;
                if (p == end || (p + 1 == end && *p == '\r'))
                        return incomplete(len, max_head);
                if (p[0] != '\r' || p[1] != '\n')
                        return -EBADMSG;
                vs = name_end + 1;
                ve = p;
                while (vs < ve && (*vs == ' ' || *vs == '\t'))
                        vs++;
                while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t'))
                        ve--;
                p += 2;

                h = &ret->headers[n_headers++];
                h->name = (struct span){s, (size_t) (name_end - s)};
                h->value = (struct span){vs, (size_t) (ve - vs)};

                if (name_eq(h->name, "Content-Length")) {
                        uint64_t x;
                        if (content_length_value(h->value, &x) < 0 || (have_length && x != length))
                                return -EBADMSG;
                        have_length = true;
                        length = x;
                } else if (name_eq(h->name, "Transfer-Encoding")) {
                        if (minor == 0 || transfer_encoding_value(&te, h->value) < 0)
                                return -EBADMSG;
                } else if (name_eq(h->name, "Connection")) {
                        conn_close |= http_list_has_token(h->value, "close");
                        conn_keep |= http_list_has_token(h->value, "keep-alive");
                }
        }
        if (te.present && have_length)
                return -EBADMSG;

        ret->minor_version = minor;
        ret->status = status;
        ret->reason = reason;
        ret->n_headers = n_headers;
        ret->content_length = 0;
        if (head_request || status < 200 || status == 204 || status == 304) {
                ret->body = HTTP_RESP_NONE;
                ret->content_length = length;
        } else if (te.present) {
                ret->body = te.chunked_last ? HTTP_RESP_CHUNKED : HTTP_RESP_CLOSE;
        } else if (have_length) {
                ret->body = HTTP_RESP_LENGTH;
                ret->content_length = length;
        } else {
                ret->body = HTTP_RESP_CLOSE;
        }
        ret->keep_alive = ret->body != HTTP_RESP_CLOSE && !conn_close && (minor == 1 || conn_keep);
        ret->head_len = (size_t) (p - buf);
        return (ssize_t) ret->head_len;
}

const struct http_header *http_response_header(const struct http_response *resp, const char *name)
{
        for (size_t i = 0; i < resp->n_headers; i++)
                if (name_eq(resp->headers[i].name, name))
                        return &resp->headers[i];
        return NULL;
}
