# SPDX-License-Identifier: MIT
"""Fixtures for the integration tests.

Generic: every daemon the harness starts has its stderr attached to the
report of a test that fails while it runs, and a daemon that dies during a
test or prints a sanitizer report fails that test.

wharf-static: `static_binary` (skips when it is not built), `make_tree` (a
document root with known content), `start_static` (a factory of daemons
started as systemd would start them, stopped with SIGTERM at teardown, which
must end in exit status 0), and the module-wide `site` (one daemon over one
tree, for tests that only read).
"""

import gzip
import os
import random
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

import wharf_harness as wh

# ---------------------------------------------------------------------------
# Daemon logs in failure reports, and daemons that die.

_SNAPSHOT = pytest.StashKey[tuple]()
_REPORTED = pytest.StashKey[set]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    offsets = {id(d): d.log_size() for d in wh.ALL_DAEMONS if d.running()}
    item.stash[_SNAPSHOT] = (len(wh.ALL_DAEMONS), offsets)
    item.stash[_REPORTED] = set()


def _involved_daemons(item) -> list:
    """(daemon, log offset) for the daemons running at the test's start or started since."""
    if _SNAPSHOT not in item.stash:
        return []
    n, offsets = item.stash[_SNAPSHOT]
    old = [(d, offsets[id(d)]) for d in wh.ALL_DAEMONS[:n] if id(d) in offsets]
    return old + [(d, 0) for d in wh.ALL_DAEMONS[n:]]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    reported = item.stash.get(_REPORTED, set())
    for d, offset in _involved_daemons(item):
        if id(d) in reported:
            continue
        reported.add(id(d))
        text = d.log_text(offset)
        if len(text) > 20000:
            text = "[...]\n" + text[-20000:]
        state = "running" if d.running() else f"exited with {wh.describe_exit(d.proc.poll())}"
        rep.sections.append((f"{d.name} (pid {d.pid}, {state}) stderr", text or "(empty)"))


@pytest.fixture(autouse=True)
def _daemons_stay_healthy(request):
    """A daemon must not die on its own or report a sanitizer error during a test."""
    yield
    problems = []
    for d, offset in _involved_daemons(request.node):
        if d.proc is not None and d.proc.poll() is not None and not d.exit_expected:
            d.exit_expected = True  # report a death once
            problems.append(f"{d.name} died during the test: {wh.describe_exit(d.proc.poll())}")
        bad = wh.sanitizer_lines(d.log_text(offset))
        if bad:
            problems.append(f"{d.name}: sanitizer report:\n" + "\n".join(bad))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ---------------------------------------------------------------------------
# wharf-static


def static_binary_or_skip(module_level: bool = False) -> Path:
    """The wharf-static binary; skips (the whole module, when called at its
    top) when it is not built."""
    path = wh.daemon_binary("static")
    if not os.access(path, os.X_OK):
        pytest.skip(
            f"wharf-static is not built: {path} is missing "
            "(meson setup build && meson compile -C build, or set WHARF_BUILD)",
            allow_module_level=module_level,
        )
    return path


@pytest.fixture(scope="session")
def static_binary() -> Path:
    return static_binary_or_skip()


# Fixed, so ETag and Last-Modified are known in advance.
MTIME = 1_700_000_000
SECRET = b"TOPSECRET-wharf-7c1e: this file lies outside the root\n"
UTF8_NAME = "h\u00e9llo w\u00f6rld \u20ac.txt"


@dataclass
class Tree:
    """A document root with known content, next to a file it must never leak."""

    base: Path  # holds root/ and secret.txt
    root: Path
    files: dict  # relative path -> content, for every regular file under root
    mtime: int = MTIME

    @property
    def secret_path(self) -> Path:
        return self.base / "secret.txt"

    def etag(self, rel: str) -> str:
        """The ETag nginx (and so wharf-static) gives a file: "<mtime hex>-<size hex>"."""
        st = (self.root / rel).stat()
        return f'"{int(st.st_mtime):x}-{st.st_size:x}"'


