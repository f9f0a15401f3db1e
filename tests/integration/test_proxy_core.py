# SPDX-License-Identifier: MIT
"""wharf-proxy's core behaviour against real daemons of this build (wharf-wsgi
with the PEP 3333 test application, wharf-static behind its handoff socket)
and scripted upstreams (RawUpstream) for what no real server does on demand:
garbage, an upstream that dies mid-body, one that never answers.

Every proxy is started as systemd starts it (its listening socket passed,
READY=1 awaited on a NOTIFY_SOCKET) and must exit 0 on SIGTERM without a
sanitizer report."""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import wharf_harness as wh
from conftest import StaticServer, build_tree, static_binary_or_skip
from proxy_fixtures import (RawUpstream, app, proxies,  # noqa: F401 (fixtures)
                            proxy_binary_or_skip, read_http_request, read_uwsgi_request)

sys.path.insert(0, str(Path(__file__).parent / "apps"))
from pep3333 import big_body  # noqa: E402 (the test app's own bytes)

BINARY = proxy_binary_or_skip()


def uwsgi_site(app, keepalive=4, extra=""):
    return ("[server]\nclient_max_body_size = 8M\nworkers = 1\n" + extra +
            f"\n[upstream app]\nserver = unix:{app.uwsgi_path}\nkeepalive = {keepalive}\n"
            "\n[location /]\nuwsgi_pass = app\n")


def env_of(response):
    assert response.status == 200, response
    return json.loads(response.body)


# ---------------------------------------------------------------------------
# uwsgi_pass to wharf-wsgi


@pytest.mark.parametrize("keepalive", [0, 4])
def test_uwsgi_variables(proxies, app, keepalive):
    p = proxies(uwsgi_site(app, keepalive))
    with p.connect(timeout=10) as c:
        env = env_of(c.exchange("GET", "/env?a=%20b&c", [
            ("X-Twice", "one"), ("Cookie", "a=1"), ("X-Twice", "two"), ("Cookie", "b=2"),
            ("X_Spoof", "no"), ("User-Agent", "t/1")]))
    assert env["REQUEST_METHOD"] == "GET"
    assert env["QUERY_STRING"] == "a=%20b&c"
    assert env["REQUEST_URI"] == "/env?a=%20b&c"
    assert env["PATH_INFO"] == "/env"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REQUEST_SCHEME"] == "http"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert int(env["REMOTE_PORT"]) > 0
    assert env["SERVER_PORT"] == str(p.port)
    assert env["HTTP_HOST"] == "localhost"
    assert env["HTTP_X_TWICE"] == "one, two"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_SPOOF" not in env, "a header with '_' posed as another"
    assert "HTTP_CONTENT_LENGTH" not in env and "HTTP_CONTENT_TYPE" not in env
    assert env["HTTP_USER_AGENT"] == "t/1"


def test_uwsgi_variables_match_nginx_params(proxies, app):
    params = "/etc/nginx/uwsgi_params"
    if not os.path.exists(params):
        pytest.skip("Debian's nginx is not installed")
    names = [line.split()[1] for line in open(params) if line.startswith("uwsgi_param")]
    p = proxies(uwsgi_site(app))
    env = env_of(p.get("/env"))
    missing = [n for n in names if n not in env and n != "HTTPS"]
    assert not missing, f"variables of uwsgi_params not sent: {missing}"


def test_path_info_is_decoded(proxies, app):
    p = proxies(uwsgi_site(app))
    env = env_of(p.get("/x/..//%65nv"))
    assert env["PATH_INFO"] == "/env"
    assert env["REQUEST_URI"] == "/x/..//%65nv"


@pytest.mark.parametrize("chunked", [False, True])
def test_request_bodies_arrive_whole(proxies, app, chunked):
    p = proxies(uwsgi_site(app))
    body = os.urandom(3 * 1024 * 1024 + 17)
    with p.connect(timeout=20) as c:
        if chunked:
            data = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 50000]), body[i:i + 50000])
                            for i in range(0, len(body), 50000)) + b"0\r\n\r\n"
            r = c.exchange("POST", "/body-info", [("Transfer-Encoding", "chunked")], body=data)
        else:
            r = c.exchange("POST", "/body-info", [("Content-Length", str(len(body)))],
                           body=body)
        info = json.loads(r.body)
        assert info["length"] == len(body)
        assert info["sha256"] == hashlib.sha256(body).hexdigest()
        assert info["content_length"] == str(len(body))
        # The connection is still in step.
        assert c.exchange("GET", "/env").status == 200


def test_keepalive_and_pipelining_in_order(proxies, app):
    p = proxies(uwsgi_site(app))
    with p.connect(timeout=10) as c:
        c.send(b"".join(wh.build_request("GET", f"/env?n={i}") for i in range(20)))
        for i, r in enumerate(c.read_responses(["GET"] * 20)):
            assert env_of(r)["QUERY_STRING"] == f"n={i}"
        r = c.exchange("HEAD", "/env")
        assert r.status == 200 and r.body == b"" and int(r.header("Content-Length")) > 0
        assert c.is_open()


def test_streamed_response_is_chunked_for_11_and_closes_for_10(proxies, app):
    p = proxies(uwsgi_site(app))
    r = p.get("/stream")
    assert r.header("Transfer-Encoding") == "chunked" and r.body == b"one\ntwo\nthree\n"
    with p.connect() as c:
        c.send(b"GET /stream HTTP/1.0\r\nHost: x\r\n\r\n")
        data = c.read_until_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower() and body == b"one\ntwo\nthree\n"


