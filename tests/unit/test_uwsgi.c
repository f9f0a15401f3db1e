/* SPDX-License-Identifier: MIT */
/*
 * Tests for common/uwsgi.c: the request parser, variable lookup and the
 * writer.
 *
 * Every input the parser sees and every buffer the writer fills ends right
 * before a PROT_NONE page, so reading or writing one byte too far crashes
 * the test instead of passing by luck. Expected packets are spelled out
 * byte by byte (two of them captured from nginx 1.22's uwsgi_pass) or built
 * by enc_var() below, never by the writer under test, so the writer and the
 * parser cannot agree on a shared mistake.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "guard.h"
#include "tap.h"
#include "uwsgi.h"

/* Inputs up to this size end right before the guard page: a full head, a body, room to spare. */
#define GUARD_AREA_SIZE (128 * 1024)

/* Scratch for building packets and for the big values of the limit tests. */
static char scratch[GUARD_AREA_SIZE];
static char big[2 * UWSGI_MAX_HEAD];

static struct uwsgi_request req, before;

static void guard_setup(void)
{
        guard_setup_size(GUARD_AREA_SIZE);
}

static ssize_t parse(const void *data, size_t len, struct uwsgi_request *ret)
{
        return uwsgi_parse_request(place(data, len), len, ret);
}

/*
 * Parses and expects the error want, with req left exactly as it was:
 * the parser writes *ret only on success.
 */
static bool parse_fails(const void *data, size_t len, ssize_t want)
{
        ssize_t r;

        /* memcpy, not assignment: a struct copy need not copy the padding. */
        memset(&req, 0xa5, sizeof(req));
        memcpy(&before, &req, sizeof(req));
        r = parse(data, len, &req);
        return r == want && memcmp(&req, &before, sizeof(req)) == 0;
}

/* Every proper prefix of data[0..len) is -EAGAIN and leaves req alone. */
static bool every_prefix_incomplete(const void *data, size_t len)
{
        for (size_t k = 0; k < len; k++)
                if (!parse_fails(data, k, -EAGAIN)) {
                        printf("# prefix of %zu bytes\n", k);
                        return false;
                }
        return true;
}

static bool span_is_bytes(struct span s, const void *bytes, size_t len)
{
        return s.ptr && s.len == len && memcmp(s.ptr, bytes, len) == 0;
}

static bool span_is(struct span s, const char *lit)
{
        return span_is_bytes(s, lit, strlen(lit));
}

static bool var_is(const struct uwsgi_var *v, const char *key, const char *value)
{
        return span_is(v->key, key) && span_is(v->value, value);
}

/* The test's own encoder: a header, then variables, each length as two explicit bytes. */
static size_t enc_header(char *buf, uint8_t modifier1, size_t datasize, uint8_t modifier2)
{
        buf[0] = (char) modifier1;
        buf[1] = (char) (datasize & 0xff);
        buf[2] = (char) (datasize >> 8);
        buf[3] = (char) modifier2;
        return 4;
}

static size_t enc_var(char *buf, const char *key, size_t key_len, const char *value,
                      size_t value_len)
{
        buf[0] = (char) (key_len & 0xff);
        buf[1] = (char) (key_len >> 8);
        memcpy(buf + 2, key, key_len);
        buf += 2 + key_len;
        buf[0] = (char) (value_len & 0xff);
        buf[1] = (char) (value_len >> 8);
        memcpy(buf + 2, value, value_len);
        return 4 + key_len + value_len;
}

static size_t enc_var_str(char *buf, const char *key, const char *value)
{
        return enc_var(buf, key, strlen(key), value, strlen(value));
}

/*
 * What nginx 1.22 sends for "GET /x?a=1 HTTP/1.1" with Host and User-Agent
 * (curl -H 'Accept:'), include /etc/nginx/uwsgi_params: the params in file
 * order, HTTPS left out (if_not_empty, plain http), empty CONTENT_TYPE and
 * CONTENT_LENGTH sent anyway, HTTP_HOST from $host, and the client's Host
 * header dropped because a param of that name exists. Captured from a real
 * nginx, not written from the spec.
 */
