# SPDX-License-Identifier: MIT
"""wharf-wsgi for the integration tests: a server started as systemd starts
it (sockets at fd 3 and 4 named "http" and "uwsgi", NOTIFY_SOCKET), and
clients for both of its protocols. The uwsgi packets are built here, in
Python, the way nginx's uwsgi_pass builds them with Debian's uwsgi_params.
"""

import os
import signal
import socket
import struct
import urllib.parse
from pathlib import Path

import pytest

import wharf_harness as wh

APPS = Path(__file__).resolve().parent / "apps"

# CPython keeps some allocations until the process ends; they are not ours.
LSAN_SUPPRESSIONS = "leak:libpython3\nleak:_PyObject_\nleak:PyUnicode_\n"


def wsgi_binary_or_skip(module_level: bool = False) -> Path:
    path = wh.daemon_binary("wsgi")
    if not os.access(path, os.X_OK):
        pytest.skip(
            f"wharf-wsgi is not built: {path} is missing "
            "(meson compile -C build, or set WHARF_BUILD)",
            allow_module_level=module_level,
        )
    return path


def daemon_env(workdir: Path, warnings_are_errors: bool = True) -> dict:
    supp = workdir / "lsan.supp"
    supp.write_text(LSAN_SUPPRESSIONS)
    env = {
        "WSGI_TEST_DIR": str(workdir),
        "LSAN_OPTIONS": f"suppressions={supp}:print_suppressions=0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if warnings_are_errors:
        env["PYTHONWARNINGS"] = "error"
    return env


# ---------------------------------------------------------------------------
# uwsgi protocol


def uwsgi_packet(variables, modifier1: int = 0, modifier2: int = 0) -> bytes:
    """A uwsgi request head: variables is [(key, value)] of str or bytes."""
    block = bytearray()
    for k, v in variables:
        k = k.encode("latin-1") if isinstance(k, str) else k
        v = v.encode("latin-1") if isinstance(v, str) else v
        block += struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
    return struct.pack("<BHB", modifier1, len(block), modifier2) + bytes(block)


def nginx_vars(method, target, headers=(), body_len=None, scheme="http", https=False):
    """What nginx sends with Debian's /etc/nginx/uwsgi_params, then the headers."""
    path, _, query = target.partition("?")
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    ctype = next((v for n, v in items if n.lower() == "content-type"), "")
    variables = [
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", method),
        ("CONTENT_TYPE", ctype),
        ("CONTENT_LENGTH", "" if body_len is None else str(body_len)),
        ("REQUEST_URI", target),
        # $document_uri: nginx has decoded it already.
        ("PATH_INFO", urllib.parse.unquote_to_bytes(path).decode("latin-1")),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", scheme),
    ]
    if https:
        variables.append(("HTTPS", "on"))
    variables += [
        ("REMOTE_ADDR", "192.0.2.7"),
        ("REMOTE_PORT", "54321"),
        ("SERVER_PORT", "80"),
        ("SERVER_NAME", "example.org"),
    ]
    joined = {}
    order = []
    for n, v in items:
        if n.lower() in ("content-type", "content-length"):
            continue
        key = "HTTP_" + n.upper().replace("-", "_")
        if key in joined:
            joined[key] += ("; " if key == "HTTP_COOKIE" else ", ") + v
        else:
            joined[key] = v
            order.append(key)
    variables += [(k, joined[k]) for k in order]
    return variables


def read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    out = bytearray()
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            raise wh.ConnectionClosed(bytes(out)) from None
        if not data:
            return bytes(out)
        out += data


def parse_response(data: bytes, method: str = "GET") -> wh.Response:
    chunks = [data]
    reader = wh.ResponseReader(lambda: chunks.pop() if chunks else b"")
    return reader.read(method)


class UwsgiClient:
    """One request per connection, as nginx's uwsgi_pass does it."""

    def __init__(self, path):
        self.path = str(path)

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.path)
        return s

    def request(
        self, method="GET", target="/", headers=(), body=b"", https=False, variables=None
    ) -> wh.Response:
        if variables is None:
            variables = nginx_vars(
                method, target, headers, len(body) if body else None, https=https
            )
        with self.connect() as s:
            s.sendall(uwsgi_packet(variables) + body)
            return parse_response(read_all(s), method)


class HttpClient:
    def __init__(self, address):
        self.address = address

    def request(self, method="GET", target="/", headers=(), body=b"", **_) -> wh.Response:
        items = list(headers.items()) if isinstance(headers, dict) else list(headers)
        if body:
            items.append(("Content-Length", str(len(body))))
        items.append(("Connection", "close"))
        with wh.HttpConnection(self.address, timeout=10) as c:
            c.request(method, target, items, body=body)
            return c.read_response(method)


class WsgiServer:
    """wharf-wsgi with an HTTP socket (TCP) and a uwsgi socket (unix) from "systemd"."""

    def __init__(
        self,
        binary,
        workdir: Path,
        args=(),
        *,
        module="pep3333",
        watchdog_usec=0,
        env=None,
        name="wharf-wsgi",
        warnings_are_errors=True,
    ):
        self.workdir = Path(workdir)
        http = wh.bind_tcp()
        self.port = http.getsockname()[1]
        self.uwsgi_path = self.workdir / f"{name}.sock"
        uw = wh.bind_unix(self.uwsgi_path)
        argv = [binary, "--pythonpath", APPS]
        if module:
            argv += ["--module", module]
        self.daemon = wh.Daemon(
            [*argv, *args],
            sockets=[("http", http), ("uwsgi", uw)],
            workdir=self.workdir,
            watchdog_usec=watchdog_usec,
            env={**daemon_env(self.workdir, warnings_are_errors), **(env or {})},
            name=name,
        )
        self.http = HttpClient(("127.0.0.1", self.port))
        self.uwsgi = UwsgiClient(self.uwsgi_path)

    def start(self, timeout: float = 10.0) -> "WsgiServer":
        self.daemon.start()
        self.daemon.wait_ready(timeout)
        return self

    @property
    def notify(self) -> wh.NotifyListener:
        return self.daemon.notify

    def client(self, proto: str):
        return self.http if proto == "http" else self.uwsgi

    def stop_and_check(self, timeout: float = 10.0) -> None:
        try:
            if self.daemon.proc is not None and not self.daemon.exit_expected:
                rc = self.daemon.stop(timeout)
                self.daemon.check_clean_exit(rc)
        finally:
            self.daemon.close()

    def signal(self, sig=signal.SIGHUP) -> None:
        self.daemon.signal(sig)
