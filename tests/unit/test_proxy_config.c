/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemons/proxy/proxy_config.c: sections and what belongs to
 * which, routing (exact before prefix, longest prefix, virtual servers by
 * Host), upstream server parameters, and every refusal with its file:line.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_parse.h"
#include "proxy.h"
#include "proxy_gzip.h"
#include "tap.h"
#include "util.h"

static struct config_diag diag;

static struct proxy_config *load(const char *text)
{
        struct proxy_config *c = NULL;

        config_diag_done(&diag);
        diag = (struct config_diag){0};
        if (proxy_config_from_text("/etc/wharf/proxy.ini", text, strlen(text), &diag, &c) < 0)
                return NULL;
        return c;
}

/* Does some message contain every one of the given pieces? */
static bool diag_has(const char *a, const char *b)
{
        for (size_t i = 0; i < diag.n_messages; i++)
                if (strstr(diag.messages[i], a) && (!b || strstr(diag.messages[i], b)))
                        return true;
        return false;
}

static const char *route(const struct proxy_config *c, const char *host, const char *path)
{
        const struct vserver *vs = proxy_find_server(c, host, strlen(host));
        const struct location *l = proxy_find_location(vs, path, strlen(path));

        return l ? l->prefix : "(none)";
}

static void test_tutorial_site(void)
{
        struct proxy_config *c = load("[server]\n"
                                      "server_name = localhost\n"
                                      "client_max_body_size = 75M\n"
                                      "keepalive_timeout = 65s\n"
                                      "server_tokens = off\n"
                                      "\n"
                                      "[upstream django]\n"
                                      "server = unix:/run/wharf/wsgi/server_dev.sock\n"
                                      "\n"
                                      "[location /static/]\n"
                                      "static = /run/wharf/static.handoff\n"
                                      "\n"
                                      "[location /]\n"
                                      "uwsgi_pass = django\n");

        if (!ok(c, "the DESIGN.md example loads"))
                return;
        ok(c->n_servers == 1 && c->n_upstreams == 1, "one server, one upstream");
        ok(c->servers[0].client_max_body_size == 75ull * 1024 * 1024, "75M");
        ok(c->servers[0].keepalive_timeout == 65000, "65s");
        ok(streq(c->server_header, "wharf"), "server_tokens off: Server is just wharf");
        ok(streq(route(c, "localhost", "/static/x.css"), "/static/"), "/static/ wins for files");
        ok(streq(route(c, "localhost", "/static"), "/"), "/static without slash is not /static/");
        ok(streq(route(c, "localhost", "/admin/"), "/"), "the rest goes to /");
        const struct location *l = proxy_find_location(&c->servers[0], "/", 1);
        ok(l && l->kind == LOC_UWSGI && l->upstream == &c->upstreams[0], "uwsgi_pass django");
        ok(l && l->client_max_body_size == 75ull * 1024 * 1024,
           "a location inherits the server's body limit");
        l = proxy_find_location(&c->servers[0], "/static/a", 9);
        ok(l && l->kind == LOC_STATIC && streq(l->static_path, "/run/wharf/static.handoff"),
           "static = handoff socket");
        ok(c->upstreams[0].servers[0].sa.ss_family == AF_UNIX, "unix upstream");
        proxy_config_free(c);
}

static void test_routing(void)
{
        struct proxy_config *c = load("[upstream a]\nserver = 127.0.0.1:9000\n"
                                      "[server]\n"
                                      "[location /]\nproxy_pass = a\n"
                                      "[location /api/]\nproxy_pass = a\n"
                                      "[location /api/v2/]\nreturn = 404\n"
                                      "[location = /api/]\nreturn = 200 exact\n"
                                      "[server]\nserver_name = example.com *.example.org\n"
                                      "[location /]\nreturn = 301 https://example.com/\n"
                                      "[location /x/]\nreturn = 410\n"
                                      "client_max_body_size = 1k\n"
                                      "add_header = X-Frame-Options: DENY\n"
                                      "add_header = X-Two: 2\n");

        if (!ok(c, "routing config loads"))
                return;
        ok(c->n_servers == 2, "two servers");
        ok(c->servers[0].n_locations == 4 && c->servers[1].n_locations == 2,
           "locations belong to the server above them");
        ok(streq(route(c, "any", "/api/"), "/api/") &&
               proxy_find_location(&c->servers[0], "/api/", 5)->exact,
           "exact match beats the prefix of the same path");
        ok(streq(route(c, "any", "/api/x"), "/api/"), "prefix /api/");
        ok(streq(route(c, "any", "/api/v2/x"), "/api/v2/"), "longest prefix wins");
        ok(streq(route(c, "any", "/apix"), "/"), "a prefix is not a word match");
        ok(streq(route(c, "example.com", "/x/1"), "/x/"), "Host picks the second server");
        ok(streq(route(c, "EXAMPLE.com:8080", "/x/1"), "/x/"), "case and port do not matter");
        ok(streq(route(c, "www.example.org", "/"), "/"), "*.example.org matches a subdomain");
        ok(proxy_find_server(c, "example.org", 11) == &c->servers[0],
           "*.example.org does not match example.org itself");
        ok(proxy_find_server(c, "[::1]:80", 8) == &c->servers[0], "unknown host: the default");
        const struct location *l = proxy_find_location(&c->servers[1], "/", 1);
        ok(l->kind == LOC_RETURN && l->return_status == 301 &&
               streq(l->return_target, "https://example.com/"),
           "return 301 URL");
        l = proxy_find_location(&c->servers[1], "/x/", 3);
        ok(l->client_max_body_size == 1024, "per-location client_max_body_size");
        ok(l->add_headers && streq(l->add_headers, "X-Frame-Options: DENY\r\nX-Two: 2\r\n"),
           "add_header lines in order");
        proxy_config_free(c);
}

static void test_upstream_servers(void)
{
        struct proxy_config *c =
            load("[upstream g]\n"
                 "server = 127.0.0.1:9001 weight=3 max_fails=2 fail_timeout=30s\n"
                 "server = [::1]:9002\n"
                 "server = unix:/run/b.sock backup\n"
                 "balance = least_conn\nkeepalive = 8\nconnect_timeout = 2s\n"
                 "read_timeout = 500ms\n"
                 "[location /]\nproxy_pass = g\n");

        if (!ok(c, "upstream group loads"))
                return;
        const struct upstream *u = &c->upstreams[0];
        ok(u->n_servers == 3, "three servers");
        ok(u->servers[0].weight == 3 && u->servers[0].max_fails == 2 &&
               u->servers[0].fail_timeout == 30000,
           "weight, max_fails, fail_timeout");
        ok(u->servers[1].sa.ss_family == AF_INET6 && u->servers[1].weight == 1 &&
               u->servers[1].max_fails == 1 && u->servers[1].fail_timeout == 10000,
           "v6 server with nginx's defaults");
        ok(u->servers[2].backup, "backup");
        ok(u->total_weight == 4, "backup servers do not weigh");
        ok(u->balance == BALANCE_LEAST_CONN && u->keepalive == 8, "balance, keepalive");
        ok(u->connect_timeout == 2000 && u->read_timeout == 500, "timeouts");
        proxy_config_free(c);
}

