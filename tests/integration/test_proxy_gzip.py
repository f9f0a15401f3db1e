# SPDX-License-Identifier: MIT
"""wharf-proxy's gzip (nginx's gzip module): which responses it compresses,
what the client gets (a gzip body that inflates to exactly the upstream's,
re-framed, a weak ETag, Vary), a streamed response flushed piece by piece,
large bodies that would otherwise be spliced, and an upstream that breaks in
the middle. Scripted HTTP upstreams (RawUpstream) answer what each case
needs; the streamed case runs through wharf-wsgi over uwsgi."""

import os
import sys
import threading
import zlib
from pathlib import Path

import pytest

import wharf_harness as wh
from proxy_fixtures import RawUpstream, app, proxies, read_http_request  # noqa: F401 (fixtures)

sys.path.insert(0, str(Path(__file__).parent / "apps"))
from pep3333 import big_body  # noqa: E402 (the test app's own bytes)

PAGE = b"".join(b"<p>post %d: some text for the board</p>\n" % i for i in range(200))


def site(upstream, server="gzip = on\n", location=""):
    return (f"[server]\nworkers = 1\n{server}\n[upstream u]\nserver = {upstream}\n"
            f"\n[location /]\nproxy_pass = u\n{location}")


def serving(head: bytes, body: bytes = PAGE):
    """An upstream answering every request on a connection with head + body."""
    def handler(conn):
        while True:
            request, _ = read_http_request(conn)
            if not request:
                return
            conn.sendall(head if request.startswith(b"HEAD ") else head + body)
    return handler


def html_head(extra=b"", length=len(PAGE)):
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n" + extra +
            b"Content-Length: %d\r\n\r\n" % length)


GZIP = [("Accept-Encoding", "deflate, gzip, br")]


def test_a_page_is_compressed_for_a_client_that_takes_gzip(proxies):
    up = RawUpstream(serving(html_head(b'ETag: "v1"\r\nVary: Cookie\r\n')))
    try:
        p = proxies(site(up.address, "gzip = on\ngzip_vary = on\n"))
        with p.connect() as c:
            for _ in range(3):  # the same connection, a pooled stream each time
                r = c.exchange("GET", "/", GZIP)
                assert r.status == 200
                assert r.header("Content-Encoding") == "gzip"
                assert r.header("Content-Length") is None
                assert r.header("Transfer-Encoding") == "chunked"
                assert r.header("ETag") == 'W/"v1"'
                assert r.has_token("Vary", "Accept-Encoding") and r.has_token("Vary", "Cookie")
                assert zlib.decompress(r.body, 16 + 15) == PAGE
                assert len(r.body) < len(PAGE) // 4
            # A HEAD gets the head its GET would get, without a body.
            r = c.exchange("HEAD", "/", GZIP)
            assert r.header("Content-Encoding") == "gzip" and r.header("ETag") == 'W/"v1"'
            assert r.header("Content-Length") is None and r.body == b""
            r = c.exchange("GET", "/")
            assert r.has_token("Vary", "Accept-Encoding"), "a cache must know it varies"
            assert r.header("Content-Encoding") is None
            assert r.header("Content-Length") == str(len(PAGE))
            assert r.header("ETag") == '"v1"'
            assert r.body == PAGE
    finally:
        up.close()


@pytest.mark.parametrize("case", [
    "type-not-listed", "already-encoded", "shorter-than-min", "status-500", "head-short",
    "http-1.0", "via", "location-off", "q-zero", "gzip-off"])
def test_what_is_not_compressed(proxies, case):
    head = html_head()
    server, location, headers, method, version = "gzip = on\n", "", GZIP, "GET", "1.1"
    if case == "type-not-listed":
        head = head.replace(b"text/html", b"image/svg+xml")
    elif case == "already-encoded":
        head = head.replace(b"\r\n\r\n", b"\r\nContent-Encoding: br\r\n\r\n")
    elif case == "shorter-than-min":
        server += "gzip_min_length = %d\n" % (len(PAGE) + 1)
    elif case == "status-500":
        head = head.replace(b"200 OK", b"500 Internal Server Error")
    elif case == "head-short":
        method = "HEAD"
        server += "gzip_min_length = %d\n" % (len(PAGE) + 1)
    elif case == "http-1.0":
        version = "1.0"
    elif case == "via":
        headers = GZIP + [("Via", "1.1 cache")]
    elif case == "location-off":
        location = "gzip = off\n"
    elif case == "q-zero":
        headers = [("Accept-Encoding", "gzip;q=0, br")]
    elif case == "gzip-off":
        server = "gzip_types = text/html\n"
    up = RawUpstream(serving(head, b"" if method == "HEAD" else PAGE))
    try:
        p = proxies(site(up.address, server, location))
        with p.connect() as c:
            c.send(wh.build_request(method, "/", headers, version=f"HTTP/{version}"))
            r = c.read_response(method)
        assert r.header("Content-Encoding") == ("br" if case == "already-encoded" else None)
        assert r.header("Content-Length") == str(len(PAGE))
        assert r.body == (b"" if method == "HEAD" else PAGE)
    finally:
        up.close()


