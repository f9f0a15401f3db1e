#!/usr/bin/python3
"""Side-by-side HTTP benchmarks: wharf-static against nginx, h2o and lighttpd
(the static scenario), wharf-wsgi against Debian's uWSGI, both behind the same
nginx (the wsgi scenario), and the whole front, wharf-proxy with wharf-wsgi
and wharf-static against nginx with uWSGI (the proxy scenario).

Every server serves the same directory from its own loopback port, pinned to
one CPU with taskset; wrk runs pinned to another CPU. Rounds are interleaved
(round 1 runs every case on every server, then round 2...), so slow drift on
a shared machine spreads over all servers instead of landing on one. For each
run the server's CPU time is read from /proc before and after, which gives the
cost per request independently of how busy the load generator was.

Standard library only; run it with Debian's /usr/bin/python3 (./dev bench).
See tests/bench/README.md for what each number means.
"""

import argparse
import datetime
import grp
import gzip
import json
import os
import platform
import pwd
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from dataclasses import replace as dataclass_replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
BASELINE = "nginx"
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    path: str
    size: int
    headers: tuple = ()
    throughput: bool = False  # report MiB/s
    connect_errors_ok: bool = False  # a close-per-request case may see a few


CASES = (
    Case("1k-keepalive", "1 KiB file, keep-alive", "/1k.bin", 1024),
    Case("1k-close", "1 KiB file, Connection: close", "/1k.bin", 1024,
         headers=("Connection: close",), connect_errors_ok=True),
    Case("1m-keepalive", "1 MiB file, keep-alive", "/1m.bin", 1 << 20, throughput=True),
)

# wrk calls done() once at the end of a run; printing the summary as JSON
# avoids parsing wrk's rounded, unit-suffixed text ("1.23ms", "5.12GB").
WRK_REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WHARF-BENCH {"duration_us": %.0f, "requests": %.0f, "bytes": %.0f, ' ..
    '"connect_errors": %.0f, "read_errors": %.0f, "write_errors": %.0f, ' ..
    '"status_errors": %.0f, "timeouts": %.0f, "p50_us": %.0f, "p99_us": %.0f, ' ..
    '"max_us": %.0f}\\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def note(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stat_fields(pid):
    """Fields of /proc/PID/stat after the command name, so index 0 is field 3
    (state). The name may contain spaces and parentheses: split at the last ')'."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def process_tree(root):
    """The pid and every live process whose parent chain leads to it."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(proc_stat_fields(entry)[1])
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_times(pids):
    """(utime, stime) of the processes in seconds; /proc/PID/stat counts all
    their threads."""
    user = system = 0
    for pid in pids:
        try:
            fields = proc_stat_fields(pid)
        except OSError:
            continue
        user += int(fields[11])  # field 14
        system += int(fields[12])  # field 15
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pids):
    return sum(cpu_times(pids))


def unprivileged_user():
    """(user, group) that servers started as root switch their workers to."""
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_name, grp.getgrgid(nobody.pw_gid).gr_name