static void test_refusals(void)
{
        static const struct {
                const char *text;
                const char *want; /* a piece of the message */
                const char *where;
        } cases[] = {
            {"[server]\nlisten_on = :80\n", "unknown key", "proxy.ini:2"},
            {"[sever]\nlisten = :80\n", "unknown section", "proxy.ini:2"},
            {"[location /]\n", NULL, NULL}, /* an empty section is no section: fine */
            {"[location /]\nadd_header = X: y\n", "needs one of", "proxy.ini:2"},
            {"[upstream a]\nserver = unix:/a\n[location /]\nuwsgi_pass = a\nreturn = 200\n",
             "more than one", "proxy.ini:4"},
            {"[location /]\nuwsgi_pass = nowhere\n", "no [upstream nowhere]", "proxy.ini:2"},
            {"[upstream a]\nbalance = random\n[location /]\nproxy_pass = a\n", "no server",
             "proxy.ini:2"},
            {"[upstream a]\nserver = unix:/a\nbalance = random\n[location /]\nproxy_pass = a\n",
             "round_robin or least_conn", "proxy.ini:2"},
            {"[upstream a]\nserver = nohost\n[location /]\nproxy_pass = a\n", "not an address",
             NULL},
            {"[upstream a]\nserver = unix:/a weight=0\n[location /]\nproxy_pass = a\n",
             "weight must be", NULL},
            {"[upstream a]\nserver = unix:/a slow_start=1\n[location /]\nproxy_pass = a\n",
             "unknown server parameter", NULL},
            {"[upstream a]\nserver = unix:/a backup\n[location /]\nproxy_pass = a\n", "only backup",
             NULL},
            {"[upstream a]\nserver = unix:/a\n[upstream a]\nserver = unix:/b\n"
             "[location /]\nproxy_pass = a\n",
             "defined twice", "proxy.ini:4"},
            {"[upstream]\nserver = unix:/a\n", "needs a name", "proxy.ini:2"},
            {"[server]\n[location /]\nreturn = 200\n[server]\nworkers = 2\n", "whole daemon",
             "proxy.ini:5"},
            {"[location /]\nreturn = 200\n[location /]\nreturn = 404\n", "defined twice",
             "proxy.ini:4"},
            {"[location /]\nreturn = 301\n", "STATUS", "proxy.ini:2"},
            {"[location /]\nreturn = 99 x\n", "STATUS", NULL},
            {"[location /]\nreturn = 200\nadd_header = Bad Name: x\n", "Name: value", NULL},
            {"[location /]\nreturn = 200\nadd_header = NoColon\n", "Name: value", NULL},
            {"[location x]\nreturn = 200\n", "starting with '/'", "proxy.ini:2"},
            {"[location /s/]\nstatic = run/static.handoff\n", "absolute path", "proxy.ini:2"},
            {"[server]\nclient_max_body_size = lots\n", "not a size", "proxy.ini:2"},
            {"[server]\nkeepalive_timeout = soon\n", "not a duration", "proxy.ini:2"},
            {"[server]\naccess_log = syslog\n", "not off, journal", NULL},
            {"[server]\nlog_level = loud\n", "not debug", NULL},
            {"[server]\nmax_header_size = 100\n", "between 1k and 1M", NULL},
            {"key = value\n", "outside of any section", "proxy.ini:1"},
            {"[server]\ngzip = on\ngzip_comp_level = 10\n", "from 1 to 9", "proxy.ini:3"},
            {"[server]\ngzip_comp_level = 0\n", "from 1 to 9", "proxy.ini:2"},
            {"[server]\ngzip_proxied = expired\n", "off or any", "proxy.ini:2"},
            {"[server]\ngzip_http_version = 2\n", "1.0 or 1.1", "proxy.ini:2"},
            {"[server]\ngzip_types = text/css html\n", "MIME types", "proxy.ini:2"},
            {"[server]\ngzip_types = /css\n", "MIME types", "proxy.ini:2"},
            {"[server]\ngzip_min_length = short\n", "not a size", "proxy.ini:2"},
            {"[server]\ngzip_disable = msie6\ngzip_disable = \"MSIE [4-6\"\n", "not a regular",
             "proxy.ini:3"},
            {"[server]\ngzip_disable = \\d\n", "[0-9]", "proxy.ini:2"},
            {"[server]\ngzip_disable = 'open\n", "quote", "proxy.ini:2"},
            {"[location /]\nreturn = 200\ngzip = maybe\n", "gzip", "proxy.ini:3"},
            {"[location /]\nreturn = 200\ngzip_types = text/css\n", "unknown key", "proxy.ini:3"},
        };

        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                struct proxy_config *c = load(cases[i].text);
                if (!cases[i].want) {
                        ok(c != NULL, "case %zu loads", i);
                        proxy_config_free(c);
                        continue;
                }
                ok(c == NULL, "case %zu refused", i);
                ok(diag_has(cases[i].want, cases[i].where), "case %zu says '%s' at %s", i,
                   cases[i].want, cases[i].where ? cases[i].where : "-");
                if (!diag_has(cases[i].want, cases[i].where))
                        for (size_t j = 0; j < diag.n_messages; j++)
                                printf("#   %s\n", diag.messages[j]);
                proxy_config_free(c);
        }
}

