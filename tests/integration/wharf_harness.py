# SPDX-License-Identifier: MIT
"""Shared machinery for wharf's integration tests.

Daemons are started the way systemd starts them: the test binds the listen
sockets, the daemon gets them as fds 3, 4, ... with LISTEN_FDS,
LISTEN_FDNAMES and LISTEN_PID (its own pid), and reports on NOTIFY_SOCKET,
which the test listens on. systemd-socket-activate(1) is offered as well,
since that is how a person tries a socket-activated daemon by hand.

Everything here is stdlib only and knows nothing about one daemon in
particular, so the fixtures of every wharf daemon can share it:

- paths: build_dir(), daemon_binary(), project_version()
- sockets: bind_tcp(), bind_unix(), free_tcp_port()
- NotifyListener: collects sd_notify datagrams in a background thread
- Daemon: spawns a daemon with passed sockets, captures its stderr, stops it
- HttpConnection / Response: a raw HTTP/1.x client that sends exactly the
  bytes a test gives it and parses responses strictly (keep-alive,
  pipelining, HEAD, 1xx/204/304, chunked)
- handoff_*: the wire format of common/handoff.h
- NginxRun: Debian's nginx as a peer, with a test's http block
"""

import fcntl
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# What a sanitizer prints when it finds something; any of these in a daemon's
# stderr fails the test, whatever the exit code was.
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
)

# Variables that describe the environment the test runner itself was started
# in; a daemon under test must see only what the harness gives it.
_SCRUBBED_ENV = (
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "LISTEN_PID",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "INVOCATION_ID",
)


def build_dir() -> Path:
    """$WHARF_BUILD, or <repo>/build."""
    return Path(os.environ.get("WHARF_BUILD") or REPO / "build").resolve()


def daemon_binary(name: str) -> Path:
    """build/daemons/<name>/wharf-<name>, as meson lays it out."""
    return build_dir() / "daemons" / name / f"wharf-{name}"


def project_version() -> str:
    """The version in the top-level meson.build (what --version and Server: show)."""
    text = (REPO / "meson.build").read_text()
    m = re.search(r"project\(.*?version\s*:\s*'([^']+)'", text, re.S)
    assert m, "no version in meson.build"
    return m.group(1)


