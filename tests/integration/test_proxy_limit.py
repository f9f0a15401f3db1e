"""wharf-proxy's limit_req (nginx's limit_req_zone / limit_req): refusals
beside Debian's nginx with the same lines, delays, clients apart, a zone's
memory kept across a reload, and a delayed request during a stop."""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import wharf_harness as wh
from proxy_fixtures import RawUpstream, proxies, read_http_request  # noqa: F401 (fixtures)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
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


@pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="Debian's nginx is not installed")
def test_the_same_refusals_as_nginx(proxies, upstream):
    """rate=1r/m burst=3 nodelay: of eight requests at once, both let four
    through and refuse four with 503."""
    work = wh.short_tempdir("pl-ngx-")
    port = wh.free_tcp_port()
    conf = work / "nginx.conf"
    conf.write_text(wh.nginx_conf(work, f"""\
    limit_req_zone {ZONE};
    server {{
        listen 127.0.0.1:{port};
        location / {{
            limit_req zone=one burst=3 nodelay;
            proxy_pass http://{upstream.address};
        }}
    }}"""))
    nginx = subprocess.Popen([NGINX, "-c", str(conf), "-e", str(work / "nginx-error.log")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wh.wait_connectable(("127.0.0.1", port)).close()
        theirs = statuses(("127.0.0.1", port), 8)
    finally:
        nginx.terminate()
        nginx.wait(10)
        wh.remove_tree(work)
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


def test_refusals_of_the_config(proxies, tmp_path):
    binary = wh.daemon_binary("proxy")
    bad = tmp_path / "bad.ini"
    bad.write_text("[server]\nlisten = 127.0.0.1:1\n"
                   "limit_req_zone = $binary_remote_addr zone=one:1m rate=1r/h\n"
                   "limit_req_zone = $http_x zone=two:1m rate=1r/s\n"
                   "[location /]\nreturn = 204\nlimit_req = zone=nope burst=2\n"
                   "limit_req_status = 302\n")
    out = subprocess.run([str(binary), "-c", str(bad), "--check-config"], capture_output=True,
                         text=True)
    assert out.returncode != 0
    for line, text in [(3, "has a rate that is not Nr/s or Nr/m"),
                       (4, "keys other than $binary_remote_addr are not implemented"),
                       (7, "names a zone no limit_req_zone defines"),
                       (8, "'302' is not a status from 400 to 599")]:
        assert f"{bad}:{line}: " in out.stderr and text in out.stderr, (line, out.stderr)