static void test_gzip(void)
{
        struct proxy_config *c = load("[server]\n"
                                      "[location /]\nreturn = 200\n"
                                      "[server b]\nserver_name = b\ngzip = on\n"
                                      "gzip_types = TEXT/CSS\tapplication/json  *\n"
                                      "gzip_comp_level = 6\ngzip_min_length = 1k\n"
                                      "gzip_vary = on\ngzip_proxied = any\n"
                                      "gzip_http_version = 1.0\n"
                                      "gzip_disable = msie6 \"^Bot/[0-9]\"\n"
                                      "gzip_disable = 'Old Crawler'\n"
                                      "[location /]\nreturn = 200\n"
                                      "[location /stream/]\nreturn = 200\ngzip = off\n");
        if (!ok(c != NULL, "gzip settings load"))
                return;
        const struct gzip_conf *d = &c->servers[0].gzip, *g = &c->servers[1].gzip;
        ok(!d->on && d->level == 1 && d->min_length == 20 && !d->vary && !d->proxied &&
               d->min_minor == 1 && streq(d->types, "text/html"),
           "nginx's defaults: off, level 1, 20 bytes, text/html, HTTP/1.1, not proxied");
        ok(!c->servers[0].locations[0].gzip, "a location follows its server (off)");
        ok(g->on && g->level == 6 && g->min_length == 1024 && g->vary && g->proxied &&
               g->min_minor == 0,
           "every key read");
        ok(streq(g->types, "text/html text/css application/json *"),
           "types lowercase, text/html always first: '%s'", g->types);
        ok(!d->disable_msie6 && !d->disable, "gzip_disable: none by default");
        ok(g->disable_msie6 && g->disable && g->disable->n == 2,
           "gzip_disable: msie6 and the expressions of both lines");
        ok(c->servers[1].locations[0].gzip, "a location follows its server (on)");
        ok(!c->servers[1].locations[1].gzip, "a location turns it off");
        proxy_config_free(c);
}

static void write_file(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");
        if (!f || fputs(text, f) < 0 || fclose(f) != 0)
                abort();
}

static void test_error_pages(void)
{
        char dir[] = "/tmp/wharf-error-pages-XXXXXX", text[512], big[128], page[128], json[128];

        if (!mkdtemp(dir))
                abort();
        snprintf(page, sizeof(page), "%s/50x.html", dir);
        snprintf(json, sizeof(json), "%s/404.json", dir);
        snprintf(big, sizeof(big), "%s/big.html", dir);
        write_file(page, "<h1>down for a moment</h1>\n");
        write_file(json, "{\"error\": \"not found\"}");
        FILE *f = fopen(big, "w");
        if (!f || ftruncate(fileno(f), 1024 * 1024 + 1) != 0 || fclose(f) != 0)
                abort();

        snprintf(text, sizeof(text),
                 "[server]\nerror_page = 502 503 504 %s\nerror_page = 404 %s\n"
                 "error_page = 503 %s\n[location /]\nreturn = 200\n",
                 page, json, json);
        struct proxy_config *c = load(text);
        if (ok(c != NULL, "error pages load")) {
                const struct vserver *vs = &c->servers[0];
                const struct error_page *p502 = proxy_error_page(vs, 502);
                const struct error_page *p404 = proxy_error_page(vs, 404);
                const struct error_page *p503 = proxy_error_page(vs, 503);
                ok(p502 && p502->len == 27 && memcmp(p502->body, "<h1>down", 8) == 0 &&
                       streq(p502->type, "text/html; charset=utf-8"),
                   "502: the file's bytes, as text/html");
                ok(proxy_error_page(vs, 504) && proxy_error_page(vs, 504)->body == p502->body,
                   "504 shares them");
                ok(p404 && streq(p404->type, "application/json"), "404: as application/json");
                ok(p503 && p503->len == p404->len && memcmp(p503->body, p404->body, p404->len) == 0,
                   "a later line for 503 wins, as in nginx");
                ok(!proxy_error_page(vs, 500) && !proxy_error_page(NULL, 502),
                   "none for other codes, nor without a server");
                proxy_config_free(c);
        }

        static const struct {
                const char *value, *want;
        } bad[] = {
            {"502", "CODE..."},
            {"/x.html", "CODE..."},
            {"502 x.html", "CODE..."},
            {"5022 /x.html", "CODE..."},
            {"200 /x.html", "300..599"},
            {"404 =200 /x.html", "=CODE"},
            {"502 /x.html extra", "words after"},
            {"502 /nonexistent/50x.html", "No such file"},
            {"502 /tmp", "not a regular file"},
            {"502 BIG", "larger than 1 MiB"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                char value[256];
                snprintf(value, sizeof(value), "%s", bad[i].value);
                char *at = strstr(value, "BIG");
                if (at)
                        snprintf(at, sizeof(value) - (size_t) (at - value), "%s", big);
                snprintf(text, sizeof(text), "[server]\n\nerror_page = %s\n", value);
                c = load(text);
                ok(!c && diag_has(bad[i].want, "proxy.ini:3"), "error_page = %s: '%s' at line 3",
                   bad[i].value, bad[i].want);
                proxy_config_free(c);
        }
        unlink(page);
        unlink(json);
        unlink(big);
        rmdir(dir);
}

static struct sockaddr_storage peer_of(const char *addr, socklen_t *len)
{
        struct sockaddr_storage ss = {0};
        struct sockaddr_in *v4 = (struct sockaddr_in *) &ss;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *) &ss;

        if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
                v4->sin_family = AF_INET;
                *len = sizeof(*v4);
        } else if (inet_pton(AF_INET6, addr, &v6->sin6_addr) == 1) {
                v6->sin6_family = AF_INET6;
                *len = sizeof(*v6);
        } else {
                ss.ss_family = AF_UNIX;
                *len = sizeof(sa_family_t);
        }
        return ss;
}

static bool allowed(const struct location *l, const char *addr)
{
        socklen_t len;
        struct sockaddr_storage ss = peer_of(addr, &len);

        return realip_rules_allow(l->rules, l->n_rules, &ss, len);
}

