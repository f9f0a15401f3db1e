# SPDX-License-Identifier: MIT
"""wharf-static's realip (set_real_ip_from, real_ip_header,
real_ip_recursive), as nginx's: behind a trusted proxy the access log names
the client the proxy names, decided request by request; an untrusted peer's
header changes nothing. Directly, and behind a real wharf-proxy that hands
the connections over.

Each request carries its own User-Agent, so that its access log line is
found by it and by nothing else.
"""

import re
import shutil
import subprocess
import time

import pytest

import wharf_harness as wh
from conftest import StaticServer, build_tree, static_binary_or_skip
from proxy_fixtures import proxies, proxy_binary_or_skip  # noqa: F401 (fixtures)

static_binary_or_skip(module_level=True)

XFF = "X-Forwarded-For"


def log_line(path, agent: str, timeout: float = 5.0) -> str:
    """The one access log line of the request sent with User-Agent agent.
    The workers write their buffered lines at each turn of their loop, so
    the line is waited for."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [line for line in text.splitlines() if f'"{agent}"' in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) == 1, f"one line for {agent} expected in:\n{text}"
    return lines[0]


def client_of(path, agent: str) -> str:
    """The client address the access log gives the request of agent."""
    return log_line(path, agent).split(" ", 1)[0]


def static_with_log(start_static, **config) -> tuple:
    s = start_static(start=False)
    log = s.workdir / "access.log"
    s.write_config(access_log=f"file:{log}", **config)
    s.start()
    return s, log


def get(conn, agent: str, headers=()) -> None:
    r = conn.exchange("GET", "/index.html", [("User-Agent", agent), *headers])
    assert r.status == 200, r


def test_a_trusted_peers_x_forwarded_for_is_the_client(start_static):
    s, log = static_with_log(start_static, set_real_ip_from="127.0.0.1", real_ip_header=XFF)
    with s.connect() as c:
        get(c, "t-1", [(XFF, "203.0.113.7")])
        # The same keep-alive connection, other clients: decided per request.
        get(c, "t-2")
        get(c, "t-3", [(XFF, "2001:db8::7")])
        get(c, "t-4", [(XFF, "198.51.100.1"), (XFF, "198.51.100.2")])
        get(c, "t-5", [(XFF, "unknown")])
    assert client_of(log, "t-1") == "203.0.113.7"
    assert client_of(log, "t-2") == "127.0.0.1", "no header: the peer"
    assert client_of(log, "t-3") == "2001:db8::7"
    assert client_of(log, "t-4") == "198.51.100.2", "the last line"
    assert client_of(log, "t-5") == "127.0.0.1", "no address in it: the peer"
    line = log_line(log, "t-1")
    assert '"GET /index.html HTTP/1.1" 200 ' in line


def test_an_untrusted_peers_header_changes_nothing(start_static):
    s, log = static_with_log(
        start_static, set_real_ip_from=["10.0.0.0/8", "127.0.0.1/32"], real_ip_header=XFF
    )
    with wh.HttpConnection(s.address, source=("127.0.0.2", 0)) as c:
        get(c, "u-1", [(XFF, "203.0.113.7")])
    with s.connect() as c:
        get(c, "u-2", [(XFF, "203.0.113.7")])
    assert client_of(log, "u-1") == "127.0.0.2", "127.0.0.2 is not in 127.0.0.1/32"
    assert client_of(log, "u-2") == "203.0.113.7", "while 127.0.0.1 is trusted"


def test_without_set_real_ip_from_the_header_is_ignored(start_static):
    s, log = static_with_log(start_static, real_ip_header=XFF, real_ip_recursive=True)
    with s.connect() as c:
        get(c, "n-1", [(XFF, "203.0.113.7")])
    assert client_of(log, "n-1") == "127.0.0.1"


@pytest.mark.parametrize(
    "recursive, expected", [(True, "203.0.113.7"), (False, "10.2.2.2")], ids=["on", "off"]
)
def test_recursion_stops_at_the_first_untrusted_address(start_static, recursive, expected):
    s, log = static_with_log(
        start_static,
        set_real_ip_from=["127.0.0.1", "10.0.0.0/8"],
        real_ip_header=XFF,
        real_ip_recursive=recursive,
    )
    with s.connect() as c:
        get(c, "r-1", [(XFF, "198.51.100.1, 203.0.113.7 ,10.1.1.1,  10.2.2.2")])
        get(c, "r-2", [(XFF, "10.3.3.3, 10.4.4.4")])
    assert client_of(log, "r-1") == expected
    assert client_of(log, "r-2") == ("10.3.3.3" if recursive else "10.4.4.4"), "all trusted"


def test_x_real_ip_by_default(start_static):
    s, log = static_with_log(start_static, set_real_ip_from="127.0.0.0/8")
    with s.connect() as c:
        get(c, "x-1", [("X-Real-IP", " 2001:db8::5 ")])
        get(c, "x-2", [(XFF, "203.0.113.7")])
        get(c, "x-3", [("X-Real-IP", "203.0.113.7, 198.51.100.1")])
    assert client_of(log, "x-1") == "2001:db8::5"
    assert client_of(log, "x-2") == "127.0.0.1", "X-Forwarded-For is not the header asked for"
    assert client_of(log, "x-3") == "198.51.100.1", "X-Real-IP is a list too, as nginx reads it"


def test_unix_peers_with_unix(start_static):
    s = start_static(sockets=("unix",), start=False)
    log = s.workdir / "access.log"
    s.write_config(access_log=f"file:{log}", set_real_ip_from="unix:", real_ip_header=XFF)
    s.start()
    with s.connect() as c:
        get(c, "ux-1", [(XFF, "203.0.113.9")])
    assert client_of(log, "ux-1") == "203.0.113.9"


def test_reload_takes_the_new_settings(start_static):
    s, log = static_with_log(start_static)
    with s.connect() as c:
        get(c, "re-1", [(XFF, "203.0.113.7")])
        assert client_of(log, "re-1") == "127.0.0.1"
        s.write_config(set_real_ip_from="127.0.0.1", real_ip_header=XFF)
        s.reload()
        get(c, "re-2", [(XFF, "203.0.113.7")])
        assert client_of(log, "re-2") == "203.0.113.7", "the same connection, the new settings"
        s.write_config(set_real_ip_from="lb.example")
        s.reload()
        get(c, "re-3", [(XFF, "203.0.113.8")])
        assert client_of(log, "re-3") == "203.0.113.8", "a bad file changes nothing"
    assert "set_real_ip_from" in s.daemon.log_text() and "lb.example" in s.daemon.log_text()
    assert "keeping the running configuration" in s.daemon.log_text()


def check_config(static_binary, conf) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(static_binary), "--check-config", "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_check_config_names_a_bad_set_real_ip_from(static_binary, tmp_path, site_tree):
    conf = tmp_path / "bad.ini"
    conf.write_text(
        "[static]\n"  # 1
        f"root = {site_tree.root}\n"  # 2
        "set_real_ip_from = 10.0.0.0/8\n"  # 3
        "set_real_ip_from = lb.example\n"  # 4
        "set_real_ip_from = 10.0.0.0/33\n"  # 5
        "real_ip_header = X Forwarded For\n"  # 6
    )
    p = check_config(static_binary, conf)
    out = p.stderr + p.stdout
    assert p.returncode == 1, out
    assert re.search(rf"{re.escape(str(conf))}:4: .*set_real_ip_from.*'lb\.example'", out), out
    assert re.search(rf"{re.escape(str(conf))}:5: .*set_real_ip_from.*'10\.0\.0\.0/33'", out), out
    assert re.search(rf"{re.escape(str(conf))}:6: .*real_ip_header.*not a header name", out), out
    assert f"{conf}:3" not in out, "a good line is not named"

    conf.write_text(
        f"[static]\nroot = {site_tree.root}\nreal_ip_header = proxy_protocol\n"
    )
    p = check_config(static_binary, conf)
    assert p.returncode == 1 and "proxy_protocol is not implemented" in p.stderr, p.stderr

    conf.write_text(
        f"[static]\nroot = {site_tree.root}\nset_real_ip_from = 10.0.0.0/8\n"
        "set_real_ip_from = 2001:db8::/32\nset_real_ip_from = unix:\n"
        "real_ip_header = X-Forwarded-For\nreal_ip_recursive = on\n"
    )
    p = check_config(static_binary, conf)
    assert p.returncode == 0 and "configuration OK" in p.stdout, p.stderr


# ---------------------------------------------------------------------------
# behind wharf-proxy: the connection is handed over, the peer with it


@pytest.fixture
def pair(proxies, tmp_path):
    """pair(static_realip: dict) -> (proxy, static's access log): a
    wharf-proxy trusting 127.0.0.1 (the test) with X-Forwarded-For, and a
    wharf-static behind its handoff socket with the given settings."""
    binary = static_binary_or_skip()
    proxy_binary_or_skip()
    made = []

    def make(static_realip: dict):
        tree = build_tree(tmp_path / f"tree{len(made)}")
        work = wh.short_tempdir("rip-st-")
        st = StaticServer(binary, tree.root, work, sockets=("handoff",),
                          config={"prefix": "/static/", "access_log": f"file:{work}/access.log",
                                  **static_realip})
        made.append((st, work))
        st.start()
        p = proxies("[server]\nworkers = 1\n"
                    f"set_real_ip_from = 127.0.0.1\nreal_ip_header = {XFF}\n"
                    f"\n[location /static/]\nstatic = {st.handoff_path}\n")
        return p, work / "access.log"

    yield make
    for st, work in made:
        st.daemon.check_clean_exit(st.stop())
        st.close()
        shutil.rmtree(work, ignore_errors=True)


def get_static(conn, agent: str, headers=()) -> None:
    r = conn.exchange("GET", "/static/index.html", [("User-Agent", agent), *headers])
    assert r.status == 200, r
    assert r.header("Server").startswith("wharf-static"), "served by wharf-static"


def test_through_the_proxy_both_trusting(pair):
    p, slog = pair({"set_real_ip_from": "127.0.0.1", "real_ip_header": XFF})
    with p.connect(timeout=10) as c:
        get_static(c, "p-1", [(XFF, "203.0.113.7")])
        get_static(c, "p-2", [(XFF, "198.51.100.4")])
        get_static(c, "p-3")
    assert client_of(slog, "p-1") == "203.0.113.7"
    assert client_of(slog, "p-2") == "198.51.100.4", "per request on one handed connection"
    assert client_of(slog, "p-3") == "127.0.0.1", "no header: the peer the proxy had"


def test_through_the_proxy_static_not_trusting(pair):
    """wharf-static decides with its own settings: the peer it gets with the
    connection (the test, 127.0.0.1) is not in 10.0.0.0/8."""
    p, slog = pair({"set_real_ip_from": "10.0.0.0/8", "real_ip_header": XFF})
    with p.connect(timeout=10) as c:
        get_static(c, "q-1", [(XFF, "203.0.113.7")])
    assert client_of(slog, "q-1") == "127.0.0.1"