def short_tempdir(prefix: str = "wharf-") -> Path:
    """A world-traversable directory with a short path.

    Unix socket paths must fit in sun_path (108 bytes), which pytest's own
    tmp_path does not promise, and a daemon running as another user must be
    able to reach what is inside."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    d.chmod(0o755)
    return d


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def sanitizer_lines(text: str) -> list:
    """Lines of text that carry a sanitizer report."""
    return [line for line in text.splitlines() if any(m in line for m in SANITIZER_MARKERS)]


# ---------------------------------------------------------------------------
# Listen sockets, bound by the test as systemd would bind them.


def bind_tcp(host: str = "127.0.0.1", port: int = 0, backlog: int = 128) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(backlog)
    return s


def bind_unix(path, type_: int = socket.SOCK_STREAM, backlog: int = 128) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, type_)
    s.bind(str(path))
    os.chmod(path, 0o666)
    s.listen(backlog)
    return s


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for tools that insist on binding themselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def nginx_conf(workdir, http: str) -> str:
    """An nginx.conf for Debian's nginx run by a test: one worker in the
    foreground, every file it writes in workdir, no access log; http is the
    rest of the http block (directives and server blocks)."""
    d = workdir
    return f"""\
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/ngx-body;
    proxy_temp_path {d}/ngx-proxy;
    fastcgi_temp_path {d}/ngx-fcgi;
    uwsgi_temp_path {d}/ngx-uwsgi;
    scgi_temp_path {d}/ngx-scgi;
{http}
}}
"""


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class NginxRun:
    """Debian's nginx beside wharf, for a comparison:

        with wh.NginxRun("pl-ngx-") as ngx:
            ngx.start(f"server {{ listen 127.0.0.1:{ngx.port}; ... }}")
            ... ngx.address ...

    The port and the work directory (ngx.work, for the files a config
    names) exist before the config is written; the process and the
    directory are gone after the with block."""

    def __init__(self, prefix: str = "ngx-"):
        self.prefix = prefix
        self.proc = None

    def __enter__(self) -> "NginxRun":
        self.work = short_tempdir(self.prefix)
        self.port = free_tcp_port()
        self.address = ("127.0.0.1", self.port)
        return self

    def start(self, http: str) -> "NginxRun":
        """Runs nginx with http as the rest of its http block (see
        nginx_conf()) and waits until it listens on self.port."""
        conf = self.work / "nginx.conf"
        conf.write_text(nginx_conf(self.work, http))
        self.proc = subprocess.Popen([NGINX, "-c", str(conf), "-e", str(self.work / "nginx-error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_connectable(self.address).close()
        return self

    def error_log(self) -> str:
        return (self.work / "nginx-error.log").read_text()

    def __exit__(self, *exc) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
        remove_tree(self.work)


# ---------------------------------------------------------------------------
# sd_notify


@dataclass
class Notification:
    """One datagram received on NOTIFY_SOCKET."""

    time: float  # time.monotonic() when the harness read it
    pid: int  # sender's pid from SCM_CREDENTIALS, 0 if none came
    lines: list

    def has(self, line: str) -> bool:
        return line in self.lines

    def value(self, key: str):
        """The value of KEY=... in this datagram, or None."""
        for line in self.lines:
            if line.startswith(key + "="):
                return line[len(key) + 1 :]
        return None


class NotifyListener:
    """A NOTIFY_SOCKET: an AF_UNIX datagram socket read by a background thread."""

    def __init__(self, path):
        self.path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        os.chmod(self.path, 0o666)  # a daemon running as another user must reach it
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.settimeout(0.05)
        self._cond = threading.Condition()
        self._datagrams = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cred_size = struct.calcsize("3i")
        while not self._stop:
            try:
                data, anc, _flags, _addr = self._sock.recvmsg(65536, socket.CMSG_SPACE(cred_size))
            except socket.timeout:
                continue
            except OSError:
                break
            pid = 0
            for level, type_, cdata in anc:
                if level == socket.SOL_SOCKET and type_ == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", cdata[:cred_size])[0]
            text = data.decode("utf-8", "replace")
            lines = [line for line in text.split("\n") if line]
            with self._cond:
                self._datagrams.append(Notification(time.monotonic(), pid, lines))
                self._cond.notify_all()

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self._sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def datagrams(self) -> list:
        with self._cond:
            return list(self._datagrams)

    def messages(self) -> list:
        """Every line received so far, in order."""
        return [line for d in self.datagrams() for line in d.lines]

    def mark(self) -> int:
        """A position: wait_for(..., since=mark) considers only later datagrams."""
        with self._cond:
            return len(self._datagrams)

    @staticmethod
    def _matcher(what):
        if callable(what):
            return what
        if what.endswith("="):
            return lambda line: line.startswith(what)
        return lambda line: line == what

    def wait_for(self, what, timeout: float = 5.0, since: int = 0) -> tuple:
        """Waits for a line: exact ("READY=1"), a prefix ("STATUS=") or a predicate.

        Returns (index of the datagram, the line). Fails the test with what
        did arrive when nothing matches in time."""
        match = self._matcher(what)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(since, len(self._datagrams)):
                    for line in self._datagrams[i].lines:
                        if match(line):
                            return i, line
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [line for d in self._datagrams[since:] for line in d.lines]
                    raise AssertionError(
                        f"no notify message {what!r} within {timeout} s; got {got!r}"
                    )
                self._cond.wait(left)

    def count(self, what, since: int = 0) -> int:
        match = self._matcher(what)
        return sum(1 for d in self.datagrams()[since:] for line in d.lines if match(line))

    def times(self, what, since: int = 0) -> list:
        """Arrival times of the datagrams carrying a matching line."""
        match = self._matcher(what)
        return [d.time for d in self.datagrams()[since:] if any(match(x) for x in d.lines)]


# ---------------------------------------------------------------------------
# Daemons

# Every daemon the harness started, so conftest can show the stderr of those
# involved in a failing test.
ALL_DAEMONS = []

# sh runs in the child, becomes the daemon through exec and so knows its pid
# ($$) before the daemon starts: that is what sd_listen_fds() and
# sd_watchdog_enabled() compare LISTEN_PID and WATCHDOG_PID with.
_EXEC_WITH_PID = 'export LISTEN_PID=$$; exec "$0" "$@"'
_EXEC_WITH_PIDS = 'export LISTEN_PID=$$ WATCHDOG_PID=$$; exec "$0" "$@"'


def _scrubbed_environ() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


class Daemon:
    """A daemon process with sockets passed as systemd passes them.

    sockets: [(name, socket.socket)], given to the daemon as fds 3, 4, ...
    in that order; the test keeps its own copies open (as systemd does), so
    connections queue in the backlog while the daemon is not accepting.
    watchdog_usec: sets WATCHDOG_USEC and WATCHDOG_PID.
    user: run as this user (name or uid), e.g. to test permissions as root.
    """

    def __init__(
        self,
        argv,
        *,
        sockets=(),
        workdir: Path,
        notify: bool = True,
        watchdog_usec: int = 0,
        env=None,
        user=None,
        name: str = "daemon",
    ):
        self.argv = [str(a) for a in argv]
        self.sockets = list(sockets)
        self.workdir = Path(workdir)
        self.name = name
        self.user = user
        self.extra_env = dict(env or {})
        self.watchdog_usec = watchdog_usec
        self.notify = NotifyListener(self.workdir / f"{name}.notify") if notify else None
        self.log_path = self.workdir / f"{name}.stderr"
        self.proc = None
        self.returncode = None
        # Set once the test or the harness waits for the process to end; a
        # daemon that ends without it has died.
        self.exit_expected = False

    # -- starting

    def _environment(self) -> dict:
        env = _scrubbed_environ()
        if self.sockets:
            env["LISTEN_FDS"] = str(len(self.sockets))
            env["LISTEN_FDNAMES"] = ":".join(name for name, _ in self.sockets)
        if self.notify:
            env["NOTIFY_SOCKET"] = self.notify.path
        if self.watchdog_usec:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        env.update(self.extra_env)
        return env

    def start(self) -> "Daemon":
        n = len(self.sockets)
        # Copies above the target range first, so no dup2 below overwrites a
        # socket that still has to be moved; they are close-on-exec.
        high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, 3 + n) for _, s in self.sockets]

        def place_fds():
            for i, fd in enumerate(high):
                os.dup2(fd, 3 + i)  # the new fd is inheritable
            # close_fds cannot be used (it would close 3..3+n-1 again), so
            # drop anything else the test runner let its children inherit.
            for entry in os.listdir("/proc/self/fd"):
                fd = int(entry)
                if fd >= 3 + n:
                    try:
                        if os.get_inheritable(fd):
                            os.close(fd)
                    except OSError:
                        pass

        script = _EXEC_WITH_PIDS if self.watchdog_usec else _EXEC_WITH_PID
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", script, *self.argv],
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                close_fds=False,
                preexec_fn=place_fds,
                user=self.user,
                cwd=str(self.workdir),
            )
        finally:
            log.close()
            for fd in high:
                os.close(fd)
        ALL_DAEMONS.append(self)
        return self

    def wait_ready(self, timeout: float = 5.0) -> None:
        """Waits for READY=1, failing early (with the log) if the daemon exits."""
        assert self.notify, "wait_ready needs notify=True"
        deadline = time.monotonic() + timeout
        while True:
            if self.notify.count("READY=1"):
                return
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                self.exit_expected = True  # reported here, not again as a death
                raise AssertionError(
                    f"{self.name} exited with {describe_exit(rc)} before READY=1:\n{self.log_text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} sent no READY=1 within {timeout} s; notify got "
                    f"{self.notify.messages()!r}\n{self.log_text()}"
                )
            time.sleep(0.01)

    # -- state

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, since: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = 3.0, since: int = 0) -> str:
        """Waits until the log (from offset since) matches the regex; returns the match."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.log_text(since))
            if m:
                return m.group(0)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} logged nothing matching {pattern!r} within {timeout} s:\n"
                    f"{self.log_text(since)}"
                )
            time.sleep(0.02)

    # -- stopping

    def wait_exit(self, timeout: float = 5.0) -> int:
        """Waits for the process to end; kills it and fails when it does not."""
        self.exit_expected = True
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.returncode = self.proc.returncode
            raise AssertionError(f"{self.name} did not exit within {timeout} s") from None
        return self.returncode

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM and wait; returns the exit status (negative: killed by a signal)."""
        self.exit_expected = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def close(self) -> None:
        """Releases what the harness holds (the process must be gone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.exit_expected = True
            self.proc.kill()
            self.proc.wait()
        if self.notify:
            self.notify.close()
        for _, s in self.sockets:
            s.close()

    def check_clean_exit(self, rc: int) -> None:
        """Asserts exit status 0 and no sanitizer report in the log."""
        text = self.log_text()
        bad = sanitizer_lines(text)
        assert not bad, f"{self.name}: sanitizer report:\n" + "\n".join(bad)
        assert rc == 0, f"{self.name} exited with {describe_exit(rc)}"


def describe_exit(rc: int) -> str:
    if rc is None:
        return "no status (still running)"
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"status {rc}"


def socket_activate(
    argv,
    *,
    workdir: Path,
    port: int,
    fdname: str = "http",
    watchdog_usec: int = 0,
    name: str = "activated",
) -> Daemon:
    """Runs argv under systemd-socket-activate listening on 127.0.0.1:port.

    The tool binds the socket, waits for the first connection and then
    execs the daemon in its own process (so the Daemon's pid is the daemon's
    pid). NOTIFY_SOCKET and WATCHDOG_USEC are passed through with -E.
    Returns a started Daemon (without sockets of its own)."""
    tool = shutil.which("systemd-socket-activate")
    assert tool, "systemd-socket-activate is not installed"
    wrapper = [tool, "-l", f"127.0.0.1:{port}", f"--fdname={fdname}", "-E", "NOTIFY_SOCKET"]
    extra = {}
    if watchdog_usec:
        wrapper += ["-E", "WATCHDOG_USEC"]
        extra["WATCHDOG_USEC"] = str(watchdog_usec)
    d = Daemon([*wrapper, *argv], workdir=workdir, env=extra, name=name)
    # LISTEN_PID from the sh trick is harmless here: the tool sets its own
    # LISTEN_* for the child.
    return d.start()


def wait_connectable(address, family=socket.AF_INET, timeout: float = 5.0) -> socket.socket:
    """Connects, retrying until something listens; returns the connected socket."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(address)
            return s
        except (ConnectionRefusedError, FileNotFoundError):
            s.close()
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on {address!r} after {timeout} s") from None
            time.sleep(0.02)


# ---------------------------------------------------------------------------
# HTTP client


class ConnectionClosed(Exception):
    """The peer closed the connection before a complete response."""

    def __init__(self, partial: bytes = b""):
        super().__init__(f"connection closed after {len(partial)} bytes: {partial[:200]!r}")
        self.partial = partial


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list  # [(name, value)] as sent
    body: bytes
    raw_head: bytes
    interim: list = field(default_factory=list)  # 1xx responses before this one

    def header(self, name: str):
        """The value of the one header with that name (None if absent); fails on duplicates."""
        values = self.header_all(name)
        assert len(values) <= 1, f"header {name} repeated: {values!r}"
        return values[0] if values else None

    def header_all(self, name: str) -> list:
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def has_token(self, name: str, token: str) -> bool:
        """Does a comma-separated header (Connection, Vary) contain token?"""
        return any(
            t.strip().lower() == token.lower() for v in self.header_all(name) for t in v.split(",")
        )

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers!r} body={len(self.body)} bytes>"


_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([1-5][0-9][0-9]) ([\x20-\x7e\x80-\xff]*)")
_HEADER_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")


class ResponseReader:
    """A strict HTTP/1.x response parser over a byte source.

    fill() returns more bytes, or b"" at end of stream. Responses to HEAD,
    1xx, 204 and 304 have no body; otherwise Transfer-Encoding: chunked,
    Content-Length, or (for neither) everything up to the close."""

    MAX_HEAD = 64 * 1024

    def __init__(self, fill):
        self._fill = fill
        self.buf = bytearray()
        self.eof = False

    def _more(self) -> bool:
        if self.eof:
            return False
        data = self._fill()
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise ConnectionClosed(bytes(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                return self._take(i + 2)[:-2]
            if not self._more():
                raise ConnectionClosed(bytes(self.buf))

    def at_eof(self) -> bool:
        """True when the stream ended with nothing left over."""
        return not self.buf and not self._more()

    def read(self, method: str = "GET") -> Response:
        interim = []
        while True:
            resp = self._read_one(method)
            if 100 <= resp.status < 200 and resp.status != 101:
                interim.append(resp)
                continue
            resp.interim = interim
            return resp

    def _read_head(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                return self._take(i + 4)
            if len(self.buf) > self.MAX_HEAD:
                raise AssertionError(f"response head over {self.MAX_HEAD} bytes")
            if not self._more():
                raise ConnectionClosed(bytes(self.buf))

    def _read_one(self, method: str) -> Response:
        head = self._read_head()
        assert not _BARE_CR_OR_LF.search(head[:-4]), f"bare CR or LF in response head: {head!r}"
        lines = head[:-4].split(b"\r\n")
        m = _STATUS_LINE.fullmatch(lines[0])
        assert m, f"bad status line: {lines[0]!r}"
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            assert sep and _HEADER_NAME.fullmatch(name), f"bad header line {line!r} in {head!r}"
            headers.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
        resp = Response(
            version=m.group(1).decode(),
            status=int(m.group(2)),
            reason=m.group(3).decode("latin-1"),
            headers=headers,
            body=b"",
            raw_head=head,
        )
        if method.upper() == "HEAD" or resp.status < 200 or resp.status in (204, 304):
            return resp
        te = resp.header_all("Transfer-Encoding")
        if te:
            assert te[-1].strip().lower().endswith("chunked"), f"unexpected TE {te!r}"
            resp.body = self._read_chunked()
            return resp
        cls = resp.header_all("Content-Length")
        if cls:
            assert len(set(cls)) == 1 and cls[0].isdigit(), f"bad Content-Length {cls!r}"
            resp.body = self._take(int(cls[0]))
            return resp
        body = bytearray()
        while self._more():
            pass
        body += self.buf
        self.buf.clear()
        resp.body = bytes(body)
        return resp

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = self._line()
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while self._line():  # trailers up to the empty line
                    pass
                return bytes(body)
            body += self._take(size)
            assert self._take(2) == b"\r\n", "chunk not followed by CRLF"


def build_request(
    method: str = "GET",
    target: str = "/",
    headers=None,
    *,
    version: str = "HTTP/1.1",
    host="localhost",
    body: bytes = b"",
) -> bytes:
    """Request bytes. headers: dict or [(name, value)]; host=None sends no Host."""
    if isinstance(target, str):
        target = target.encode("utf-8")
    out = bytearray(method.encode() + b" " + target + b" " + version.encode() + b"\r\n")
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if host is not None and not any(n.lower() == "host" for n, _ in items):
        items.insert(0, ("Host", host))
    for name, value in items:
        if isinstance(value, str):
            value = value.encode("latin-1")
        out += name.encode() + b": " + value + b"\r\n"
    out += b"\r\n" + body
    return bytes(out)


class HttpConnection:
    """One client connection: send exactly some bytes, read parsed responses.

    address: (host, port) for TCP, a path (str or Path) for a unix socket.
    rcvbuf: SO_RCVBUF set before connecting (a small one makes a slow
    reader); source: local address to bind first (e.g. ("127.0.0.2", 0)).
    recv_size and read_delay slow every read down."""

    def __init__(
        self,
        address=None,
        *,
        timeout: float = 5.0,
        rcvbuf: int = 0,
        source=None,
        sock: socket.socket = None,
        recv_size: int = 65536,
        read_delay: float = 0.0,
    ):
        if sock is None:
            if isinstance(address, (str, Path)):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                address = str(address)
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source is not None:
                sock.bind(source)
            sock.settimeout(timeout)
            sock.connect(address)
        sock.settimeout(timeout)
        self.sock = sock
        self.recv_size = recv_size
        self.read_delay = read_delay
        self.reader = ResponseReader(self._recv)

    def _recv(self) -> bytes:
        if self.read_delay:
            time.sleep(self.read_delay)
        try:
            return self.sock.recv(self.recv_size)
        except ConnectionResetError:
            return b""

    def __enter__(self) -> "HttpConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method="GET", target="/", headers=None, **kw) -> None:
        self.send(build_request(method, target, headers, **kw))

    def read_response(self, method: str = "GET") -> Response:
        return self.reader.read(method)

    def exchange(self, method="GET", target="/", headers=None, **kw) -> Response:
        self.request(method, target, headers, **kw)
        return self.read_response(method)

    def read_responses(self, methods) -> list:
        """Reads one response per method given, in order (for pipelining)."""
        return [self.read_response(m) for m in methods]

    def read_until_closed(self, timeout: float = 5.0) -> bytes:
        """Everything up to the peer's close (fails if it does not close in time)."""
        deadline = time.monotonic() + timeout
        out = bytearray(self.reader.buf)
        self.reader.buf.clear()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"connection not closed within {timeout} s; got {bytes(out[:300])!r}"
                )
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return bytes(out)
            if not data:
                return bytes(out)
            out += data

    def wait_closed(self, timeout: float) -> tuple:
        """(closed, bytes received meanwhile): closed is False when the
        connection was still open after timeout seconds."""
        deadline = time.monotonic() + timeout
        out = bytearray(self.reader.buf)
        self.reader.buf.clear()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, bytes(out)
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return True, bytes(out)
            if not data:
                return True, bytes(out)
            out += data

    def is_open(self, wait: float = 0.05) -> bool:
        """No close and no unexpected bytes arrived within wait seconds."""
        closed, data = self.wait_closed(wait)
        assert not data, f"unexpected bytes: {data[:200]!r}"
        return not closed


