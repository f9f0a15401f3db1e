# SPDX-License-Identifier: MIT
"""Self-tests of wharf_harness: socket passing, sd_notify collection, the
HTTP response parser and the handoff wire format, checked against a small
Python stand-in daemon started exactly as the real daemons are. They need no
wharf binary, so the harness is known to work before any daemon exists."""

import json
import signal
import socket
import sys
import time

import pytest

import wharf_harness as wh

# A daemon in a few lines of Python that does what systemd expects: takes
# LISTEN_FDS, checks LISTEN_PID, sends READY/STATUS/WATCHDOG/STOPPING, and
# describes what it got to any HTTP client. A connection handed to it on a
# "handoff" socket is answered and then handed back on the same channel.
STAND_IN = r"""
import json, os, selectors, signal, socket, struct, sys, threading, time

def notify(text):
    path = os.environ.get("NOTIFY_SOCKET")
    if path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(text.encode(), path)

n = int(os.environ.get("LISTEN_FDS", "0"))
names = os.environ.get("LISTEN_FDNAMES", "").split(":")
info = {
    "pid": os.getpid(),
    "listen_pid_ok": os.environ.get("LISTEN_PID") == str(os.getpid()),
    "fds": [],
    "argv": sys.argv[1:],
}
socks = []
for i in range(n):
    s = socket.socket(fileno=3 + i)
    s.setblocking(False)
    peer = s.getsockname()
    info["fds"].append({"fd": 3 + i, "name": names[i], "family": s.family.name,
                        "type": s.type.name, "addr": peer})
    socks.append((names[i], s))
info["other_fds"] = sorted(int(f) for f in os.listdir("/proc/self/fd")
                           if int(f) >= 3 + n)

wd_usec = int(os.environ.get("WATCHDOG_USEC", "0"))
wd_pid = os.environ.get("WATCHDOG_PID")
if wd_usec and (wd_pid is None or wd_pid == str(os.getpid())):
    def ping():
        while True:
            notify("WATCHDOG=1")
            time.sleep(wd_usec / 2e6)
    threading.Thread(target=ping, daemon=True).start()

def term(*_):
    notify("STOPPING=1")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)

sel = selectors.DefaultSelector()
for name, s in socks:
    sel.register(s, selectors.EVENT_READ, name)
notify("READY=1\nSTATUS=stand-in serving %d sockets" % n)
served = 0
while True:
    for key, _ in sel.select(1.0):
        name, s = key.data, key.fileobj
        if name == "http":
            c, _ = s.accept()
            c.setblocking(True)
            c.recv(65536)
            body = json.dumps(info).encode()
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            c.close()
            served += 1
        elif name == "handoff":
            chan, _ = s.accept()
            chan.setblocking(True)
            sel.register(chan, selectors.EVENT_READ, "channel")
        elif name == "channel":
            msg, fds, _, _ = socket.recv_fds(s, 70000, 4)
            if not msg:
                sel.unregister(s)
                s.close()
                continue
            data = msg[152:]
            conn = socket.socket(fileno=fds[0])
            conn.setblocking(True)
            body = b"stand-in got " + data
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            served += 1
            header = msg[:24]
            magic, ver, kind, flags, _, peer_len, _, reqs = struct.unpack("<4sHHIIHHI", header)
            back = struct.pack("<4sHHIIHHI", magic, ver, kind, flags, 5, peer_len, 0, reqs + 1)
            socket.send_fds(s, [back + msg[24:152] + b"after"], [conn.fileno()])
            conn.close()
    notify("STATUS=%d served" % served)
"""


@pytest.fixture
def stand_in(tmp_path, workdir):
    # Asks for workdir so that it is torn down after the daemons that use it.
    path = tmp_path / "stand_in.py"
    path.write_text(STAND_IN)
    daemons = []

    def start(sockets=(), **kw) -> wh.Daemon:
        d = wh.Daemon([sys.executable, path, "an arg"], sockets=sockets, **kw)
        daemons.append(d)
        return d.start()

    yield start
    for d in daemons:
        try:
            if not d.exit_expected:
                d.check_clean_exit(d.stop())
        finally:
            d.close()


def get_json(address) -> dict:
    with wh.HttpConnection(address) as c:
        r = c.exchange("GET", "/")
        assert r.status == 200
        return json.loads(r.body)


