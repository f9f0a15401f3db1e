"""Request bodies read whole before the application sees them (nginx's
request buffering, on by default), so that a slow client never holds a
wharf-wsgi worker; beyond client_body_buffer_size they wait in an
unlinked temporary file."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

import wharf_harness as wh
from proxy_fixtures import RawUpstream, proxies, proxy_binary_or_skip  # noqa: F401 (fixtures)
from wsgi_fixtures import WsgiServer, wsgi_binary_or_skip

BODY = bytes(range(256)) * 800  # 200 KiB


@pytest.fixture
def one_worker():
    """wharf-wsgi with a single worker: whoever holds it holds the site."""
    work = wh.short_tempdir("pb-app-")
    server = WsgiServer(wsgi_binary_or_skip(), work, ["--socket-timeout", "30"],
                        warnings_are_errors=False)
    server.start()
    yield server
    server.stop_and_check()
    shutil.rmtree(work, ignore_errors=True)


def site(app, tmp, extra_server="", extra_location="", servers=None):
    lines = "".join(f"server = {s}\n" for s in (servers or [f"unix:{app.uwsgi_path}"]))
    return (f"[server]\nworkers = 1\nclient_max_body_size = 8M\n"
            f"client_body_temp_path = {tmp}\n{extra_server}"
            f"[upstream app]\n{lines}[location /]\nuwsgi_pass = app\n{extra_location}")


def post_head(path, length):
    return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()


def deleted_temp_files(pid, directory):
    """The unlinked files under directory that process pid has open."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)) and target.endswith("(deleted)"):
            found.append(target)
    return found


def test_a_slow_upload_holds_no_worker(proxies, one_worker, tmp_path):
    p = proxies(site(one_worker, tmp_path))
    with wh.HttpConnection(p.address, timeout=10) as slow:
        slow.send(post_head("/body-info", len(BODY)) + BODY[:5000])
        time.sleep(0.3)
        # The one worker is free: the upload is the proxy's to wait for.
        start = time.monotonic()
        assert p.get("/pid", timeout=5).status == 200
        assert time.monotonic() - start < 2
        slow.send(BODY[5000:100_000])
        deadline = time.monotonic() + 5
        while not deleted_temp_files(p.daemon.pid, tmp_path):
            assert time.monotonic() < deadline, "past 16k the body waits in a temporary file"
            time.sleep(0.05)
        slow.send(BODY[100_000:])
        r = slow.read_response()
    info = json.loads(r.body)
    assert info["length"] == len(BODY) and info["sha256"] == hashlib.sha256(BODY).hexdigest()
    assert info["content_length"] == str(len(BODY))
    deadline = time.monotonic() + 5
    while deleted_temp_files(p.daemon.pid, tmp_path):
        assert time.monotonic() < deadline, "the temporary file outlived its request"
        time.sleep(0.05)


def test_request_buffering_off_streams(proxies, one_worker, tmp_path):
    """The difference it makes: streamed, the slow upload holds the only
    worker, and another request waits for it."""
    p = proxies(site(one_worker, tmp_path, extra_location="request_buffering = off\n"))
    with wh.HttpConnection(p.address, timeout=10) as slow:
        slow.send(post_head("/body-info", len(BODY)) + BODY[:5000])
        time.sleep(0.3)
        with wh.HttpConnection(p.address, timeout=1) as other:
            other.request("GET", "/pid")
            with pytest.raises(OSError):
                other.read_response()
        slow.send(BODY[5000:])
        info = json.loads(slow.read_response().body)
    assert info["sha256"] == hashlib.sha256(BODY).hexdigest()
    assert not deleted_temp_files(p.daemon.pid, tmp_path)