def test_app_error_after_first_bytes_aborts_client_response(proxies, app):
    p = proxies(uwsgi_site(app, keepalive=0))
    with p.connect(timeout=10) as c:
        c.send(wh.build_request("GET", "/error-after"))
        data = c.read_until_closed()
    assert data.startswith(b"HTTP/1.1 200")
    assert not data.endswith(b"0\r\n\r\n"), "a broken response must not end cleanly"


def test_view_ignoring_body_still_answers(proxies, app):
    p = proxies(uwsgi_site(app))
    body = b"x" * (2 * 1024 * 1024)
    with p.connect(timeout=20) as c:
        r = c.exchange("POST", "/ignore-body", [("Content-Length", str(len(body)))], body=body)
        assert r.status == 200
        assert c.exchange("GET", "/env").status == 200, "the connection stays in step"


def test_body_over_limit_is_413_without_reading_it(proxies, app):
    p = proxies(uwsgi_site(app) + "[location /small/]\nuwsgi_pass = app\n"
                "client_max_body_size = 1k\n")
    with p.connect() as c:
        c.send(wh.build_request("POST", "/small/x", [("Content-Length", "2000")]))
        r = c.read_response()
        assert r.status == 413 and r.header("Connection") == "close"
    with p.connect() as c:
        r = c.exchange("POST", "/env", [("Content-Length", str(9 * 1024 * 1024))])
        assert r.status == 413


# ---------------------------------------------------------------------------
# large response bodies: spliced upstream -> pipe -> client


def pipes_of(pid: int) -> int:
    """How many pipe ends the process holds (splice pipes are kept for reuse)."""
    n = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            n += os.readlink(fd).startswith("pipe:")
        except FileNotFoundError:
            pass  # closed between the listing and the look (an upstream socket)
    return n


@pytest.mark.parametrize("splice_min", ["256k", "0"])
def test_large_body_arrives_intact_on_a_kept_connection(proxies, app, splice_min):
    """Through the pipe (the default above 256k) or copied (splice_min = 0):
    the same bytes, the connection stays in step, HEAD has no body."""
    p = proxies(uwsgi_site(app, extra=f"splice_min = {splice_min}\n"))
    pipes_before = pipes_of(p.daemon.pid)
    sizes = [300 * 1024, 5 * 1024 * 1024 + 7]
    with p.connect(timeout=20) as c:
        for n in sizes:
            r = c.exchange("GET", f"/big?n={n}")
            assert r.status == 200 and int(r.header("Content-Length")) == n
            assert r.body == big_body(n)
        # Pipelined behind a large one.
        c.send(wh.build_request("GET", f"/big?n={sizes[1]}") + wh.build_request("GET", "/env"))
        big, small = c.read_responses(["GET", "GET"])
        assert big.body == big_body(sizes[1]) and small.status == 200
        r = c.exchange("HEAD", f"/big?n={sizes[1]}")
        assert r.status == 200 and r.body == b""
        assert c.exchange("GET", "/env").status == 200
    spliced = pipes_of(p.daemon.pid) > pipes_before
    assert spliced == (splice_min != "0"), "a pipe is kept for the next large body"


def test_large_body_to_a_slow_client_through_a_small_pipe(proxies, app):
    p = proxies(uwsgi_site(app, extra="response_buffer = 64k\nsplice_min = 64k\n"))
    n = 3 * 1024 * 1024
    with p.connect(timeout=30, rcvbuf=8192, recv_size=8192, read_delay=0.0005) as c:
        r = c.exchange("GET", f"/big?n={n}")
        assert r.status == 200 and r.body == big_body(n)
        assert c.exchange("GET", "/env").status == 200


def test_upstream_failing_in_a_spliced_body_aborts_the_client(proxies, app):
    p = proxies(uwsgi_site(app))
    n = 4 * 1024 * 1024
    with p.connect(timeout=20) as c:
        c.send(wh.build_request("GET", f"/big?n={n}&fail={1024 * 1024}"))
        data = c.read_until_closed(10)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {n}".encode() in head
    assert 0 < len(body) < n, "cut short, and the client can tell"
    assert body == big_body(n)[:len(body)]
    assert p.get("/env").status == 200, "the proxy goes on"


def test_client_leaving_in_a_spliced_body(proxies, app):
    p = proxies(uwsgi_site(app))
    n = 8 * 1024 * 1024
    for _ in range(3):
        with p.connect(timeout=10, rcvbuf=8192) as c:
            c.send(wh.build_request("GET", f"/big?n={n}"))
            assert c.sock.recv(4096).startswith(b"HTTP/1.1 200")
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    assert p.get(f"/big?n={n}", timeout=20).body == big_body(n), "the proxy goes on"


def test_large_body_from_an_http_upstream_is_spliced(proxies):
    n = 2 * 1024 * 1024 + 3
    body = big_body(n)

    def handler(conn):
        read_http_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
        for i in range(0, n, 100000):
            conn.sendall(body[i:i + 100000])
            time.sleep(0.001)

    up = RawUpstream(handler)
    try:
        p = proxies("[server]\nworkers = 1\n"
                    f"[upstream raw]\nserver = {up.address}\n"
                    "[location /]\nproxy_pass = raw\n")
        r = p.get("/x", timeout=20)
        assert r.status == 200 and r.body == body
        assert pipes_of(p.daemon.pid) >= 2
    finally:
        up.close()