def test_sockets_are_passed_as_systemd_passes_them(stand_in, workdir):
    tcp = wh.bind_tcp()
    unix = wh.bind_unix(workdir / "u.sock")
    handoff = wh.bind_unix(workdir / "h.sock", socket.SOCK_SEQPACKET)
    d = stand_in([("http", tcp), ("http", unix), ("handoff", handoff)], workdir=workdir)
    d.wait_ready()
    info = get_json(tcp.getsockname())
    assert info["listen_pid_ok"], info
    assert info["pid"] == d.pid
    assert info["argv"] == ["an arg"]
    assert [(f["fd"], f["name"], f["family"], f["type"]) for f in info["fds"]] == [
        (3, "http", "AF_INET", "SOCK_STREAM"),
        (4, "http", "AF_UNIX", "SOCK_STREAM"),
        (5, "handoff", "AF_UNIX", "SOCK_SEQPACKET"),
    ]
    assert tuple(info["fds"][0]["addr"]) == tcp.getsockname()
    assert info["fds"][1]["addr"] == str(workdir / "u.sock")
    # Only what Python opened itself (the /proc/self/fd listing) beyond them.
    assert len(info["other_fds"]) <= 1, info["other_fds"]
    # The same daemon over the unix socket.
    assert get_json(workdir / "u.sock")["pid"] == d.pid


def test_notify_ready_status_watchdog_stopping(stand_in, workdir):
    d = stand_in([("http", wh.bind_tcp())], workdir=workdir, watchdog_usec=400000)
    d.wait_ready()
    first = d.notify.datagrams()[0]
    assert first.pid == d.pid, "SCM_CREDENTIALS should name the daemon"
    d.notify.wait_for("STATUS=stand-in serving 1 sockets")
    mark = d.notify.mark()
    time.sleep(1.0)
    assert d.notify.count("WATCHDOG=1", since=mark) >= 3
    d.notify.wait_for(lambda line: line.startswith("STATUS=") and "served" in line, 3)
    assert d.stop() == 0
    assert "STOPPING=1" in d.notify.messages()


def test_watchdog_pid_of_another_process_disables_it(stand_in, workdir):
    d = stand_in(
        [("http", wh.bind_tcp())],
        workdir=workdir,
        env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"},
    )
    d.wait_ready()
    time.sleep(0.5)
    assert d.notify.count("WATCHDOG=1") == 0


def test_wait_ready_reports_an_early_exit(workdir):
    d = wh.Daemon(
        ["/bin/sh", "-c", "echo broken config >&2; exit 3"], workdir=workdir, name="broken"
    )
    try:
        d.start()
        with pytest.raises(AssertionError, match=r"status 3 before READY=1:\nbroken config"):
            d.wait_ready(3)
    finally:
        d.close()


def test_stop_reports_a_hang(workdir):
    d = wh.Daemon(
        ["/bin/sh", "-c", "trap '' TERM; sleep 30"], workdir=workdir, notify=False, name="hang"
    )
    try:
        d.start()
        time.sleep(0.2)
        with pytest.raises(AssertionError, match="did not exit within 0.5 s"):
            d.stop(0.5)
        assert d.returncode == -signal.SIGKILL
    finally:
        d.close()


def test_sanitizer_lines_are_found():
    text = (
        "ok\n==12==ERROR: AddressSanitizer: heap-use-after-free\nx.c:3:5: runtime error: overflow\n"
    )
    assert len(wh.sanitizer_lines(text)) == 2
    assert wh.sanitizer_lines("all fine\n") == []


def test_systemd_socket_activate_route(stand_in, tmp_path, workdir):
    path = tmp_path / "stand_in.py"
    path.write_text(STAND_IN)
    port = wh.free_tcp_port()
    d = wh.socket_activate([sys.executable, path], workdir=workdir, port=port, watchdog_usec=400000)
    try:
        sock = wh.wait_connectable(("127.0.0.1", port))
        with wh.HttpConnection(sock=sock) as c:
            r = c.exchange("GET", "/")
        info = json.loads(r.body)
        assert info["listen_pid_ok"]
        assert info["pid"] == d.pid, "the tool execs the daemon in its own process"
        assert [(f["fd"], f["name"]) for f in info["fds"]] == [(3, "http")]
        d.wait_ready()
        mark = d.notify.mark()
        time.sleep(0.6)
        assert d.notify.count("WATCHDOG=1", since=mark) >= 2
        d.check_clean_exit(d.stop())
    finally:
        d.close()


