# SPDX-License-Identifier: MIT
"""wharf-wsgi against docs/wharf-wsgi.md and PEP 3333.

The application (apps/pep3333.py) runs inside wsgiref.validate.validator
with PYTHONWARNINGS=error, so a PEP 3333 slip on either side becomes a 500
that fails the test. Every request-path test runs in both protocols: HTTP/1.1
and uwsgi (packets built as nginx builds them). Servers are started as
systemd starts them: sockets at fd 3 and 4, READY=1 on NOTIFY_SOCKET.
"""

import hashlib
import itertools
import json
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import wharf_harness as wh
from wsgi_fixtures import (
    APPS,
    UwsgiClient,
    WsgiServer,
    daemon_env,
    nginx_vars,
    parse_response,
    read_all,
    uwsgi_packet,
    wsgi_binary_or_skip,
)

BINARY = wsgi_binary_or_skip(module_level=True)
PROTOS = ["http", "uwsgi"]


@pytest.fixture(scope="module")
def single():
    """One process, no master: the shared server of the read-only tests."""
    workdir = wh.short_tempdir("wsgi-")
    (workdir / "file.bin").write_bytes(bytes(range(256)) * 1024)
    server = WsgiServer(BINARY, workdir, name="single")
    try:
        server.start()
        yield server
        server.stop_and_check()
    finally:
        server.daemon.close()
        wh.remove_tree(workdir)


@pytest.fixture
def start_wsgi():
    servers = []
    dirs = []

    def start(args=(), start=True, **kw) -> WsgiServer:
        workdir = wh.short_tempdir("wsgi-")
        dirs.append(workdir)
        kw.setdefault("name", f"w{len(servers)}")
        server = WsgiServer(BINARY, workdir, args, **kw)
        servers.append(server)
        return server.start() if start else server

    yield start
    errors = []
    for s in servers:
        try:
            s.stop_and_check()
        except AssertionError as e:
            errors.append(str(e))
    for d in dirs:
        wh.remove_tree(d)
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


def run(args, cwd=None, env=None, timeout=20):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    e.update(env or {})
    return subprocess.run(
        [str(BINARY), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=e,
        timeout=timeout,
    )


# ---------------------------------------------------------------------------
# Configuration


def test_help_and_version():
    r = run(["--help"])
    assert r.returncode == 0 and "--module" in r.stdout and "--ini" in r.stdout
    r = run(["--version"])
    assert r.returncode == 0 and r.stdout.startswith(f"wharf-wsgi {wh.project_version()}")


TUTORIAL_INI = """\
[uwsgi]
base = {base}
home = %(base)/venv
chdir = %(base)
module = site_app.wsgi:application
socket = %(base)/django.sock
chmod-socket = 666
master = true
enable-threads = true
pidfile = %(base)/django.pid
vacuum = true
logger = file:%(base)/uwsgi.log
"""


def make_tutorial_project(base: Path) -> Path:
    """A project laid out as in the tutorial: base/venv, base/site_app/wsgi.py.

    The application imports a module that only the virtualenv has, so the
    test proves home= is used."""
    site = base / "venv" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (site / "only_in_venv.py").write_text("GREETING = b'hello from the venv\\n'\n")
    (base / "site_app").mkdir()
    (base / "site_app" / "__init__.py").write_text("")
    (base / "site_app" / "wsgi.py").write_text(
        "import only_in_venv\n"
        "def application(environ, start_response):\n"
        "    body = only_in_venv.GREETING\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain'),\n"
        "                              ('Content-Length', str(len(body)))])\n"
        "    return [body]\n"
    )
    ini = base / "server_dev.ini"
    ini.write_text(TUTORIAL_INI.format(base=base))
    return ini


def test_check_config_tutorial_ini(workdir):
    ini = make_tutorial_project(workdir)
    r = run(["--ini", ini, "--check-config"])
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout
    assert "warning" not in r.stderr, "the tutorial's keys must all be known (base is a variable)"


def test_unknown_uwsgi_keys_one_warning(workdir):
    ini = workdir / "x.ini"
    ini.write_text(
        "[uwsgi]\nmodule = hello\nhttp = :0\nstats = :9191\ncheaper = 2\n" "offload-threads = 1\n"
        "disable-logging = true\nmaster = true\nmax-worker-lifetime = 3600\n"
        "max-worker-lifetime-delta = 30\nmax-requests-delta = 100\ntouch-reload = %p\n"
    )
    r = run(["--ini", ini, "--check-config"])
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, r.stderr
    for key in ("stats", "cheaper", "offload-threads"):
        assert key in warnings[0]
    for key in ("disable-logging", "lifetime", "delta", "touch-reload"):
        assert key not in warnings[0], "wharf-wsgi knows it"


def test_check_config_errors(workdir):
    ini = workdir / "bad.ini"
    ini.write_text("[uwsgi]\nmodule = hello\nprocesses = many\nmaster = perhaps\n")
    r = run(["--ini", ini, "--check-config"])
    assert r.returncode != 0
    assert "processes" in r.stderr and "master" in r.stderr
    own = workdir / "own.ini"
    own.write_text("[wharf-wsgi]\nmodule = hello\nhttp = :0\nmodul = typo\n")
    r = run(["--ini", own, "--check-config"])
    assert r.returncode != 0 and "modul" in r.stderr
    r = run(["--check-config", "--http", ":0"])
    assert r.returncode != 0 and "module" in r.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--module", "no_such_module_xyz"], "No module named 'no_such_module_xyz'"),
        (["--module", "broken_syntax"], "SyntaxError"),
        (["--module", "lazy_fail"], "the database is not configured"),
        (["--module", "hello:nothing_here"], "no callable 'nothing_here'"),
        (["--ini", "/nonexistent/x.ini"], "/nonexistent/x.ini"),
    ],
)
def test_startup_errors_are_one_clear_message(workdir, args, needle):
    r = run(
        ["--pythonpath", APPS, "--http", "127.0.0.1:0", *args], cwd=workdir, env=daemon_env(workdir)
    )
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower() or needle in line]
    assert any(needle in line for line in errors), r.stderr
    assert "Traceback" not in r.stderr