static const char nginx_get[] = "\x00\x49\x01\x00"
                                "\x0c\x00"
                                "QUERY_STRING"
                                "\x03\x00"
                                "a=1"
                                "\x0e\x00"
                                "REQUEST_METHOD"
                                "\x03\x00"
                                "GET"
                                "\x0c\x00"
                                "CONTENT_TYPE"
                                "\x00\x00"
                                "\x0e\x00"
                                "CONTENT_LENGTH"
                                "\x00\x00"
                                "\x0b\x00"
                                "REQUEST_URI"
                                "\x06\x00"
                                "/x?a=1"
                                "\x09\x00"
                                "PATH_INFO"
                                "\x02\x00"
                                "/x"
                                "\x0d\x00"
                                "DOCUMENT_ROOT"
                                "\x0d\x00"
                                "/var/www/html"
                                "\x0f\x00"
                                "SERVER_PROTOCOL"
                                "\x08\x00"
                                "HTTP/1.1"
                                "\x0e\x00"
                                "REQUEST_SCHEME"
                                "\x04\x00"
                                "http"
                                "\x0b\x00"
                                "REMOTE_ADDR"
                                "\x09\x00"
                                "127.0.0.1"
                                "\x0b\x00"
                                "REMOTE_PORT"
                                "\x05\x00"
                                "40884"
                                "\x0b\x00"
                                "SERVER_PORT"
                                "\x05\x00"
                                "18931"
                                "\x0b\x00"
                                "SERVER_NAME"
                                "\x09\x00"
                                "localhost"
                                "\x09\x00"
                                "HTTP_HOST"
                                "\x09\x00"
                                "127.0.0.1"
                                "\x0f\x00"
                                "HTTP_USER_AGENT"
                                "\x0b\x00"
                                "curl/7.88.1";

static const char *const nginx_get_vars[][2] = {
    {"QUERY_STRING", "a=1"},
    {"REQUEST_METHOD", "GET"},
    {"CONTENT_TYPE", ""},
    {"CONTENT_LENGTH", ""},
    {"REQUEST_URI", "/x?a=1"},
    {"PATH_INFO", "/x"},
    {"DOCUMENT_ROOT", "/var/www/html"},
    {"SERVER_PROTOCOL", "HTTP/1.1"},
    {"REQUEST_SCHEME", "http"},
    {"REMOTE_ADDR", "127.0.0.1"},
    {"REMOTE_PORT", "40884"},
    {"SERVER_PORT", "18931"},
    {"SERVER_NAME", "localhost"},
    {"HTTP_HOST", "127.0.0.1"},
    {"HTTP_USER_AGENT", "curl/7.88.1"},
};

/*
 * The same nginx for a form POST: the 7-byte body follows the block in the
 * same stream, and Content-Type/Content-Length also arrive as HTTP_*
 * (nginx only drops headers whose HTTP_ name is a configured param).
 */
static const char nginx_post[] = "\x00\xb9\x01\x00"
                                 "\x0c\x00"
                                 "QUERY_STRING"
                                 "\x00\x00"
                                 "\x0e\x00"
                                 "REQUEST_METHOD"
                                 "\x04\x00"
                                 "POST"
                                 "\x0c\x00"
                                 "CONTENT_TYPE"
                                 "\x21\x00"
                                 "application/x-www-form-urlencoded"
                                 "\x0e\x00"
                                 "CONTENT_LENGTH"
                                 "\x01\x00"
                                 "7"
                                 "\x0b\x00"
                                 "REQUEST_URI"
                                 "\x05\x00"
                                 "/form"
                                 "\x09\x00"
                                 "PATH_INFO"
                                 "\x05\x00"
                                 "/form"
                                 "\x0d\x00"
                                 "DOCUMENT_ROOT"
                                 "\x0d\x00"
                                 "/var/www/html"
                                 "\x0f\x00"
                                 "SERVER_PROTOCOL"
                                 "\x08\x00"
                                 "HTTP/1.1"
                                 "\x0e\x00"
                                 "REQUEST_SCHEME"
                                 "\x04\x00"
                                 "http"
                                 "\x0b\x00"
                                 "REMOTE_ADDR"
                                 "\x09\x00"
                                 "127.0.0.1"
                                 "\x0b\x00"
                                 "REMOTE_PORT"
                                 "\x05\x00"
                                 "40886"
                                 "\x0b\x00"
                                 "SERVER_PORT"
                                 "\x05\x00"
                                 "18931"
                                 "\x0b\x00"
                                 "SERVER_NAME"
                                 "\x09\x00"
                                 "localhost"
                                 "\x09\x00"
                                 "HTTP_HOST"
                                 "\x09\x00"
                                 "127.0.0.1"
                                 "\x0f\x00"
                                 "HTTP_USER_AGENT"
                                 "\x0b\x00"
                                 "curl/7.88.1"
                                 "\x11\x00"
                                 "HTTP_CONTENT_TYPE"
                                 "\x21\x00"
                                 "application/x-www-form-urlencoded"
                                 "\x13\x00"
                                 "HTTP_CONTENT_LENGTH"
                                 "\x01\x00"
                                 "7"
                                 "k=v&w=x";