def build_tree(base: Path) -> Tree:
    """Fills base/www with the files the static tests use; base/secret.txt
    is the outside content no request may ever see."""
    base = Path(base)
    root = base / "www"
    root.mkdir(parents=True)
    (base / "secret.txt").write_bytes(SECRET)
    rng = random.Random(20240601)
    files = {
        "index.html": b"<!doctype html>\n<title>wharf</title>\n<p>index</p>\n",
        "style.css": b"body { color: #123456; }\n",
        "small.bin": rng.randbytes(1024),
        "big.bin": rng.randbytes(1 << 20),
        "app.js": b"console.log('plain app.js');\n" * 40,
        "app.js.gz": gzip.compress(b"console.log('gzipped app.js');\n" * 40, mtime=0),
        "data.json": b'{"answer": 42}\n',
        "sub/index.html": b"<p>sub index</p>\n",
        "sub/page.txt": b"sub page\n",
        "noindex/alpha-listed.txt": b"a\n",
        "noindex/beta-listed.txt": b"b\n",
        "my file.txt": b"a file with a space in its name\n",
        UTF8_NAME: b"a file with a UTF-8 name\n",
        "empty.txt": b"",
        "unknown.zzqx": b"of an unknown type\n",
        "README": b"no extension at all\n",
        "evil.js": b"console.log('evil.js plain');\n",
        "unreadable.txt": b"nobody may read this\n",
        "fresh.txt": b"version one\n",
    }
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
    # Links: inside the root (served) and out of it (never served).
    (root / "inside-link.css").symlink_to("style.css")
    (root / "sub" / "up-link.css").symlink_to("../style.css")
    (root / "passwd-link").symlink_to("/etc/passwd")
    (root / "secret-link.txt").symlink_to("../secret.txt")
    (root / "secret-abs-link.txt").symlink_to(base / "secret.txt")
    (root / "outside-dir").symlink_to(base)
    (root / "evil.js.gz").symlink_to("../secret.txt")  # a .gz sibling leading out
    os.mkfifo(root / "fifo")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            p = Path(dirpath) / name
            if not p.is_symlink() and (p.is_file() or p.is_dir()):
                os.utime(p, (MTIME, MTIME))
    os.utime(root, (MTIME, MTIME))
    (root / "unreadable.txt").chmod(0)
    return Tree(base=base, root=root, files=files)


@pytest.fixture
def make_tree(tmp_path):
    """make_tree() -> a fresh Tree in this test's tmp dir (for tests that change files)."""
    count = 0

    def make() -> Tree:
        nonlocal count
        count += 1
        return build_tree(tmp_path / f"tree{count}")

    return make


@pytest.fixture(scope="module")
def site_tree(tmp_path_factory) -> Tree:
    return build_tree(tmp_path_factory.mktemp("site"))


# Defaults for every test daemon: one worker, stderr logs, timeouts short
# enough for a failing test to end quickly but far from what a test waits.
STATIC_DEFAULTS = {
    "workers": 1,
    "keepalive_timeout": "10s",
    "client_header_timeout": "10s",
    "send_timeout": "10s",
    "error_log": "stderr",
    "access_log": "off",
    "log_level": "info",
}


def format_ini(section: str, settings: dict) -> str:
    lines = [f"[{section}]"]
    for key, value in settings.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "on" if value else "off"
        for v in value if isinstance(value, (list, tuple)) else [value]:
            lines.append(f"{key} = {v}")
    return "\n".join(lines) + "\n"