static void test_access_rules(void)
{
        struct proxy_config *c = load("[server]\ndeny = 192.0.2.66\n"
                                      "[location /admin/]\nreturn = 200\n"
                                      "allow = 10.1.2.3/8\nallow = 2001:db8::/32\n"
                                      "deny = 10.20.0.0/16\nallow = unix:\ndeny = all\n"
                                      "[location /]\nreturn = 200\n"
                                      "[location /open/]\nreturn = 200\nallow = all\n");
        if (!ok(c != NULL, "allow/deny load"))
                return;
        const struct location *admin = proxy_find_location(&c->servers[0], "/admin/x", 8);
        const struct location *root = proxy_find_location(&c->servers[0], "/x", 2);
        const struct location *open = proxy_find_location(&c->servers[0], "/open/", 6);
        ok(admin && admin->n_rules == 5, "five rules, in order");
        ok(allowed(admin, "10.20.0.1"), "the first match decides: 10/8 before 10.20/16");
        ok(allowed(admin, "10.255.255.255") && !allowed(admin, "11.0.0.1"),
           "10.1.2.3/8 is 10.0.0.0/8");
        ok(allowed(admin, "::ffff:10.0.0.7"), "an IPv4 client on a dual-stack socket is IPv4");
        ok(allowed(admin, "2001:db8:ffff::1") && !allowed(admin, "2001:db9::1"), "an IPv6 prefix");
        ok(allowed(admin, "unix"), "unix:");
        ok(!allowed(admin, "192.0.2.1"), "deny all ends the list");
        ok(root && root->n_rules == 1 && !allowed(root, "192.0.2.66") &&
               allowed(root, "192.0.2.67"),
           "a location without rules has its server's");
        ok(open && allowed(open, "192.0.2.66"), "a location's own rules replace the server's");
        ok(realip_rules_allow(NULL, 0, NULL, 0), "no rules: allowed");
        proxy_config_free(c);

        struct realip_rule r;
        ok(realip_rule_parse("10.0.0.0/33", true, &r) < 0, "/33 for IPv4 refused");
        ok(realip_rule_parse("::/129", true, &r) < 0, "/129 for IPv6 refused");
        ok(realip_rule_parse("10.0.0.0/", true, &r) < 0, "an empty prefix refused");
        ok(realip_rule_parse("10.0.0.0/1x", true, &r) < 0, "a prefix with a letter");
        ok(realip_rule_parse("example.com", true, &r) < 0, "a name refused");
        ok(realip_rule_parse("/8", true, &r) < 0, "no address refused");
        ok(realip_rule_parse("::/0", false, &r) == 0 && r.prefix == 0 && !r.allow, "::/0");
        c = load("[location /]\nreturn = 200\ndeny = everyone\n");
        ok(!c && diag_has("all, unix:, an address", "proxy.ini:3"), "a bad rule, with its line");
        proxy_config_free(c);
}

/* The address real_ip finds for a request from peer with these header lines, or "-". */
static const char *real_ip(const struct vserver *vs, const char *peer, const char *headers,
                           char *out, size_t size)
{
        char raw[512];
        struct http_request req;
        struct sockaddr_storage got;
        socklen_t peer_len, got_len = 0;
        struct sockaddr_storage from = peer_of(peer, &peer_len);

        snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\n%s\r\n", headers);
        if (http_parse_request(raw, strlen(raw), sizeof(raw), &req) <= 0)
                return "unparsed";
        if (!realip_from_request(&vs->real_ip, &req, &from, peer_len, &got, &got_len))
                return "-";
        const void *a = got.ss_family == AF_INET
                            ? (const void *) &((struct sockaddr_in *) &got)->sin_addr
                            : (const void *) &((struct sockaddr_in6 *) &got)->sin6_addr;
        return inet_ntop(got.ss_family, a, out, (socklen_t) size);
}

static void test_real_ip(void)
{
        struct proxy_config *c =
            load("[server]\nset_real_ip_from = 10.0.0.0/8\nset_real_ip_from = 192.0.2.1\n"
                 "real_ip_header = X-Forwarded-For\n"
                 "[server r]\nserver_name = r\nset_real_ip_from = 10.0.0.0/8\n"
                 "real_ip_header = x-forwarded-for\nreal_ip_recursive = on\n"
                 "[server x]\nserver_name = x\nset_real_ip_from = ::1\n"
                 "[server none]\nserver_name = none\n");
        char b[64];

        if (!ok(c != NULL, "real_ip settings load"))
                return;
        const struct vserver *xff = &c->servers[0], *rec = &c->servers[1], *xri = &c->servers[2];
        ok(streq(real_ip(xff, "10.0.0.5", "X-Forwarded-For: 203.0.113.7\r\n", b, sizeof(b)),
                 "203.0.113.7"),
           "a trusted peer's X-Forwarded-For");
        ok(streq(
               real_ip(xff, "10.0.0.5", "X-Forwarded-For: 203.0.113.7, 10.0.0.9\r\n", b, sizeof(b)),
               "10.0.0.9"),
           "its last address, without real_ip_recursive");
        ok(streq(
               real_ip(rec, "10.0.0.5", "X-Forwarded-For: 203.0.113.7 ,10.0.0.9\r\n", b, sizeof(b)),
               "203.0.113.7"),
           "recursive: the last one that is not trusted");
        ok(streq(real_ip(rec, "10.0.0.5", "X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n", b, sizeof(b)),
                 "10.0.0.1"),
           "recursive, all trusted: the first");
        ok(streq(real_ip(xff, "198.51.100.1", "X-Forwarded-For: 203.0.113.7\r\n", b, sizeof(b)),
                 "-"),
           "an untrusted peer's header is ignored");
        ok(streq(real_ip(xff, "::ffff:192.0.2.1", "X-Forwarded-For: 203.0.113.7\r\n", b, sizeof(b)),
                 "203.0.113.7"),
           "a trusted IPv4 peer on a dual-stack socket");
        ok(streq(real_ip(xff, "10.0.0.5", "X-Forwarded-For: unknown\r\n", b, sizeof(b)), "-"),
           "no address in it: the peer stays");
        ok(streq(real_ip(xff, "10.0.0.5", "X-Forwarded-For: 203.0.113.7, 1.2.3.4:80\r\n", b,
                         sizeof(b)),
                 "1.2.3.4"),
           "an address with a port: the address, as nginx takes it");
        ok(streq(real_ip(xff, "10.0.0.5",
                         "X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n", b, sizeof(b)),
                 "2.2.2.2"),
           "of several lines, the last");
        ok(streq(real_ip(xff, "10.0.0.5", "", b, sizeof(b)), "-"), "no header: the peer stays");
        ok(streq(real_ip(xri, "::1", "X-Real-IP:  2001:db8::5 \r\n", b, sizeof(b)), "2001:db8::5"),
           "X-Real-IP by default, IPv6");
        ok(streq(real_ip(xri, "::1", "X-Real-IP: 1.1.1.1, 2.2.2.2\r\n", b, sizeof(b)), "2.2.2.2"),
           "X-Real-IP is read as a list too, as nginx reads it");
        ok(streq(real_ip(&c->servers[3], "10.0.0.5", "X-Real-IP: 1.1.1.1\r\n", b, sizeof(b)), "-"),
           "no set_real_ip_from: never");
        proxy_config_free(c);

        c = load("[server]\nreal_ip_header = proxy_protocol\n");
        ok(!c && diag_has("not a header name", NULL), "real_ip_header proxy_protocol refused");
        proxy_config_free(c);
        c = load("[server]\nreal_ip_header = Bad Header\n");
        ok(!c && diag_has("not a header name", NULL), "real_ip_header with a space refused");
        proxy_config_free(c);
        c = load("[server]\n\nset_real_ip_from = lb.example\n");
        ok(!c && diag_has("an address", "proxy.ini:3"), "set_real_ip_from with a name refused");
        proxy_config_free(c);
}