def raw_exchange(address, data: bytes, timeout: float = 3.0) -> bytes:
    """Sends data on a new connection, half-closes it and returns all that
    comes back until the peer closes (failing if it does not in time)."""
    family = socket.AF_UNIX if isinstance(address, (str, Path)) else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(address) if family == socket.AF_UNIX else address)
    with HttpConnection(sock=s, timeout=timeout) as c:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the peer may refuse early; what it sent is still read below
        return c.read_until_closed(timeout)


def parse_responses(data: bytes, methods=None) -> list:
    """Parses complete responses from bytes (all of them when methods is None)."""
    chunks = [data]

    def fill():
        return chunks.pop() if chunks else b""

    reader = ResponseReader(fill)
    out = []
    if methods is not None:
        return [reader.read(m) for m in methods]
    while not reader.at_eof():
        out.append(reader.read("GET"))
    return out


# ---------------------------------------------------------------------------
# common/handoff.h

HANDOFF_MAGIC = b"WHRF"
HANDOFF_VERSION = 1
HANDOFF_CONN = 1
HANDOFF_HELLO = 2  # wharf-static acknowledges marked handoffs
HANDOFF_ACK = 3  # the marked handoff with this id (the reserved field) was taken
HANDOFF_F_TLS = 1
HANDOFF_F_ACK = 4
HANDOFF_HEADER_SIZE = 152
HANDOFF_PEER_SIZE = 128
HANDOFF_MAX_DATA = 64 * 1024
HANDOFF_MAX_MSG = HANDOFF_HEADER_SIZE + HANDOFF_MAX_DATA
_HANDOFF_FIXED = struct.Struct("<4sHHIIHHI")  # the 24 bytes before the peer


