"""wharf-proxy's limit_req (nginx's limit_req_zone / limit_req): refusals
beside Debian's nginx with the same lines, delays, clients apart, a zone's
memory kept across a reload, and a delayed request during a stop. And
limit_conn (limit_conn_zone / limit_conn): requests served at once per
client, beside nginx, given back when they end however they end, and
across a reload."""

import os
import re
import signal
import threading
import time

import pytest

import wharf_harness as wh
from proxy_fixtures import (RawUpstream, check_config_refused, proxies,  # noqa: F401 (fixtures)
                            read_http_request)

# One a minute: nothing drains while a test runs, however slow the machine.
ZONE = "$binary_remote_addr zone=one:1m rate=1r/m"


def answering(conn):
    while True:
        request, _ = read_http_request(conn)
        if not request:
            return
        path = request.split(b" ")[1]
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))


@pytest.fixture
def upstream():
    up = RawUpstream(answering)
    yield up
    up.close()


def site(up, server="", location="", zone=ZONE):
    return (f"[server]\nworkers = 1\nlimit_req_zone = {zone}\n{server}"
            f"[upstream u]\nserver = {up.address}\n[location /]\nproxy_pass = u\n{location}")


def statuses(address, n, path="/", source=None):
    with wh.HttpConnection(address, timeout=10, source=source) as c:
        out = []
        for _ in range(n):
            c.request("GET", path)
            out.append(c.read_response("GET").status)
        return out


@pytest.mark.skipif(not os.access(wh.NGINX, os.X_OK), reason="Debian's nginx is not installed")
def test_the_same_refusals_as_nginx(proxies, upstream):
    """rate=1r/m burst=3 nodelay: of eight requests at once, both let four
    through and refuse four with 503."""
    with wh.NginxRun("pl-ngx-") as ngx:
        ngx.start(f"""\
    limit_req_zone {ZONE};
    server {{
        listen 127.0.0.1:{ngx.port};
        location / {{
            limit_req zone=one burst=3 nodelay;
            proxy_pass http://{upstream.address};
        }}
    }}""")
        theirs = statuses(ngx.address, 8)
    p = proxies(site(upstream, location="limit_req = zone=one burst=3 nodelay\n"))
    ours = statuses(p.address, 8)
    assert theirs == [200] * 4 + [503] * 4
    assert ours == theirs
    assert re.search(r'limiting requests, excess: [34]\.\d{3} by zone "one", '
                     r'client: 127\.0\.0\.1, request: "GET / HTTP/1\.1"', p.daemon.log_text())


def test_status_clients_and_server_rules(proxies, upstream):
    """limit_req_status; each client its own bucket; a location without
    limit_req has its server's, and one with its own has only those."""
    p = proxies(site(upstream, server="limit_req = zone=one nodelay\nlimit_req_status = 429\n",
                     location="[location /free/]\nreturn = 200 free\nlimit_req = zone=wide burst=10 nodelay\n")
                + "[server]\nlimit_req_zone = $binary_remote_addr zone=wide:1m rate=1000r/s\n")
    assert statuses(p.address, 3) == [200, 429, 429]
    assert statuses(p.address, 2, source=("127.0.0.2", 0)) == [200, 429]
    assert statuses(p.address, 5, path="/free/") == [200] * 5


def test_delayed_requests_keep_their_order(proxies, upstream):
    """Without nodelay a request within the burst waits until the rate
    allows it (10r/s: 100 ms apart); pipelined ones behind it keep order."""
    p = proxies(site(upstream, zone="$binary_remote_addr zone=one:1m rate=10r/s",
                     location="limit_req = zone=one burst=5\n"))
    with wh.HttpConnection(p.address, timeout=10) as c:
        start = time.monotonic()
        c.send(b"".join(wh.build_request("GET", f"/{i}") for i in range(4)))
        got = [c.read_response("GET") for _ in range(4)]
        took = time.monotonic() - start
    assert [r.body for r in got] == [b"/0", b"/1", b"/2", b"/3"]
    # Excess 1, 2, 3 at once: waits of 100, 200 and 300 ms, one after the other.
    assert took >= 0.28, took
    assert "delaying request for" in p.daemon.log_text()