static void test_all_problems_reported(void)
{
        struct proxy_config *c = load("[server]\nbogus = 1\n"
                                      "[location /]\nuwsgi_pass = none\n"
                                      "[location /b/]\nreturn = 1\n");

        ok(c == NULL, "three problems: refused");
        ok(diag.errors == 3, "all three reported (%u)", diag.errors);
        proxy_config_free(c);
}

static void test_buffers(void)
{
        struct proxy_config *c = load("[server]\n[location /]\nreturn = 200\n");

        if (ok(c != NULL, "defaults"))
                ok(c->response_buffer == 1024 * 1024 && c->splice_min == 256 * 1024,
                   "1M read ahead, bodies from 256k spliced");
        proxy_config_free(c);
        c = load("[server]\nresponse_buffer = 4M\nsplice_min = 0\n[location /]\nreturn = 200\n");
        if (ok(c != NULL, "set"))
                ok(c->response_buffer == 4 * 1024 * 1024 && c->splice_min == 0,
                   "4M read ahead, splicing off");
        proxy_config_free(c);
        c = load("[server]\n[location /]\nreturn = 200\n[server b]\nsplice_min = 1M\n");
        ok(!c && diag_has("splice_min", "whole daemon"), "splice_min only in the first [server]");
        proxy_config_free(c);
}

static void test_return_variables(void)
{
        struct {
                const char *s;
                int var;
                size_t len;
        } cases[] = {
            {"host$request_uri", PV_HOST, 4},
            {"{host}x", PV_HOST, 6},
            {"request_uri", PV_REQUEST_URI, 11},
            {"query_string&", PV_ARGS, 12},
            {"remote_addr", PV_REMOTE_ADDR, 11},
            {"hosts", -1, 5},
            {"{uri", -1, 0},
            {"{}", -1, 0},
            {"/path", -1, 0},
            {"", -1, 0},
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                size_t len = 99;
                int v = proxy_var_parse(cases[i].s, &len);
                ok(v == cases[i].var && len == cases[i].len, "$%s: %d, %zu bytes", cases[i].s, v,
                   len);
        }
        struct proxy_config *c = load("[server]\n[location /]\nreturn = 301 https://$host$uri$\n");
        ok(c != NULL, "known variables and a trailing '$' load");
        proxy_config_free(c);
        c = load("[server]\n[location /]\nreturn = 301 https://$hostname/\n");
        ok(!c && diag_has(":3", "unknown variable $hostname"), "an unknown one is refused");
        proxy_config_free(c);
}

static void test_log_format_compile(void)
{
        struct log_format f;
        const char *bad = NULL;
        size_t bad_len = 0;

        int r = log_format_compile("$remote_addr [$time_local] \"${request}\" $$ $http_X_Forwarded_"
                                   "For$uri$",
                                   &f, &bad, &bad_len);
        ok(r == 0 && f.n == 9, "compiled: %d, %zu pieces", r, f.n);
        if (r == 0 && f.n == 9) {
                ok(f.pieces[0].var == PV_REMOTE_ADDR && f.pieces[0].slot == -1,
                   "$remote_addr is read when the line is written");
                ok(f.pieces[1].var == -1 && f.pieces[1].len == 2 &&
                       !memcmp(f.pieces[1].text, " [", 2),
                   "text between variables");
                ok(f.pieces[4].var == PV_REQUEST, "${request} in braces");
                ok(f.pieces[5].var == -1 && f.pieces[5].len == 5 &&
                       !memcmp(f.pieces[5].text, "\" $$ ", 5),
                   "a '$' that starts no name is text");
                ok(f.pieces[6].var == PV_HTTP_HEADER &&
                       streq(f.pieces[6].text, "x-forwarded-for") && f.pieces[6].slot == 0,
                   "$http_NAME: the header, lowercase with dashes, kept from the head");
                ok(f.pieces[7].var == PV_URI && f.pieces[7].slot == 1, "$uri is kept too");
                ok(f.pieces[8].var == -1 && f.pieces[8].len == 1, "a trailing '$' is text");
                ok(f.n_slots == 2 && !f.request_id, "two head variables, no $request_id");
        }
        log_format_free(&f);

        r = log_format_compile("a $request_id b $hostname", &f, &bad, &bad_len);
        ok(r == -ENOENT && bad_len == 9 && !strncmp(bad, "$hostname", 9), "unknown: %.*s",
           (int) bad_len, bad);
        r = log_format_compile("$http_", &f, &bad, &bad_len);
        ok(r == -ENOENT, "$http_ without a name");

        char many[LOG_FORMAT_SLOTS * 5 + 8] = "";
        for (int i = 0; i <= LOG_FORMAT_SLOTS; i++)
                strcat(many, "$uri ");
        r = log_format_compile(many, &f, &bad, &bad_len);
        ok(r == -E2BIG, "more than %d head variables", LOG_FORMAT_SLOTS);
        r = log_format_compile("", &f, &bad, &bad_len);
        ok(r == 0 && f.n == 0, "an empty format");
        log_format_free(&f);
}

static void test_log_escapes(void)
{
        struct {
                enum log_escape esc;
                const char *in, *out;
                size_t cap;
        } cases[] = {
            {LOG_ESCAPE_DEFAULT, "a\"b\\c\td\x7f\xe9", "a\\x22b\\x5Cc\\x09d\\x7F\\xE9", 64},
            {LOG_ESCAPE_JSON, "a\"b\\c\td\n\r\b\f\x01\x7f\xe9",
             "a\\\"b\\\\c\\td\\n\\r\\b\\f\\u0001\x7f\xe9", 64},
            {LOG_ESCAPE_NONE, "a\"b\\", "a\"b\\", 64},
            {LOG_ESCAPE_DEFAULT, "ab\"", "ab", 5}, /* never half an escape */
            {LOG_ESCAPE_JSON, "ab\x01", "ab", 7},  /* \u0001 needs 6 */
            {LOG_ESCAPE_NONE, "abcdef", "abc", 3}, /* cut */
            {LOG_ESCAPE_DEFAULT, "", "", 0},
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                char out[64];
                size_t len = 0;
                log_escape_append(cases[i].esc, cases[i].in, strlen(cases[i].in), out, &len,
                                  cases[i].cap);
                ok(len == strlen(cases[i].out) && !memcmp(out, cases[i].out, len),
                   "escape %d of case %zu: '%.*s'", cases[i].esc, i, (int) len, out);
        }
        enum log_escape e;
        ok(log_escape_parse("json", &e) == 0 && e == LOG_ESCAPE_JSON &&
               log_escape_parse("none", &e) == 0 && e == LOG_ESCAPE_NONE &&
               log_escape_parse("JSON", &e) == -EINVAL,
           "escape names");
}