static void test_nginx_get(void)
{
        size_t len = sizeof(nginx_get) - 1;
        bool all_match = true;
        ssize_t r;

        ok(len == 333, "the captured GET packet is 333 bytes");
        r = parse(nginx_get, len, &req);
        ok(r == (ssize_t) len, "GET: the whole packet is the head (%zd)", r);
        ok(req.head_len == len, "GET: head_len %zu", req.head_len);
        ok(req.modifier1 == UWSGI_MOD_WSGI && req.modifier2 == 0, "GET: modifiers 0/0");
        ok(req.n_vars == ARRAY_SIZE(nginx_get_vars), "GET: %zu variables", req.n_vars);
        for (size_t i = 0; i < ARRAY_SIZE(nginx_get_vars) && i < req.n_vars; i++)
                all_match &= var_is(&req.vars[i], nginx_get_vars[i][0], nginx_get_vars[i][1]);
        ok(all_match, "GET: every variable in nginx's order, with its value");

        ok(span_is(uwsgi_get(&req, "PATH_INFO"), "/x"), "GET: PATH_INFO /x");
        ok(span_is(uwsgi_get(&req, "QUERY_STRING"), "a=1"), "GET: QUERY_STRING a=1");
        ok(span_is(uwsgi_get(&req, "HTTP_HOST"), "127.0.0.1"), "GET: HTTP_HOST");
        ok(span_is(uwsgi_get(&req, "CONTENT_LENGTH"), ""),
           "GET: the empty CONTENT_LENGTH is present (non-NULL, length 0)");
        ok(uwsgi_get(&req, "HTTPS").ptr == NULL, "GET: HTTPS (if_not_empty) is absent");

        ok(every_prefix_incomplete(nginx_get, len), "GET: every prefix is -EAGAIN");
}

static void test_nginx_post(void)
{
        size_t len = sizeof(nginx_post) - 1;
        const char *buf = place(nginx_post, len);
        ssize_t r;

        r = uwsgi_parse_request(buf, len, &req);
        ok(r == 4 + 0x1b9, "POST: the head ends where the body starts (%zd)", r);
        ok(req.n_vars == 17, "POST: 17 variables");
        ok(r > 0 && span_is_bytes((struct span){buf + r, len - (size_t) r}, "k=v&w=x", 7),
           "POST: the body follows the head");
        ok(span_is(uwsgi_get(&req, "REQUEST_METHOD"), "POST"), "POST: REQUEST_METHOD");
        ok(span_is(uwsgi_get(&req, "QUERY_STRING"), ""), "POST: empty QUERY_STRING");
        ok(span_is(uwsgi_get(&req, "CONTENT_LENGTH"), "7"), "POST: CONTENT_LENGTH 7");
        ok(span_is(uwsgi_get(&req, "HTTP_CONTENT_TYPE"), "application/x-www-form-urlencoded"),
           "POST: HTTP_CONTENT_TYPE as well");
        ok(var_is(&req.vars[16], "HTTP_CONTENT_LENGTH", "7"), "POST: the last variable");

        /* Only the head is awaited: any prefix that holds it parses the same, body or not. */
        ok(every_prefix_incomplete(nginx_post, 4 + 0x1b9),
           "POST: every prefix of the head is -EAGAIN");
        r = parse(nginx_post, 4 + 0x1b9 + 3, &req);
        ok(r == 4 + 0x1b9, "POST: a partial body does not matter");
}