def test_tutorial_ini_serves_and_vacuums(workdir):
    ini = make_tutorial_project(workdir)
    d = wh.Daemon([BINARY, "--ini", ini], workdir=workdir, env=daemon_env(workdir), name="tutorial")
    try:
        d.start()
        d.wait_ready(15)
        sock = workdir / "django.sock"
        assert (sock.stat().st_mode & 0o777) == 0o666
        assert (workdir / "django.pid").read_text().strip() == str(d.pid)
        r = UwsgiClient(sock).request("GET", "/")
        assert r.status == 200 and r.body == b"hello from the venv\n"
        for _ in range(2):  # reloads pass our own socket on; vacuum still removes it
            mark = d.notify.mark()
            d.signal(signal.SIGHUP)
            i, _ = d.notify.wait_for("RELOADING=1", 5, since=mark)
            d.notify.wait_for("READY=1", 10, since=i)
        assert UwsgiClient(sock).request("GET", "/").status == 200
        assert (workdir / "django.pid").read_text().strip() == str(d.pid)
        rc = d.stop(10)
        assert rc == 0, d.log_text()
        assert not sock.exists() and not (workdir / "django.pid").exists()
        log = (workdir / "uwsgi.log").read_text()
        assert "application loaded" in log
    finally:
        d.close()


def test_env_option(start_wsgi, workdir):
    ini = workdir / "env.ini"
    ini.write_text("[uwsgi]\nenv = WHARF_FROM_INI=ini value\nenv = WHARF_OTHER=2\n")
    s = start_wsgi(["--ini", ini, "--env", "WHARF_FROM_CLI=forty two"])
    for name, value in [
        ("WHARF_FROM_INI", b"ini value"),
        ("WHARF_OTHER", b"2"),
        ("WHARF_FROM_CLI", b"forty two"),
    ]:
        assert s.http.request("GET", f"/raw/osenv?name={name}").body == value


def test_systemd_socket_wins_over_socket_setting(start_wsgi):
    s = start_wsgi(["--socket", "/nonexistent-dir/x.sock"])
    s.daemon.wait_log(r"'/nonexistent-dir/x\.sock' is not bound: the socket passed by systemd")
    assert s.http.request("GET", "/pid").status == 200


# ---------------------------------------------------------------------------
# The environ