class StaticServer:
    """A wharf-static started as systemd would start it.

    sockets: names of the sockets to pass, in order: "http" (TCP on
    127.0.0.1, port 0), "unix" (a unix stream socket named "http"),
    "handoff" (a SOCK_SEQPACKET socket named "handoff")."""

    def __init__(
        self,
        binary: Path,
        root: Path,
        workdir: Path,
        *,
        config=None,
        args=(),
        sockets=("http",),
        watchdog_usec: int = 0,
        user=None,
        name: str = "wharf-static",
    ):
        self.workdir = Path(workdir)
        self.root = Path(root)
        self.config_path = self.workdir / f"{name}.ini"
        self.settings = {"root": str(root), **STATIC_DEFAULTS, **(config or {})}
        self.write_config()
        self.port = None
        self.unix_path = None
        self.handoff_path = None
        passed = []
        for kind in sockets:
            if kind == "http":
                s = wh.bind_tcp()
                self.port = s.getsockname()[1]
                passed.append(("http", s))
            elif kind == "unix":
                self.unix_path = self.workdir / "http.sock"
                passed.append(("http", wh.bind_unix(self.unix_path)))
            elif kind == "handoff":
                self.handoff_path = self.workdir / "handoff.sock"
                passed.append(("handoff", wh.bind_unix(self.handoff_path, socket.SOCK_SEQPACKET)))
            else:
                raise ValueError(kind)
        self.daemon = wh.Daemon(
            [binary, "-c", self.config_path, *args],
            sockets=passed,
            workdir=self.workdir,
            watchdog_usec=watchdog_usec,
            user=user,
            name=name,
        )
        self.connections = []

    # -- life cycle

    def start(self) -> "StaticServer":
        self.daemon.start()
        self.daemon.wait_ready()
        return self

    def write_config(self, **changes) -> None:
        self.settings.update(changes)
        self.config_path.write_text(format_ini("static", self.settings))

    def reload(self, timeout: float = 5.0) -> None:
        """SIGHUP, then waits for RELOADING=1 and a READY=1 after it."""
        mark = self.notify.mark()
        self.daemon.signal(signal.SIGHUP)
        i, _ = self.notify.wait_for("RELOADING=1", timeout, since=mark)
        self.notify.wait_for("READY=1", timeout, since=i)

    def stop(self, timeout: float = 5.0) -> int:
        return self.daemon.stop(timeout)

    def close(self) -> None:
        for c in self.connections:
            c.close()
        self.daemon.close()

    @property
    def notify(self) -> wh.NotifyListener:
        return self.daemon.notify

    @property
    def address(self) -> tuple:
        return ("127.0.0.1", self.port)

    # -- clients

    def connect(self, **kw) -> wh.HttpConnection:
        """A new client connection (closed at teardown if the test does not)."""
        address = self.address if self.port else self.unix_path
        c = wh.HttpConnection(address, **kw)
        self.connections.append(c)
        return c

    def get(self, target: str, headers=None, method: str = "GET", **kw) -> wh.Response:
        """One request on a new connection."""
        with wh.HttpConnection(self.address if self.port else self.unix_path) as c:
            return c.exchange(method, target, headers, **kw)


def stop_and_check(server: StaticServer) -> None:
    """Teardown: SIGTERM, exit status 0 within 5 s, no sanitizer report."""
    try:
        for c in server.connections:
            c.close()
        if server.daemon.proc is not None and not server.daemon.exit_expected:
            rc = server.stop()
            server.daemon.check_clean_exit(rc)
        elif server.daemon.proc is not None:
            bad = wh.sanitizer_lines(server.daemon.log_text())
            assert not bad, "sanitizer report:\n" + "\n".join(bad)
    finally:
        server.close()


@pytest.fixture
def start_static(static_binary, tmp_path):
    """start_static(root=None, config=..., args=..., sockets=("http",), ...) -> StaticServer.

    The server is running unless start=False was given. root defaults to a fresh Tree's root. Each server is stopped at teardown
    and must exit 0."""
    servers = []
    workdir = wh.short_tempdir()
    trees = []

    def start(root=None, *, start: bool = True, **kw) -> StaticServer:
        if root is None:
            tree = build_tree(tmp_path / f"tree{len(trees)}")
            trees.append(tree)
            root = tree.root
        sub = workdir / f"s{len(servers)}"
        sub.mkdir()
        sub.chmod(0o755)
        server = StaticServer(static_binary, root, sub, **kw)
        servers.append(server)
        return server.start() if start else server

    yield start
    errors = []
    for server in servers:
        try:
            stop_and_check(server)
        except AssertionError as e:
            errors.append(str(e))
    wh.remove_tree(workdir)
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture(scope="module")
def site(static_binary, site_tree):
    """One wharf-static for a whole module, serving site_tree with the defaults."""
    workdir = wh.short_tempdir()
    server = StaticServer(static_binary, site_tree.root, workdir, name="site")
    try:
        server.start()
        yield server
        stop_and_check(server)
    finally:
        server.close()  # again after stop_and_check: harmless
        wh.remove_tree(workdir)


@pytest.fixture
def workdir():
    """A short, world-traversable scratch directory (unix socket paths fit in it)."""
    d = wh.short_tempdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)