def test_what_nginx_would_also_compress(proxies):
    """gzip_proxied any takes requests with Via; gzip_http_version 1.0 takes
    HTTP/1.0 clients, whose response then ends with the connection; a 404
    and a type added with gzip_types are compressed too."""
    head = html_head().replace(b"200 OK", b"404 Not Found").replace(b"text/html",
                                                                    b"application/json")
    up = RawUpstream(serving(head))
    try:
        p = proxies(site(up.address, "gzip = on\ngzip_proxied = any\ngzip_http_version = 1.0\n"
                                     "gzip_types = application/json\n"))
        with p.connect() as c:
            r = c.exchange("GET", "/", GZIP + [("Via", "1.1 cache")])
            assert r.status == 404 and r.header("Content-Encoding") == "gzip"
            assert zlib.decompress(r.body, 16 + 15) == PAGE
        with p.connect() as c:
            c.send(wh.build_request("GET", "/", GZIP, version="HTTP/1.0"))
            data = c.read_until_closed()
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"Content-Encoding: gzip" in head and b"Content-Length" not in head
        assert b"Transfer-Encoding" not in head
        assert zlib.decompress(body, 16 + 15) == PAGE
    finally:
        up.close()


def read_chunk_data(c, inflater, want: bytes, got: bytearray, raw: bytearray) -> None:
    """Reads the chunked gzip body until what inflated so far ends with want."""
    while True:
        while True:  # whole chunks only
            line_end = raw.find(b"\r\n")
            if line_end < 0:
                break
            size = int(raw[:line_end], 16)
            if len(raw) < line_end + 2 + size + 2:
                break
            got += inflater.decompress(bytes(raw[line_end + 2:line_end + 2 + size]))
            del raw[:line_end + 2 + size + 2]
        if bytes(got).endswith(want):
            return
        data = c.sock.recv(65536)
        assert data, f"closed before {want!r}; inflated {bytes(got)!r}"
        raw += data


def test_a_streamed_response_reaches_the_client_piece_by_piece(proxies):
    """The upstream sends a piece and waits until the client has it,
    decompressed: nothing is held back for a fuller deflate block."""
    go_on = threading.Event()

    def handler(conn):
        read_http_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n9\r\npart one\n\r\n")
        assert go_on.wait(10)
        conn.sendall(b"9\r\npart two\n\r\n0\r\n\r\n")

    up = RawUpstream(handler)
    try:
        p = proxies(site(up.address))
        with p.connect(timeout=10) as c:
            c.send(wh.build_request("GET", "/", GZIP))
            raw = bytearray()
            while b"\r\n\r\n" not in raw:
                raw += c.sock.recv(65536)
            head, _, rest = bytes(raw).partition(b"\r\n\r\n")
            assert b"Content-Encoding: gzip" in head
            raw = bytearray(rest)
            inflater, got = zlib.decompressobj(16 + 15), bytearray()
            read_chunk_data(c, inflater, b"part one\n", got, raw)
            go_on.set()
            read_chunk_data(c, inflater, b"part two\n", got, raw)
            assert bytes(got) == b"part one\npart two\n"
    finally:
        go_on.set()
        up.close()


def test_an_upstream_breaking_mid_body_leaves_the_client_a_truncated_response(proxies):
    def handler(conn):
        read_http_request(conn)
        conn.sendall(html_head(length=len(PAGE) * 2) + PAGE)  # half of what it announced

    up = RawUpstream(handler)
    try:
        p = proxies(site(up.address))
        with p.connect() as c:
            c.send(wh.build_request("GET", "/", GZIP))
            data = c.read_until_closed()
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"Content-Encoding: gzip" in head
        assert not body.endswith(b"0\r\n\r\n"), "a clean end for a broken body"
    finally:
        up.close()


def test_uwsgi_responses_streamed_and_large(proxies, app):
    """Through wharf-wsgi: a response streamed without a length, and 3 MiB
    with one (spliced when not compressed) arrive whole and inflate to
    exactly what the application sent."""
    p = proxies(f"[server]\nworkers = 1\nclient_max_body_size = 8M\ngzip = on\n"
                "gzip_types = text/plain application/octet-stream\ngzip_comp_level = 6\n"
                f"\n[upstream app]\nserver = unix:{app.uwsgi_path}\nkeepalive = 2\n"
                "\n[location /]\nuwsgi_pass = app\n")
    with p.connect(timeout=20) as c:
        r = c.exchange("GET", "/stream", GZIP)
        assert r.header("Content-Encoding") == "gzip"
        assert zlib.decompress(r.body, 16 + 15) == b"one\ntwo\nthree\n"
        n = 3 << 20
        r = c.exchange("GET", f"/big?n={n}", GZIP)
        assert r.header("Content-Encoding") == "gzip"
        assert zlib.decompress(r.body, 16 + 15) == big_body(n)
        r = c.exchange("GET", f"/big?n={n}")
        assert r.header("Content-Encoding") is None and r.body == big_body(n)