static void test_log_format_config(void)
{
        struct proxy_config *c = load("[server]\nlog_format = '$remote_addr '\n"
                                      "log_format = \"$request\"\nlog_escape = json\n"
                                      "[location /]\nreturn = 204\n");
        ok(c && c->servers[0].log_format, "log_format lines load");
        if (c && c->servers[0].log_format) {
                const struct log_format *f = c->servers[0].log_format;
                ok(f->n == 4 && f->pieces[1].var == -1 && f->pieces[1].len == 2 &&
                       !memcmp(f->pieces[1].text, " \"", 2),
                   "joined in order; the quoted piece keeps its space");
                ok(f->escape == LOG_ESCAPE_JSON, "with its escape");
        }
        proxy_config_free(c);
        c = load("[server]\n[location /]\nreturn = 204\n");
        ok(c && !c->servers[0].log_format, "no log_format: the built-in line");
        proxy_config_free(c);
        c = load("[server]\nlog_format = $remote_addr\nlog_format = $bogus x\n"
                 "log_escape = yaml\n[location /]\nreturn = 200 $status\n");
        ok(!c && diag_has(":3", "unknown variable $bogus") &&
               diag_has(":4", "'yaml' is not default, json or none") &&
               diag_has(":6", "unknown variable $status"),
           "refused with their lines; `return` does not take the log's variables");
        proxy_config_free(c);
        char text[4096] = "[server]\n";
        for (int i = 0; i < 3; i++)
                strcat(text, "log_format = $uri $uri $uri $uri $uri $uri $uri $uri $uri $uri $uri "
                             "$uri\n");
        c = load(text);
        ok(!c && diag_has(":4", "more than 32 variables"), "too many head variables, at the line");
        proxy_config_free(c);
}

static void test_limit_req(void)
{
        struct proxy_config *c =
            load("[server]\n"
                 "limit_req_zone = $binary_remote_addr zone=login:10m rate=30r/m\n"
                 "limit_req = zone=all burst=20\n"
                 "[location /admin/login/]\nreturn = 204\n"
                 "limit_req = zone=login burst=5 nodelay\nlimit_req = zone=all delay=3\n"
                 "limit_req_status = 429\n"
                 "[location /]\nreturn = 204\n"
                 "[server]\nlimit_req_zone = $remote_addr rate=1r/s zone=all:64k\n");
        ok(c && c->n_zones == 2, "two zones, from any [server]");
        if (!c || c->n_zones != 2) {
                proxy_config_free(c);
                return;
        }
        ok(streq(c->zones[0].name, "login") && c->zones[0].rate == 500 &&
               c->zones[0].size == 10 * 1024 * 1024,
           "30r/m is 0.5 a second; 10m");
        ok(c->zones[1].rate == 1000 && c->zones[1].size == 64 * 1024, "1r/s; words in any order");
        const struct location *login = proxy_find_location(&c->servers[0], "/admin/login/", 13);
        const struct location *root = proxy_find_location(&c->servers[0], "/x", 2);
        ok(login && login->n_limits == 2 && login->limits[0].zone == &c->zones[0] &&
               login->limits[0].burst == 5000 && login->limits[0].delay == UINT64_MAX &&
               login->limits[1].zone == &c->zones[1] && login->limits[1].delay == 3000,
           "a location's own lines, with burst, nodelay and delay");
        ok(login && login->limit_status == 429, "its limit_req_status");
        ok(root && root->n_limits == 1 && root->limits[0].zone == &c->zones[1] &&
               root->limits[0].burst == 20000 && root->limits[0].delay == 0 &&
               root->limit_status == 503,
           "a location without them has its server's (zone defined later), and 503");

        struct proxy_config *same = load("[server]\n"
                                         "limit_req_zone = $binary_remote_addr zone=login:10m "
                                         "rate=1r/s\nlimit_req_zone = $binary_remote_addr "
                                         "zone=all:128k rate=1r/s\n");
        ok(same != NULL, "a second configuration loads");
        if (same) {
                proxy_config_adopt(same, c);
                ok(same->zones[0].table == c->zones[0].table && same->zones[0].rate == 1000,
                   "a reload keeps the table of a zone of the same name and size, at its new rate");
                ok(same->zones[1].table != c->zones[1].table, "not one whose size changed");
        }
        proxy_config_free(same);
        proxy_config_free(c);

        c = load("[server]\nlimit_req_zone = $binary_remote_addr zone=a:1m rate=1r/s\n"
                 "limit_req_zone = $binary_remote_addr zone=a:1m rate=2r/s\n"
                 "limit_req_zone = $http_x zone=b:1m rate=1r/s\n"
                 "limit_req_zone = $binary_remote_addr zone=c:1m rate=1.5r/s\n"
                 "limit_req_zone = $binary_remote_addr zone=d:100 rate=1r/s\n"
                 "limit_req_zone = zone=e:1m rate=1r/s\n"
                 "[location /]\nreturn = 204\nlimit_req = zone=z\nlimit_req = burst=2\n"
                 "limit_req = zone=a burst=x\nlimit_req = zone=a\nlimit_req = zone=a\n"
                 "limit_req_status = 200\n");
        ok(!c && diag_has(":3", "already defined") && diag_has(":4", "not implemented") &&
               diag_has(":5", "not Nr/s or Nr/m") && diag_has(":6", "from 1k to 1g") &&
               diag_has(":7", "zone=NAME:SIZE") && diag_has(":10", "no limit_req_zone") &&
               diag_has(":11", "names no zone=") && diag_has(":12", "[burst=N]") &&
               diag_has(":14", "more than 4") && diag_has(":15", "from 400 to 599"),
           "every refusal at its line");
        proxy_config_free(c);
}