def test_a_reload_keeps_what_the_zone_knows(proxies, upstream):
    p = proxies(site(upstream, location="limit_req = zone=one nodelay\n"))
    assert statuses(p.address, 2) == [200, 503]
    p.reload()
    assert statuses(p.address, 1) == [503], "the same zone: the client is still limited"
    p.write_config(site(upstream, location="limit_req = zone=one nodelay\n",
                        zone="$binary_remote_addr zone=one:2m rate=1r/m"))
    p.reload()
    assert statuses(p.address, 1) == [200], "another size: a new zone"


def test_a_stop_serves_the_delayed_request(proxies, upstream):
    p = proxies(site(upstream, zone="$binary_remote_addr zone=one:1m rate=2r/s",
                     location="limit_req = zone=one burst=5\n"))
    with wh.HttpConnection(p.address, timeout=10) as c:
        c.send(wh.build_request("GET", "/") * 2)
        assert c.read_response("GET").status == 200
        p.daemon.wait_log(r"delaying request for \d+ ms")
        p.daemon.signal(signal.SIGTERM)
        r = c.read_response("GET")
        assert r.status == 200 and r.body == b"/"
    assert p.daemon.wait_exit() == 0


def test_refusals_of_the_config(tmp_path):
    check_config_refused(tmp_path, "[server]\nlisten = 127.0.0.1:1\n"
                         "limit_req_zone = $binary_remote_addr zone=one:1m rate=1r/h\n"
                         "limit_req_zone = $http_x zone=two:1m rate=1r/s\n"
                         "[location /]\nreturn = 204\nlimit_req = zone=nope burst=2\n"
                         "limit_req_status = 302\n",
                         [(3, "has a rate that is not Nr/s or Nr/m"),
                          (4, "keys other than $binary_remote_addr are not implemented"),
                          (7, "names a zone no limit_req_zone defines"),
                          (8, "'302' is not a status from 400 to 599")])


# ---- limit_conn ----