# ---------------------------------------------------------------------------
# Side by side with Debian's nginx: the same upstream answers, the same
# requests, the same gzip settings; both must compress exactly the same
# responses, with the same headers, to bodies that inflate alike.

NGINX_HTTP = """\
    gzip on;
    gzip_types text/css application/json;
    gzip_vary on;
    gzip_disable msie6 "BadBot/[0-9]";
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_http_version 1.1;
            proxy_pass http://{upstream};
        }}
    }}"""

# path -> what the upstream answers (PAGE follows the head, except for 204)
ANSWERS = {
    "/html": html_head(),
    "/css": html_head().replace(b"text/html; charset=utf-8", b"text/css"),
    "/png": html_head().replace(b"text/html; charset=utf-8", b"image/png"),
    "/br": html_head(b"Content-Encoding: br\r\n"),
    "/short": b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 19\r\n\r\n",
    "/500": html_head().replace(b"200 OK", b"500 Internal Server Error"),
    "/404": html_head().replace(b"200 OK", b"404 Not Found"),
    "/204": b"HTTP/1.1 204 No Content\r\nContent-Type: text/html\r\n\r\n",
    "/etag": html_head(b'ETag: "v7"\r\n'),
    "/weak": html_head(b'ETag: W/"v7"\r\n'),
    "/chunked": (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(PAGE), PAGE)),
}
VARIANTS = {
    "gzip": ("GET", "HTTP/1.1", GZIP),
    "identity": ("GET", "HTTP/1.1", []),
    "head": ("HEAD", "HTTP/1.1", GZIP),
    "http-1.0": ("GET", "HTTP/1.0", GZIP),
    "via": ("GET", "HTTP/1.1", GZIP + [("Via", "1.1 cache")]),
    "q-zero": ("GET", "HTTP/1.1", [("Accept-Encoding", "gzip;q=0")]),
    # gzip_disable: nginx's msie6 mask and an expression, which ignores case
    "msie6": ("GET", "HTTP/1.1", GZIP + [("User-Agent", "Mozilla/4.0 (compatible; MSIE 6.0; "
                                                        "Windows NT 5.1)")]),
    "msie5": ("GET", "HTTP/1.1", GZIP + [("User-Agent", "Mozilla/4.0 (compatible; MSIE 5.5)")]),
    "msie6-sv1": ("GET", "HTTP/1.1", GZIP + [("User-Agent", "Mozilla/4.0 (compatible; MSIE 6.0; "
                                                            "Windows NT 5.1; SV1)")]),
    "opera": ("GET", "HTTP/1.1", GZIP + [("User-Agent", "Opera/9.0 (compatible; MSIE 6.0)")]),
    "badbot": ("GET", "HTTP/1.1", GZIP + [("User-Agent", "badbot/3.1")]),
    "browser": ("GET", "HTTP/1.1", GZIP + [("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) "
                                                          "Chrome/120.0")]),
}


def answer_by_path(conn):
    while True:
        request, _ = read_http_request(conn)
        if not request:
            return
        path = request.split(b" ")[1].decode()
        head = ANSWERS[path]
        method = request.split(b" ")[0]
        body = b"" if method == b"HEAD" or path in ("/204", "/chunked") else PAGE[:19] \
            if path == "/short" else PAGE
        conn.sendall(head if method == b"HEAD" else head + body)


def outcome(addr, path, variant):
    method, version, headers = VARIANTS[variant]
    with wh.HttpConnection(addr, timeout=10) as c:
        c.send(wh.build_request(method, path, headers, version=version))
        r = c.read_response(method)
    body = r.body
    if r.header("Content-Encoding") == "gzip" and method != "HEAD":
        body = zlib.decompress(body, 16 + 15)
    return (r.status, r.header("Content-Encoding"), r.has_token("Vary", "Accept-Encoding"),
            r.header("ETag"), body)


@pytest.mark.skipif(not os.access(wh.NGINX, os.X_OK), reason="Debian's nginx is not installed")
def test_the_same_responses_are_compressed_as_by_nginx(proxies):
    up = RawUpstream(answer_by_path)
    try:
        with wh.NginxRun("pz-ngx-") as ngx:
            ngx.start(NGINX_HTTP.format(port=ngx.port, upstream=up.address))
            p = proxies(site(up.address, "gzip = on\ngzip_types = text/css application/json\n"
                                         "gzip_vary = on\n"
                                         "gzip_disable = msie6 \"BadBot/[0-9]\"\n"))
            compressed = 0
            for path in ANSWERS:
                for variant in VARIANTS:
                    theirs = outcome(ngx.address, path, variant)
                    ours = outcome(p.address, path, variant)
                    assert ours == theirs, f"{path} {variant}: wharf {ours[:4]}, nginx {theirs[:4]}"
                    compressed += theirs[1] == "gzip"
        # /html /css /404 /etag /weak /chunked, for the GET and the HEAD that take
        # gzip, and for the User-Agents gzip_disable lets through (SV1, Opera, Chrome)
        assert compressed == 6 * 5
    finally:
        up.close()