def sockaddr_bytes(family: int, address) -> bytes:
    """A struct sockaddr as the kernel lays it out (family in host order)."""
    if family == socket.AF_INET:
        host, port = address
        return (
            struct.pack("=H", socket.AF_INET)
            + struct.pack("!H", port)
            + socket.inet_pton(socket.AF_INET, host)
            + bytes(8)
        )
    if family == socket.AF_INET6:
        host, port, flowinfo, scope_id = address
        return (
            struct.pack("=H", socket.AF_INET6)
            + struct.pack("!HI", port, flowinfo)
            + socket.inet_pton(socket.AF_INET6, host)
            + struct.pack("=I", scope_id)
        )
    if family == socket.AF_UNIX:
        path = address.encode() if isinstance(address, str) else bytes(address)
        return struct.pack("=H", socket.AF_UNIX) + path + (b"\0" if path else b"")
    raise ValueError(f"family {family}")


def parse_sockaddr(raw: bytes) -> tuple:
    """(family, address) from sockaddr bytes; address as Python's socket module gives it."""
    (family,) = struct.unpack_from("=H", raw)
    if family == socket.AF_INET:
        (port,) = struct.unpack_from("!H", raw, 2)
        return family, (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    if family == socket.AF_INET6:
        port, flowinfo = struct.unpack_from("!HI", raw, 2)
        (scope_id,) = struct.unpack_from("=I", raw, 24)
        return family, (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope_id)
    if family == socket.AF_UNIX:
        return family, raw[2:].split(b"\0", 1)[0].decode()
    return family, raw[2:]


def socket_peer(sock: socket.socket) -> bytes:
    """The packed peer address of a connected socket."""
    return sockaddr_bytes(sock.family, sock.getpeername())


@dataclass
class HandoffMessage:
    magic: bytes
    version: int
    kind: int
    flags: int
    data_len: int
    peer_len: int
    reserved: int
    requests: int
    peer: bytes  # the peer_len valid bytes
    data: bytes

    def peer_address(self) -> tuple:
        return parse_sockaddr(self.peer)


def handoff_encode(
    data: bytes = b"",
    *,
    peer: bytes = b"",
    kind: int = HANDOFF_CONN,
    flags: int = 0,
    requests: int = 0,
    magic: bytes = HANDOFF_MAGIC,
    version: int = HANDOFF_VERSION,
    data_len: int = None,
    reserved: int = 0,
) -> bytes:
    """A handoff datagram. The keyword arguments after data exist so tests
    can also build wrong ones (another magic, version or length)."""
    assert len(peer) <= HANDOFF_PEER_SIZE
    fixed = _HANDOFF_FIXED.pack(
        magic,
        version,
        kind,
        flags,
        len(data) if data_len is None else data_len,
        len(peer),
        reserved,
        requests,
    )
    return fixed + peer.ljust(HANDOFF_PEER_SIZE, b"\0") + data


def handoff_decode(msg: bytes) -> HandoffMessage:
    assert len(msg) >= HANDOFF_HEADER_SIZE, f"handoff message of {len(msg)} bytes"
    (
        magic,
        version,
        kind,
        flags,
        data_len,
        peer_len,
        reserved,
        requests,
    ) = _HANDOFF_FIXED.unpack_from(msg)
    peer = msg[_HANDOFF_FIXED.size : _HANDOFF_FIXED.size + HANDOFF_PEER_SIZE]
    return HandoffMessage(
        magic=magic,
        version=version,
        kind=kind,
        flags=flags,
        data_len=data_len,
        peer_len=peer_len,
        reserved=reserved,
        requests=requests,
        peer=peer[:peer_len],
        data=msg[HANDOFF_HEADER_SIZE:],
    )


def handoff_send(chan: socket.socket, msg: bytes, fd=None) -> None:
    """Sends one datagram, with fd as SCM_RIGHTS when given."""
    if fd is None:
        chan.sendmsg([msg])
    else:
        fd = fd.fileno() if hasattr(fd, "fileno") else fd
        socket.send_fds(chan, [msg], [fd])


def handoff_recv(chan: socket.socket, timeout: float = 5.0) -> tuple:
    """(raw message, [fds]) of the next datagram; b"" at EOF. Fails on timeout."""
    chan.settimeout(timeout)
    try:
        msg, fds, flags, _ = socket.recv_fds(chan, HANDOFF_MAX_MSG + 1, 4)
    except socket.timeout:
        raise AssertionError(f"no handoff message within {timeout} s") from None
    assert not flags & socket.MSG_CTRUNC, "ancillary data truncated"
    return msg, fds


def socket_identity(fd) -> tuple:
    """(st_dev, st_ino) of a socket: equal for two fds of the same socket,
    also across processes, so a socket handed back can be recognised."""
    st = os.fstat(fd.fileno() if hasattr(fd, "fileno") else fd)
    return st.st_dev, st.st_ino