def test_chunked_and_small_bodies(proxies, one_worker, tmp_path):
    p = proxies(site(one_worker, tmp_path, extra_server="client_body_buffer_size = 1k\n"))
    with wh.HttpConnection(p.address, timeout=10) as c:
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(BODY[i:i + 7000]), BODY[i:i + 7000])
                          for i in range(0, len(BODY), 7000)) + b"0\r\n\r\n"
        c.send(b"POST /body-info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + chunks)
        info = json.loads(c.read_response().body)
        assert info["sha256"] == hashlib.sha256(BODY).hexdigest()
        assert info["content_length"] == str(len(BODY))
        # Small, whole with its head: no buffering needed, the same answer.
        c.send(post_head("/echo", 5) + b"small")
        assert c.read_response().body == b"small"
        # Expect: 100-continue: the proxy says continue, takes the body, then forwards.
        c.send(post_head("/body-info", 3000)[:-2] + b"Expect: 100-continue\r\n\r\n")
        c.sock.settimeout(5)
        assert c.sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(BODY[:3000])
        assert json.loads(c.read_response().body)["length"] == 3000


def test_a_buffered_body_goes_again_to_the_next_server(proxies, one_worker, tmp_path):
    """A server that cannot be reached: the whole body, from the file, goes
    to the next one (a streamed POST could not be sent twice)."""
    dead = tmp_path / "dead.sock"
    p = proxies(site(one_worker, tmp_path, servers=[f"unix:{dead}",
                                                    f"unix:{one_worker.uwsgi_path}"]))
    for _ in range(2):
        with wh.HttpConnection(p.address, timeout=10) as c:
            c.send(post_head("/body-info", len(BODY)) + BODY[:1000])
            time.sleep(0.1)
            c.send(BODY[1000:])
            r = c.read_response()
            assert r.status == 200
            assert json.loads(r.body)["sha256"] == hashlib.sha256(BODY).hexdigest()


def test_a_temp_path_that_takes_no_file_is_refused(tmp_path):
    ini = tmp_path / "p.ini"
    ini.write_text("[server]\nlisten = 127.0.0.1:1\n"
                   f"client_body_temp_path = {tmp_path / 'missing'}\n[location /]\nreturn = 204\n")
    out = subprocess.run([str(proxy_binary_or_skip()), "-c", str(ini), "--check-config"],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "client_body_temp_path" in out.stderr and "cannot make a temporary file" in out.stderr


def raw_site(up, tmp):
    return (f"[server]\nworkers = 1\nclient_max_body_size = 64M\n"
            f"client_body_temp_path = {tmp}\n"
            f"[upstream u]\nserver = {up.address}\n[location /]\nproxy_pass = u\n")


def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("no head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return length, rest


def test_a_body_from_its_file_reaches_a_slow_upstream_whole(proxies, tmp_path):
    """A body in the temporary file goes to the upstream with sendfile: to
    one that takes it slowly, the socket fills, the proxy waits for room
    and goes on; the upstream gets every byte in order."""
    got = {}

    def slow_reader(conn):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        length, body = read_head(conn)
        digest = hashlib.sha256(body)
        n = len(body)
        while n < length:
            time.sleep(0.002)
            chunk = conn.recv(32768)
            if not chunk:
                break
            digest.update(chunk)
            n += len(chunk)
        got["n"], got["sha"] = n, digest.hexdigest()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    up = RawUpstream(slow_reader)
    try:
        p = proxies(raw_site(up, tmp_path))
        body = os.urandom(6 * 1024 * 1024 + 5)
        with p.connect(timeout=60) as c:
            r = c.exchange("POST", "/upload", [("Content-Length", str(len(body)))], body=body)
        assert r.status == 200 and r.body == b"ok"
        assert got == {"n": len(body), "sha": hashlib.sha256(body).hexdigest()}
        assert deleted_temp_files(p.daemon.pid, tmp_path) == []
    finally:
        up.close()


def test_an_upstream_that_answers_before_the_whole_body_is_heard(proxies, tmp_path):
    """An upstream that answers after a part of a large body and closes (a
    view that ignores the body): its answer reaches the client, and the
    proxy goes on serving."""
    def early(conn):
        length, body = read_head(conn)
        while len(body) < 100_000:
            body += conn.recv(65536)
        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope")
        conn.shutdown(socket.SHUT_WR)
        time.sleep(0.2)

    up = RawUpstream(early)
    try:
        p = proxies(raw_site(up, tmp_path))
        body = b"x" * (8 * 1024 * 1024)
        with p.connect(timeout=30) as c:
            r = c.exchange("POST", "/upload", [("Content-Length", str(len(body)))], body=body)
        assert r.status == 403 and r.body == b"nope"
        with p.connect(timeout=30) as c:
            r = c.exchange("POST", "/again", [("Content-Length", str(len(body)))], body=body)
        assert r.status == 403 and r.body == b"nope"
    finally:
        up.close()
