# SPDX-License-Identifier: MIT
"""WebSocket through wharf-proxy (proxy_pass), as nginx does it with
`proxy_http_version 1.1; proxy_set_header Upgrade ...; Connection upgrade`:
the handshake goes up with its Upgrade, a 101 turns the connection into a
tunnel, and bytes flow both ways until a side closes. A real WebSocket
server and client (Debian's python3-websockets) talk through it; scripted
upstreams cover what they cannot be made to do."""

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import wharf_harness as wh
from proxy_fixtures import RawUpstream, app, proxies, read_http_request  # noqa: F401 (fixtures)

websockets = pytest.importorskip("websockets", reason="python3-websockets is not installed")

APPS = Path(__file__).parent / "apps"


def site(upstream, server="", location=""):
    return (f"[server]\nworkers = 1\n{server}\n[upstream ws]\nserver = {upstream}\n"
            f"\n[location /]\nproxy_pass = ws\n{location}")


SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"


def open_tunnel(c):
    """Sends an upgrade request on c and reads the 101 head."""
    c.send(wh.build_request("GET", "/", [("Upgrade", "x"), ("Connection", "upgrade")]))
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += c.sock.recv(65536)
    assert raw.startswith(b"HTTP/1.1 101 "), raw


def drain(conn, timeout):
    """Reads what the proxy sends up until it closes the connection."""
    conn.settimeout(timeout)
    while conn.recv(65536):
        pass


@pytest.fixture(scope="module")
def ws_server():
    port = wh.free_tcp_port()
    proc = subprocess.Popen(["/usr/bin/python3", str(APPS / "ws_echo.py"), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_websocket_conversation_through_the_proxy(proxies, ws_server):
    p = proxies(site(ws_server))
    url = f"ws://127.0.0.1:{p.port}/chat"

    async def talk():
        async with websockets.connect(url, max_size=None) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            big = bytes(range(256)) * 1024  # 256 KiB, in many TCP segments
            await ws.send(big)
            assert await ws.recv() == big
            await ws.send("push")
            assert [await ws.recv() for _ in range(3)] == ["pushed 0", "pushed 1", "pushed 2"]
            # Meanwhile the proxy serves other requests as usual.
            assert p.get("/plain").status in (400, 404, 426)
            await ws.send("after")
            assert await ws.recv() == "after"
        assert ws.close_code == 1000

        async with websockets.connect(url) as ws:
            await ws.send("bye")
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 1001

    asyncio.run(talk())
    assert "warning" not in p.daemon.log_text()


def test_the_handshake_goes_up_with_its_upgrade(proxies):
    got = []

    def handler(conn):
        head, _ = read_http_request(conn)
        got.append(head)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: abc\r\n\r\nfirst")
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data.upper())

    up = RawUpstream(handler)
    try:
        p = proxies(site(up.address, location="add_header = X-Via: wharf\n"))
        with p.connect() as c:
            c.send(wh.build_request("GET", "/chat", [
                ("Upgrade", "websocket"), ("Connection", "keep-alive, Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13")]))
            raw = b""
            while b"\r\n\r\n" not in raw:
                raw += c.sock.recv(65536)
            head, _, rest = raw.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            assert lines[0] == "HTTP/1.1 101 Switching Protocols"
            assert "Upgrade: websocket" in lines and "Connection: upgrade" in lines
            assert "Sec-WebSocket-Accept: abc" in lines and "X-Via: wharf" in lines
            assert not any(l.startswith(("Content-Length", "Transfer-Encoding")) for l in lines)
            while len(rest) < 5:
                rest += c.sock.recv(65536)
            assert rest == b"first", "what the upstream sent after its 101 comes through"
            c.send(b"some bytes, no framing")
            back = b""
            while len(back) < 22:
                back += c.sock.recv(65536)
            assert back == b"SOME BYTES, NO FRAMING"
        up_head = got[0].decode().split("\r\n")
        assert "Upgrade: websocket" in up_head and "Connection: upgrade" in up_head
        assert "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" in up_head
    finally:
        up.close()


def test_a_silent_client_keeps_its_tunnel_the_upstream_closing_ends_it(proxies):
    """client_body_timeout does not apply to a tunnel (the client may only
    listen); when the upstream closes, the client gets all it sent, then
    the end."""
    def handler(conn):
        read_http_request(conn)
        conn.sendall(SWITCHED)
        time.sleep(1.5)
        conn.sendall(b"late news")

    up = RawUpstream(handler)
    try:
        p = proxies(site(up.address, server="client_body_timeout = 1s\n"))
        with p.connect() as c:
            c.send(wh.build_request("GET", "/", [("Upgrade", "x"), ("Connection", "upgrade")]))
            data = c.read_until_closed(timeout=10)
        assert data.startswith(b"HTTP/1.1 101 ") and data.endswith(b"\r\n\r\nlate news"), data
    finally:
        up.close()


def test_the_client_leaving_closes_the_upstream(proxies):
    closed = []

    def handler(conn):
        read_http_request(conn)
        conn.sendall(SWITCHED)
        drain(conn, 10)
        closed.append(time.monotonic())

    up = RawUpstream(handler)
    try:
        p = proxies(site(up.address))
        with p.connect() as c:
            open_tunnel(c)
            time.sleep(0.2)
            assert not closed, "the tunnel ended before the client left"
        deadline = time.monotonic() + 5
        while not closed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert closed, "the upstream connection stayed open after the client left"
    finally:
        up.close()


@pytest.mark.parametrize("case", ["refused", "unasked"])
def test_no_tunnel_without_both_sides(proxies, case):
    """An upstream that does not switch answers as usual; one that switches
    when nobody asked is a 502."""
    def handler(conn):
        read_http_request(conn)
        if case == "refused":
            conn.sendall(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope")
        else:
            conn.sendall(SWITCHED)

    up = RawUpstream(handler)
    try:
        p = proxies(site(up.address))
        with p.connect() as c:
            headers = [("Upgrade", "x"), ("Connection", "upgrade")] if case == "refused" else []
            r = c.exchange("GET", "/", headers)
        if case == "refused":
            assert r.status == 426 and r.body == b"nope"
        else:
            assert r.status == 502
    finally:
        up.close()


def test_uwsgi_locations_do_not_switch(proxies, app):
    """uwsgi has no way to switch protocols: the handshake reaches the
    application as a plain request, and its answer comes back as one."""
    p = proxies(f"[server]\nworkers = 1\n\n[upstream app]\nserver = unix:{app.uwsgi_path}\n"
                "\n[location /]\nuwsgi_pass = app\n")
    with p.connect() as c:
        r = c.exchange("GET", "/env", [("Upgrade", "websocket"), ("Connection", "upgrade")])
    assert r.status == 200 and b'"REQUEST_METHOD": "GET"' in r.body


def test_a_stop_closes_tunnels_at_once(proxies):
    """SIGTERM: a tunnel has no end to wait for, so it is closed (its client
    reconnects) instead of holding the stop for its 30 s grace."""
    def handler(conn):
        read_http_request(conn)
        conn.sendall(SWITCHED)
        drain(conn, 20)

    up = RawUpstream(handler)
    try:
        p = proxies(site(up.address))
        with p.connect() as c:
            open_tunnel(c)
            started = time.monotonic()
            p.daemon.signal(signal.SIGTERM)
            c.read_until_closed(timeout=5)
            assert p.daemon.wait_exit(5) == 0
            assert time.monotonic() - started < 5
    finally:
        up.close()