# ---------------------------------------------------------------------------
# the client side


@pytest.mark.parametrize("raw", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
    b"GET / HTTP/1.1\nHost: x\n\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
])
def test_smuggling_is_400_and_never_forwarded(proxies, raw):
    seen = []
    up = RawUpstream(lambda conn: seen.append(read_http_request(conn, 2)))
    try:
        p = proxies(f"[upstream u]\nserver = {up.address}\n[location /]\nproxy_pass = u\n")
        data = wh.raw_exchange(p.address, raw)
        assert data.startswith(b"HTTP/1.1 400"), data[:100]
        time.sleep(0.2)
        assert up.accepted == 0 and not seen
    finally:
        up.close()


def test_oversized_head_is_431(proxies, app):
    p = proxies(uwsgi_site(app))
    r = p.get("/env", [("X-Big", "a" * 20000)])
    assert r.status == 431


def test_slow_head_gets_408(proxies, app):
    p = proxies(uwsgi_site(app, extra="client_header_timeout = 1s\n"))
    with p.connect(timeout=5) as c:
        c.send(b"GET /env HTTP/1.1\r\nHost: x\r\n")
        data = c.read_until_closed(timeout=4)
    assert data.startswith(b"HTTP/1.1 408")


def test_routes_exact_prefix_return_vhost_add_header(proxies, app):
    p = proxies(uwsgi_site(app) +
                "[location = /env]\nreturn = 200 exact\n"
                "[location /old/]\nreturn = 301 https://example.com/new/\n"
                "add_header = X-Frame-Options: DENY\n"
                "[server b]\nserver_name = b.test *.c.test\n"
                "[location /]\nreturn = 200 vhost b\n")
    r = p.get("/env")
    assert r.status == 200 and r.body == b"exact"
    r = p.get("/stream")
    assert r.status == 200 and r.body == b"one\ntwo\nthree\n", "not exact: the prefix /"
    r = p.get("/old/page")
    assert r.status == 301 and r.header("Location") == "https://example.com/new/"
    assert r.header("X-Frame-Options") == "DENY"
    assert p.get("/", [("Host", "b.test")]).body == b"vhost b"
    assert p.get("/", [("Host", "x.C.test:8080")]).body == b"vhost b"
    assert p.get("/stream", [("Host", "other")]).status == 200, "unknown host: default"


def test_return_with_variables(proxies):
    """The tutorial's HTTPS redirect and nginx's other variables, filled in
    from the request; a value that would break the head is refused."""
    p = proxies("[server]\nworkers = 1\nserver_name = example.org\n"
                "[location /]\nreturn = 301 https://$host$request_uri\n"
                "[location /v/]\nreturn = 200 $scheme|$http_host|$uri|$args|${query_string}|"
                "$server_name|$server_port|$remote_addr|$|${uri\n")
    r = p.get("/a/b?x=1&y=%20", [("Host", "WWW.Example.COM:8080")])
    assert r.status == 301 and r.header("Location") == "https://www.example.com/a/b?x=1&y=%20"
    r = p.get("/a", [("Host", "[::1]:8080")])
    assert r.header("Location") == "https://[::1]/a"
    with p.connect() as c:
        c.send(b"GET /c HTTP/1.0\r\n\r\n")  # no Host: the server's name
        r = c.read_response()
        assert r.status == 301 and r.header("Location") == "https://example.org/c"
    r = p.get("/v/", [("Host", "h")])  # no query, no port: empty values
    assert r.status == 200 and r.body.startswith(b"http|h|/v/|||example.org|")
    r = p.get("/v/../v/x/?q=1", [("Host", "h:1")])
    assert r.status == 200
    assert r.body == (f"http|h:1|/v/x/|q=1|q=1|example.org|{p.port}|127.0.0.1|$|${{uri"
                      .encode())


def test_return_refuses_unknown_variables(tmp_path):
    bad = tmp_path / "bad.ini"
    bad.write_text("[server]\n[location /]\nreturn = 301 https://$hots$request_uri\n")
    out = subprocess.run([BINARY, "-c", bad, "--check-config"], capture_output=True, text=True)
    assert out.returncode != 0
    assert f"{bad}:3" in out.stderr and "unknown variable $hots" in out.stderr


# ---------------------------------------------------------------------------
# proxy_pass and misbehaving upstreams


def http_site(*servers, extra_upstream="", extra=""):
    lines = "".join(f"server = {s}\n" for s in servers)
    return (f"[server]\nworkers = 1\n{extra}\n[upstream u]\n{lines}{extra_upstream}"
            "\n[location /]\nproxy_pass = u\n")