static void test_empty_block(void)
{
        static const char empty[] = "\x00\x00\x00\x00";
        static const char ping[] = "\x64\x00\x00\x00";
        static const char empty_then_body[] = "\x00\x00\x00\x00"
                                              "\x03\x00"
                                              "abc";

        ok(parse(empty, 4, &req) == 4 && req.n_vars == 0 && req.head_len == 4,
           "datasize 0 is a valid empty block");
        ok(uwsgi_get(&req, "PATH_INFO").ptr == NULL, "nothing is found in an empty block");
        ok(parse(ping, 4, &req) == 4 && req.modifier1 == UWSGI_MOD_PING && req.n_vars == 0,
           "a ping: modifier1 100, no variables");
        ok(parse(empty_then_body, sizeof(empty_then_body) - 1, &req) == 4 && req.n_vars == 0,
           "bytes after an empty block are body, not variables");
        ok(every_prefix_incomplete(empty, 4), "0 to 3 bytes of header are -EAGAIN");
}

static void test_modifiers(void)
{
        static const char psgi[] = "\x05\x00\x00\x07";
        static const char high[] = "\xff\x06\x00\xfe"
                                   "\x01\x00"
                                   "K"
                                   "\x01\x00"
                                   "v";

        ok(parse(psgi, 4, &req) == 4 && req.modifier1 == 5 && req.modifier2 == 7,
           "modifiers are reported as sent");
        ok(parse(high, sizeof(high) - 1, &req) == 10 && req.modifier1 == 0xff &&
               req.modifier2 == 0xfe && req.n_vars == 1,
           "modifiers above 127 are not sign-extended");
}