def test_handoff_round_trip_with_stand_in(stand_in, workdir):
    handoff = wh.bind_unix(workdir / "h.sock", socket.SOCK_SEQPACKET)
    d = stand_in([("handoff", handoff)], workdir=workdir)
    d.wait_ready()
    listener = wh.bind_tcp()
    client = socket.create_connection(listener.getsockname(), timeout=5)
    server_side, _ = listener.accept()
    identity = wh.socket_identity(server_side)
    chan = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    chan.connect(str(workdir / "h.sock"))
    msg = wh.handoff_encode(b"GET / HTTP/1.1\r\n", peer=wh.socket_peer(server_side), requests=2)
    assert len(msg) == wh.HANDOFF_HEADER_SIZE + 16
    wh.handoff_send(chan, msg, server_side)
    server_side.close()
    with wh.HttpConnection(sock=client) as c:
        r = c.read_response()
        assert r.body == b"stand-in got GET / HTTP/1.1\r\n"
        raw, fds = wh.handoff_recv(chan)
        assert len(fds) == 1
        back = wh.handoff_decode(raw)
        assert (back.magic, back.version, back.kind, back.requests) == (b"WHRF", 1, 1, 3)
        assert back.data == b"after" and back.data_len == 5
        assert back.peer_address() == (socket.AF_INET, client.getsockname())
        assert wh.socket_identity(fds[0]) == identity
        with socket.socket(fileno=fds[0]) as returned:
            returned.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        assert c.read_response().status == 204
    chan.close()
    listener.close()


def test_handoff_encoding_is_the_documented_layout():
    peer = wh.sockaddr_bytes(socket.AF_INET, ("127.0.0.2", 0x1234))
    assert peer[2:4] == b"\x12\x34" and peer[4:8] == bytes([127, 0, 0, 2]) and len(peer) == 16
    msg = wh.handoff_encode(b"abc", peer=peer, flags=wh.HANDOFF_F_TLS, requests=7)
    assert msg[0:4] == b"WHRF"
    assert msg[4:6] == b"\x01\x00"  # version, little-endian
    assert msg[6:8] == b"\x01\x00"  # kind HANDOFF_CONN
    assert msg[8:12] == b"\x01\x00\x00\x00"  # flags
    assert msg[12:16] == b"\x03\x00\x00\x00"  # data_len
    assert msg[16:18] == b"\x10\x00"  # peer_len
    assert msg[18:20] == b"\x00\x00"
    assert msg[20:24] == b"\x07\x00\x00\x00"  # requests
    assert msg[24:40] == peer and msg[40:152] == bytes(112)
    assert msg[152:] == b"abc"
    d = wh.handoff_decode(msg)
    assert d.peer_address() == (socket.AF_INET, ("127.0.0.2", 0x1234))
    v6 = wh.sockaddr_bytes(socket.AF_INET6, ("::1", 80, 0, 0))
    assert len(v6) == 28 and wh.parse_sockaddr(v6) == (socket.AF_INET6, ("::1", 80, 0, 0))


def test_response_parser():
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\n\r\nabc"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"  # a HEAD: no body follows
        b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n'
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n"
        b"HTTP/1.0 404 Not Found\r\nConnection: close\r\n\r\nuntil the end"
    )
    rs = wh.parse_responses(raw, ["GET", "HEAD", "GET", "POST", "GET"])
    assert [r.status for r in rs] == [200, 200, 304, 200, 404]
    assert rs[0].body == b"abc" and rs[0].header("x-a") == "1"
    assert rs[1].body == b"" and rs[1].header("Content-Length") == "5"
    assert rs[2].header("ETag") == '"x"'
    assert rs[3].body == b"abcde" and [i.status for i in rs[3].interim] == [100]
    assert rs[4].body == b"until the end" and rs[4].version == "1.0"
    assert rs[4].has_token("connection", "Close")
    for bad in (
        b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ):
        with pytest.raises(AssertionError):
            wh.parse_responses(bad, ["GET"])
    with pytest.raises(wh.ConnectionClosed):
        wh.parse_responses(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", ["GET"])


def test_build_request():
    assert (
        wh.build_request("GET", "/a b", {"X": "1"})
        == b"GET /a b HTTP/1.1\r\nHost: localhost\r\nX: 1\r\n\r\n"
    )
    assert wh.build_request("GET", "/", version="HTTP/1.0", host=None) == b"GET / HTTP/1.0\r\n\r\n"
    assert wh.build_request("POST", "/", [("Host", "h")], body=b"xy").endswith(b"Host: h\r\n\r\nxy")