def answer(conn, body=b"hello", head=None):
    read_http_request(conn)
    conn.sendall(head or b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def test_proxy_pass_request_head(proxies):
    got = []

    def handler(conn):
        head, _ = read_http_request(conn)
        got.append(head)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n"
                     b"Keep-Alive: timeout=5\r\n\r\nok")

    up = RawUpstream(handler)
    try:
        p = proxies(http_site(up.address))
        r = p.get("/a?b", [("X-Forwarded-For", "10.0.0.1"), ("Connection", "X-Drop"),
                           ("X-Drop", "1"), ("TE", "trailers"), ("Keep-Alive", "1"),
                           ("Upgrade", "h2c")])
        assert r.status == 200 and r.body == b"ok"
        assert r.header("Keep-Alive") is None
        lines = got[0].decode().split("\r\n")
        assert lines[0] == "GET /a?b HTTP/1.1"
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(": ")
            hdrs.setdefault(k.lower(), []).append(v)
        assert hdrs["host"] == ["localhost"]
        assert hdrs["x-forwarded-for"] == ["10.0.0.1, 127.0.0.1"]
        assert hdrs["x-real-ip"] == ["127.0.0.1"]
        assert hdrs["x-forwarded-proto"] == ["http"]
        for gone in ("x-drop", "te", "keep-alive", "upgrade"):
            assert gone not in hdrs, gone
    finally:
        up.close()


def test_upstream_keepalive_reuses_connections(proxies):
    def handler(conn):
        while True:
            head, _ = read_http_request(conn)
            if not head:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    up = RawUpstream(handler)
    try:
        p = proxies(http_site(up.address, extra_upstream="keepalive = 2\n"))
        with p.connect() as c:
            for _ in range(10):
                assert c.exchange("GET", "/").body == b"ok"
        assert up.accepted == 1
    finally:
        up.close()


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_chunked_and_close_delimited_upstream_bodies(proxies, version):
    def handler(conn):
        head, _ = read_http_request(conn)
        if b" /chunked " in head:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close")

    up = RawUpstream(handler)
    try:
        p = proxies(http_site(up.address))
        for path, body in (("/chunked", b"abcde"), ("/close", b"until-close")):
            with p.connect() as c:
                c.send(f"GET {path} HTTP/{version}\r\nHost: x\r\n\r\n".encode())
                r = c.read_response()
                assert r.body == body
                if version == "1.1":
                    assert r.header("Transfer-Encoding") == "chunked"
                else:
                    assert r.header("Transfer-Encoding") is None
    finally:
        up.close()


def test_upstream_dying_mid_body_truncates_client_response(proxies):
    def handler(conn):
        head, _ = read_http_request(conn)
        if b"/length" in head:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n")

    up = RawUpstream(handler)
    try:
        p = proxies(http_site(up.address))
        with p.connect() as c:
            c.send(wh.build_request("GET", "/length"))
            data = c.read_until_closed()
            head, _, body = data.partition(b"\r\n\r\n")
            assert b"Content-Length: 100" in head and body == b"only-part"
        with p.connect() as c:
            c.send(wh.build_request("GET", "/chunked"))
            data = c.read_until_closed()
            assert data.endswith(b"4\r\npart\r\n"), data
    finally:
        up.close()