/* Byte-level malformations, each also with body bytes after the block that must not be used. */
static void test_malformed(void)
{
        /* The key claims 5 bytes, the block has 4 left; the body has more. */
        static const char key_past_end[] = "\x00\x06\x00\x00"
                                           "\x05\x00"
                                           "ABCD"
                                           "E\x01\x00v";
        /* The value claims 4 bytes, the block has 3 left. */
        static const char value_past_end[] = "\x00\x08\x00\x00"
                                             "\x01\x00"
                                             "K"
                                             "\x04\x00"
                                             "abc"
                                             "d";
        static const char value_ffff[] = "\x00\x07\x00\x00"
                                         "\x01\x00"
                                         "K"
                                         "\xff\xff"
                                         "ab";
        static const char key_ffff[] = "\x00\x06\x00\x00"
                                       "\xff\xff"
                                       "abcd";
        /* A valid variable ("K" = "v", 6 bytes), then 1 to 4 bytes that are not a variable. */
        static const char trailing_1[] = "\x00\x07\x00\x00"
                                         "\x01\x00K\x01\x00v"
                                         "\x01";
        static const char trailing_2[] = "\x00\x08\x00\x00"
                                         "\x01\x00K\x01\x00v"
                                         "\x01\x00";
        static const char trailing_3[] = "\x00\x09\x00\x00"
                                         "\x01\x00K\x01\x00v"
                                         "\x01\x00K";
        static const char trailing_4[] = "\x00\x0a\x00\x00"
                                         "\x01\x00K\x01\x00v"
                                         "\x01\x00K\x00";
        /* A lone key length of 0 is an empty key too, not padding. */
        static const char trailing_zero[] = "\x00\x08\x00\x00"
                                            "\x01\x00K\x01\x00v"
                                            "\x00\x00";
        static const char empty_key[] = "\x00\x05\x00\x00"
                                        "\x00\x00"
                                        "\x01\x00v";
        static const char empty_key_empty_value[] = "\x00\x04\x00\x00"
                                                    "\x00\x00\x00\x00";
        static const char empty_key_second[] = "\x00\x0b\x00\x00"
                                               "\x01\x00K\x01\x00v"
                                               "\x00\x00\x01\x00v";
        /* datasize 1 more than what the variables fill, and 1 less. */
        static const char block_too_long[] = "\x00\x07\x00\x00"
                                             "\x01\x00K\x01\x00v"
                                             "x";
        static const char block_too_short[] = "\x00\x05\x00\x00"
                                              "\x01\x00K\x01\x00v";

        ok(parse_fails(key_past_end, sizeof(key_past_end) - 1, -EBADMSG),
           "a key length past the end of the block is -EBADMSG, body or not");
        ok(parse_fails(value_past_end, sizeof(value_past_end) - 1, -EBADMSG),
           "a value length past the end of the block is -EBADMSG");
        ok(parse_fails(value_ffff, sizeof(value_ffff) - 1, -EBADMSG), "value length 0xffff");
        ok(parse_fails(key_ffff, sizeof(key_ffff) - 1, -EBADMSG), "key length 0xffff");
        ok(parse_fails(trailing_1, sizeof(trailing_1) - 1, -EBADMSG),
           "a 1-byte trailing remainder is -EBADMSG");
        ok(parse_fails(trailing_2, sizeof(trailing_2) - 1, -EBADMSG),
           "a 2-byte remainder (a key length, no key) is -EBADMSG");
        ok(parse_fails(trailing_3, sizeof(trailing_3) - 1, -EBADMSG),
           "a 3-byte remainder (a key, no value length) is -EBADMSG");
        ok(parse_fails(trailing_4, sizeof(trailing_4) - 1, -EBADMSG),
           "a 4-byte remainder (half a value length) is -EBADMSG");
        ok(parse_fails(trailing_zero, sizeof(trailing_zero) - 1, -EBADMSG),
           "two zero bytes after the last variable are -EBADMSG");
        ok(parse_fails(empty_key, sizeof(empty_key) - 1, -EBADMSG), "an empty key is -EBADMSG");
        ok(parse_fails(empty_key_empty_value, sizeof(empty_key_empty_value) - 1, -EBADMSG),
           "an empty key with an empty value is -EBADMSG");
        ok(parse_fails(empty_key_second, sizeof(empty_key_second) - 1, -EBADMSG),
           "an empty key after a valid variable is -EBADMSG");
        ok(parse_fails(block_too_long, sizeof(block_too_long) - 1, -EBADMSG),
           "a datasize 1 byte longer than the variables is -EBADMSG");
        ok(parse_fails(block_too_short, sizeof(block_too_short) - 1, -EBADMSG),
           "a datasize 1 byte shorter than the variables is -EBADMSG");

        /* A malformed block is judged only once it is all there. */
        ok(every_prefix_incomplete(key_past_end, 4 + 6),
           "every prefix of a malformed block is -EAGAIN");
        ok(parse_fails(key_past_end, 3, -EAGAIN), "a 3-byte header is -EAGAIN");
}

/* n variables "V000" = "x", ... with the test encoder; returns the packet length. */
static size_t build_many(char *buf, size_t n)
{
        size_t len = 4;

        for (size_t i = 0; i < n; i++) {
                char key[24];

                snprintf(key, sizeof(key), "V%03zu", i);
                len += enc_var_str(buf + len, key, "x");
        }
        enc_header(buf, 0, len - 4, 0);
        return len;
}