static void test_limit_zone_sizes(void)
{
        struct proxy_config *c =
            load("[server]\nlimit_req_zone = $binary_remote_addr zone=a:1g rate=1r/s\n"
                 "limit_conn_zone = $binary_remote_addr zone=b:1k\n");
        ok(c && c->n_zones == 2, "1k and 1g are zone sizes");
        proxy_config_free(c);
        c = load("[server]\nlimit_req_zone = $binary_remote_addr zone=a:64g rate=1r/s\n"
                 "limit_conn_zone = $binary_remote_addr zone=b:1025m\n");
        ok(!c && diag_has(":2", "from 1k to 1g") && diag_has(":3", "from 1k to 1g"),
           "a zone over 1g is refused at its line, not allocated (the fuzzer's 64g)");
        proxy_config_free(c);
}

static void test_limit_conn(void)
{
        struct proxy_config *c =
            load("[server]\n"
                 "limit_conn_zone = $binary_remote_addr zone=addr:10m\n"
                 "limit_req_zone = $binary_remote_addr zone=req:1m rate=1r/s\n"
                 "limit_conn = addr 10\nlimit_conn_status = 429\nlimit_conn_dry_run = on\n"
                 "[location /download/]\nreturn = 204\nlimit_conn = addr 1\nlimit_conn = addr 2\n"
                 "limit_conn_status = 503\nlimit_conn_dry_run = off\nlimit_req_dry_run = on\n"
                 "[location /]\nreturn = 204\n"
                 "[location /free/]\nreturn = 204\nlimit_req = zone=req\n");
        ok(c && c->n_zones == 2 && c->zones[0].conn && !c->zones[1].conn,
           "a limit_conn_zone beside a limit_req_zone");
        if (!c || c->n_zones != 2) {
                proxy_config_free(c);
                return;
        }
        const struct location *dl = proxy_find_location(&c->servers[0], "/download/x", 11);
        const struct location *root = proxy_find_location(&c->servers[0], "/x", 2);
        const struct location *req = proxy_find_location(&c->servers[0], "/free/", 6);
        ok(dl && dl->n_conn_limits == 2 && dl->conn_limits[0].zone == &c->zones[0] &&
               dl->conn_limits[0].max == 1 && dl->conn_limits[1].max == 2 &&
               dl->conn_limit_status == 503,
           "a location's own lines and limit_conn_status");
        ok(dl && !dl->conn_limit_dry_run && dl->limit_dry_run,
           "a location's own limit_conn_dry_run and limit_req_dry_run");
        ok(root && root->n_conn_limits == 1 && root->conn_limits[0].max == 10 &&
               root->conn_limit_status == 429,
           "a location without them has its server's");
        ok(root && root->conn_limit_dry_run && !root->limit_dry_run,
           "and its server's dry runs (limit_req_dry_run off by default)");
        ok(req && req->n_conn_limits == 1 && req->n_limits == 1,
           "limit_req in a location leaves the server's limit_conn");

        struct proxy_config *next =
            load("[server]\nlimit_conn_zone = $binary_remote_addr zone=addr:10m\n"
                 "limit_req_zone = $binary_remote_addr zone=other:1m rate=1r/s\n");
        ok(next != NULL, "a second configuration loads");
        if (next) {
                proxy_config_adopt(next, c);
                ok(next->zones[0].table == c->zones[0].table,
                   "a reload keeps the counts of a limit_conn zone");
                ok(next->zones[1].table != c->zones[1].table, "not those of another zone");
        }
        proxy_config_free(next);
        proxy_config_free(c);

        c = load("[server]\nlimit_conn_zone = $binary_remote_addr zone=a:1m\n"
                 "limit_conn_zone = $binary_remote_addr zone=b:1m rate=1r/s\n"
                 "limit_req_zone = $binary_remote_addr zone=a:1m rate=1r/s\n"
                 "limit_conn_zone = $http_x zone=c:1m\n"
                 "limit_req_zone = $binary_remote_addr zone=r:1m rate=1r/s\n"
                 "[location /]\nreturn = 204\nlimit_conn = a\nlimit_conn = a 0\n"
                 "limit_conn = a 2 3\nlimit_conn = r 1\nlimit_conn = nowhere 1\n"
                 "limit_req = zone=a\nlimit_conn_status = 600\n");
        ok(!c && diag_has(":3", "zone=NAME:SIZE'") && diag_has(":4", "already defined") &&
               diag_has(":5", "not implemented") && diag_has(":9", "'ZONE N'") &&
               diag_has(":10", "'ZONE N'") && diag_has(":11", "'ZONE N'") &&
               diag_has(":12", "no limit_conn_zone") && diag_has(":13", "more than 4") &&
               diag_has(":14", "no limit_req_zone") && diag_has(":15", "from 400 to 599"),
           "every refusal at its line");
        proxy_config_free(c);
}

static void test_internal_and_x_accel(void)
{
        struct proxy_config *c =
            load("[server]\n[upstream app]\nserver = unix:/run/app.sock\n"
                 "[location /]\nuwsgi_pass = app\n"
                 "[location /api/]\nuwsgi_pass = app\nx_accel_redirect = off\n"
                 "[location /protected/]\nstatic = /run/s.sock\ninternal = on\n");
        ok(c != NULL, "internal and x_accel_redirect load");
        if (c) {
                const struct vserver *vs = &c->servers[0];
                const struct location *root = proxy_find_location(vs, "/x", 2);
                const struct location *api = proxy_find_location(vs, "/api/x", 6);
                const struct location *prot = proxy_find_location(vs, "/protected/a", 12);
                ok(root && root->x_accel && !root->internal,
                   "X-Accel-Redirect is followed by default, as in nginx");
                ok(api && !api->x_accel, "x_accel_redirect = off");
                ok(prot && prot->internal, "internal = on");
        }
        proxy_config_free(c);
}