def test_garbage_head_is_502(proxies):
    up = RawUpstream(lambda conn: answer(conn, head=b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n"))
    try:
        p = proxies(http_site(up.address))
        with p.connect() as c:
            assert c.exchange("GET", "/").status == 502
            assert c.exchange("GET", "/").status == 502, "the client connection goes on"
        assert "invalid response head" in p.daemon.log_text()
    finally:
        up.close()


def test_refused_upstream_is_502_and_failover_reaches_the_next(proxies):
    dead = wh.free_tcp_port()
    up = RawUpstream(lambda conn: answer(conn, b"second"))
    try:
        p = proxies(http_site(f"127.0.0.1:{dead}"))
        with p.connect() as c:
            r = c.exchange("GET", "/")
            assert r.status == 502 and b"502" in r.body
            assert c.is_open()
        p2 = proxies(http_site(f"127.0.0.1:{dead}", up.address))
        for _ in range(4):
            assert p2.get("/").body == b"second"
    finally:
        up.close()


def test_error_pages_replace_the_built_in_ones(proxies, tmp_path):
    """error_page = 502 504 /path: the file's bytes with the status, its type
    from its name, a HEAD without them; a reload reads the file again, and a
    reload whose file is gone is refused (the page in use stays)."""
    page = tmp_path / "50x.html"
    page.write_bytes(b"<h1>Back in a moment</h1>\n")
    dead = wh.free_tcp_port()
    config = http_site(f"127.0.0.1:{dead}", extra=f"error_page = 502 504 {page}\n")
    p = proxies(config)
    with p.connect() as c:
        r = c.exchange("GET", "/")
        assert r.status == 502 and r.body == b"<h1>Back in a moment</h1>\n"
        assert r.header("Content-Type") == "text/html; charset=utf-8"
        r = c.exchange("HEAD", "/")
        assert r.status == 502 and r.body == b"" and r.header("Content-Length") == "26"
        assert c.exchange("GET", "/x", [("Transfer-Encoding", "chunked, gzip")]).status == 400
    # Codes without a page keep the built-in one.
    p2 = proxies(f"[server]\nworkers = 1\nerror_page = 502 {page}\n")
    r = p2.get("/nowhere")
    assert r.status == 404 and b"Back in a moment" not in r.body
    page.write_bytes(b"<h1>New page</h1>\n")
    p.reload()
    assert p.get("/").body == b"<h1>New page</h1>\n"
    page.unlink()
    p.reload()
    assert p.get("/").body == b"<h1>New page</h1>\n"
    assert "keeping the running configuration" in p.daemon.log_text()


def answer_status_by_path(conn):
    """.../500, .../404, .../503: that status with the application's own body; else 200."""
    while True:
        request, _ = read_http_request(conn)
        if not request:
            return
        method, target = request.split(b" ")[:2]
        last = target.rsplit(b"/", 1)[1]
        code = int(last) if last.isdigit() else 200
        body = b"the application's own %d page" % code
        conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nX-App: 1\r\n"
                     b"Content-Length: %d\r\n\r\n%s"
                     % (code, len(body), b"" if method == b"HEAD" else body))


@pytest.mark.skipif(not os.access(wh.NGINX, os.X_OK), reason="Debian's nginx is not installed")
def test_intercepted_upstream_errors_as_nginx(proxies):
    """proxy_intercept_errors = on: an upstream status with an error_page
    gets the page (and that status), one without keeps the upstream's body;
    off (the default) passes everything. The same as nginx's, HEAD too."""
    pages = wh.short_tempdir("pie-pages-")  # nginx's workers run as nobody: not in tmp_path
    (pages / "50x.html").write_bytes(b"<h1>Back in a moment</h1>\n")
    (pages / "50x.html").chmod(0o644)
    up = RawUpstream(answer_status_by_path)
    requests = [(m, f"/{loc}/{code}") for loc in ("on", "off") for code in (500, 503, 404, 200)
                for m in ("GET", "HEAD")]

    def outcome(address):
        out = []
        for method, target in requests:
            with wh.HttpConnection(address, timeout=10) as c:
                r = c.exchange(method, target)
            # The type without parameters: wharf names the page's charset, nginx not.
            out.append((method, target, r.status, r.body,
                        (r.header("Content-Type") or "").split(";")[0], r.header("X-App")))
        return out

    try:
        with wh.NginxRun("pie-ngx-") as ngx:
            ngx.start(f"""\
    server {{
        listen 127.0.0.1:{ngx.port};
        error_page 500 503 /50x.html;
        location = /50x.html {{ root {pages}; }}
        location /on/ {{ proxy_intercept_errors on; proxy_pass http://{up.address}/; }}
        location /off/ {{ proxy_pass http://{up.address}/; }}
    }}""")
            theirs = outcome(ngx.address)
        p = proxies(f"[server]\nworkers = 1\nerror_page = 500 503 {pages}/50x.html\n"
                    f"[upstream u]\nserver = {up.address}\n"
                    f"[location /on/]\nproxy_pass = u\nproxy_intercept_errors = on\n"
                    f"[location /off/]\nproxy_pass = u\n")
        ours = outcome(p.address)
    finally:
        up.close()
        wh.remove_tree(pages)
    intercepted = [o for o in theirs if o[3] == b"<h1>Back in a moment</h1>\n"]
    assert [o[1] for o in intercepted] == ["/on/500", "/on/503"]
    assert all(o[5] is None for o in intercepted), "the page has none of the upstream's headers"
    assert ours == theirs


def test_an_intercepted_error_keeps_the_upstream_connection(proxies, tmp_path):
    """A short error answer comes whole with its head: the page goes to the
    client and the upstream connection goes back to the pool."""
    page = tmp_path / "50x.html"
    page.write_bytes(b"page\n")
    up = RawUpstream(answer_status_by_path)
    try:
        p = proxies(f"[server]\nworkers = 1\nerror_page = 500 {page}\n"
                    f"[upstream u]\nserver = {up.address}\nkeepalive = 4\n"
                    f"[location /]\nproxy_pass = u\nproxy_intercept_errors = on\n")
        with p.connect() as c:
            assert [c.exchange("GET", t).body for t in ("/500", "/500", "/200")] == \
                [b"page\n", b"page\n", b"the application's own 200 page"]
        assert up.accepted == 1
    finally:
        up.close()


def test_uwsgi_intercept_errors_with_wharf_wsgi(proxies, app, tmp_path):
    """uwsgi_intercept_errors = on (in [server], for the uwsgi_pass locations
    without their own): a view that fails gets the site's 500 page, and the
    connection goes on; off by default."""
    page = tmp_path / "500.html"
    page.write_bytes(b"<h1>Sorry</h1>\n")
    p = proxies(uwsgi_site(app, extra=f"error_page = 500 {page}\nuwsgi_intercept_errors = on\n"))
    with p.connect() as c:
        r = c.exchange("GET", "/error-before")
        assert r.status == 500 and r.body == b"<h1>Sorry</h1>\n"
        assert c.exchange("GET", "/env").status == 200
    assert p.get("/nope-404").status == 404, "a status without a page goes as it is"
    off = proxies(uwsgi_site(app, extra=f"error_page = 500 {page}\n"))
    r = off.get("/error-before")
    assert r.status == 500 and b"Sorry" not in r.body, "off by default, as in nginx"


def test_allow_and_deny(proxies):
    """nginx's access module: the first matching rule decides; a location
    without rules has its server's; a refused request is a 403 and the
    connection goes on."""
    p = proxies("[server]\nworkers = 1\ndeny = 127.0.0.2\n"
                "[location /admin/]\nreturn = 200 admin\nallow = 127.0.0.0/8\ndeny = all\n"
                "[location /private/]\nreturn = 200 private\ndeny = 127.0.0.1\nallow = all\n"
                "[location /]\nreturn = 200 open\n")
    with p.connect() as c:
        assert c.exchange("GET", "/admin/").body == b"admin"
        assert c.exchange("GET", "/private/x").status == 403
        assert c.exchange("POST", "/private/x", body=b"dropped").status == 403
        assert c.exchange("GET", "/").body == b"open"
    assert "access forbidden by rule: /private/x" in p.daemon.log_text()


def test_real_ip_from_a_trusted_proxy(proxies, app, tmp_path):
    """set_real_ip_from / real_ip_header, nginx's realip: behind a trusted
    proxy, the client it names is the one the application, the access log
    and allow/deny see; an untrusted peer's header changes nothing."""
    log = tmp_path / "access.log"
    p = proxies(uwsgi_site(app, extra=f"access_log = file:{log}\nset_real_ip_from = 127.0.0.1\n"
                                      "real_ip_header = X-Forwarded-For\nreal_ip_recursive = on\n"
                                      "set_real_ip_from = 10.0.0.0/8\n")
                + "[location /admin/]\nuwsgi_pass = app\ndeny = 203.0.113.9\n")
    xff = [("X-Forwarded-For", "203.0.113.9, 10.1.1.1")]
    env = env_of(p.get("/env", xff))
    assert env["REMOTE_ADDR"] == "203.0.113.9" and env["HTTP_X_FORWARDED_FOR"].startswith("203.")
    assert p.get("/admin/env", xff).status == 403
    # Without the header the peer (127.0.0.1) is the client: the app answers (its own 404).
    assert p.get("/admin/env").status == 404
    assert p.daemon.log_text().count("access forbidden by rule") == 1
    deadline = time.monotonic() + 5
    while "203.0.113.9 - - [" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the access log does not name the real client"
        time.sleep(0.05)
    p2 = proxies(uwsgi_site(app, extra="set_real_ip_from = 10.0.0.0/8\n"))
    assert env_of(p2.get("/env", xff))["REMOTE_ADDR"] == "127.0.0.1", "an untrusted peer"


# X-Forwarded-For values a client or a chain of proxies may send, odd ones
# included; each must give the same client through wharf as through nginx.
FORWARDED = [
    "203.0.113.7", "203.0.113.7, 10.0.0.1", "203.0.113.7, , 10.0.0.1", "203.0.113.7 10.0.0.1",
    "203.0.113.7,", ",203.0.113.7", "203.0.113.7,,10.1.1.1", " 9.9.9.9 , 10.0.0.2",
    "bogus, 10.0.0.3", "203.0.113.7, bogus", "203.0.113.7:80", "[2001:db8::7]",
    "[2001:db8::7]:443", "2001:db8::7", "10.0.0.5, 10.0.0.6", "unknown", "", " , ",
    "203.0.113.7:0", "1.2.3.4:65536", ",,203.0.113.7, 10.0.0.1",
]
# Not compared: an IPv4-mapped address (::ffff:203.0.113.7), which nginx
# writes as it came and wharf as the IPv4 address it is, wherever it shows.


@pytest.mark.skipif(not os.access(wh.NGINX, os.X_OK), reason="Debian's nginx is not installed")
@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Real-IP"])
@pytest.mark.parametrize("recursive", [True, False])
def test_real_ip_finds_the_client_nginx_finds(proxies, header, recursive):
    """The same set_real_ip_from, real_ip_header and real_ip_recursive in
    wharf-proxy and Debian's nginx, each answering with $remote_addr: the
    same client for every value of FORWARDED."""
    on = "on" if recursive else "off"
    with wh.NginxRun("prip-ngx-") as ngx:
        ngx.start(f"""\
    server {{
        listen 127.0.0.1:{ngx.port};
        set_real_ip_from 127.0.0.1;
        set_real_ip_from 10.0.0.0/8;
        real_ip_header {header};
        real_ip_recursive {on};
        location / {{ return 200 "$remote_addr"; }}
    }}""")
        theirs = [wh.HttpConnection(ngx.address).exchange("GET", "/", [(header, v)]).body
                  for v in FORWARDED]
    p = proxies(f"[server]\nworkers = 1\nset_real_ip_from = 127.0.0.1\n"
                f"set_real_ip_from = 10.0.0.0/8\nreal_ip_header = {header}\n"
                f"real_ip_recursive = {on}\n[location /]\nreturn = 200 $remote_addr\n")
    ours = [p.get("/", [(header, v)]).body for v in FORWARDED]
    theirs = dict(zip(FORWARDED, theirs))
    assert theirs["203.0.113.7"] == b"203.0.113.7" and theirs[""] == b"127.0.0.1"
    assert dict(zip(FORWARDED, ours)) == theirs


def test_upstream_timeout_is_504(proxies):
    def handler(conn):
        read_http_request(conn)
        time.sleep(3)

    up = RawUpstream(handler)
    try:
        p = proxies(http_site(up.address, extra_upstream="read_timeout = 1s\n"))
        start = time.monotonic()
        assert p.get("/", timeout=10).status == 504
        assert time.monotonic() - start < 2.9
    finally:
        up.close()


# ---------------------------------------------------------------------------
# static routes: the handoff


@pytest.fixture
def static_pair(proxies, app, tmp_path):
    binary = static_binary_or_skip()
    tree = build_tree(tmp_path / "tree")
    work = wh.short_tempdir("px-st-")
    st = StaticServer(binary, tree.root, work, sockets=("handoff",),
                      config={"prefix": "/static/"})
    st.start()
    p = proxies(uwsgi_site(app) + f"[location /static/]\nstatic = {st.handoff_path}\n")
    yield p, st, tree
    st.stop()
    st.close()
    shutil.rmtree(work, ignore_errors=True)


def test_handoff_mixed_pipeline_in_order(static_pair):
    p, st, tree = static_pair
    files = sorted(f for f in os.listdir(tree.root) if os.path.isfile(tree.root / f))
    name = files[0]
    content = (tree.root / name).read_bytes()
    paths = [f"/static/{name}", "/env?1", f"/static/{name}", f"/static/{name}", "/env?2",
             f"/static/{name}"]
    with p.connect(timeout=10) as c:
        c.send(b"".join(wh.build_request("GET", path) for path in paths))
        responses = c.read_responses(["GET"] * len(paths))
        for path, r in zip(paths, responses):
            assert r.status == 200, (path, r)
            if path.startswith("/static/"):
                assert r.body == content and r.header("Server").startswith("wharf-static")
            else:
                assert env_of(r)["QUERY_STRING"] == path.split("?")[1]
        # One at a time on the same connection, too.
        for path in paths:
            assert c.exchange("GET", path).status == 200


def test_static_down_is_502(proxies, app):
    p = proxies(uwsgi_site(app) + "[location /static/]\nstatic = /nonexistent/static.handoff\n")
    with p.connect() as c:
        assert c.exchange("GET", "/static/x").status == 502
    assert p.get("/env").status == 200, "the proxy goes on"


# ---------------------------------------------------------------------------
# the daemon's life


def run(*args):
    return subprocess.run([str(BINARY), *map(str, args)], capture_output=True, text=True,
                          timeout=10)


def test_help_version_check_config(tmp_path):
    assert "Usage: wharf-proxy" in run("--help").stdout
    assert run("--version").stdout.startswith("wharf-proxy " + wh.project_version())
    good = tmp_path / "good.ini"
    good.write_text("[upstream a]\nserver = unix:/run/a.sock\n[location /]\nuwsgi_pass = a\n")
    out = run("-c", good, "--check-config")
    assert out.returncode == 0 and "configuration OK" in out.stdout
    bad = tmp_path / "bad.ini"
    bad.write_text("[server]\nlisten_port = 80\n[location /]\nuwsgi_pass = nowhere\n")
    out = run("-c", bad, "--check-config")
    assert out.returncode == 1
    assert f"{bad}:2" in out.stderr and "unknown key" in out.stderr
    assert f"{bad}:4" in out.stderr and "no [upstream nowhere]" in out.stderr


def test_reload_swaps_routes_keeps_connections_refuses_bad(proxies, app):
    p = proxies(uwsgi_site(app) + "[location /r/]\nreturn = 200 before\n", watchdog_usec=2000000)
    p.notify.wait_for("WATCHDOG=1", 5)
    assert p.notify.wait_for("STATUS=", 5)
    with p.connect(timeout=10) as c:
        assert c.exchange("GET", "/r/").body == b"before"
        # A request in flight across the reload completes.
        slow = threading.Thread(target=lambda: slow_result.append(p.get("/sleep?s=1.5")))
        slow_result = []
        slow.start()
        time.sleep(0.3)
        p.write_config(uwsgi_site(app) + "[location /r/]\nreturn = 200 after\n")
        p.reload()
        assert c.exchange("GET", "/r/").body == b"after", "same connection, new config"
        slow.join(10)
        assert slow_result and slow_result[0].status == 200
        p.write_config("[server]\nbogus = 1\n")
        p.reload()
        assert c.exchange("GET", "/r/").body == b"after", "a bad file changes nothing"
    assert "keeping the running configuration" in p.daemon.log_text()


def test_sigterm_finishes_request_in_flight(proxies, app):
    p = proxies(uwsgi_site(app))
    result = []
    t = threading.Thread(target=lambda: result.append(p.get("/sleep?s=1", timeout=10)))
    t.start()
    time.sleep(0.3)
    p.daemon.signal(signal.SIGTERM)
    t.join(10)
    assert result and result[0].status == 200 and result[0].body == b"slept\n"
    assert p.daemon.wait_exit(10) == 0


def test_sigterm_serves_a_fresh_connection_closes_an_idle_one(proxies, app):
    """At stop, a connection that was answered and waits idle is closed (its
    client retries on a new one), but one accepted just before the stop gets
    its first request served: that request may have been on its way."""
    p = proxies(uwsgi_site(app))
    with p.connect(timeout=10) as idle, p.connect(timeout=10) as fresh:
        assert idle.exchange("GET", "/env").status == 200
        time.sleep(0.2)  # fresh is accepted now
        p.daemon.signal(signal.SIGTERM)
        closed, data = idle.wait_closed(5)
        assert closed and data == b"", "the idle keep-alive connection is closed at once"
        time.sleep(0.3)
        r = fresh.exchange("GET", "/env")
        assert r.status == 200 and r.header("Connection") == "close"
    assert p.daemon.wait_exit(10) == 0


def test_sigterm_closes_a_silent_fresh_connection_soon(proxies, app):
    p = proxies(uwsgi_site(app))
    with p.connect(timeout=10) as silent:
        time.sleep(0.2)
        started = time.monotonic()
        p.daemon.signal(signal.SIGTERM)
        closed, data = silent.wait_closed(5)
        assert closed and data == b""
        assert time.monotonic() - started < 3, "not held for the whole stop grace"
    assert p.daemon.wait_exit(10) == 0


@pytest.fixture
def static_behind(tmp_path):
    """static_behind(**config) -> (a wharf-static on a handoff socket, the name
    of a file it serves under /static/, the file's bytes); all stopped after."""
    made = []

    def make(**config):
        tree = build_tree(tmp_path / f"tree{len(made)}")
        work = wh.short_tempdir("px-st-")
        st = StaticServer(static_binary_or_skip(), tree.root, work, sockets=("handoff",),
                          config={"prefix": "/static/", **config})
        made.append((st, work))
        st.start()
        name = sorted(f for f in os.listdir(tree.root) if os.path.isfile(tree.root / f))[0]
        return st, name, (tree.root / name).read_bytes()

    yield make
    for st, work in made:
        st.stop()
        st.close()
        shutil.rmtree(work, ignore_errors=True)


def test_static_restarts_under_load_lose_no_request(proxies, app, static_behind):
    """wharf-static restarted behind the same handoff socket (as systemd does)
    while clients keep asking for files: the stopping one serves what was
    handed to it, the proxy hands the rest to the next one; no request fails."""
    st, name, want = static_behind(workers=1)
    p = proxies(uwsgi_site(app) + f"[location /static/]\nstatic = {st.handoff_path}\n")
    stop = threading.Event()
    served, failures = [], []

    def client():
        while not stop.is_set():
            try:
                with p.connect(timeout=10) as c:
                    for _ in range(50):
                        r = c.exchange("GET", f"/static/{name}")
                        if r.status != 200 or r.body != want:
                            failures.append(f"{r.status} {r.body[:80]!r}")
                        served.append(1)
                        if r.header("Connection") == "close" or stop.is_set():
                            break
            except (OSError, AssertionError) as e:
                failures.append(repr(e))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for t in clients:
        t.start()
    time.sleep(0.5)
    counts = []
    for _ in range(3):
        before = len(served)
        st.daemon.check_clean_exit(st.daemon.stop(10))
        mark = st.notify.mark()
        st.daemon.start()
        st.notify.wait_for("READY=1", 5, since=mark)
        time.sleep(0.5)
        counts.append((before, len(served)))
    stop.set()
    for t in clients:
        t.join(20)
    assert not failures, f"{len(failures)} failed of {len(served)}: {failures[:5]}"
    assert all(a > 0 and b > a for a, b in counts), f"served around each restart: {counts}"


def wait_stopped(pid, timeout=5.0):
    """Waits until every thread of pid is in the stopped state (T)."""
    deadline = time.monotonic() + timeout
    while True:
        states = set()
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                states.add(f.read().rpartition(")")[2].split()[0])
        if states == {"T"}:
            return
        assert time.monotonic() < deadline, f"threads of {pid} not stopped: {states}"
        time.sleep(0.01)


def test_static_killed_with_handoffs_unread_loses_none(proxies, app, static_behind):
    """wharf-static acknowledges each handoff before it touches the connection,
    and the proxy keeps its copy until then: connections queued in the channel
    of a wharf-static that is killed go to the next one."""
    st, name, want = static_behind(workers=1)
    p = proxies(uwsgi_site(app) + f"[location /static/]\nstatic = {st.handoff_path}\n")
    assert p.get(f"/static/{name}").body == want  # the channel is up, HELLO seen
    st.daemon.signal(signal.SIGSTOP)
    # Every thread stopped first: one still running would take the handoffs
    # (its pending io_uring receives complete on the way to the stop).
    wait_stopped(st.daemon.pid)
    clients = [p.connect(timeout=15) for _ in range(5)]
    for c in clients:
        c.request("GET", f"/static/{name}")
    # All five handed over and unread in the stopped one's channel: a killed
    # process's queued messages are dropped, so only the proxy's own copies
    # can answer them afterwards.
    queued = 0
    deadline = time.monotonic() + 10
    while queued < 5 * wh.HANDOFF_HEADER_SIZE and time.monotonic() < deadline:
        time.sleep(0.1)
        ss = subprocess.run(["ss", "-xpH", "state", "established"], capture_output=True,
                            text=True).stdout
        queued = sum(int(line.split()[1]) for line in ss.splitlines()
                     if f"pid={st.daemon.pid}," in line)
    assert queued >= 5 * wh.HANDOFF_HEADER_SIZE, f"{queued} bytes queued to wharf-static"
    st.daemon.proc.kill()
    st.daemon.wait_exit(5)
    mark = st.notify.mark()
    st.daemon.start()
    st.notify.wait_for("READY=1", 5, since=mark)
    for c in clients:
        r = c.read_response()
        assert r.status == 200 and r.body == want
    assert "not taken, trying a new channel" in p.daemon.log_text()


def test_static_refusing_gives_502_not_a_close(proxies, app, static_behind):
    st, name, _ = static_behind(max_connections=1, workers=1)
    p = proxies(uwsgi_site(app) + f"[location /static/]\nstatic = {st.handoff_path}\n")
    with p.connect(timeout=10) as first:
        # The first connection stays with wharf-static (keep-alive): it is full.
        assert first.exchange("GET", f"/static/{name}").status == 200
        with p.connect(timeout=10) as second:
            r = second.exchange("GET", f"/static/{name}")
            assert r.status == 502 and r.header("Connection") == "close"
        assert "refusing a connection" in st.daemon.log_text()
    # Room again: served.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if p.get(f"/static/{name}").status == 200:
            break
        time.sleep(0.1)
    else:
        pytest.fail("wharf-static did not take connections again")
