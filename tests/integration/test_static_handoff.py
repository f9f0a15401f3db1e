# SPDX-License-Identifier: MIT
"""wharf-static's handoff socket, with the test acting as wharf-proxy.

The test accepts a real TCP client connection on a listener of its own and
hands the accepted socket to wharf-static over a SOCK_SEQPACKET connection
to the daemon's "handoff" socket (common/handoff.h), then drops its copy:
from then on the client talks to wharf-static directly. A request outside
the prefix must come back on the same channel, with the unread bytes.
"""

import select
import signal
import socket
import time
from dataclasses import dataclass

import pytest

import wharf_harness as wh
from conftest import static_binary_or_skip

static_binary_or_skip(module_level=True)

PREFIX = "/static/"
CLIENT_ADDRESS = "127.0.0.2"  # not the test's own 127.0.0.1, so logs can tell them apart
PROXIED = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nproxied"


@dataclass
class Handed:
    """A client connection handed to wharf-static."""

    client: wh.HttpConnection  # the client's end
    identity: tuple  # of the server-side socket, to recognise it when it comes back
    peer: tuple  # the client's address as the server side sees it


class FakeProxy:
    """What wharf-proxy does with wharf-static: hands connections over, takes them back."""

    def __init__(self, server):
        self.server = server
        self.listener = wh.bind_tcp()
        self.chan = self.channel()
        self.handed = []

    def channel(self) -> socket.socket:
        """A new channel, past the HELLO that wharf-static says first."""
        chan = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        chan.connect(str(self.server.handoff_path))
        raw, fds = wh.handoff_recv(chan, 3)
        hello = wh.handoff_decode(raw)
        assert not fds and hello.kind == wh.HANDOFF_HELLO and hello.reserved == 0
        assert hello.data_len == hello.flags == hello.peer_len == 0
        return chan

    def accept_client(self) -> tuple:
        """(client socket, accepted server-side socket), the client on 127.0.0.2."""
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.bind((CLIENT_ADDRESS, 0))
        client.settimeout(5)
        client.connect(self.listener.getsockname())
        accepted, _ = self.listener.accept()
        return client, accepted

    def hand_off(self, data: bytes = b"", *, chan=None, **header) -> Handed:
        client, accepted = self.accept_client()
        msg = wh.handoff_encode(data, peer=wh.socket_peer(accepted), **header)
        handed = Handed(
            wh.HttpConnection(sock=client), wh.socket_identity(accepted), accepted.getpeername()
        )
        wh.handoff_send(chan or self.chan, msg, accepted)
        accepted.close()
        self.handed.append(handed)
        return handed

    def take_back(self, chan=None, timeout: float = 3.0) -> tuple:
        """(decoded message, socket) of a connection handed back; checks the header."""
        raw, fds = wh.handoff_recv(chan or self.chan, timeout)
        assert raw, "the daemon closed the handoff channel"
        assert len(fds) == 1, f"a handback must carry exactly one fd, got {len(fds)}"
        msg = wh.handoff_decode(raw)
        assert msg.magic == b"WHRF" and msg.version == 1 and msg.kind == wh.HANDOFF_CONN
        assert msg.data_len == len(msg.data), "data_len does not match the datagram"
        assert msg.reserved == 0
        return msg, socket.socket(fileno=fds[0])

    def nothing_back(self, wait: float = 0.3, chan=None) -> bool:
        r, _, _ = select.select([chan or self.chan], [], [], wait)
        return not r

    def close(self) -> None:
        for h in self.handed:
            h.client.close()
        self.chan.close()
        self.listener.close()


@pytest.fixture
def server(start_static):
    return start_static(sockets=("http", "handoff"), config={"prefix": PREFIX})


@pytest.fixture
def proxy(server):
    p = FakeProxy(server)
    yield p
    p.close()


def files(server, *names) -> list:
    return [(server.root / n).read_bytes() for n in names]


def get(path: str, **kw) -> bytes:
    return wh.build_request("GET", path, **kw)