static void test_hide_and_pass_headers(void)
{
        struct proxy_config *c =
            load("[server]\nuwsgi_hide_header = X-Powered-By\nproxy_pass_header = Server\n"
                 "uwsgi_intercept_errors = on\n"
                 "[upstream u]\nserver = unix:/run/u.sock\n"
                 "[location /]\nuwsgi_pass = u\n"
                 "[location /own/]\nuwsgi_pass = u\nuwsgi_hide_header = x-frame-options\n"
                 "uwsgi_hide_header = X-Keep\nuwsgi_pass_header = X-Accel-Buffering\n"
                 "uwsgi_intercept_errors = off\n"
                 "[location /http/]\nproxy_pass = u\n");
        ok(c != NULL, "hide_header and pass_header load");
        if (!c)
                return;
        const struct location *root = proxy_find_location(&c->servers[0], "/", 1);
        const struct location *own = proxy_find_location(&c->servers[0], "/own/", 5);
        const struct location *http = proxy_find_location(&c->servers[0], "/http/", 6);
        ok(root && root->hide_headers.n == 1 &&
               name_list_has(&root->hide_headers, "x-powered-by", 12) && root->pass_headers.n == 0,
           "the server's uwsgi_ lines reach a uwsgi_pass location without its own");
        ok(own && own->hide_headers.n == 2 &&
               name_list_has(&own->hide_headers, "X-Frame-Options", 15) &&
               name_list_has(&own->hide_headers, "X-Keep", 6) &&
               !name_list_has(&own->hide_headers, "X-Powered-By", 12) &&
               !name_list_has(&own->hide_headers, "X-Kee", 5) && own->pass_headers.n == 1,
           "a location's own lines replace the server's, names in any case");
        ok(http && http->hide_headers.n == 0 && http->pass_headers.n == 1 &&
               name_list_has(&http->pass_headers, "Server", 6),
           "a proxy_pass location takes the server's proxy_ lines, not its uwsgi_ ones");
        ok(root && root->intercept_errors && own && !own->intercept_errors && http &&
               !http->intercept_errors,
           "uwsgi_intercept_errors: the server's, a location's own, not for proxy_pass");
        proxy_config_free(c);

        c = load("[server]\nuwsgi_hide_header = Two Names\n[upstream u]\nserver = unix:/u\n"
                 "[location /]\nuwsgi_pass = u\nproxy_hide_header = X-A\n"
                 "[location /r/]\nreturn = 204\nuwsgi_pass_header = Server\n"
                 "proxy_intercept_errors = on\n");
        ok(!c && diag_has(":2", "not one header name") && diag_has(":7", "needs proxy_pass") &&
               diag_has(":10", "needs uwsgi_pass") && diag_has(":11", "needs proxy_pass"),
           "every refusal at its line");
        proxy_config_free(c);
}

static void test_upstream_params(void)
{
        struct proxy_config *c =
            load("[server]\n[upstream app]\nserver = unix:/run/app.sock\n"
                 "[location /]\nuwsgi_pass = app\nuwsgi_param = HTTP_X_REQUEST_ID $request_id\n"
                 "uwsgi_param = APP  $http_x_tenant   if_not_empty\nuwsgi_param = EMPTY\n"
                 "[location /h/]\nproxy_pass = app\nproxy_set_header = Host ${host}:8000\n"
                 "proxy_set_header = Accept-Encoding\n");
        ok(c != NULL, "uwsgi_param and proxy_set_header load");
        if (c) {
                const struct vserver *vs = &c->servers[0];
                const struct location *u = proxy_find_location(vs, "/x", 2);
                const struct location *h = proxy_find_location(vs, "/h/x", 4);
                ok(u && u->n_params == 3 && streq(u->params[0].name, "HTTP_X_REQUEST_ID") &&
                       streq(u->params[0].value, "$request_id") && !u->params[0].if_not_empty,
                   "NAME VALUE");
                ok(u && u->n_params == 3 && streq(u->params[1].value, "$http_x_tenant") &&
                       u->params[1].if_not_empty,
                   "if_not_empty, spaces trimmed");
                ok(u && u->n_params == 3 && streq(u->params[2].value, ""),
                   "a uwsgi_param may be empty");
                ok(h && h->n_params == 2 && streq(h->params[0].value, "${host}:8000") &&
                       !h->params[1].value,
                   "proxy_set_header; without a value it removes");
        }
        proxy_config_free(c);

        c = load("[server]\nuwsgi_param = FROM_SERVER 1\nproxy_set_header = X-From server\n"
                 "[upstream app]\nserver = unix:/run/app.sock\n"
                 "[location /]\nuwsgi_pass = app\n"
                 "[location /own/]\nuwsgi_pass = app\nuwsgi_param = OWN 2\n"
                 "[location /h/]\nproxy_pass = app\n"
                 "[location /r/]\nreturn = 204\n");
        ok(c != NULL, "uwsgi_param and proxy_set_header in [server]");
        if (c) {
                const struct vserver *vs = &c->servers[0];
                const struct location *u = proxy_find_location(vs, "/x", 2);
                const struct location *own = proxy_find_location(vs, "/own/", 5);
                const struct location *h = proxy_find_location(vs, "/h/", 3);
                const struct location *r = proxy_find_location(vs, "/r/", 3);
                ok(u && u->n_params == 1 && streq(u->params[0].name, "FROM_SERVER"),
                   "a uwsgi_pass location without its own has the server's uwsgi_param");
                ok(own && own->n_params == 1 && streq(own->params[0].name, "OWN"),
                   "its own replace them, as in nginx");
                ok(h && h->n_params == 1 && streq(h->params[0].name, "X-From"),
                   "a proxy_pass location has the server's proxy_set_header");
                ok(r && r->n_params == 0, "a return location has none");
        }
        proxy_config_free(c);
        c = load("[server]\nuwsgi_param = BAD-NAME 1\n[location /]\nreturn = 204\n");
        ok(!c && diag_has(":2", "'BAD-NAME 1' is not"), "a bad one in [server] at its line");
        proxy_config_free(c);
}

static void test_no_locations_warns(void)
{
        struct proxy_config *c = load("[server]\nserver_name = a\n");

        ok(c != NULL, "a config without locations loads");
        ok(diag.warnings == 1 && diag_has("404", NULL), "and warns that everything is 404");
        proxy_config_free(c);
}

int main(void)
{
        subtest("the tutorial's site", test_tutorial_site);
        subtest("routing", test_routing);
        subtest("upstream servers", test_upstream_servers);
        subtest("refusals", test_refusals);
        subtest("gzip", test_gzip);
        subtest("error pages", test_error_pages);
        subtest("allow and deny", test_access_rules);
        subtest("real_ip", test_real_ip);
        subtest("every problem at once", test_all_problems_reported);
        subtest("no locations", test_no_locations_warns);
        subtest("response buffers", test_buffers);
        subtest("return variables", test_return_variables);
        subtest("log_format", test_log_format_compile);
        subtest("log escapes", test_log_escapes);
        subtest("log_format in the config", test_log_format_config);
        subtest("limit_req", test_limit_req);
        subtest("limit zone sizes", test_limit_zone_sizes);
        subtest("limit_conn", test_limit_conn);
        subtest("internal and x_accel_redirect", test_internal_and_x_accel);
        subtest("uwsgi_param and proxy_set_header", test_upstream_params);
        subtest("hide_header and pass_header", test_hide_and_pass_headers);
        config_diag_done(&diag);
        return done_testing();
}
