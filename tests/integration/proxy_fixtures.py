"""wharf-proxy started as systemd starts it, and small upstreams to put behind it.

ProxyServer gets its listening socket passed (LISTEN_FDS, name "http") and
its configuration as an INI text. The upstreams here are real servers:
wharf-wsgi and wharf-static from this build, and scripted raw upstreams
(RawUpstream) for the misbehaviours no real server shows on demand.
"""

import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

import wharf_harness as wh
from wsgi_fixtures import WsgiServer, wsgi_binary_or_skip


def proxy_binary_or_skip() -> Path:
    path = wh.daemon_binary("proxy")
    if not path.exists():
        pytest.skip(f"{path} is not built")
    return path


class ProxyServer:
    """A wharf-proxy with one TCP listener on 127.0.0.1 passed as systemd would."""

    def __init__(self, binary, workdir: Path, config: str, *, watchdog_usec=0, args=(),
                 name="wharf-proxy"):
        self.workdir = Path(workdir)
        self.config_path = self.workdir / f"{name}.ini"
        self.config_path.write_text(config)
        sock = wh.bind_tcp()
        self.port = sock.getsockname()[1]
        self.daemon = wh.Daemon(
            [binary, "-c", self.config_path, *args],
            sockets=[("http", sock)],
            workdir=self.workdir,
            watchdog_usec=watchdog_usec,
            name=name,
        )
        self.connections = []

    def start(self) -> "ProxyServer":
        self.daemon.start()
        self.daemon.wait_ready()
        return self

    @property
    def notify(self) -> wh.NotifyListener:
        return self.daemon.notify

    @property
    def address(self) -> tuple:
        return ("127.0.0.1", self.port)

    def write_config(self, text: str) -> None:
        self.config_path.write_text(text)

    def reload(self, timeout: float = 5.0) -> None:
        mark = self.notify.mark()
        self.daemon.signal(signal.SIGHUP)
        i, _ = self.notify.wait_for("RELOADING=1", timeout, since=mark)
        self.notify.wait_for("READY=1", timeout, since=i)

    def connect(self, **kw) -> wh.HttpConnection:
        c = wh.HttpConnection(self.address, **kw)
        self.connections.append(c)
        return c

    def get(self, target: str, headers=None, method: str = "GET", **kw) -> wh.Response:
        with wh.HttpConnection(self.address, timeout=kw.pop("timeout", 10)) as c:
            return c.exchange(method, target, headers, **kw)

    def stop_and_check(self, timeout: float = 10.0) -> None:
        try:
            for c in self.connections:
                c.close()
            if self.daemon.proc is not None and not self.daemon.exit_expected:
                rc = self.daemon.stop(timeout)
                self.daemon.check_clean_exit(rc)
        finally:
            self.daemon.close()


class RawUpstream:
    """A TCP or unix server whose answer to each connection is a script.

    handler(conn) runs in a thread per connection with the accepted socket;
    requests records what each connection sent before the handler returned
    (as far as the handler read it).
    """

    def __init__(self, handler, unix_path=None):
        if unix_path:
            self.sock = wh.bind_unix(unix_path)
            self.address = f"unix:{unix_path}"
        else:
            self.sock = wh.bind_tcp()
            self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.handler = handler
        self.accepted = 0
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def read_http_request(conn: socket.socket, timeout: float = 10.0) -> tuple:
    """Reads one HTTP request head and its Content-Length body: (head, body)."""
    conn.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head, rest


def read_uwsgi_request(conn: socket.socket, timeout: float = 10.0) -> tuple:
    """Reads one uwsgi packet and its CONTENT_LENGTH body: (vars as a list of pairs, body)."""
    conn.settimeout(timeout)
    data = b""

    def need(n):
        nonlocal data
        while len(data) < n:
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError("short uwsgi packet")
            data += chunk

    need(4)
    size = int.from_bytes(data[1:3], "little")
    need(4 + size)
    block, data = data[4 : 4 + size], data[4 + size :]
    pairs = []
    i = 0
    while i < len(block):
        kl = int.from_bytes(block[i : i + 2], "little")
        k = block[i + 2 : i + 2 + kl]
        i += 2 + kl
        vl = int.from_bytes(block[i : i + 2], "little")
        v = block[i + 2 : i + 2 + vl]
        i += 2 + vl
        pairs.append((k.decode("latin-1"), v.decode("latin-1")))
    length = int(dict(pairs).get("CONTENT_LENGTH") or 0)
    need(length)
    return pairs, data[:length]


def check_config_refused(tmp_path, text: str, expected) -> str:
    """wharf-proxy --check-config on a file of text must fail, and say each
    of expected, [(line, words)], on one message at that line. Returns what
    it printed."""
    bad = tmp_path / "bad.ini"
    bad.write_text(text)
    out = subprocess.run([str(proxy_binary_or_skip()), "-c", str(bad), "--check-config"],
                         capture_output=True, text=True)
    assert out.returncode != 0, out.stderr
    messages = out.stderr.splitlines()
    for line, words in expected:
        assert any(m.startswith(f"{bad}:{line}: ") and words in m for m in messages), \
            (line, words, out.stderr)
    return out.stderr


# Fixtures: a test module imports the ones it uses.

@pytest.fixture
def proxies():
    """proxies(config_text, **kw) -> a started ProxyServer; all stopped and checked after."""
    binary = proxy_binary_or_skip()
    made = []

    def make(config, **kw):
        work = wh.short_tempdir("px-")
        p = ProxyServer(binary, work, config, **kw)
        made.append((p, work))
        return p.start()

    yield make
    errors = []
    for p, work in made:
        try:
            p.stop_and_check()
        except AssertionError as e:
            errors.append(str(e))
        shutil.rmtree(work, ignore_errors=True)
    assert not errors, "\n".join(errors)


@pytest.fixture(scope="module")
def app():
    """wharf-wsgi (master, two workers) running apps/pep3333.py on a unix socket."""
    binary = wsgi_binary_or_skip()
    work = wh.short_tempdir("px-app-")
    server = WsgiServer(binary, work, ["--master", "--processes", "2"],
                        warnings_are_errors=False)
    server.start()
    yield server
    server.stop_and_check()
    shutil.rmtree(work, ignore_errors=True)
