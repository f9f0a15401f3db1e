# SPDX-License-Identifier: MIT
"""wharf-proxy in front of the real peers it replaces nginx for: Debian's
uWSGI (uwsgi_pass) and gunicorn (proxy_pass), each running the PEP 3333
test application. The same requests go through both, and through the
persistent-connection setting (keepalive), which uWSGI does not know: it
must fall back to one request per connection without a failed request."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

import wharf_harness as wh
from proxy_fixtures import ProxyServer, proxy_binary_or_skip

BINARY = proxy_binary_or_skip()
APPS = wh.REPO / "tests" / "integration" / "apps"
UWSGI = shutil.which("uwsgi")
GUNICORN = shutil.which("gunicorn")


def wait_connect(family, address, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.connect(address)
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def uwsgi_upstream():
    if not UWSGI or not os.path.exists("/usr/lib/uwsgi/plugins/python3_plugin.so"):
        pytest.skip("uwsgi and uwsgi-plugin-python3 are not installed")
    work = wh.short_tempdir("px-uwsgi-")
    sock = work / "uwsgi.sock"
    log = open(work / "uwsgi.log", "wb")
    proc = subprocess.Popen(
        [UWSGI, "--plugins", "python3", "--socket", str(sock), "--master", "--processes", "2",
         "--pythonpath", str(APPS), "--module", "pep3333:app", "--need-app",
         "--disable-logging", "--buffer-size", "32768"],
        stdout=log, stderr=log, cwd=str(work))
    try:
        wait_connect(socket.AF_UNIX, str(sock))
        yield f"unix:{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def gunicorn_upstream():
    if not GUNICORN:
        pytest.skip("gunicorn is not installed")
    work = wh.short_tempdir("px-gunicorn-")
    port = wh.free_tcp_port()
    log = open(work / "gunicorn.log", "wb")
    proc = subprocess.Popen(
        ["/usr/bin/python3", GUNICORN, "--bind", f"127.0.0.1:{port}", "--workers", "2",
         "--worker-class", "gthread", "--threads", "2", "--keep-alive", "30",
         "--chdir", str(APPS), "pep3333:app"],
        stdout=log, stderr=log, cwd=str(work))
    try:
        wait_connect(socket.AF_INET, ("127.0.0.1", port))
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def proxy_for(kind, address, keepalive):
    work = wh.short_tempdir("px-peer-")
    config = (
        "[server]\nclient_max_body_size = 50M\nworkers = 1\n"
        f"access_log = file:{work / 'access.log'}\n\n"
        f"[upstream app]\nserver = {address}\nkeepalive = {keepalive}\n\n"
        f"[location /]\n{kind} = app\n")
    return ProxyServer(BINARY, work, config).start(), work


@pytest.fixture(params=["uwsgi_pass-uwsgi", "proxy_pass-gunicorn"])
def peer(request):
    kind, server = request.param.split("-")
    address = request.getfixturevalue(f"{server}_upstream")
    servers = []

    def make(keepalive=0):
        proxy, work = proxy_for(kind, address, keepalive)
        servers.append((proxy, work))
        return proxy

    yield make
    for proxy, work in servers:
        proxy.stop_and_check()
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("keepalive", [0, 4])
def test_requests_through_real_peer(peer, keepalive):
    proxy = peer(keepalive)
    with proxy.connect(timeout=20) as c:
        for i in range(30):
            r = c.exchange("GET", f"/env?i={i}", [("X-Twice", "a"), ("X-Twice", "b")])
            assert r.status == 200
            env = json.loads(r.body)
            assert env["QUERY_STRING"] == f"i={i}"
            assert env["PATH_INFO"] == "/env"
            assert env["REQUEST_METHOD"] == "GET"
            # uwsgi_pass joins the repeated header; through HTTP the peer joins it.
            assert env["HTTP_X_TWICE"] == "a, b" or env["HTTP_X_TWICE"] == "a,b"
        body = os.urandom(3 * 1024 * 1024)
        r = c.exchange("POST", "/body-info", [("Content-Type", "application/octet-stream"),
                                              ("Content-Length", str(len(body)))],
                       body=body)
        assert r.status == 200
        info = json.loads(r.body)
        assert info["length"] == len(body)
        assert info["sha256"] == hashlib.sha256(body).hexdigest()
        r = c.exchange("GET", "/stream")
        assert r.status == 200 and r.body == b"one\ntwo\nthree\n"
        r = c.exchange("HEAD", "/env")
        assert r.status == 200 and r.body == b""
    assert proxy.daemon.running()
    log = proxy.daemon.log_text()
    assert "warning" not in log, log


def test_client_chunked_body_reaches_peer_with_a_length(peer):
    proxy = peer(4)
    body = os.urandom(200_000)
    with proxy.connect(timeout=20) as c:
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                           for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
        r = c.exchange("POST", "/body-info", [("Transfer-Encoding", "chunked")], body=chunked)
        assert r.status == 200
        info = json.loads(r.body)
        assert info["content_length"] == str(len(body))
        assert info["sha256"] == hashlib.sha256(body).hexdigest()


def test_error_after_first_bytes_reaches_client_as_truncated(peer, request):
    if "uwsgi_pass-uwsgi" in request.node.name:
        pytest.skip("uWSGI ends a uwsgi response by closing the connection, also after an "
                    "error: the end cannot be told from a clean one (nginx is in the same "
                    "place); wharf-wsgi resets instead, see test_proxy.py")
    proxy = peer(0)
    with proxy.connect(timeout=20) as c:
        c.send(b"GET /error-after HTTP/1.1\r\nHost: x\r\n\r\n")
        data = c.read_until_closed(timeout=10)
    # A chunked response that never gets its last chunk, or a close before
    # the announced length: never a clean end.
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert not rest.endswith(b"0\r\n\r\n")