@pytest.mark.parametrize("proto", PROTOS)
def test_environ(single, proto):
    headers = [
        ("Host", "example.org:8080"),
        ("X-Multi", "a"),
        ("X-Multi", "b, c"),
        ("Content-Type", "text/x-test"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
    ]
    r = single.client(proto).request("POST", "/env?q=%41+b&x=%2F", headers, body=b"12345")
    assert r.status == 200, r.body
    env = json.loads(r.body)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/env"
    assert env["QUERY_STRING"] == "q=%41+b&x=%2F"
    assert env["CONTENT_TYPE"] == "text/x-test"
    assert env["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_X_MULTI"] == "a, b, c"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is False
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["has_file_wrapper"] is True
    if proto == "http":
        assert env["SERVER_NAME"] == "example.org" and env["SERVER_PORT"] == "8080"
        assert env["REMOTE_ADDR"] == "127.0.0.1"
        assert env["REQUEST_URI"] == "/env?q=%41+b&x=%2F"
    else:
        assert env["SERVER_NAME"] == "example.org" and env["SERVER_PORT"] == "80"
        assert env["REMOTE_ADDR"] == "192.0.2.7" and env["DOCUMENT_ROOT"]
    single.daemon.wait_log("wsgi.errors: env requested")


@pytest.mark.parametrize("proto", PROTOS)
def test_path_info_is_latin1_of_decoded_bytes(single, proto):
    r = single.client(proto).request("GET", "/%65nv?x")
    assert json.loads(r.body)["PATH_INFO"] == "/env"
    # UTF-8 bytes of "é" arrive as two latin-1 characters (PEP 3333).
    r = single.client(proto).request("GET", "/caf%C3%A9")
    assert r.status == 404


@pytest.mark.parametrize("proto", PROTOS)
def test_environ_path_with_utf8(single, proto):
    r = single.client(proto).request("GET", "/env/../env%20x")
    # Not normalised: the application sees what was asked for.
    assert r.status == 404


def test_https_scheme_from_uwsgi_vars(single):
    r = single.uwsgi.request("GET", "/env", https=True)
    assert json.loads(r.body)["wsgi.url_scheme"] == "https"
    variables = nginx_vars("GET", "/env") + [("UWSGI_SCHEME", "https")]
    r = single.uwsgi.request(variables=variables)
    assert json.loads(r.body)["wsgi.url_scheme"] == "https"


def test_uwsgi_minimal_vars_get_defaults(single):
    r = single.uwsgi.request(variables=[("PATH_INFO", "/env"), ("REQUEST_METHOD", "GET")])
    env = json.loads(r.body)
    assert env["SCRIPT_NAME"] == "" and env["QUERY_STRING"] == ""
    assert env["SERVER_NAME"] and env["SERVER_PORT"]


def test_uwsgi_malformed_packet_closes(single):
    with single.uwsgi.connect() as s:
        s.sendall(b"\x00\x10\x00\x00" + b"\x05\x00ab")  # a key running past the block
        s.shutdown(socket.SHUT_WR)
        assert read_all(s) == b""
    assert single.http.request("GET", "/pid").status == 200


# ---------------------------------------------------------------------------
# wsgi.input


BODY = b"line one\nline two\n\nlast line without newline"


@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("how", ["read", "chunks", "readline", "readlines", "iter"])
def test_input(single, proto, how):
    r = single.client(proto).request("POST", f"/echo?how={how}", body=BODY)
    assert r.status == 200, r.body
    lines = [x.decode() + "\n" for x in BODY.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    if how == "read":
        assert r.body == BODY
    elif how == "chunks":
        assert r.body.replace(b"|", b"") == BODY and r.body.count(b"|") == len(BODY) // 7
    else:
        assert json.loads(r.body) == lines


@pytest.mark.parametrize("proto", PROTOS)
def test_large_body_streams(single, proto):
    body = os.urandom(3 * 1024 * 1024 + 17)
    r = single.client(proto).request("POST", "/echo?how=read", body=body)
    assert r.status == 200 and r.body == body


@pytest.mark.parametrize("proto", PROTOS)
def test_ignored_body_still_gets_response(single, proto):
    body = b"z" * (4 * 1024 * 1024)
    r = single.client(proto).request("POST", "/ignore-body", body=body)
    assert r.status == 200 and r.body == b"ignored your body\n"


def test_ignored_body_then_keepalive(single):
    with wh.HttpConnection(("127.0.0.1", single.port)) as c:
        r = c.exchange("POST", "/ignore-body", [("Content-Length", "70000")], body=b"y" * 70000)
        assert r.status == 200
        r = c.exchange("GET", "/pid")
        assert r.status == 200


def chunked(body: bytes, sizes) -> bytes:
    """body in the chunked coding, cut into chunks of the given sizes in turn."""
    out, i, k = bytearray(), 0, 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        out += b"%x;ext=1\r\n" % min(n, len(body) - i) + body[i : i + n] + b"\r\n"
        i, k = i + n, k + 1
    return bytes(out) + b"0\r\nX-Trailer: t\r\n\r\n"


def send_in_pieces(c, data: bytes, cuts) -> None:
    """Sends data cut at odd places, with pauses, so the server sees the splits."""
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    at = 0
    for cut in cuts:
        if cut >= len(data):
            break
        c.send(data[at:cut])
        time.sleep(0.01)
        at = cut
    c.send(data[at:])


def body_line_data(n: int) -> bytes:
    first = b"first line of the upload\n"
    return (first + os.urandom(max(0, n - len(first))))[:n]


@pytest.mark.parametrize("size", [0, 1, 4097, 70001, 1024 * 1024 + 3])
def test_chunked_request_body_is_decoded(single, size):
    body = body_line_data(size)
    data = chunked(body, [1, 4096, 3, 65537, 10000])
    with wh.HttpConnection(("127.0.0.1", single.port), timeout=20) as c:
        head = b"POST /body-info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        # Cuts inside the head, a size line, a chunk's CRLF and the trailer.
        send_in_pieces(
            c,
            head + data,
            [10, len(head) + 1, len(head) + 5, len(head) + 9, len(head) + len(data) - 4],
        )
        r = c.read_response()
        assert r.status == 200, r.body
        info = json.loads(r.body)
        assert info["content_length"] == str(size)
        assert info["transfer_encoding"] is None
        assert info["length"] == size
        assert info["sha256"] == hashlib.sha256(body).hexdigest()
        assert info["first_line"] == body[: body.find(b"\n") + 1 or size].decode("latin-1")
        assert info["past_end"] == ""
        # The connection goes on: the next request on it is served.
        r = c.exchange("GET", "/pid")
        assert r.status == 200


def test_chunked_body_then_pipelined_request(single):
    data = chunked(b"hello world\n", [5])
    with wh.HttpConnection(("127.0.0.1", single.port)) as c:
        c.send(
            b"POST /body-info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + data
            + b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        first, second = c.read_responses(["POST", "GET"])
        assert first.status == 200 and json.loads(first.body)["length"] == 12
        assert second.status == 200 and second.body.isdigit()


@pytest.mark.parametrize(
    "bad",
    [b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n", b"-1\r\n\r\n", b"5 5\r\nhello\r\n"],
)
def test_malformed_chunked_body_is_400(single, bad):
    with wh.HttpConnection(("127.0.0.1", single.port)) as c:
        c.request("POST", "/body-info", [("Transfer-Encoding", "chunked")], body=bad)
        assert c.read_response().status == 400
    # The worker goes on serving.
    assert single.http.request("GET", "/pid").status == 200


@pytest.fixture
def spooling(start_wsgi):
    """A server with post-buffering 64k and limit-post 4M, its temp files in a directory of its own."""

    def start(*args):
        server = start_wsgi(["--post-buffering", "64k", "--limit-post", "4M", *args], start=False)
        spool = server.workdir / "spool"
        spool.mkdir()
        server.daemon.extra_env["TMPDIR"] = str(spool)
        server.start()
        return server, spool

    return start


@pytest.mark.parametrize("proto", PROTOS)
def test_post_buffering_spools_large_bodies(spooling, proto):
    server, spool = spooling()
    client = server.client(proto)
    for size, to_file in [
        (3 * 1024 * 1024, True),
        (64 * 1024, False),
        (64 * 1024 + 1, True),
        (100, False),
    ]:
        body = body_line_data(size)
        r = client.request("POST", "/body-info", body=body)
        assert r.status == 200, r.body
        info = json.loads(r.body)
        assert info["length"] == size and info["sha256"] == hashlib.sha256(body).hexdigest()
        assert info["first_line"] == "first line of the upload\n"
        assert info["past_end"] == ""
        assert info["spooled"] is to_file, size
        assert list(spool.iterdir()) == []
    # A body larger than limit-post is refused before any of it is read; the
    # worker goes on serving.
    too_big = 4 * 1024 * 1024 + 1
    if proto == "http":
        with wh.HttpConnection(("127.0.0.1", server.port)) as c:
            c.request("POST", "/body-info", [("Content-Length", str(too_big))])
            assert c.read_response().status == 413
    else:
        with client.connect() as s:
            s.sendall(uwsgi_packet(nginx_vars("POST", "/body-info", body_len=too_big)))
            assert read_all(s).startswith(b"HTTP/1.1 413 ")
    assert client.request("GET", "/pid").status == 200


@pytest.mark.parametrize("how", ["read", "chunks", "readline", "readlines", "iter"])
def test_post_buffering_input_methods(spooling, how):
    server, spool = spooling()
    body = BODY * (200 * 1024 // len(BODY))
    r = server.http.request("POST", f"/echo?how={how}&size=1000", body=body)
    assert r.status == 200
    if how == "read":
        assert r.body == body
    elif how == "chunks":
        assert r.body.replace(b"|", b"") == body
    else:
        assert "".join(json.loads(r.body)).encode() == body
    assert list(spool.iterdir()) == []


def test_chunked_body_spooled_and_limited(spooling):
    server, spool = spooling()
    body = body_line_data(3 * 1024 * 1024)
    with wh.HttpConnection(("127.0.0.1", server.port), timeout=20) as c:
        c.request(
            "POST",
            "/body-info",
            [("Transfer-Encoding", "chunked")],
            body=chunked(body, [70000, 13]),
        )
        r = c.read_response()
        info = json.loads(r.body)
        assert r.status == 200 and info["spooled"] is True
        assert info["sha256"] == hashlib.sha256(body).hexdigest()
    assert list(spool.iterdir()) == []
    with wh.HttpConnection(("127.0.0.1", server.port), timeout=20) as c:
        big = chunked(b"y" * (4 * 1024 * 1024 + 1), [1 << 20])
        c.request("POST", "/body-info", [("Transfer-Encoding", "chunked")], body=big)
        assert c.read_response().status == 413
    assert server.http.request("GET", "/pid").status == 200
    assert list(spool.iterdir()) == []


# ---------------------------------------------------------------------------
# Responses


@pytest.mark.parametrize("proto", PROTOS)
def test_streamed_response_and_close(single, proto):
    mark = single.workdir / "close-stream"
    mark.unlink(missing_ok=True)
    r = single.client(proto).request("GET", "/stream")
    assert r.status == 200 and r.body == b"one\ntwo\nthree\n"
    if proto == "http":
        assert r.header("Transfer-Encoding") == "chunked"
    else:
        assert r.header("Transfer-Encoding") is None
    assert mark.read_text().count("\n") == 1


def test_http10_without_length_closes(single):
    with wh.HttpConnection(("127.0.0.1", single.port)) as c:
        c.request("GET", "/stream", version="HTTP/1.0")
        raw = c.read_until_closed()
        assert raw.startswith(b"HTTP/1.0 200") and b"chunked" not in raw
        assert raw.endswith(b"one\ntwo\nthree\n")


@pytest.mark.parametrize("proto", PROTOS)
def test_write_callable(single, proto):
    r = single.client(proto).request("GET", "/write")
    assert r.status == 200 and r.body == b"written then returned\n"


@pytest.mark.parametrize("proto", PROTOS)
def test_head_has_no_body(single, proto):
    if proto == "http":
        with wh.HttpConnection(("127.0.0.1", single.port)) as c:
            r = c.exchange("HEAD", "/pid")
            assert r.status == 200 and r.header("Content-Length")
            r2 = c.exchange("GET", "/pid")  # the connection is still in step
            assert r2.status == 200 and r2.body.isdigit()
    else:
        with single.uwsgi.connect() as s:
            s.sendall(uwsgi_packet(nginx_vars("HEAD", "/pid")))
            raw = read_all(s)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == b""


@pytest.mark.parametrize("proto", PROTOS)
def test_exc_info_replaces_status(single, proto):
    r = single.client(proto).request("GET", "/exc-info")
    assert r.status == 503 and r.body == b"handled\n"


@pytest.mark.parametrize("proto", PROTOS)
def test_204(single, proto):
    r = single.client(proto).request("GET", "/status-204")
    assert r.status == 204 and r.body == b""


@pytest.mark.parametrize("proto", PROTOS)
def test_file_wrapper(single, proto):
    data = (single.workdir / "file.bin").read_bytes()
    r = single.client(proto).request("GET", "/raw/file")
    assert r.status == 200 and r.body == data
    assert r.header("Content-Length") == str(len(data))
    r = single.client(proto).request("GET", "/raw/file?skip=1000")
    assert r.body == data[1000:]


def test_keepalive_and_pipelining(single):
    with wh.HttpConnection(("127.0.0.1", single.port)) as c:
        c.send(
            wh.build_request("GET", "/pid")
            + wh.build_request("GET", "/stream")
            + wh.build_request("POST", "/echo", [("Content-Length", "3")], body=b"abc")
        )
        a, b, e = c.read_responses(["GET", "GET", "POST"])
        assert a.status == b.status == e.status == 200
        assert b.body == b"one\ntwo\nthree\n" and e.body == b"abc"


# ---------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("proto", PROTOS)
def test_exception_before_body_is_500(single, proto):
    since = single.daemon.log_size()
    r = single.client(proto).request("GET", "/error-before")
    assert r.status == 500
    single.daemon.wait_log(
        r"GET /error-before: exception in the application\n"
        r"Traceback[\s\S]*ValueError: boom before the body",
        since=since,
    )
    assert single.client(proto).request("GET", "/pid").status == 200


def test_exception_after_body_aborts_http(single):
    with wh.HttpConnection(("127.0.0.1", single.port)) as c:
        c.request("GET", "/error-after")
        raw = c.read_until_closed()
        assert b"first part" in raw and not raw.endswith(b"0\r\n\r\n")
    with wh.HttpConnection(("127.0.0.1", single.port)) as c:
        c.request("GET", "/error-after")
        with pytest.raises(wh.ConnectionClosed):
            c.read_response()
    with wh.HttpConnection(("127.0.0.1", single.port)) as c:
        c.request("GET", "/error-after-length")
        with pytest.raises(wh.ConnectionClosed):
            c.read_response()
    assert (single.workdir / "close-error-after").exists()
    assert single.http.request("GET", "/pid").status == 200


def test_exception_after_body_aborts_uwsgi(single):
    # With a Content-Length the short body shows (nginx: "upstream prematurely
    # closed"). A unix socket has no reset to send, so without a length the
    # truncation is visible only over TCP (see docs/wharf-wsgi.md).
    with single.uwsgi.connect() as s:
        s.sendall(uwsgi_packet(nginx_vars("GET", "/error-after-length")))
        raw = read_all(s)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"Content-Length: 100" in head and body == b"first part\n"
    assert single.uwsgi.request("GET", "/pid").status == 200


def test_no_start_response_and_bad_header_are_500(single):
    assert single.http.request("GET", "/raw/no-start").status == 500
    r = single.http.request("GET", "/raw/bad-header")
    assert r.status == 500 and r.header("Injected") is None


def test_client_gone_mid_stream_calls_close(single):
    mark = single.workdir / "close-slow"
    mark.unlink(missing_ok=True)
    with wh.HttpConnection(("127.0.0.1", single.port), rcvbuf=4096) as c:
        c.request("GET", "/slow-stream")
        c.sock.recv(100)
    deadline = time.monotonic() + 15
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mark.exists(), "close() was not called after the client went away"
    assert single.http.request("GET", "/pid").status == 200


def test_garbage_never_hurts_the_worker(single):
    rng = random.Random(3333)
    valid = uwsgi_packet(nginx_vars("POST", "/echo?how=read", body_len=10)) + b"0123456789"
    for i in range(60):
        if i % 3 == 0:  # a valid packet, cut or with flipped bytes
            data = bytearray(valid[: rng.randrange(1, len(valid) + 1)])
            for _ in range(rng.randrange(0, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        else:
            data = rng.randbytes(rng.randrange(1, 300))
        target = (
            single.uwsgi.connect()
            if i % 2
            else socket.create_connection(("127.0.0.1", single.port))
        )
        with target as s:
            s.settimeout(5)
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                read_all(s, 5)
            except (wh.ConnectionClosed, ConnectionError):
                pass
    assert single.http.request("GET", "/pid").status == 200
    assert single.uwsgi.request("GET", "/pid").status == 200


def test_bad_http_request_is_400(single):
    with wh.HttpConnection(("127.0.0.1", single.port)) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        assert c.read_response().status == 400


# ---------------------------------------------------------------------------
# Processes


def get_pid(server, proto="http") -> int:
    r = server.client(proto).request("GET", "/pid")
    assert r.status == 200
    return int(r.body)


def test_single_process_notify(single):
    assert single.notify.count("READY=1") == 1
    assert single.notify.count(f"MAINPID={single.daemon.pid}") == 1


def test_single_process_watchdog(start_wsgi):
    s = start_wsgi(watchdog_usec=400_000)
    mark = s.notify.mark()
    with wh.HttpConnection(("127.0.0.1", s.port)) as c:
        assert c.exchange("GET", "/pid").status == 200
        time.sleep(1.2)  # an idle keep-alive connection must not starve the watchdog
        assert c.exchange("GET", "/pid").status == 200
    assert s.notify.count("WATCHDOG=1", since=mark) >= 4


def test_binds_http_itself_without_systemd(workdir):
    port = wh.free_tcp_port()
    d = wh.Daemon(
        [BINARY, "--http", f"127.0.0.1:{port}", "--pythonpath", APPS, "--module", "hello"],
        workdir=workdir,
        env=daemon_env(workdir),
        name="own-http",
    )
    try:
        d.start()
        d.wait_ready(10)
        with wh.HttpConnection(("127.0.0.1", port)) as c:
            r = c.exchange("GET", "/")
        assert r.status == 200 and r.body == b"Hello, World!\n"
        d.check_clean_exit(d.stop(10))
    finally:
        d.close()


@pytest.mark.parametrize(
    "args",
    [
        ["--wsgi-file", APPS / "hello.py"],
        ["--wsgi-file", APPS / "hello.py", "--callable", "application"],
        ["--module", "hello:application"],
    ],
)
def test_ways_to_name_the_application(workdir, args):
    port = wh.free_tcp_port()
    d = wh.Daemon(
        [BINARY, "--http", f"127.0.0.1:{port}", "--pythonpath", APPS, *args],
        workdir=workdir,
        env=daemon_env(workdir),
        name="named",
    )
    try:
        d.start()
        d.wait_ready(10)
        with wh.HttpConnection(("127.0.0.1", port)) as c:
            assert c.exchange("GET", "/").body == b"Hello, World!\n"
        d.check_clean_exit(d.stop(10))
    finally:
        d.close()


def test_master_notify_status_watchdog(start_wsgi):
    s = start_wsgi(["--master", "--processes", "2"], watchdog_usec=400_000)
    s.notify.wait_for("WATCHDOG=1", timeout=3)
    s.notify.wait_for(lambda m: m.startswith("STATUS=2 workers, 0 busy"), timeout=3)
    pids = {get_pid(s, p) for p in PROTOS * 4}
    assert s.daemon.pid not in pids and len(pids) >= 1
    env = json.loads(s.http.request("GET", "/env").body)
    assert env["wsgi.multiprocess"] is True


def test_kill_busy_worker(start_wsgi):
    s = start_wsgi(["--master", "--processes", "2"])
    result = {}

    def slow():
        try:
            result["r"] = s.uwsgi.request("GET", "/sleep?s=5")
        except Exception as e:  # noqa: BLE001 - the failure is what we look for
            result["e"] = e

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 5
    busy = None
    while busy is None and time.monotonic() < deadline:
        for line in s.notify.messages()[::-1]:
            if line.startswith("STATUS=") and "1 busy" in line:
                busy = True
                break
        time.sleep(0.05)
    # The busy worker: the one whose /proc/PID/stat shows it is not the idle one.
    children = [
        int(p) for p in open(f"/proc/{s.daemon.pid}/task/{s.daemon.pid}/children").read().split()
    ]
    assert len(children) == 2
    idle = get_pid(s)
    victim = next(p for p in children if p != idle)
    os.kill(victim, signal.SIGKILL)
    t.join(10)
    assert "e" in result or result["r"].status != 200
    killed_at = time.monotonic()
    for _ in range(10):
        assert s.http.request("GET", "/pid").status == 200
    assert time.monotonic() - killed_at < 1.5
    s.daemon.wait_log(r"killed by signal KILL; respawning")


def test_harakiri(start_wsgi):
    s = start_wsgi(["--master", "--processes", "1", "--harakiri", "1"])
    since = s.daemon.log_size()
    with pytest.raises(wh.ConnectionClosed):
        s.http.request("GET", "/sleep?s=10")
    s.daemon.wait_log(
        r"harakiri: worker 1 \(pid \d+\) spent \d+ s on 'GET /sleep\?s=10'", since=since
    )
    assert s.http.request("GET", "/pid").status == 200


def test_max_requests_recycles(start_wsgi):
    s = start_wsgi(["--master", "--processes", "1", "--max-requests", "3"])
    pids = [get_pid(s, "uwsgi") for _ in range(7)]
    assert len(set(pids)) == 3, pids
    s.daemon.wait_log("recycled")


def test_max_requests_delta_adds_per_worker(start_wsgi):
    """uWSGI's max-requests-delta: worker N serves max-requests + N * delta."""
    s = start_wsgi(["--master", "--processes", "1", "--max-requests", "2",
                    "--max-requests-delta", "3"])
    pids = [get_pid(s, "uwsgi") for _ in range(11)]
    assert [len(list(g)) for _, g in itertools.groupby(pids)] == [5, 5, 1], pids
    s.daemon.wait_log(r"5 requests served \(max-requests\)")


def test_max_worker_lifetime_recycles(start_wsgi):
    """A worker that lived max-worker-lifetime seconds (+ N * the delta) is
    replaced after its request; requests meanwhile are all served."""
    s = start_wsgi(["--master", "--processes", "1", "--max-worker-lifetime", "1",
                    "--max-worker-lifetime-delta", "1"])
    first = get_pid(s, "uwsgi")
    deadline = time.monotonic() + 10
    while get_pid(s, "uwsgi") == first:
        assert time.monotonic() < deadline, "the worker was never recycled"
        time.sleep(0.1)
    log = s.daemon.wait_log(r"worker 1 \(pid \d+\) lived \d+ s \(max-worker-lifetime\)")
    assert f"pid {first})" in log
    lived = int(re.search(r"lived (\d+) s", log).group(1))
    assert lived >= 2, "worker 1 lives 1 + 1 * 1 seconds"


def test_touch_reload(start_wsgi):
    """touch-reload: touching the file reloads as SIGHUP does: new workers
    with the new code, and one reload per touch."""
    s = start_wsgi(["--master", "--processes", "2"], start=False)
    touch = s.workdir / "reload.trigger"
    s.daemon.argv += ["--touch-reload", str(touch)]
    (s.workdir / "version.txt").write_text("one")
    s.start()
    assert s.http.request("GET", "/version").body == b"one"
    (s.workdir / "version.txt").write_text("two")
    mark = s.notify.mark()
    touch.write_text("")  # it did not exist: coming counts as a touch
    i, _ = s.notify.wait_for("RELOADING=1", 5, since=mark)
    s.notify.wait_for("READY=1", 10, since=i)
    s.daemon.wait_log(r"touch-reload: '.*reload.trigger' changed")
    deadline = time.monotonic() + 5
    while s.http.request("GET", "/version").body != b"two":
        assert time.monotonic() < deadline, "still the old code after the touch"
        time.sleep(0.05)
    time.sleep(0.6)
    assert s.notify.count("RELOADING=1", since=mark) == 1, "one touch, one reload"
    assert s.daemon.running()


def test_reload_on_rss_recycles_gracefully(start_wsgi):
    s = start_wsgi(["--master", "--processes", "1", "--reload-on-rss", "1"])
    s.daemon.wait_log(r"worker 1 \(pid \d+\) uses \d+ MiB, more than reload-on-rss 1 MiB")
    pids = set()
    for _ in range(8):
        r = s.uwsgi.request("GET", "/sleep?s=0.1")
        assert r.status == 200
        pids.add(get_pid(s, "uwsgi"))
    assert len(pids) > 1


def test_reload_under_load_loses_nothing(start_wsgi):
    s = start_wsgi(["--master", "--processes", "2"], start=False)
    (s.workdir / "version.txt").write_text("one")
    s.start()
    assert s.http.request("GET", "/version").body == b"one"
    old_pids = {get_pid(s, "uwsgi") for _ in range(6)}
    stop = threading.Event()
    failures, ok = [], [0]

    def load(proto):
        client = s.client(proto)
        while not stop.is_set():
            try:
                r = client.request("GET", "/sleep?s=0.02")
                if r.status == 200:
                    ok[0] += 1
                else:
                    failures.append(r.status)
            except Exception as e:  # noqa: BLE001
                failures.append(repr(e))

    # More clients than workers: a worker always finds a connection waiting.
    threads = [threading.Thread(target=load, args=(p,)) for p in PROTOS * 3]
    for t in threads:
        t.start()
    time.sleep(0.3)
    (s.workdir / "version.txt").write_text("two")
    mark = s.notify.mark()
    log_mark = s.daemon.log_size()
    s.signal(signal.SIGHUP)
    i, _ = s.notify.wait_for("RELOADING=1", 5, since=mark)
    s.notify.wait_for("READY=1", 10, since=i)
    # The old workers finish their request and leave while the load goes on.
    for pid in old_pids:
        s.daemon.wait_log(rf"old worker \(pid {pid}\) exited with status 0", 5, since=log_mark)
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(10)
    assert not failures, failures
    assert ok[0] > 10
    assert s.http.request("GET", "/version").body == b"two"
    new_pids = {get_pid(s, "uwsgi") for _ in range(6)}
    assert not (new_pids & old_pids)
    assert s.daemon.running()


def test_failed_reload_leaves_no_orphans(start_wsgi):
    s = start_wsgi(["--master", "--processes", "2"])
    workers = {get_pid(s, "uwsgi") for _ in range(6)}
    (s.workdir / "version.txt").write_text("broken")
    s.signal(signal.SIGHUP)
    rc = s.daemon.wait_exit(10)
    assert rc == 1
    assert "this version does not load" in s.daemon.log_text()
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{p}").exists() for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}").exists() for p in workers), "old workers left behind"


def test_sigterm_finishes_in_flight(start_wsgi):
    s = start_wsgi(["--master", "--processes", "2"])
    result = {}

    def slow():
        result["r"] = s.uwsgi.request("GET", "/sleep?s=1")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    s.signal(signal.SIGTERM)
    s.notify.wait_for("STOPPING=1", 3)
    t.join(10)
    assert result["r"].status == 200 and result["r"].body == b"slept\n"
    rc = s.daemon.wait_exit(10)
    s.daemon.check_clean_exit(rc)


def test_single_process_sighup_reloads(start_wsgi):
    s = start_wsgi(start=False)
    (s.workdir / "version.txt").write_text("one")
    s.start()
    assert s.http.request("GET", "/version").body == b"one"
    (s.workdir / "version.txt").write_text("two")
    mark = s.notify.mark()
    s.signal(signal.SIGHUP)
    i, _ = s.notify.wait_for("RELOADING=1", 5, since=mark)
    s.notify.wait_for("READY=1", 10, since=i)
    assert s.http.request("GET", "/version").body == b"two"
    assert s.uwsgi.request("GET", "/version").body == b"two"


@pytest.mark.parametrize("master", [False, True])
def test_threads_serve_concurrently(start_wsgi, master):
    s = start_wsgi(["--threads", "4", *(["--master", "--processes", "1"] if master else [])])
    env = json.loads(s.http.request("GET", "/env").body)
    assert env["wsgi.multithread"] is True
    results = []

    def slow(proto):
        results.append(s.client(proto).request("GET", "/sleep?s=1.2").status)

    threads = [threading.Thread(target=slow, args=(p,)) for p in PROTOS * 2]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    if master:
        s.notify.wait_for(lambda m: m.startswith("STATUS=1 workers, 4 busy"), timeout=3)
    for t in threads:
        t.join(10)
    assert results == [200] * 4
    assert time.monotonic() - t0 < 2.4, "the four requests did not run at once"


def test_threads_harakiri_names_request(start_wsgi):
    s = start_wsgi(["--master", "--processes", "1", "--threads", "2", "--harakiri", "1"])
    since = s.daemon.log_size()
    with pytest.raises(wh.ConnectionClosed):
        s.uwsgi.request("GET", "/sleep?s=10")
    s.daemon.wait_log(
        r"harakiri: worker 1 \(pid \d+\) spent \d+ s on 'GET /sleep\?s=10'", since=since
    )
    assert s.http.request("GET", "/pid").status == 200


def test_lazy_apps_import_failure_is_fatal(start_wsgi):
    s = start_wsgi(["--master", "--lazy-apps", "--processes", "2"], module="lazy_fail", start=False)
    s.daemon.start()
    rc = s.daemon.wait_exit(10)
    assert rc != 0
    assert "the database is not configured" in s.daemon.log_text()


# ---- kept uwsgi connections (wharf-proxy's WHARF_KEEPALIVE) ----

class KeptConnection:
    """A uwsgi connection a front keeps open: WHARF_KEEPALIVE=1 on every
    request, framed responses read one by one."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.reader = wh.ResponseReader(lambda: self.sock.recv(65536))

    def send(self, target):
        self.sock.sendall(uwsgi_packet(nginx_vars("GET", target) + [("WHARF_KEEPALIVE", "1")]))

    def exchange(self, target):
        self.send(target)
        return self.reader.read("GET")

    def closed_by_server(self, timeout=5.0):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def test_a_full_set_of_kept_connections_gives_up_the_oldest(start_wsgi):
    """A worker keeps at most 64 idle uwsgi connections. The 65th is kept and
    the oldest closed: a front in use (a reloaded wharf-proxy, one of two)
    keeps its connections, instead of making one per request while
    connections nobody uses wait out their 30 s."""
    s = start_wsgi()
    kept = [KeptConnection(s.uwsgi_path) for _ in range(65)]
    try:
        for k in kept[:64]:
            assert k.exchange("/env").status == 200
        newest = kept[64]
        assert newest.exchange("/env").status == 200
        assert newest.exchange("/env").status == 200, "the newest connection was kept"
        assert kept[0].closed_by_server(), "the oldest one was let go"
        assert kept[1].exchange("/env").status == 200, "the others stay"
    finally:
        for k in kept:
            k.close()


def test_new_connections_do_not_starve_a_kept_one(start_wsgi):
    """While new connections keep arriving, a request on a kept connection
    is served between them, not after the accept queue runs dry."""
    s = start_wsgi()
    kept = KeptConnection(s.uwsgi_path)
    flood = []
    try:
        assert kept.exchange("/env").status == 200
        # 100 connections, each a 10 ms request: a second of work queued.
        for _ in range(100):
            c = s.uwsgi.connect()
            c.sendall(uwsgi_packet(nginx_vars("GET", "/sleep?s=0.01")))
            flood.append(c)
        time.sleep(0.05)  # the worker is into the queue
        start = time.monotonic()
        r = kept.exchange("/env")
        took = time.monotonic() - start
        assert r.status == 200
        assert took < 0.5, f"the kept connection waited {took:.2f} s behind the queue"
        assert all(parse_response(read_all(c)).status == 200 for c in flood)
    finally:
        kept.close()
        for c in flood:
            c.close()