def assert_served(r: wh.Response, content: bytes) -> None:
    assert r.status == 200, r
    assert r.body == content


def test_full_request_in_data(server, proxy):
    (index,) = files(server, "index.html")
    h = proxy.hand_off(get("/static/index.html"))
    assert_served(h.client.read_response(), index)


def test_partial_request_in_data(server, proxy):
    (style,) = files(server, "style.css")
    req = get("/static/style.css", headers={"User-Agent": "handoff-test"})
    h = proxy.hand_off(req[:23])
    time.sleep(0.1)
    h.client.send(req[23:])
    assert_served(h.client.read_response(), style)


def test_no_data(server, proxy):
    (small,) = files(server, "small.bin")
    h = proxy.hand_off(b"")
    time.sleep(0.1)
    assert_served(h.client.exchange("GET", "/static/small.bin"), small)


def test_pipelined_requests_in_data(server, proxy):
    index, style = files(server, "index.html", "style.css")
    h = proxy.hand_off(
        get("/static/index.html")
        + wh.build_request("HEAD", "/static/style.css")
        + get("/static/style.css")
    )
    rs = h.client.read_responses(["GET", "HEAD", "GET"])
    assert rs[0].body == index and rs[1].status == 200 and rs[1].body == b"" and rs[2].body == style