class HoldingUpstream:
    """An upstream that holds each /hold request until release(); others
    are answered at once. held() is how many /hold requests it has now."""

    def __init__(self):
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.holding = 0
        self.up = RawUpstream(self._answer)
        self.address = self.up.address

    def _answer(self, conn):
        while True:
            request, _ = read_http_request(conn)
            if not request:
                return
            path = request.split(b" ")[1]
            if path.endswith(b"/hold"):
                with self.lock:
                    self.holding += 1
                self.gate.wait(20)
                with self.lock:
                    self.holding -= 1
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))

    def wait_held(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while self.holding != n:
            assert time.monotonic() < deadline, f"{self.holding} requests held, not {n}"
            time.sleep(0.01)

    def release(self):
        self.gate.set()

    def close(self):
        self.gate.set()
        self.up.close()


@pytest.fixture
def holding():
    up = HoldingUpstream()
    yield up
    up.close()


CONN_ZONE = "$binary_remote_addr zone=addr:1m"


def conn_site(up, location="limit_conn = addr 2\n", server=""):
    return (f"[server]\nworkers = 2\nlimit_conn_zone = {CONN_ZONE}\n{server}"
            f"[upstream u]\nserver = {up.address}\n[location /]\nproxy_pass = u\n{location}")


def limit_conn_outcome(address, holding, source=None):
    """Two /hold requests held, a third while they are; then released, and a
    fourth: the statuses of the third, the two held, and the fourth."""
    held = [wh.HttpConnection(address, timeout=20, source=source) for _ in range(2)]
    try:
        for c in held:
            c.request("GET", "/hold")
        holding.wait_held(2)
        with wh.HttpConnection(address, timeout=10, source=source) as c:
            third = c.exchange("GET", "/hold").status
        holding.release()
        two = [c.read_response("GET").status for c in held]
    finally:
        for c in held:
            c.close()
    with wh.HttpConnection(address, timeout=10, source=source) as c:
        fourth = c.exchange("GET", "/quick").status
    holding.gate.clear()
    return third, two, fourth


@pytest.mark.skipif(not os.access(wh.NGINX, os.X_OK), reason="Debian's nginx is not installed")
def test_limit_conn_refuses_as_nginx(proxies, holding):
    """limit_conn addr 2: the third request while two are served is a 503,
    the two are answered, and once they ended a fourth passes: in both."""
    with wh.NginxRun("plc-ngx-") as ngx:
        ngx.start(f"""\
    limit_conn_zone {CONN_ZONE};
    server {{
        listen 127.0.0.1:{ngx.port};
        location / {{
            limit_conn addr 2;
            proxy_read_timeout 30s;
            proxy_pass http://{holding.address};
        }}
    }}""")
        theirs = limit_conn_outcome(ngx.address, holding)
        nginx_log = ngx.error_log()
    p = proxies(conn_site(holding))
    ours = limit_conn_outcome(p.address, holding)
    assert theirs == (503, [200, 200], 200)
    assert ours == theirs
    assert 'limiting connections by zone "addr"' in nginx_log
    assert 'limiting connections by zone "addr", client: 127.0.0.1' in p.daemon.log_text()


def test_limit_conn_counts_requests_not_connections(proxies, holding):
    """limit_conn addr 1: one keep-alive connection makes any number of
    requests one after another, pipelined too; a client's second request
    at once is refused with limit_conn_status; another client is apart."""
    p = proxies(conn_site(holding, location="limit_conn = addr 1\nlimit_conn_status = 429\n"))
    with p.connect(timeout=10) as c:
        assert [c.exchange("GET", "/quick").status for _ in range(5)] == [200] * 5
        c.send(wh.build_request("GET", "/a") * 4)
        assert [r.status for r in c.read_responses(["GET"] * 4)] == [200] * 4
    with p.connect(timeout=20) as held:
        held.request("GET", "/hold")
        holding.wait_held(1)
        assert statuses(p.address, 1, path="/quick") == [429]
        assert statuses(p.address, 1, path="/quick", source=("127.0.0.2", 0)) == [200]
        holding.release()
        assert held.read_response("GET").status == 200
    assert statuses(p.address, 1, path="/quick") == [200]


def test_limit_conn_gives_back_what_a_vanished_client_held(proxies, holding):
    """A client that goes away while its request is served leaves no count
    behind once the proxy is done with the request."""
    p = proxies(conn_site(holding, location="limit_conn = addr 1\n"))
    gone = wh.HttpConnection(p.address, timeout=10)
    gone.request("GET", "/hold")
    holding.wait_held(1)
    gone.close()
    assert statuses(p.address, 1, path="/quick") == [503]
    holding.release()
    deadline = time.monotonic() + 10
    while statuses(p.address, 1, path="/quick") != [200]:
        assert time.monotonic() < deadline, "the count was never given back"
        time.sleep(0.05)


def test_limit_conn_counts_survive_a_reload(proxies, holding):
    """A request counted before a reload still counts after it, and gives
    its count back to the zone the new configuration uses."""
    p = proxies(conn_site(holding, location="limit_conn = addr 1\n"))
    with p.connect(timeout=20) as held:
        held.request("GET", "/hold")
        holding.wait_held(1)
        p.reload()
        assert statuses(p.address, 1, path="/quick") == [503]
        holding.release()
        assert held.read_response("GET").status == 200
    assert statuses(p.address, 2, path="/quick") == [200, 200]


def test_limit_conn_refusals_of_the_config(tmp_path):
    check_config_refused(tmp_path, "[server]\nlisten = 127.0.0.1:1\n"
                         "limit_conn_zone = $binary_remote_addr zone=addr:1m rate=1r/s\n"
                         "limit_req_zone = $binary_remote_addr zone=req:1m rate=1r/s\n"
                         "[location /]\nreturn = 204\nlimit_conn = addr\nlimit_conn = req 2\n"
                         "limit_conn_status = 200\n",
                         [(3, "is not '$binary_remote_addr zone=NAME:SIZE'"),
                          (7, "is not 'ZONE N'"),
                          (8, "names a zone no limit_conn_zone defines"),
                          (9, "'200' is not a status from 400 to 599")])


# ---- dry runs, and $limit_req_status / $limit_conn_status ----

DRY_LOCATIONS = {
    # path: (nginx's lines, wharf's lines)
    "/dry/": ("limit_req zone=one burst=1 nodelay; limit_req_dry_run on;",
              "limit_req = zone=one burst=1 nodelay\nlimit_req_dry_run = on\n"),
    "/delay/": ("limit_req zone=two burst=5; limit_req_dry_run on;",
                "limit_req = zone=two burst=5\nlimit_req_dry_run = on\n"),
    "/real/": ("limit_req zone=three nodelay;", "limit_req = zone=three nodelay\n"),
    "/conn/": ("limit_conn addr 1; limit_conn_dry_run on;",
               "limit_conn = addr 1\nlimit_conn_dry_run = on\n"),
    "/none/": ("", ""),
}
# (path, requests at once: pipelined on one connection, or held side by side for /conn/)
DRY_REQUESTS = [("/dry/", 3), ("/delay/", 2), ("/real/", 2), ("/none/", 1)]


def dry_outcome(address, holding, log):
    statuses = []
    for path, n in DRY_REQUESTS:
        with wh.HttpConnection(address, timeout=10) as c:
            start = time.monotonic()
            c.send(wh.build_request("GET", path + "x") * n)
            statuses += [r.status for r in c.read_responses(["GET"] * n)]
            assert time.monotonic() - start < 5, "a dry run delayed a request"
    held = wh.HttpConnection(address, timeout=20)
    try:
        held.request("GET", "/conn/hold")
        holding.wait_held(1)
        with wh.HttpConnection(address, timeout=10) as c:
            statuses.append(c.exchange("GET", "/conn/quick").status)
        holding.release()
        statuses.append(held.read_response("GET").status)
    finally:
        held.close()
        holding.gate.clear()
    lines = wait_lines(log, 10)
    return statuses, sorted(lines)


def wait_lines(path, n, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= n:
            return lines
        assert time.monotonic() < deadline, f"{path}: {len(lines)} lines of {n}"
        time.sleep(0.05)


@pytest.mark.skipif(not os.access(wh.NGINX, os.X_OK), reason="Debian's nginx is not installed")
def test_dry_runs_and_their_variables_as_nginx(proxies, holding, tmp_path):
    """limit_req_dry_run and limit_conn_dry_run refuse and delay nothing;
    $limit_req_status and $limit_conn_status say what would have been: the
    same access log lines as nginx's, the same statuses."""
    zones = ("$binary_remote_addr zone=one:1m rate=1r/m", "$binary_remote_addr zone=two:1m rate=1r/m",
             "$binary_remote_addr zone=three:1m rate=1r/m")
    fmt = "$request_uri $status $limit_req_status $limit_conn_status"
    ngx_log = tmp_path / "nginx.log"
    with wh.NginxRun("pld-ngx-") as ngx:
        locations = "\n".join(f"        location {path} {{ {ngx_lines} "
                              f"proxy_read_timeout 30s; proxy_pass http://{holding.address}; }}"
                              for path, (ngx_lines, _) in DRY_LOCATIONS.items())
        ngx.start(f"""\
    {"".join(f"limit_req_zone {z}; " for z in zones)}
    limit_conn_zone {CONN_ZONE};
    log_format st '{fmt}';
    server {{
        listen 127.0.0.1:{ngx.port};
        access_log {ngx_log} st;
{locations}
    }}""")
        theirs = dry_outcome(ngx.address, holding, ngx_log)
        nginx_errors = ngx.error_log()
    log = tmp_path / "wharf.log"
    site = (f"[server]\nworkers = 1\naccess_log = file:{log}\nlog_format = {fmt}\n"
            + "".join(f"limit_req_zone = {z}\n" for z in zones)
            + f"limit_conn_zone = {CONN_ZONE}\n[upstream u]\nserver = {holding.address}\n"
            + "".join(f"[location {path}]\nproxy_pass = u\n{ours}"
                      for path, (_, ours) in DRY_LOCATIONS.items()))
    p = proxies(site)
    ours = dry_outcome(p.address, holding, log)
    assert theirs[0] == [200, 200, 200, 200, 200, 200, 503, 200, 200, 200]
    assert "/dry/x 200 REJECTED_DRY_RUN -" in theirs[1]
    assert "/delay/x 200 DELAYED_DRY_RUN -" in theirs[1]
    assert "/conn/quick 200 - REJECTED_DRY_RUN" in theirs[1]
    assert ours == theirs
    assert "limiting requests, dry run, excess: 2.000 by zone \"one\"" in nginx_errors
    text = p.daemon.log_text()
    assert 'limiting requests, dry run, excess: 2.000 by zone "one"' in text
    assert 'limiting connections, dry run, by zone "addr"' in text