static void test_var_limit(void)
{
        size_t len;
        ssize_t r;

        len = build_many(scratch, UWSGI_MAX_VARS);
        r = parse(scratch, len, &req);
        ok(r == (ssize_t) len && req.n_vars == UWSGI_MAX_VARS, "256 variables parse");
        ok(var_is(&req.vars[UWSGI_MAX_VARS - 1], "V255", "x"), "the 256th is V255");
        ok(span_is(uwsgi_get(&req, "V255"), "x"), "uwsgi_get finds the last one");

        len = build_many(scratch, UWSGI_MAX_VARS + 1);
        ok(parse_fails(scratch, len, -E2BIG), "257 variables are -E2BIG");
        ok(every_prefix_incomplete(scratch, len), "every prefix of 257 variables is -EAGAIN");

        /* A fault after the 257th variable: malformed wins over too many. */
        scratch[len] = '\x01';
        enc_header(scratch, 0, len + 1 - 4, 0);
        ok(parse_fails(scratch, len + 1, -EBADMSG),
           "257 variables and a trailing byte are -EBADMSG, not -E2BIG");

        len = build_many(scratch, 1000);
        ok(parse_fails(scratch, len, -E2BIG), "1000 variables are -E2BIG");
}

static void test_get(void)
{
        static const char pkt[] = "\x00\x24\x00\x00"
                                  "\x09\x00PATH_INFO\x02\x00/a"
                                  "\x01\x00X\x01\x00"
                                  "1"
                                  "\x01\x00X\x01\x00"
                                  "2"
                                  "\x05\x00"
                                  "EMPTY\x00\x00";

        ok(parse(pkt, sizeof(pkt) - 1, &req) == 40 && req.n_vars == 4, "the lookup packet parses");
        ok(span_is(uwsgi_get(&req, "PATH_INFO"), "/a"), "an exact key is found");
        ok(uwsgi_get(&req, "PATH").ptr == NULL, "a prefix of a key is not a match");
        ok(uwsgi_get(&req, "PATH_INFO_").ptr == NULL, "a longer key is not a match");
        ok(uwsgi_get(&req, "path_info").ptr == NULL, "keys are case-sensitive");
        ok(uwsgi_get(&req, "").ptr == NULL, "the empty key is never found");
        ok(span_is(uwsgi_get(&req, "X"), "1"), "of duplicate keys, the first wins");
        ok(var_is(&req.vars[1], "X", "1") && var_is(&req.vars[2], "X", "2"),
           "duplicates are kept in order");
        ok(uwsgi_get(&req, "EMPTY").ptr != NULL && uwsgi_get(&req, "EMPTY").len == 0,
           "an empty value is present, not absent");
        ok(uwsgi_get(&req, "MISSING").ptr == NULL && uwsgi_get(&req, "MISSING").len == 0,
           "an absent key gives {NULL, 0}");
}

