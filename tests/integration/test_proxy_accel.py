"""X-Accel-Redirect (protected downloads, django-sendfile's nginx backend):
the application answers with a path, and the file comes from an internal
location. Debian's nginx runs beside wharf-proxy + wharf-static with the
same files, the same upstream and the same requests, and both must give
the same answers."""

import hashlib
import os
import shutil

import pytest

import wharf_harness as wh
from conftest import StaticServer, static_binary_or_skip
from proxy_fixtures import RawUpstream, proxies, read_http_request  # noqa: F401 (fixtures)

PDF = bytes(range(256)) * 40
# Compared. Not Accept-Ranges: wharf-static says it on a 206 too, where nginx does not.
KEPT = ["Content-Type", "Content-Disposition", "Set-Cookie", "Cache-Control", "Content-Length",
        "Content-Range", "ETag", "Last-Modified"]


def answering(conn):
    """/download/NAME: X-Accel-Redirect to /protected/NAME, with the headers
    django-sendfile sets and a body that must not reach the client;
    /loop: a redirect to itself; /relative: not a path; else 200 'app'."""
    while True:
        request, _ = read_http_request(conn)
        if not request:
            return
        path = request.split(b" ")[1].decode()
        if path.startswith("/download/"):
            target = "/protected/" + path[len("/download/"):]
            body = b"the application's own body"
            head = (f"HTTP/1.1 200 OK\r\nX-Accel-Redirect: {target}\r\n"
                    "Content-Type: application/pdf\r\n"
                    'Content-Disposition: attachment; filename="report.pdf"\r\n'
                    "Set-Cookie: downloaded=1; Path=/\r\nCache-Control: private\r\n"
                    f"X-Other: dropped\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            conn.sendall(head + body)
        elif path in ("/loop", "/relative"):
            target = "/loop" if path == "/loop" else "protected/x"
            conn.sendall(f"HTTP/1.1 200 OK\r\nX-Accel-Redirect: {target}\r\n"
                         "Content-Length: 0\r\n\r\n".encode())
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: 3\r\n\r\napp")


@pytest.fixture
def files():
    # nginx's worker (nobody) must reach them: not under pytest's private tmp_path.
    top = wh.short_tempdir("pa-files-")
    top.chmod(0o755)
    root = top / "private"
    root.mkdir(mode=0o755)
    (root / "report.pdf").write_bytes(PDF)
    (root / "a b.txt").write_bytes(b"spaced\n")
    os.utime(root / "report.pdf", (1700000000, 1700000000))
    os.utime(root / "a b.txt", (1700000000, 1700000000))
    for f in root.iterdir():
        f.chmod(0o644)
    yield root
    wh.remove_tree(top)


@pytest.fixture
def upstream():
    up = RawUpstream(answering)
    yield up
    up.close()


@pytest.fixture
def static_config():
    return {"prefix": "/protected/", "internal": "on"}


@pytest.fixture
def wharf(proxies, files, upstream, static_config):
    work = wh.short_tempdir("pa-st-")
    st = StaticServer(static_binary_or_skip(), files, work, sockets=("handoff",),
                      config=static_config)
    st.start()
    p = proxies(f"[server]\nworkers = 1\n[upstream u]\nserver = {upstream.address}\n"
                f"[location /]\nproxy_pass = u\n"
                f"[location /protected/]\nstatic = {st.handoff_path}\ninternal = on\n")
    yield p
    st.stop()
    st.close()
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def nginx(files, upstream):
    with wh.NginxRun("pa-ngx-") as ngx:
        ngx.start(f"""\
    server {{
        listen 127.0.0.1:{ngx.port};
        location / {{
            proxy_http_version 1.1;
            proxy_pass http://{upstream.address};
        }}
        location /protected/ {{
            internal;
            alias {files}/;
        }}
    }}""")
        yield ngx.address


# (method, target, headers)
CASES = [
    ("GET", "/download/report.pdf", []),
    ("HEAD", "/download/report.pdf", []),
    ("GET", "/download/report.pdf", [("Range", "bytes=10-19")]),
    ("GET", "/download/report.pdf", [("If-Modified-Since", "Tue, 14 Nov 2023 22:13:20 GMT")]),
    ("GET", "/download/missing.pdf", []),
    ("GET", "/download/a%20b.txt", []),
    ("GET", "/protected/report.pdf", []),
    ("POST", "/download/report.pdf", [("Content-Length", "4")]),
    ("GET", "/plain", []),
]


def outcome(address, method, target, headers):
    body = b"data" if method == "POST" else b""
    with wh.HttpConnection(address, timeout=10) as c:
        c.send(wh.build_request(method, target, headers, body=body))
        r = c.read_response(method)
    body = hashlib.sha256(r.body).hexdigest()[:16] if r.status < 400 else ""
    return (r.status, body, {k: r.header(k) for k in KEPT if r.status < 400})


@pytest.mark.skipif(not os.access(wh.NGINX, os.X_OK), reason="Debian's nginx is not installed")
def test_the_same_answers_as_nginx(wharf, nginx):
    for method, target, headers in CASES:
        theirs = outcome(nginx, method, target, headers)
        ours = outcome(wharf.address, method, target, headers)
        assert ours == theirs, f"{method} {target} {headers}:\nwharf {ours}\nnginx {theirs}"
    # The test means something: the file came, with the application's headers.
    status, body, head = outcome(wharf.address, "GET", "/download/report.pdf", [])
    assert status == 200 and body == hashlib.sha256(PDF).hexdigest()[:16]
    assert head["Content-Type"] == "application/pdf"
    assert head["Set-Cookie"] == "downloaded=1; Path=/" and head["Cache-Control"] == "private"


def test_keep_alive_and_pipelining_after_a_redirect(wharf):
    """The connection goes on after the redirected answer: a pipelined
    request behind it is the proxy's again, in order, and a client cannot
    reach the internal location on it either."""
    with wh.HttpConnection(wharf.address, timeout=10) as c:
        c.send(wh.build_request("GET", "/download/report.pdf")
               + wh.build_request("GET", "/plain")
               + wh.build_request("GET", "/protected/report.pdf"))
        first, second, third = (c.read_response("GET") for _ in range(3))
        assert first.status == 200 and first.body == PDF
        assert second.status == 200 and second.body == b"app"
        assert third.status == 404
        c.send(wh.build_request("GET", "/download/a%20b.txt"))
        assert c.read_response("GET").body == b"spaced\n"


def test_bad_redirects_are_500(wharf):
    assert outcome(wharf.address, "GET", "/loop", [])[0] == 500
    assert outcome(wharf.address, "GET", "/relative", [])[0] == 500
    log = wharf.daemon.log_text()
    assert "more than 10 internal redirects" in log and "not a path" in log


def test_x_accel_redirect_off_passes_the_response(proxies, upstream):
    p = proxies(f"[server]\nworkers = 1\n[upstream u]\nserver = {upstream.address}\n"
                "[location /]\nproxy_pass = u\nx_accel_redirect = off\n")
    r = p.get("/download/report.pdf")
    assert r.status == 200 and r.body == b"the application's own body"


@pytest.mark.parametrize("static_config", [{"prefix": "/protected/", "internal": "on",
                                            "max_connections": 1, "workers": 1}])
def test_a_full_wharf_static_gives_502_not_404(wharf):
    """The redirected request comes back refused (wharf-static at its
    limit): it is still internal, so the client gets the 502 of a full
    wharf-static rather than the 404 of a location it may not ask for."""
    with wh.HttpConnection(wharf.address, timeout=10) as first:
        first.send(wh.build_request("GET", "/download/report.pdf"))
        assert first.read_response("GET").status == 200  # and stays there: it is full
        assert outcome(wharf.address, "GET", "/download/report.pdf", [])[0] == 502