def test_a_marked_handoff_is_acknowledged_before_it_is_served(server, proxy):
    """HANDOFF_F_ACK with an id: an ACK of that id comes back on the channel;
    the connection is served, and handed back without the mark."""
    (index,) = files(server, "index.html")
    h = proxy.hand_off(get("/static/index.html"), flags=wh.HANDOFF_F_ACK, reserved=4660)
    raw, fds = wh.handoff_recv(proxy.chan, 3)
    ack = wh.handoff_decode(raw)
    assert not fds and ack.kind == wh.HANDOFF_ACK and ack.reserved == 4660
    assert ack.flags == ack.data_len == ack.peer_len == ack.requests == 0
    assert_served(h.client.read_response(), index)
    h.client.send(b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n")
    msg, sock = proxy.take_back()
    sock.close()
    assert msg.flags & wh.HANDOFF_F_ACK == 0 and msg.reserved == 0


def test_a_marked_handoff_without_an_id_is_refused(server, proxy):
    h = proxy.hand_off(get("/static/index.html"), flags=wh.HANDOFF_F_ACK)
    closed, data = h.client.wait_closed(3)
    assert closed and data == b""
    assert proxy.nothing_back()


def test_keep_alive_continues_on_the_handed_connection(server, proxy):
    index, big, small = files(server, "index.html", "big.bin", "small.bin")
    h = proxy.hand_off(get("/static/index.html"))
    assert_served(h.client.read_response(), index)
    for _ in range(3):
        assert_served(h.client.exchange("GET", "/static/big.bin"), big)
        assert_served(h.client.exchange("GET", "/static/small.bin"), small)
        r = h.client.exchange("GET", "/static/small.bin", {"Range": "bytes=0-9"})
        assert r.status == 206 and r.body == small[:10]
    assert proxy.nothing_back()


def test_many_pipelined_requests_in_data(server, proxy):
    (style,) = files(server, "style.css")
    data = get("/static/style.css") * 200
    assert len(data) < wh.HANDOFF_MAX_DATA
    h = proxy.hand_off(data)
    for _ in range(200):
        assert_served(h.client.read_response(), style)


def test_request_outside_the_prefix_is_handed_back(server, proxy):
    (index,) = files(server, "index.html")
    rest = get("/api/users?id=1", headers={"Cookie": "a=b"}) + get("/static/style.css")
    h = proxy.hand_off(get("/static/index.html") + rest)
    assert_served(h.client.read_response(), index)
    msg, conn = proxy.take_back()
    with conn:
        assert msg.data == rest, "the handback must carry exactly the unread bytes"
        assert msg.requests == 1
        assert msg.flags == 0
        assert msg.peer_address() == (socket.AF_INET, h.peer)
        assert wh.socket_identity(conn) == h.identity, "not the same connection"
        conn.sendall(PROXIED)
        assert h.client.read_response().body == b"proxied"
    # The daemon kept no copy: with ours closed, the client sees the end.
    assert h.client.wait_closed(2)[0], "wharf-static still holds the handed-back connection"


def test_request_outside_the_prefix_sent_later(server, proxy):
    (style,) = files(server, "style.css")
    h = proxy.hand_off(b"", requests=5)
    assert_served(h.client.exchange("GET", "/static/style.css"), style)
    later = get("/admin/")
    h.client.send(later)
    msg, conn = proxy.take_back()
    with conn:
        assert msg.data == later
        assert msg.requests == 6, "requests counts those served before the handoff too"
        conn.sendall(PROXIED)
        assert h.client.read_response().body == b"proxied"


def test_request_outside_the_prefix_as_the_first(server, proxy):
    data = get("/")
    h = proxy.hand_off(data, requests=3)
    msg, conn = proxy.take_back()
    with conn:
        assert msg.data == data and msg.requests == 3
        assert wh.socket_identity(conn) == h.identity


def test_outside_request_arriving_in_pieces(server, proxy):
    (style,) = files(server, "style.css")
    h = proxy.hand_off(get("/static/style.css"))
    assert_served(h.client.read_response(), style)
    full = get("/api/slow", headers={"X-Pad": "p" * 50})
    h.client.send(full[:14])
    time.sleep(0.2)
    h.client.send(full[14:])
    msg, conn = proxy.take_back()
    with conn:
        # Handed back early or late: the message and the socket hold it all.
        got = msg.data
        conn.settimeout(0.5)
        while len(got) < len(full):
            try:
                more = conn.recv(65536)
            except socket.timeout:
                break
            if not more:
                break
            got += more
        assert got == full


def test_tls_flag_survives_a_round_trip(server, proxy):
    (style,) = files(server, "style.css")
    h = proxy.hand_off(get("/static/style.css") + get("/api/"), flags=wh.HANDOFF_F_TLS)
    assert_served(h.client.read_response(), style)
    msg, conn = proxy.take_back()
    conn.close()
    assert msg.flags & wh.HANDOFF_F_TLS


def test_handback_goes_to_the_channel_it_came_from(server, proxy):
    other = proxy.channel()
    try:
        a = proxy.hand_off(get("/static/style.css"))
        b = proxy.hand_off(get("/static/style.css"), chan=other)
        assert a.client.read_response().status == 200
        assert b.client.read_response().status == 200
        b.client.send(get("/api/b"))
        msg, conn = proxy.take_back(chan=other)
        conn.close()
        assert msg.data == get("/api/b")
        assert proxy.nothing_back()
        a.client.send(get("/api/a"))
        msg, conn = proxy.take_back()
        conn.close()
        assert msg.data == get("/api/a")
    finally:
        other.close()


def test_http10_without_keep_alive_is_closed_not_handed_back(server, proxy):
    (index,) = files(server, "index.html")
    h = proxy.hand_off(get("/static/index.html", version="HTTP/1.0", host=None))
    assert_served(h.client.read_response(), index)
    assert h.client.wait_closed(2)[0]
    assert proxy.nothing_back()


BAD_MESSAGES = {
    "magic": dict(magic=b"WHRX"),
    "version": dict(version=2),
    "version 0": dict(version=0),
    "kind": dict(kind=7),
    "data_len too long": dict(data_len=500),
    "data_len too short": dict(data_len=3),
}


@pytest.mark.parametrize("name", list(BAD_MESSAGES))
def test_bad_message_is_refused(server, proxy, name):
    h = proxy.hand_off(get("/static/index.html"), **BAD_MESSAGES[name])
    closed, data = h.client.wait_closed(2)
    assert closed and data == b"", "a refused connection must be closed unanswered"
    assert server.daemon.running()
    (index,) = files(server, "index.html")
    good = proxy.hand_off(get("/static/index.html"))  # the same channel still works
    assert_served(good.client.read_response(), index)


def test_short_message_is_refused(server, proxy):
    client, accepted = proxy.accept_client()
    with client:
        wh.handoff_send(proxy.chan, b"WHRF\x01\x00\x01\x00", accepted)
        accepted.close()
        client.settimeout(2)
        assert client.recv(100) == b""
    (index,) = files(server, "index.html")
    assert_served(proxy.hand_off(get("/static/index.html")).client.read_response(), index)


def test_message_without_fd_is_refused(server, proxy):
    wh.handoff_send(proxy.chan, wh.handoff_encode(get("/static/index.html")))
    assert proxy.nothing_back(0.3)
    assert server.daemon.running()
    (index,) = files(server, "index.html")
    assert_served(proxy.hand_off(get("/static/index.html")).client.read_response(), index)


def test_message_with_two_fds_closes_both(server, proxy):
    c1, a1 = proxy.accept_client()
    c2, a2 = proxy.accept_client()
    with c1, c2:
        msg = wh.handoff_encode(get("/static/index.html"), peer=wh.socket_peer(a1))
        socket.send_fds(proxy.chan, [msg], [a1.fileno(), a2.fileno()])
        a1.close()
        a2.close()
        # Either refused (both closed) or served on the first; the extra fd
        # must never be kept open.
        c2.settimeout(2)
        assert c2.recv(100) == b""
    assert server.daemon.running()


def test_access_log_names_the_real_client(start_static):
    s = start_static(sockets=("http", "handoff"), config={"prefix": PREFIX}, start=False)
    log = s.workdir / "access.log"
    s.write_config(access_log=f"file:{log}")
    s.start()
    p = FakeProxy(s)
    try:
        h = p.hand_off(get("/static/index.html", headers={"User-Agent": "handoff-agent"}))
        assert h.client.read_response().status == 200
        h.client.close()
    finally:
        p.close()
    s.daemon.check_clean_exit(s.stop())  # flushes the log
    lines = [line for line in log.read_text().splitlines() if "handoff-agent" in line]
    assert len(lines) == 1, log.read_text()
    assert lines[0].startswith(CLIENT_ADDRESS + " ")
    assert '"GET /static/index.html HTTP/1.1" 200 ' in lines[0]


def test_sigterm_hands_idle_connections_back(server, proxy):
    (style,) = files(server, "style.css")
    h = proxy.hand_off(get("/static/style.css"))
    assert_served(h.client.read_response(), style)
    server.daemon.signal(signal.SIGTERM)
    msg, conn = proxy.take_back()
    with conn:
        assert msg.data == b"" and msg.requests == 1
        assert wh.socket_identity(conn) == h.identity
        conn.sendall(PROXIED)
        assert h.client.read_response().body == b"proxied"
    server.daemon.check_clean_exit(server.daemon.wait_exit(5))


def test_sigterm_without_a_channel_closes_idle_connections(server, proxy):
    (style,) = files(server, "style.css")
    h = proxy.hand_off(get("/static/style.css"))
    assert_served(h.client.read_response(), style)
    proxy.chan.close()
    time.sleep(0.1)
    server.daemon.signal(signal.SIGTERM)
    assert h.client.wait_closed(3)[0]
    server.daemon.check_clean_exit(server.daemon.wait_exit(5))


def test_handback_after_the_channel_is_gone(server, proxy):
    (style,) = files(server, "style.css")
    h = proxy.hand_off(get("/static/style.css"))
    assert_served(h.client.read_response(), style)
    proxy.chan.close()
    time.sleep(0.1)
    h.client.send(get("/api/"))
    closed, data = h.client.wait_closed(3)
    assert closed, "with nobody to hand it back to, the connection must end"
    if data:
        assert wh.parse_responses(data)[0].status >= 400
    assert server.daemon.running()


def test_handoff_socket_alone(start_static):
    s = start_static(sockets=("handoff",), config={"prefix": PREFIX})
    p = FakeProxy(s)
    try:
        (index,) = files(s, "index.html")
        assert_served(p.hand_off(get("/static/index.html")).client.read_response(), index)
    finally:
        p.close()