/* The writer against the test encoder, byte for byte, and back through the parser. */
static void test_round_trip(void)
{
        static const char binary[] = {'\0', '\x01', '\xff', '\x80', '\n', '\0'};
        char *buf = guarded(256);
        struct uwsgi_writer w;
        size_t len;
        ssize_t r;

        uwsgi_writer_init(&w, buf, 256, 5, 9);
        uwsgi_add_str(&w, "REQUEST_METHOD", "GET");
        uwsgi_add(&w, span_from_str("EMPTY"), (struct span){NULL, 0});
        uwsgi_add_str(&w, "NULL_VALUE", NULL);
        uwsgi_add(&w, span_from_str("BIN"), (struct span){binary, sizeof(binary)});
        uwsgi_add_str(&w, "X", "1");
        uwsgi_add_str(&w, "X", "2");
        r = uwsgi_finish(&w);

        len = 4;
        len += enc_var_str(scratch + len, "REQUEST_METHOD", "GET");
        len += enc_var_str(scratch + len, "EMPTY", "");
        len += enc_var_str(scratch + len, "NULL_VALUE", "");
        len += enc_var(scratch + len, "BIN", 3, binary, sizeof(binary));
        len += enc_var_str(scratch + len, "X", "1");
        len += enc_var_str(scratch + len, "X", "2");
        enc_header(scratch, 5, len - 4, 9);

        ok(r == (ssize_t) len && w.len == len && w.error == 0, "finish returns %zd", r);
        ok(r > 0 && memcmp(buf, scratch, len) == 0, "the writer's bytes are the test encoder's");

        r = uwsgi_parse_request(buf, len, &req);
        ok(r == (ssize_t) len && req.n_vars == 6, "the written packet parses");
        ok(req.modifier1 == 5 && req.modifier2 == 9, "modifiers survive");
        ok(var_is(&req.vars[0], "REQUEST_METHOD", "GET"), "first variable");
        ok(var_is(&req.vars[1], "EMPTY", "") && var_is(&req.vars[2], "NULL_VALUE", ""),
           "empty values, from {NULL, 0} and from a NULL string");
        ok(span_is(req.vars[3].key, "BIN") &&
               span_is_bytes(req.vars[3].value, binary, sizeof(binary)),
           "a value with NUL and high bytes");
        ok(var_is(&req.vars[4], "X", "1") && var_is(&req.vars[5], "X", "2"), "duplicates");

        /*
         * The parsed nginx GET, re-encoded, is the captured packet again: one
         * spelling. Parsed in place, so the spans do not point into the
         * guard area the writer fills.
         */
        r = uwsgi_parse_request(nginx_get, sizeof(nginx_get) - 1, &req);
        ok(r == (ssize_t) sizeof(nginx_get) - 1, "the nginx GET parses");
        buf = guarded(sizeof(nginx_get) - 1);
        uwsgi_writer_init(&w, buf, sizeof(nginx_get) - 1, req.modifier1, req.modifier2);
        for (size_t i = 0; i < req.n_vars; i++)
                uwsgi_add(&w, req.vars[i].key, req.vars[i].value);
        r = uwsgi_finish(&w);
        ok(r == (ssize_t) sizeof(nginx_get) - 1 && memcmp(buf, nginx_get, (size_t) r) == 0,
           "re-encoding nginx's packet gives nginx's bytes, into an exactly sized buffer");

        /* A writer that was only initialised is a valid empty packet. */
        buf = guarded(UWSGI_HEADER_SIZE);
        uwsgi_writer_init(&w, buf, UWSGI_HEADER_SIZE, UWSGI_MOD_PING, 0);
        r = uwsgi_finish(&w);
        ok(r == 4 && memcmp(buf, "\x64\x00\x00\x00", 4) == 0,
           "an empty ping packet fits in 4 bytes");
}