class Server:
    """One server under test: a config written from a template, one process tree.

    Subclasses set name, binary and TEMPLATE (string.Template: $port, $root,
    $state, plus whatever params() adds) and say how to run the binary. $state
    is a directory of the server's own for pid, log and temp files; servers
    started as root switch to nobody before opening some of those, so it
    belongs to nobody then."""

    name = ""
    binary = ""
    TEMPLATE = ""
    config_name = ""

    def __init__(self, tmp, root, cpu):
        self.tmp = tmp
        self.root = root
        self.cpu = cpu
        self.state = tmp / self.name
        self.port = None
        self.proc = None
        self.log_path = tmp / f"{self.name}.log"

    def executable(self):
        return shutil.which(self.binary)

    def missing_reason(self):
        if self.executable() is None:
            return f"{self.binary} not installed"
        return None

    def version(self):
        return None

    def params(self):
        return {}

    def command(self, config):
        raise NotImplementedError

    def start(self):
        """Start the server; return None when it serves, else why it did not."""
        self.port = free_port()
        self.state.mkdir(mode=0o755)
        if os.geteuid() == 0:
            user, group = unprivileged_user()
            shutil.chown(self.state, user, group)
        config = self.tmp / self.config_name
        config.write_text(string.Template(self.TEMPLATE).substitute(
            port=self.port, root=self.root, state=self.state, **self.params()))
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                            "WATCHDOG_USEC", "WATCHDOG_PID")}
        env.update(self.env())
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["taskset", "-c", str(self.cpu), *self.command(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with status {self.proc.returncode}\n{self.log_tail()}"
            try:
                self.probe()
                return None
            except OSError:
                time.sleep(0.05)
        self.stop()
        return f"not listening on port {self.port} after {START_TIMEOUT:.0f} s\n{self.log_tail()}"

    def probe(self):
        """Raises OSError until the server accepts connections."""
        socket.create_connection(("127.0.0.1", self.port), timeout=1).close()

    def env(self):
        """Variables added to the server's environment."""
        return {}

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def pids(self):
        return process_tree(self.proc.pid)

    def stop(self):
        if self.proc is None:
            return
        # start_new_session made the server a process group leader (taskset
        # execs it), so the group holds the whole tree.
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None

    def log_tail(self, lines=15):
        """The end of what the server printed and of its own error log."""
        tail = []
        for path in (self.log_path, self.state / "error.log"):
            try:
                text = path.read_text(errors="replace").strip().splitlines()
            except OSError:
                continue
            tail += ["    " + line for line in text[-lines:]]
        return "\n".join(tail)


def command_output(cmd):
    """stdout and stderr of a short command ("" if it cannot run): versions
    and build options, which servers print on either."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout + out.stderr


def first_line(cmd):
    text = command_output(cmd).strip()
    return text.splitlines()[0] if text else None


class WharfStatic(Server):
    name = "wharf-static"
    config_name = "wharf-static.ini"
    # gzip_static off: wrk sends no Accept-Encoding, and the others do not look
    # for .gz siblings either.
    TEMPLATE = """\
[static]
root = $root
listen = 127.0.0.1:$port
workers = 1
access_log = off
error_log = stderr
log_level = warning
gzip_static = off
keepalive_requests = 1000000
splice_min = $splice_min
zero_copy = $zero_copy
"""

    def __init__(self, tmp, root, cpu, binary, variant="sendfile"):
        # How bodies from splice_min up leave: sendfile(2) (the default),
        # io_uring splice file -> pipe -> socket, or (copy) never zero-copy:
        # read into a buffer and send. One run measures all three.
        if variant != "sendfile":
            self.name = f"wharf-static-{variant}"
        self.splice_min = "1G" if variant == "copy" else "256k"
        self.zero_copy = "splice" if variant == "splice" else "sendfile"
        super().__init__(tmp, root, cpu)
        self.path = binary

    def executable(self):
        return str(self.path) if os.access(self.path, os.X_OK) else None

    def missing_reason(self):
        if self.executable() is None:
            return f"{self.path} not found (build it: ./dev build)"
        return None

    def version(self):
        return first_line([self.executable(), "--version"])

    def params(self):
        return {"splice_min": self.splice_min, "zero_copy": self.zero_copy}

    def command(self, config):
        return [self.executable(), "-c", str(config)]


class Nginx(Server):
    binary = "nginx"
    config_name = "nginx.conf"
    TEMPLATE = """\
daemon off;
master_process on;
worker_processes 1;
$user
pid $state/nginx.pid;
error_log $state/error.log warn;

events {
    worker_connections 4096;
}

http {
    types {
        application/octet-stream bin;
    }
    default_type application/octet-stream;
    access_log off;
    sendfile $sendfile;
    tcp_nopush on;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
$temp_paths
    server {
        listen 127.0.0.1:$port;
        root $root;
    }
}
"""
    # Modules that have a temp path; the compiled-in defaults under
    # /var/lib/nginx are not writable without root.
    TEMP_PATHS = {
        "client_body_temp_path": None,
        "proxy_temp_path": "http_proxy",
        "fastcgi_temp_path": "http_fastcgi",
        "uwsgi_temp_path": "http_uwsgi",
        "scgi_temp_path": "http_scgi",
    }

    def __init__(self, tmp, root, cpu, sendfile):
        self.sendfile = sendfile
        self.name = "nginx" if sendfile else "nginx-nosendfile"
        super().__init__(tmp, root, cpu)
        self.config_name = f"{self.name}.conf"

    def version(self):
        return first_line([self.executable(), "-v"])

    def params(self):
        configure = command_output([self.executable(), "-V"])
        lines = []
        for directive, module in self.TEMP_PATHS.items():
            if module is None or f"--without-{module}_module" not in configure:
                lines.append(f"    {directive} {self.state}/{directive};")
        user = ""
        if os.geteuid() == 0:
            user = "user {} {};".format(*unprivileged_user())
        return {"sendfile": "on" if self.sendfile else "off", "user": user,
                "temp_paths": "\n".join(lines)}

    def command(self, config):
        # -e: the compiled-in error log, opened before the configuration is
        # read, may not be writable.
        return [self.executable(), "-p", str(self.state), "-e", str(self.state / "error.log"),
                "-c", str(config)]


class H2o(Server):
    name = "h2o"
    binary = "h2o"
    config_name = "h2o.conf"
    TEMPLATE = """\
num-threads: 1
$user
pid-file: $state/h2o.pid
error-log: $state/error.log
http1-request-timeout: 65
listen:
  host: 127.0.0.1
  port: $port
hosts:
  default:
    paths:
      /:
        file.dir: $root
"""

    def version(self):
        return first_line([self.executable(), "--version"])

    def params(self):
        user = ""
        if os.geteuid() == 0:
            user = "user: {}".format(unprivileged_user()[0])
        return {"user": user}

    def command(self, config):
        return [self.executable(), "-c", str(config)]


class Lighttpd(Server):
    name = "lighttpd"
    binary = "lighttpd"
    config_name = "lighttpd.conf"
    # max-keep-alive-requests is a 16-bit value in lighttpd 1.4: 65535 is its
    # largest setting.
    TEMPLATE = """\
server.document-root = "$root"
server.bind = "127.0.0.1"
server.port = $port
server.errorlog = "$state/error.log"
server.max-worker = 0
server.max-keep-alive-requests = 65535
server.max-keep-alive-idle = 65
$user
mimetype.assign = (".bin" => "application/octet-stream")
"""

    def version(self):
        return first_line([self.executable(), "-v"])

    def params(self):
        user = ""
        if os.geteuid() == 0:
            user = 'server.username = "{}"\nserver.groupname = "{}"'.format(
                *unprivileged_user())
        return {"user": user}

    def command(self, config):
        return [self.executable(), "-D", "-f", str(config)]


@dataclass
class Run:
    server: str
    case: str
    round: int
    valid: bool = False
    problem: str = ""
    requests: int = 0
    duration_s: float = 0.0
    req_per_s: float = 0.0
    p99_ms: float = 0.0
    server_cpu_s: float = 0.0
    cpu_us_per_req: float = 0.0
    req_per_core_s: float = 0.0
    mib_per_s: float = 0.0
    app_cpu_s: float = 0.0  # wsgi: the application server's process tree alone
    app_cpu_us_per_req: float = 0.0
    app_user_us_per_req: float = 0.0  # wsgi: of which in user space (the rest: the kernel)
    rss_kib_per_worker: float = 0.0  # wsgi: VmRSS of the workers after the run
    wrk: dict = field(default_factory=dict)


def verify(url, content):
    """One GET outside wrk: the file must come back whole, with status 200."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with opener.open(request, timeout=5) as response:
            body = response.read()
            status = response.status
    except (OSError, urllib.error.URLError) as e:
        return f"GET {url}: {e}"
    if status != 200:
        return f"GET {url}: status {status}"
    if len(body) != len(content):
        return f"GET {url}: {len(body)} bytes, expected {len(content)}"
    if body != content:
        return f"GET {url}: body differs from the file"
    return None


def run_wrk(args, server, case, rnd, lua, content):
    run = Run(server.name, case.name, rnd)
    if not server.alive():
        run.problem = f"server is not running\n{server.log_tail()}"
        return run
    url = f"http://127.0.0.1:{server.port}{case.path}"
    problem = verify(url, content)
    if problem:
        run.problem = problem
        return run

    cmd = ["taskset", "-c", str(args.client_cpu), "wrk", "-t1", f"-c{args.connections}",
           f"-d{args.duration}s", "--latency", "-s", str(lua)]
    for header in case.headers:
        cmd += ["-H", header]
    cmd.append(url)

    app_pids = server.app_pids() if hasattr(server, "app_pids") else []
    before, app_before = cpu_seconds(server.pids()), cpu_times(app_pids)
    out = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    after, app_after = cpu_seconds(server.pids()), cpu_times(app_pids)

    summary = None
    for line in out.stdout.splitlines():
        if line.startswith("WHARF-BENCH "):
            summary = json.loads(line.removeprefix("WHARF-BENCH "))
    if out.returncode != 0 or summary is None:
        run.problem = f"wrk failed (status {out.returncode}): {out.stderr.strip()}"
        return run
    run.wrk = summary

    n = int(summary["requests"])
    run.requests = n
    run.duration_s = summary["duration_us"] / 1e6
    run.req_per_s = n / run.duration_s
    run.p99_ms = summary["p99_us"] / 1e3
    run.server_cpu_s = after - before
    run.app_cpu_s = sum(app_after) - sum(app_before)
    if n > 0:
        run.cpu_us_per_req = run.server_cpu_s * 1e6 / n
        run.app_cpu_us_per_req = run.app_cpu_s * 1e6 / n
        run.app_user_us_per_req = (app_after[0] - app_before[0]) * 1e6 / n
    if hasattr(server, "worker_rss_kib"):
        run.rss_kib_per_worker = server.worker_rss_kib()
    if run.server_cpu_s > 0:
        run.req_per_core_s = n / run.server_cpu_s
    run.mib_per_s = n * case.size / run.duration_s / (1 << 20)

    problems = []
    if n == 0:
        problems.append("no request completed")
    for key in ("status_errors", "read_errors", "write_errors", "timeouts"):
        if summary[key]:
            problems.append(f"{summary[key]:.0f} {key.replace('_', ' ')}")
    connect_limit = n // 1000 if case.connect_errors_ok else 0
    if summary["connect_errors"] > connect_limit:
        problems.append(f"{summary['connect_errors']:.0f} connect errors "
                        f"(allowed: {connect_limit})")
    if n and summary["bytes"] < n * case.size:
        problems.append(f"{summary['bytes']:.0f} bytes read for {n} responses "
                        f"of {case.size} bytes")
    if not server.alive():
        problems.append(f"server exited during the run\n{server.log_tail()}")
    run.problem = "; ".join(problems)
    run.valid = not problems
    return run


def median(runs, attr):
    values = [getattr(r, attr) for r in runs]
    return statistics.median(values) if values else None


def fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def ratio(value, base):
    if value is None or not base:
        return "n/a"
    return f"{value / base:.2f}x"


def plural(n, word):
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summarize(runs, servers, args):
    """Median per case and server, and a Markdown table per case."""
    medians = {}
    tables = []
    for case in CASES:
        per_server = {}
        for server in servers:
            valid = [r for r in runs if r.case == case.name and r.server == server.name
                     and r.valid]
            per_server[server.name] = {
                "valid_rounds": len(valid),
                **{attr: median(valid, attr) for attr in
                   ("req_per_s", "p99_ms", "cpu_us_per_req", "req_per_core_s", "mib_per_s")},
            }
        medians[case.name] = per_server
        base = per_server.get(BASELINE, {})

        head = ["server", "req/s", f"vs {BASELINE}", "p99 ms", "CPU µs/req",
                "req/s per core", f"vs {BASELINE}"]
        if case.throughput:
            head[1:1] = ["MiB/s"]
        lines = [f"### {case.title}",
                 "",
                 f"{args.connections} connections, median of {plural(args.rounds, 'round')} "
                 f"of {args.duration} s; server on CPU {args.server_cpu}, wrk on CPU "
                 f"{args.client_cpu}.",
                 "",
                 "| " + " | ".join(head) + " |",
                 "|---" + "|--:" * (len(head) - 1) + "|"]
        for server in servers:
            m = per_server[server.name]
            if not m["valid_rounds"]:
                cells = [server.name] + ["failed"] + [""] * (len(head) - 2)
            else:
                cells = [server.name, fmt(m["req_per_s"], ",.0f"),
                         ratio(m["req_per_s"], base.get("req_per_s")),
                         fmt(m["p99_ms"], ".2f"), fmt(m["cpu_us_per_req"], ".1f"),
                         fmt(m["req_per_core_s"], ",.0f"),
                         ratio(m["req_per_core_s"], base.get("req_per_core_s"))]
                if case.throughput:
                    cells[1:1] = [fmt(m["mib_per_s"], ",.0f")]
                if m["valid_rounds"] < args.rounds:
                    cells[0] += f" ({m['valid_rounds']}/{args.rounds} rounds)"
            lines.append("| " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
    return medians, tables


# ---------------------------------------------------------------------------
# The wsgi scenario: nginx -> uwsgi_pass -> wharf-wsgi or Debian's uWSGI

WSGI_BASELINE = "uwsgi"
HELLO_BODY = b"Hello, World!\n"  # tests/integration/apps/hello.py
DJANGO_POSTS = 20  # what /api/posts/ lists at most

WSGI_CASES = (
    Case("hello", "hello-world WSGI application (tests/integration/apps/hello.py)", "/",
         len(HELLO_BODY)),
    # size: the JSON's length, known once the database is made.
    Case("django-json", f"Django JSON view /api/posts/ ({DJANGO_POSTS} posts, one query)",
         "/api/posts/", 0),
)


@dataclass(frozen=True)
class WsgiApp:
    name: str  # a case name
    ini: str  # the ini lines that load it
    env: tuple = ()  # (name, value) pairs for the application server


class WsgiBackend(Server):
    """An application server behind nginx: master, one worker process,
    enable-threads, a unix socket in its state directory (the tutorial's
    settings). Subclasses set kind, binary and TEMPLATE ($app: the lines that
    load the application, $socket)."""

    kind = ""

    def __init__(self, tmp, cpu, app):
        self.name = f"{self.kind}-{app.name}"
        self.config_name = f"{self.name}.ini"
        super().__init__(tmp, None, cpu)
        self.app = app

    @property
    def socket_path(self):
        return self.state / "app.sock"

    def probe(self):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(str(self.socket_path))

    def env(self):
        return {"PYTHONDONTWRITEBYTECODE": "1", **dict(self.app.env)}

    def params(self):
        return {"app": self.app.ini, "socket": self.socket_path}

    def worker_pids(self):
        """The workers: the master's process tree without the master."""
        return [pid for pid in self.pids() if pid != self.proc.pid]

    def worker_rss_kib(self):
        """Mean VmRSS of the worker processes, in KiB."""
        sizes = []
        for pid in self.worker_pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            sizes.append(int(line.split()[1]))
            except OSError:
                continue
        return statistics.mean(sizes) if sizes else 0.0


class WharfWsgi(WsgiBackend):
    kind = "wharf-wsgi"
    TEMPLATE = """\
[uwsgi]
$app
socket = $socket
chmod-socket = 666
master = true
processes = 1
enable-threads = true
"""

    def __init__(self, tmp, cpu, app, binary):
        super().__init__(tmp, cpu, app)
        self.path = binary

    def executable(self):
        return str(self.path) if os.access(self.path, os.X_OK) else None

    def missing_reason(self):
        if self.executable() is None:
            return f"{self.path} not found (build it: ./dev build)"
        return None

    def version(self):
        return first_line([self.executable(), "--version"])

    def command(self, config):
        return [self.executable(), "--ini", str(config)]


class Uwsgi(WsgiBackend):
    kind = "uwsgi"
    binary = "uwsgi"
    # disable-logging: uWSGI logs every request by default, wharf-wsgi does
    # not; the log line would be measured, not the serving.
    TEMPLATE = """\
[uwsgi]
plugins = python3
$app
socket = $socket
chmod-socket = 666
master = true
processes = 1
enable-threads = true
need-app = true
disable-logging = true
"""

    def missing_reason(self):
        if self.executable() is None:
            return "uwsgi not installed (packages uwsgi, uwsgi-plugin-python3)"
        if not Path("/usr/lib/uwsgi/plugins/python3_plugin.so").exists():
            return "uwsgi-plugin-python3 not installed"
        return None

    def version(self):
        return first_line([self.executable(), "--version"])

    def command(self, config):
        return [self.executable(), "--ini", str(config)]


class UwsgiFloor(WsgiBackend):
    """tests/bench/uwsgi_floor.c: accept, read the uwsgi packet, send a fixed
    hello, close; no Python. What every server behind uwsgi_pass pays at the
    least, shown as the hello table's floor row."""

    kind = "floor"
    SOURCE = REPO / "tests/bench/uwsgi_floor.c"
    TEMPLATE = """\
[uwsgi]
socket = $socket
"""

    def executable(self):
        path = self.tmp / "uwsgi_floor"
        return str(path) if path.exists() else None

    def missing_reason(self):
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            return "no C compiler to build tests/bench/uwsgi_floor.c"
        out = subprocess.run([cc, "-O2", "-o", str(self.tmp / "uwsgi_floor"), str(self.SOURCE)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            return f"tests/bench/uwsgi_floor.c does not build: {out.stderr.strip()[-300:]}"
        return None

    def version(self):
        return first_line([self.executable(), "--version"])

    def command(self, config):
        return [self.executable(), "--ini", str(config)]

    def worker_pids(self):
        return self.pids()  # one process, no master


class NginxFront(Nginx):
    """One nginx (one worker) in front of every application server: a server
    block per backend, each on a port of its own, the same uwsgi_pass
    location for all."""

    TEMPLATE = """\
daemon off;
master_process on;
worker_processes 1;
$user
pid $state/nginx.pid;
error_log $state/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
$temp_paths
$servers
}
"""
    SERVER = """\
    server {
        listen 127.0.0.1:$port;
        location / {
            include /etc/nginx/uwsgi_params;
            uwsgi_pass unix:$socket;
        }
    }
"""

    def __init__(self, tmp, cpu, backends):
        super().__init__(tmp, None, cpu, sendfile=True)
        self.name = "nginx-front"
        self.config_name = "nginx-front.conf"
        self.state = tmp / self.name
        self.log_path = tmp / f"{self.name}.log"
        self.ports = {b.name: free_port() for b in backends}
        self.backends = backends

    def probe(self):
        for port in self.ports.values():
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

    def params(self):
        servers = "".join(string.Template(self.SERVER).substitute(
            port=self.ports[b.name], socket=b.socket_path) for b in self.backends)
        return {**super().params(), "servers": servers}


class Stack:
    """What one wrk run measures: nginx's port for one backend, the CPU of
    nginx and that backend together (pids) and of the backend alone."""

    def __init__(self, front, backend):
        self.front = front
        self.backend = backend
        self.name = backend.kind
        self.port = front.ports[backend.name]

    def alive(self):
        return self.front.alive() and self.backend.alive()

    def pids(self):
        return self.front.pids() + self.backend.pids()

    def app_pids(self):
        return self.backend.pids()

    def worker_rss_kib(self):
        return self.backend.worker_rss_kib()

    def log_tail(self):
        return self.front.log_tail() + "\n" + self.backend.log_tail()


def prepare_django(tmp):
    """A copy of examples/server_dev with a database of DJANGO_POSTS posts.
    Returns (project directory, environment), or a reason it cannot run."""
    project = tmp / "server_dev"
    shutil.copytree(REPO / "examples/server_dev", project, ignore=shutil.ignore_patterns(
        "run", "db.sqlite3", "media", "static_root", "__pycache__"))
    (project / "run").mkdir()
    env = {
        "DJANGO_DATABASE_PATH": str(tmp / "django.sqlite3"),
        "DJANGO_STATIC_ROOT": str(tmp / "django-static"),
        "DJANGO_MEDIA_ROOT": str(tmp / "django-media"),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    make_posts = (
        "from board.models import Post\n"
        f"for i in range({DJANGO_POSTS}):\n"
        "    Post.objects.create(title=f'Post {i}', body='Some text for the board. ' * 8)\n")
    for cmd in (["migrate", "--noinput"], ["shell", "-c", make_posts]):
        out = subprocess.run(["/usr/bin/python3", "manage.py", *cmd], cwd=project,
                             env={**os.environ, **env}, capture_output=True, text=True,
                             timeout=120)
        if out.returncode != 0:
            return None, None, f"manage.py {cmd[0]} failed: {out.stderr.strip()[-500:]}"
    return project, env, None


def fetch_gzip(url):
    """(body as sent, Content-Encoding) of a GET that accepts gzip."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Connection": "close",
                                                   "Accept-Encoding": "gzip"})
    with opener.open(request, timeout=10) as response:
        return response.read(), response.headers.get("Content-Encoding")


def fetch(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, headers={"Connection": "close"}),
                     timeout=10) as response:
        return response.read()


def summarize_wsgi(runs, stacks, cases, args):
    medians, tables = {}, []
    attrs = ("req_per_s", "p99_ms", "cpu_us_per_req", "app_cpu_us_per_req",
             "app_user_us_per_req", "rss_kib_per_worker")
    for case in cases:
        per_server = {}
        names = [s.name for s in stacks if s.case == case.name]
        for name in names:
            valid = [r for r in runs if r.case == case.name and r.server == name and r.valid]
            per_server[name] = {"valid_rounds": len(valid),
                                **{a: median(valid, a) for a in attrs}}
        medians[case.name] = per_server
        base = per_server.get(WSGI_BASELINE, {})
        head = ["server", "req/s", f"vs {WSGI_BASELINE}", "p99 ms", "CPU µs/req (stack)",
                "CPU µs/req (app server)", "of which user space", f"app server vs {WSGI_BASELINE}",
                "RSS/worker MiB"]
        lines = [f"### {case.title}",
                 "",
                 f"nginx (one worker) -> uwsgi_pass -> the server; {args.connections} "
                 f"connections, median of {plural(args.rounds, 'round')} of {args.duration} s; "
                 f"servers on CPU {args.server_cpu}, wrk on CPU {args.client_cpu}.",
                 "",
                 "| " + " | ".join(head) + " |",
                 "|---" + "|--:" * (len(head) - 1) + "|"]
        if "floor" in names:
            lines[4:4] = ["floor: tests/bench/uwsgi_floor.c, a C server that only accepts, "
                          "reads the packet, sends a fixed response and closes; no server "
                          "can spend less per request.", ""]
        for name in names:
            m = per_server[name]
            if not m["valid_rounds"]:
                cells = [name, "failed"] + [""] * (len(head) - 2)
            else:
                cells = [name, fmt(m["req_per_s"], ",.0f"),
                         ratio(m["req_per_s"], base.get("req_per_s")),
                         fmt(m["p99_ms"], ".2f"), fmt(m["cpu_us_per_req"], ".1f"),
                         fmt(m["app_cpu_us_per_req"], ".1f"),
                         fmt(m["app_user_us_per_req"], ".1f"),
                         ratio(m["app_cpu_us_per_req"], base.get("app_cpu_us_per_req")),
                         fmt(m["rss_kib_per_worker"] / 1024, ".1f")]
                if m["valid_rounds"] < args.rounds:
                    cells[0] += f" ({m['valid_rounds']}/{args.rounds} rounds)"
            lines.append("| " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
    return medians, tables


def main_wsgi(args):
    tmp = Path(tempfile.mkdtemp(prefix="wharf-bench-"))
    started = []
    try:
        tmp.chmod(0o755)
        lua = tmp / "report.lua"
        lua.write_text(WRK_REPORT_LUA)
        skipped = {}

        apps = [WsgiApp("hello", f"pythonpath = {REPO / 'tests/integration/apps'}\n"
                                 "module = hello:application")]
        project, env, reason = prepare_django(tmp)
        if reason:
            skipped["django-json"] = reason
            note(f"django-json: SKIPPED: {reason}")
        else:
            apps.append(WsgiApp("django-json",
                                f"chdir = {project}\nmodule = server_dev.wsgi:application",
                                tuple(env.items())))

        backends = []
        for app in apps:
            candidates = [WharfWsgi(tmp, args.server_cpu, app, args.wharf_wsgi),
                          Uwsgi(tmp, args.server_cpu, app)]
            if app.name == "hello":
                candidates.append(UwsgiFloor(tmp, args.server_cpu, app))
            for backend in candidates:
                if backend.kind in args.skip:
                    skipped[backend.name] = "left out with --skip"
                    continue
                reason = backend.missing_reason() or backend.start()
                started.append(backend)
                if reason:
                    skipped[backend.name] = reason.splitlines()[0]
                    note(f"{backend.name}: SKIPPED: {reason}")
                else:
                    backends.append(backend)
                    note(f"{backend.name}: serving on {backend.socket_path}")
        if not backends:
            sys.exit("bench: no application server could be started")
        front = NginxFront(tmp, args.server_cpu, backends)
        reason = front.missing_reason() or front.start()
        started.append(front)
        if reason:
            sys.exit(f"bench: nginx does not start: {reason}")

        stacks = []
        for backend in backends:
            stack = Stack(front, backend)
            stack.case = backend.app.name
            stacks.append(stack)

        # What each case must return: hello's fixed body; the Django JSON as
        # the first server gives it (the same database for all).
        cases, contents = [], {}
        for case in WSGI_CASES:
            mine = [s for s in stacks if s.case == case.name]
            if not mine:
                continue
            if case.name == "hello":
                contents[case.name] = HELLO_BODY
            else:
                try:
                    contents[case.name] = fetch(f"http://127.0.0.1:{mine[0].port}{case.path}")
                except OSError as e:
                    sys.exit(f"bench: GET {case.path} from {mine[0].name}: {e}")
                if contents[case.name].count(b'"id"') != DJANGO_POSTS:
                    sys.exit(f"bench: {case.path} does not list {DJANGO_POSTS} posts")
                case = dataclass_replace(case, size=len(contents[case.name]))
            cases.append(case)

        runs = []
        for rnd in range(1, args.rounds + 1):
            for case in cases:
                for stack in (s for s in stacks if s.case == case.name):
                    note(f"round {rnd}/{args.rounds}, {case.name}, {stack.name}")
                    run = run_wrk(args, stack, case, rnd, lua, contents[case.name])
                    if not run.valid:
                        note(f"  INVALID RUN: {run.problem}")
                    runs.append(run)

        medians, tables = summarize_wsgi(runs, stacks, cases, args)
        return publish("wsgi", args, tables, skipped, runs, medians, cases,
                       servers={b.name: {"version": b.version()} for b in [*backends, front]},
                       baseline=WSGI_BASELINE)
    finally:
        for server in started:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# The proxy scenario: the whole front, wharf-proxy + wharf-wsgi / wharf-static
# against nginx + uWSGI / nginx, each stack's CPU summed over all its processes

PROXY_BASELINE = "nginx+uwsgi"
UPLOAD_SIZE = 20 << 20
UPLOAD_APP = '''\
def application(environ, start_response):
    n = int(environ.get("CONTENT_LENGTH") or 0)
    inp = environ["wsgi.input"]
    got = 0
    while got < n:
        b = inp.read(min(1 << 20, n - got))
        if not b:
            break
        got += len(b)
    body = b"ok %d\\n" % got
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''
BIG_APP = '''\
BODY = bytes(range(256)) * 4096


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(BODY)))])
    return [BODY]
'''
BIG_BODY = bytes(range(256)) * 4096
# A page as a Django template renders one: 16 KiB of varied HTML lines.
PAGE_APP = '''\
BODY = b"".join(b'<tr><td><a href="/board/%d/">Post %d</a></td><td>%d comments</td></tr>\\n'
                % (i, i, i * 7 % 13) for i in range(400))[:16384]


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(BODY)))])
    return [BODY]
'''
UPLOAD_LUA = f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = string.rep("x", {UPLOAD_SIZE})
"""

PROXY_CASES = (
    Case("hello", "hello-world WSGI application", "/", len(HELLO_BODY)),
    Case("static-1k", "1 KiB static file, keep-alive", "/static/1k.bin", 1024),
    Case("static-1m", "1 MiB static file, keep-alive", "/static/1m.bin", 1 << 20,
         throughput=True),
    Case("app-1m", "1 MiB response from the application (spliced through wharf-proxy)", "/",
         len(BIG_BODY), throughput=True),
    Case("upload-20m", "20 MiB upload (POST, the application reads it all)", "/upload",
         len(b"ok 0\n")),
    Case("django-json", f"Django JSON view /api/posts/ ({DJANGO_POSTS} posts)",
         "/api/posts/", 0),
)
# After Django, as it shows the front's own cost: size, the smaller of the
# stacks' compressed lengths, is known once they run.
PROXY_CASES += (
    Case("page-gzip", "16 KiB HTML page from the application, gzip on (level 1) for a client "
         "that accepts it", "/", 0, headers=("Accept-Encoding: gzip",)),
)


class WharfProxy(Server):
    """wharf-proxy with one event loop, its config given as text ($port filled in)."""

    config_name = ""

    def __init__(self, tmp, cpu, name, binary, config):
        self.name = name
        self.config_name = f"{name}.ini"
        super().__init__(tmp, None, cpu)
        self.path = binary
        self.TEMPLATE = config

    def executable(self):
        return str(self.path) if os.access(self.path, os.X_OK) else None

    def missing_reason(self):
        if self.executable() is None:
            return f"{self.path} not found (build it: ./dev build)"
        return None

    def version(self):
        return first_line([self.executable(), "--version"])

    def command(self, config):
        return [self.executable(), "-c", str(config)]


class WharfStaticHandoff(WharfStatic):
    """wharf-static on a handoff socket only, for wharf-proxy to hand connections to."""

    TEMPLATE = """\
[static]
root = $root
prefix = /static/
handoff = $state/static.handoff
workers = 1
access_log = off
error_log = stderr
log_level = warning
gzip_static = off
keepalive_requests = 1000000
"""

    def __init__(self, tmp, root, cpu, binary):
        super().__init__(tmp, root, cpu, binary)
        self.name = "wharf-static-handoff"
        self.state = tmp / self.name
        self.log_path = tmp / f"{self.name}.log"
        self.config_name = "wharf-static-handoff.ini"

    @property
    def handoff_path(self):
        return self.state / "static.handoff"

    def probe(self):
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(1)
            s.connect(str(self.handoff_path))


class UploadNginxFront(NginxFront):
    """The wsgi scenario's nginx front, with room for the upload's body, and
    for each of gzip_backends a server block (port "NAME-gzip") with gzip
    on (text/html, level 1: nginx's defaults)."""

    GZIP_SERVER = """\
    server {
        listen 127.0.0.1:$port;
        gzip on;
        location / {
            include /etc/nginx/uwsgi_params;
            uwsgi_pass unix:$socket;
        }
    }
"""

    def __init__(self, tmp, cpu, backends, gzip_backends=()):
        super().__init__(tmp, cpu, backends)
        self.gzip_backends = list(gzip_backends)
        for b in self.gzip_backends:
            self.ports[f"{b.name}-gzip"] = free_port()

    def params(self):
        p = super().params()
        p["temp_paths"] += "\n    client_max_body_size 100m;"
        p["servers"] += "".join(string.Template(self.GZIP_SERVER).substitute(
            port=self.ports[f"{b.name}-gzip"], socket=b.socket_path) for b in self.gzip_backends)
        return p


class ProxyStack:
    """One stack of the proxy scenario: the processes it is made of, the port
    wrk talks to, and which of them is the application server."""

    def __init__(self, name, case, port, servers, app=None):
        self.name = name
        self.case = case
        self.port = port
        self.servers = servers
        self.app = app

    def alive(self):
        return all(s.alive() for s in self.servers)

    def pids(self):
        return [p for s in self.servers for p in s.pids()]

    def app_pids(self):
        return self.app.pids() if self.app else []

    def worker_rss_kib(self):
        """Here: the RSS of the whole stack (every process), in KiB."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                continue
        return total

    def log_tail(self):
        return "\n".join(s.log_tail() for s in self.servers)


def proxy_config(upstream_lines, locations, body_limit="100M", server_extra=""):
    return ("[server]\nlisten = 127.0.0.1:$port\nworkers = 1\naccess_log = off\n"
            f"log_level = warning\nclient_max_body_size = {body_limit}\n"
            "keepalive_requests = 1000000\n" + server_extra + "\n" + upstream_lines + "\n" +
            locations)


def summarize_proxy(runs, stacks, cases, args):
    medians, tables = {}, []
    attrs = ("req_per_s", "p99_ms", "cpu_us_per_req", "rss_kib_per_worker", "mib_per_s")
    for case in cases:
        names = [s.name for s in stacks if s.case == case.name]
        per = {}
        for name in names:
            valid = [r for r in runs if r.case == case.name and r.server == name and r.valid]
            per[name] = {"valid_rounds": len(valid), **{a: median(valid, a) for a in attrs}}
        medians[case.name] = per
        base_name = next((n for n in names if n.startswith("nginx")), None)
        base = per.get(base_name, {})
        head = ["stack", "req/s", f"vs {base_name}", "p99 ms", "CPU µs/req (all processes)",
                "CPU vs nginx", "RSS MiB (all processes)"]
        if case.throughput:
            head.insert(2, "MiB/s")
        conns = 4 if case.name == "upload-20m" else args.connections
        lines = [f"### {case.title}", "",
                 f"{conns} connections, median of {plural(args.rounds, 'round')} of "
                 f"{args.duration} s; every process on CPU {args.server_cpu}, wrk on CPU "
                 f"{args.client_cpu}.", "",
                 "| " + " | ".join(head) + " |", "|---" + "|--:" * (len(head) - 1) + "|"]
        for name in names:
            m = per[name]
            if not m["valid_rounds"]:
                cells = [name, "failed"] + [""] * (len(head) - 2)
            else:
                cells = [name, fmt(m["req_per_s"], ",.0f"),
                         ratio(m["req_per_s"], base.get("req_per_s")),
                         fmt(m["p99_ms"], ".2f"), fmt(m["cpu_us_per_req"], ".1f"),
                         ratio(m["cpu_us_per_req"], base.get("cpu_us_per_req")),
                         fmt(m["rss_kib_per_worker"] / 1024, ".1f")]
                if case.throughput:
                    cells.insert(2, fmt(m["mib_per_s"], ",.0f"))
            lines.append("| " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
    return medians, tables


def main_proxy(args):
    tmp = Path(tempfile.mkdtemp(prefix="wharf-bench-"))
    started = []
    try:
        tmp.chmod(0o755)
        report = tmp / "report.lua"
        report.write_text(WRK_REPORT_LUA)
        upload_lua = tmp / "upload.lua"
        upload_lua.write_text(UPLOAD_LUA + WRK_REPORT_LUA)
        apps_dir = tmp / "apps"
        apps_dir.mkdir(mode=0o755)
        (apps_dir / "upload.py").write_text(UPLOAD_APP)
        (apps_dir / "big.py").write_text(BIG_APP)
        (apps_dir / "page.py").write_text(PAGE_APP)
        root = tmp / "root"
        (root / "static").mkdir(parents=True, mode=0o755)
        root.chmod(0o755)
        contents = {}
        for name, size in (("1k.bin", 1024), ("1m.bin", 1 << 20)):
            data = os.urandom(size)
            (root / "static" / name).write_bytes(data)
            (root / "static" / name).chmod(0o644)
            contents[name] = data
        skipped = {}

        def start(server):
            reason = server.missing_reason() or server.start()
            started.append(server)
            if reason:
                skipped[server.name] = reason.splitlines()[0]
                note(f"{server.name}: SKIPPED: {reason}")
                return False
            return True

        apps = [WsgiApp("hello", f"pythonpath = {REPO / 'tests/integration/apps'}\n"
                                 "module = hello:application"),
                WsgiApp("app-1m", f"pythonpath = {apps_dir}\nmodule = big:application"),
                WsgiApp("upload-20m", f"pythonpath = {apps_dir}\nmodule = upload:application"),
                WsgiApp("page-gzip", f"pythonpath = {apps_dir}\nmodule = page:application")]
        project, env, reason = prepare_django(tmp)
        if reason:
            skipped["django-json"] = reason
        else:
            apps.append(WsgiApp("django-json",
                                f"chdir = {project}\nmodule = server_dev.wsgi:application",
                                tuple(env.items())))
        stacks = []
        uwsgi_backends = []
        for app in apps:
            mine = WharfWsgi(tmp, args.server_cpu, app, args.wharf_wsgi)
            theirs = Uwsgi(tmp, args.server_cpu, app)
            if start(theirs):
                uwsgi_backends.append(theirs)
            if not start(mine):
                continue
            # Persistent connections to wharf-wsgi are the default setup
            # (examples/proxy/proxy.ini); hello also runs without, to show
            # what they save; the large response also runs copied instead
            # of spliced.
            variants = [("", 64, "", app.name)]
            if app.name == "hello":
                variants.append((" no-keepalive", 0, "", app.name))
            if app.name == "app-1m":
                variants.append((" copied", 64, "splice_min = 0\n", app.name))
            if app.name == "page-gzip":
                variants = [("", 64, "gzip = on\n", app.name)]
            for suffix, keepalive, extra, case_name in variants:
                proxy = WharfProxy(
                    tmp, args.server_cpu, f"wharf-proxy-{app.name}{suffix}", args.wharf_proxy,
                    proxy_config(f"[upstream app]\nserver = unix:{mine.socket_path}\n"
                                 f"keepalive = {keepalive}\n", "[location /]\nuwsgi_pass = app\n",
                                 server_extra=extra))
                if start(proxy):
                    stacks.append(ProxyStack(f"wharf{suffix}", case_name, proxy.port,
                                             [proxy, mine], mine))
        if uwsgi_backends:
            gzip_backends = [b for b in uwsgi_backends if b.app.name == "page-gzip"]
            front = UploadNginxFront(tmp, args.server_cpu,
                                     [b for b in uwsgi_backends if b not in gzip_backends],
                                     gzip_backends)
            if start(front):
                for b in uwsgi_backends:
                    port = front.ports[f"{b.name}-gzip" if b in gzip_backends else b.name]
                    stacks.append(ProxyStack("nginx+uwsgi", b.app.name, port, [front, b], b))

        static = WharfStaticHandoff(tmp, root / "static", args.server_cpu, args.wharf_static)
        if start(static):
            proxy = WharfProxy(tmp, args.server_cpu, "wharf-proxy-static", args.wharf_proxy,
                               proxy_config("", f"[location /static/]\n"
                                                f"static = {static.handoff_path}\n"))
            if start(proxy):
                for case in ("static-1k", "static-1m"):
                    stacks.append(ProxyStack("wharf", case, proxy.port, [proxy, static]))
        nginx = Nginx(tmp, root, args.server_cpu, sendfile=True)
        if start(nginx):
            for case in ("static-1k", "static-1m"):
                stacks.append(ProxyStack("nginx", case, nginx.port, [nginx]))
        if not stacks:
            sys.exit("bench: no stack could be started")

        cases, expect = [], {}
        for case in PROXY_CASES:
            mine = [s for s in stacks if s.case == case.name]
            if not mine:
                continue
            if case.name == "hello":
                expect[case.name] = HELLO_BODY
            elif case.name.startswith("static-"):
                expect[case.name] = contents[case.path.rsplit("/", 1)[1]]
            elif case.name == "app-1m":
                expect[case.name] = BIG_BODY
            elif case.name == "upload-20m":
                expect[case.name] = b"ok 0\n"
            elif case.name == "page-gzip":
                # Checked outside wrk as the others (plain), and compressed here.
                plain = fetch(f"http://127.0.0.1:{mine[0].port}{case.path}")
                sizes = []
                for stack in mine:
                    body, coding = fetch_gzip(f"http://127.0.0.1:{stack.port}{case.path}")
                    if coding != "gzip" or gzip.decompress(body) != plain:
                        sys.exit(f"bench: {case.name}: {stack.name} does not send it gzipped")
                    sizes.append(len(body))
                expect[case.name] = plain
                case = dataclass_replace(case, size=min(sizes))
            else:
                expect[case.name] = fetch(f"http://127.0.0.1:{mine[0].port}{case.path}")
                case = dataclass_replace(case, size=len(expect[case.name]))
            cases.append(case)

        runs = []
        for rnd in range(1, args.rounds + 1):
            for case in cases:
                for stack in (s for s in stacks if s.case == case.name):
                    note(f"round {rnd}/{args.rounds}, {case.name}, {stack.name}")
                    a = args
                    lua = report
                    if case.name == "upload-20m":
                        a = argparse.Namespace(**{**vars(args), "connections": 4})
                        lua = upload_lua
                    run = run_wrk(a, stack, case, rnd, lua, expect[case.name])
                    if not run.valid:
                        note(f"  INVALID RUN: {run.problem}")
                    runs.append(run)

        medians, tables = summarize_proxy(runs, stacks, cases, args)
        return publish("proxy", args, tables, skipped, runs, medians, cases)
    finally:
        for server in started:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def publish(scenario, args, tables, skipped, runs, medians, cases, servers=None, baseline=None):
    """Prints the tables and what was not run, writes everything to
    out/bench/<scenario>-<timestamp>.json, and returns the exit status:
    1 when some run was invalid."""
    print()
    print("\n\n".join(tables))
    if skipped:
        print()
        for name, reason in skipped.items():
            print(f"- {name}: not run: {reason}")
    settings = {"rounds": args.rounds, "duration_s": args.duration,
                "connections": args.connections, "server_cpu": args.server_cpu,
                "client_cpu": args.client_cpu}
    if baseline:
        settings["baseline"] = baseline
    result = {
        "scenario": scenario,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": settings,
        "servers": servers or {},
        "skipped": skipped,
        "cases": [asdict(c) for c in cases],
        "medians": medians,
        "runs": [asdict(r) for r in runs],
    }
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = REPO / "out" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / f"{scenario}-{stamp}.json"
    out_file.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {out_file.relative_to(REPO)}")
    invalid = [r for r in runs if not r.valid]
    if invalid:
        print(f"{len(invalid)} of {len(runs)} runs were invalid (see above)")
        return 1
    return 0


def machine_info():
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count()}


def parse_args():
    parser = argparse.ArgumentParser(
        description="Benchmark wharf-static against nginx, h2o and lighttpd (static), or "
                    "wharf-wsgi against uWSGI behind nginx (wsgi).")
    parser.add_argument("scenario", choices=["static", "wsgi", "proxy"],
                        help="what to benchmark")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=int, default=5,
                        help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=64,
                        help="wrk connections (default 64)")
    parser.add_argument("--server-cpu", type=int, default=0,
                        help="CPU the servers are pinned to (default 0)")
    parser.add_argument("--client-cpu", type=int, default=1,
                        help="CPU wrk is pinned to (default 1)")
    parser.add_argument("--wharf-static", type=Path,
                        default=Path(os.environ.get("WHARF_BUILD", REPO / "build"))
                        / "daemons/static/wharf-static",
                        help="wharf-static binary (default: $WHARF_BUILD or build/)")
    parser.add_argument("--wharf-wsgi", type=Path,
                        default=Path(os.environ.get("WHARF_BUILD", REPO / "build"))
                        / "daemons/wsgi/wharf-wsgi",
                        help="wharf-wsgi binary (default: $WHARF_BUILD or build/)")
    parser.add_argument("--wharf-proxy", type=Path,
                        default=Path(os.environ.get("WHARF_BUILD", REPO / "build"))
                        / "daemons/proxy/wharf-proxy",
                        help="wharf-proxy binary (default: $WHARF_BUILD or build/)")
    parser.add_argument("--skip", action="append", default=[], metavar="SERVER",
                        help="leave a server out (repeatable)")
    args = parser.parse_args()
    if args.scenario == "wsgi" and set(args.skip) - {"wharf-wsgi", "uwsgi", "floor"}:
        parser.error("wsgi: --skip takes wharf-wsgi, uwsgi or floor")
    if args.rounds < 1 or args.duration < 1 or args.connections < 1:
        parser.error("--rounds, --duration and --connections must be at least 1")
    if args.server_cpu == args.client_cpu:
        parser.error("the server and wrk must run on different CPUs")
    usable = os.sched_getaffinity(0)
    for cpu in (args.server_cpu, args.client_cpu):
        if cpu not in usable:
            parser.error(f"CPU {cpu} is not available (usable: {sorted(usable)})")
    return args


def on_signal(signum, frame):
    # Unwind through main()'s finally, which stops the servers.
    note(f"stopped by {signal.Signals(signum).name}")
    raise SystemExit(128 + signum)


def main():
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # keep tables and notes in order
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is not installed (./dev bench installs it)")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if args.scenario == "wsgi":
        return main_wsgi(args)
    if args.scenario == "proxy":
        return main_proxy(args)

    tmp = Path(tempfile.mkdtemp(prefix="wharf-bench-"))
    candidates, servers = [], []
    try:
        # Servers started as root hand their workers to nobody, who must be
        # able to read the files.
        tmp.chmod(0o755)
        root = tmp / "root"
        root.mkdir(mode=0o755)
        contents = {}
        for case in CASES:
            data = contents.setdefault(case.path, os.urandom(case.size))
            path = root / case.path.lstrip("/")
            path.write_bytes(data)
            path.chmod(0o644)
        lua = tmp / "report.lua"
        lua.write_text(WRK_REPORT_LUA)

        candidates = [WharfStatic(tmp, root, args.server_cpu, args.wharf_static),
                      WharfStatic(tmp, root, args.server_cpu, args.wharf_static, "splice"),
                      WharfStatic(tmp, root, args.server_cpu, args.wharf_static, "copy"),
                      Nginx(tmp, root, args.server_cpu, sendfile=True),
                      Nginx(tmp, root, args.server_cpu, sendfile=False),
                      H2o(tmp, root, args.server_cpu),
                      Lighttpd(tmp, root, args.server_cpu)]
        unknown = set(args.skip) - {s.name for s in candidates}
        if unknown:
            sys.exit(f"bench: --skip: unknown server(s) {', '.join(sorted(unknown))}")
        skipped = {}
        for server in candidates:
            if server.name in args.skip:
                skipped[server.name] = "left out with --skip"
                continue
            reason = server.missing_reason()
            if reason is None:
                reason = server.start()
            if reason is None:
                servers.append(server)
                note(f"{server.name}: listening on 127.0.0.1:{server.port}")
            else:
                skipped[server.name] = reason.splitlines()[0]
                note(f"{server.name}: SKIPPED: {reason}")
        if not servers:
            sys.exit("bench: no server could be started")

        runs = []
        for rnd in range(1, args.rounds + 1):
            for case in CASES:
                for server in servers:
                    note(f"round {rnd}/{args.rounds}, {case.name}, {server.name}")
                    run = run_wrk(args, server, case, rnd, lua, contents[case.path])
                    if not run.valid:
                        note(f"  INVALID RUN: {run.problem}")
                    runs.append(run)

        medians, tables = summarize(runs, servers, args)
        return publish("static", args, tables, skipped, runs, medians, CASES,
                       servers={s.name: {"version": s.version()} for s in servers},
                       baseline=BASELINE)
    finally:
        for server in candidates:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        note("interrupted")
        sys.exit(130)