static void test_writer_limits(void)
{
        struct uwsgi_writer w;
        char *buf;
        ssize_t r;

        memset(big, 'v', sizeof(big));

        /* Block of exactly 65535: "K" (1) + a value of 65530 + 4 bytes of lengths. */
        buf = guarded(UWSGI_MAX_HEAD);
        uwsgi_writer_init(&w, buf, UWSGI_MAX_HEAD, 0, 0);
        uwsgi_add(&w, span_from_str("K"), (struct span){big, UWSGI_MAX_BLOCK - 5});
        r = uwsgi_finish(&w);
        ok(r == UWSGI_MAX_HEAD, "a block of exactly 65535 bytes fits (%zd)", r);
        ok((uint8_t) buf[1] == 0xff && (uint8_t) buf[2] == 0xff, "datasize 0xffff");
        r = uwsgi_parse_request(buf, UWSGI_MAX_HEAD, &req);
        ok(r == UWSGI_MAX_HEAD && req.n_vars == 1 && req.vars[0].value.len == UWSGI_MAX_BLOCK - 5,
           "and parses back");
        /* place() below reuses the guard area: keep the packet in scratch. */
        memcpy(scratch, buf, UWSGI_MAX_HEAD);
        ok(every_prefix_incomplete(scratch, 16) &&
               parse_fails(scratch, UWSGI_MAX_HEAD - 1, -EAGAIN),
           "a 65535-byte block one byte short is -EAGAIN");

        /* Block of 65536: one byte more, with all the buffer room it could want. */
        buf = guarded(GUARD_AREA_SIZE);
        uwsgi_writer_init(&w, buf, GUARD_AREA_SIZE, 0, 0);
        uwsgi_add(&w, span_from_str("K"), (struct span){big, UWSGI_MAX_BLOCK - 4});
        ok(w.error == -E2BIG && w.len == 4,
           "a block of 65536 bytes latches -E2BIG, writes nothing");
        ok(uwsgi_finish(&w) == -E2BIG, "and finish returns -E2BIG");

        /*
         * CVE-2020-11984: mod_proxy_uwsgi summed the block in a u16, so 65546
         * bytes became 10. Here the second variable is refused whole.
         */
        uwsgi_writer_init(&w, buf, GUARD_AREA_SIZE, 0, 0);
        uwsgi_add(&w, span_from_str("A"), (struct span){big, 60000});
        ok(w.error == 0 && w.len == 4 + 60005, "60005 bytes of block");
        uwsgi_add(&w, span_from_str("B"), (struct span){big, 5536});
        ok(w.error == -E2BIG && w.len == 4 + 60005,
           "a second variable making 65546 (10 mod 65536) is refused whole");
        uwsgi_add_str(&w, "C", "c");
        ok(w.len == 4 + 60005, "the error is latched: a small variable after it is not added");
        ok(uwsgi_finish(&w) == -E2BIG && buf[1] == 0 && buf[2] == 0,
           "finish refuses and leaves datasize 0");

        uwsgi_writer_init(&w, buf, GUARD_AREA_SIZE, 0, 0);
        uwsgi_add(&w, span_from_str("K"), (struct span){big, UWSGI_MAX_BLOCK + 1});
        ok(w.error == -E2BIG && w.len == 4, "a 65536-byte value is -E2BIG");
        uwsgi_writer_init(&w, buf, GUARD_AREA_SIZE, 0, 0);
        uwsgi_add(&w, (struct span){big, UWSGI_MAX_BLOCK}, span_from_str("v"));
        ok(w.error == -E2BIG && w.len == 4, "a 65535-byte key does not fit a block");
        uwsgi_writer_init(&w, buf, GUARD_AREA_SIZE, 0, 0);
        uwsgi_add(&w, span_from_str("K"), (struct span){big, sizeof(big)});
        ok(w.error == -E2BIG && w.len == 4, "a 128 KiB value is -E2BIG, not truncated");
        /* A length that would wrap the sum to 0 if it were added before being checked. */
        uwsgi_writer_init(&w, buf, GUARD_AREA_SIZE, 0, 0);
        uwsgi_add(&w, span_from_str("K"), (struct span){big, SIZE_MAX - 4});
        ok(w.error == -E2BIG && w.len == 4, "a value length near SIZE_MAX is -E2BIG, unread");

        /* The caller's buffer: exactly full is fine, one byte short latches. */
        buf = guarded(4 + 10);
        uwsgi_writer_init(&w, buf, 4 + 10, 0, 0);
        uwsgi_add_str(&w, "KEY", "val");
        ok(w.error == 0 && w.len == 4 + 10, "a variable that fills the buffer exactly");
        ok(uwsgi_finish(&w) == 14, "finishes at 14 bytes");
        buf = guarded(4 + 9);
        uwsgi_writer_init(&w, buf, 4 + 9, 0, 0);
        uwsgi_add_str(&w, "KEY", "val");
        ok(w.error == -E2BIG && w.len == 4, "one byte short of the buffer latches -E2BIG");
        ok(uwsgi_finish(&w) == -E2BIG, "and finish returns it");

        /* Too small for even the header: nothing is written. */
        buf = guarded(3);
        memcpy(buf, "abc", 3);
        uwsgi_writer_init(&w, buf, 3, 0, 0);
        uwsgi_add_str(&w, "K", "v");
        ok(uwsgi_finish(&w) == -E2BIG && memcmp(buf, "abc", 3) == 0,
           "a 3-byte buffer is -E2BIG and untouched");
        uwsgi_writer_init(&w, NULL, 0, 0, 0);
        ok(uwsgi_finish(&w) == -E2BIG, "a NULL buffer of 0 bytes is -E2BIG");
}

int main(void)
{
        guard_setup();

        subtest("nginx GET", test_nginx_get);
        subtest("nginx POST", test_nginx_post);
        subtest("empty block", test_empty_block);
        subtest("modifiers", test_modifiers);
        subtest("malformed", test_malformed);
        subtest("variable limit", test_var_limit);
        subtest("uwsgi_get", test_get);
        subtest("round trip", test_round_trip);
        subtest("writer limits", test_writer_limits);

        return done_testing();
}
