"""wharf-proxy's log_format (nginx's log_format and escape=): the same
variables, the same escapes, the same "-" for a value that does not exist.
The main test runs Debian's nginx beside wharf-proxy with the same format,
the same upstream and the same requests, and wants the same lines."""

import json
import os
import re
import subprocess
import time

import pytest

import wharf_harness as wh
from proxy_fixtures import (  # noqa: F401 (fixtures)
    RawUpstream,
    proxies,
    proxy_binary_or_skip,
    read_http_request,
)


# Everything here is the same for nginx and wharf given the same requests.
SAME = ('$remote_addr - $remote_user "$request" $status $body_bytes_sent "$http_referer" '
        '"$http_user_agent" "$http_x_odd" $request_method $request_uri $uri "$args" '
        '$query_string $host $http_host $server_protocol $scheme $connection_requests '
        '$upstream_addr ${status}!')

ODD = 'q"uo\\te\tutf8-\xe9'.encode("latin-1")


def answer_by_path(conn):
    """/nf: 404 with a body; anything else: 200 with 'hello'."""
    while True:
        request, _ = read_http_request(conn)
        if not request:
            return
        line = request.split(b"\r\n")[0]
        status = b"404 Not Found" if line.split(b" ")[1].startswith(b"/nf") else b"200 OK"
        body = b"" if line.startswith(b"HEAD ") else b"hello"
        conn.sendall(b"HTTP/1.1 %s\r\nContent-Length: 5\r\n\r\n%s" % (status, body))


# (method, target, headers), sent on one keep-alive connection.
REQUESTS = [
    ("GET", "/", [("User-Agent", "curl/8.0"), ("Referer", "http://example.com/a?b")]),
    ("GET", "/a/b/../c%20d?x=1&y=%22z%22", [("Host", "Example.COM:8080"),
                                            ("X-Odd", ODD)]),
    ("HEAD", "/head", [("User-Agent", "")]),
    ("GET", "/nf?", [("X-Odd", b"back\\slash and \"quotes\"")]),
    ("POST", "/form", [("Content-Length", "3")]),
]


def send_all(address):
    with wh.HttpConnection(address, timeout=10) as c:
        for method, target, headers in REQUESTS:
            body = b"a=1" if method == "POST" else b""
            c.send(wh.build_request(method, target, headers, body=body))
            r = c.read_response(method)
            assert r.status in (200, 404)


def wait_lines(path, n, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        data = path.read_bytes() if path.exists() else b""
        lines = data.splitlines()
        if len(lines) >= n:
            return lines
        assert time.monotonic() < deadline, f"{path}: {len(lines)} lines of {n}:\n{data!r}"
        time.sleep(0.05)


def nginx_lines(tmp, upstream, fmt, escape):
    log = tmp / "nginx-access.log"
    fmt_text = fmt.replace("\\", "\\\\").replace("'", "\\'")
    with wh.NginxRun("pl-ngx-") as ngx:
        ngx.start(f"""\
    log_format wharf_test escape={escape} '{fmt_text}';
    server {{
        listen 127.0.0.1:{ngx.port};
        server_name localhost;
        access_log {log} wharf_test;
        location / {{
            proxy_http_version 1.1;
            proxy_pass http://{upstream};
        }}
    }}""")
        send_all(ngx.address)
        return wait_lines(log, len(REQUESTS))


def format_lines(fmt):
    """fmt as log_format lines of at most 120 bytes, cut after a space or a
    comma and quoted, so that the spaces at their ends stay."""
    lines, piece = [], ""
    for ch in fmt:
        piece += ch
        if ch in " ," and len(piece) > 100:
            lines.append(f"log_format = '{piece}'\n")
            piece = ""
    return "".join(lines) + f"log_format = '{piece}'\n"


def wharf_lines(proxies, tmp, upstream, fmt, escape):
    log = tmp / "wharf-access.log"
    p = proxies(f"[server]\nworkers = 1\nserver_name = localhost\naccess_log = file:{log}\n"
                f"{format_lines(fmt)}log_escape = {escape}\n"
                f"[upstream u]\nserver = {upstream}\n[location /]\nproxy_pass = u\n")
    send_all(p.address)
    return wait_lines(log, len(REQUESTS))


@pytest.mark.skipif(not os.access(wh.NGINX, os.X_OK), reason="Debian's nginx is not installed")
@pytest.mark.parametrize("escape", ["default", "json", "none"])
def test_the_same_lines_as_nginx(proxies, tmp_path, escape):
    up = RawUpstream(answer_by_path)
    try:
        theirs = nginx_lines(tmp_path, up.address, SAME, escape)
        ours = wharf_lines(proxies, tmp_path, up.address, SAME, escape)
    finally:
        up.close()
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, f"request {i}:\nwharf {a!r}\nnginx {b!r}"
    # The test means something: the odd bytes were escaped (or not) in both.
    odd = {"default": rb"q\x22uo\x5Cte\x09utf8-\xE9",
           "json": b'q\\"uo\\\\te\\tutf8-\xe9', "none": ODD}[escape]
    assert odd in ours[1]


def test_json_lines_and_the_variables_of_the_moment(proxies, tmp_path):
    """A JSON format gives lines a JSON parser takes, with the values the
    client sent; $request_id is 32 hex digits, new for each request; the
    times are nginx's forms."""
    up = RawUpstream(answer_by_path)
    log = tmp_path / "access.log"
    fmt = ('{"t":"$time_iso8601","local":"$time_local","msec":$msec,"rt":$request_time,'
           '"ut":"$upstream_response_time","id":"$request_id","ua":"$http_user_agent",'
           '"ref":"$http_referer","pid":$pid,"port":"$remote_port","sp":"$server_port"}')
    try:
        p = proxies(f"[server]\nworkers = 1\naccess_log = file:{log}\nlog_escape = json\n"
                    f"{format_lines(fmt)}[upstream u]\nserver = {up.address}\n"
                    "[location /]\nproxy_pass = u\n[location /here]\nreturn = 200 here\n")
        with wh.HttpConnection(p.address, timeout=10) as c:
            c.send(wh.build_request("GET", "/", [("User-Agent", 'say "hi"\\\tnow')]))
            assert c.read_response("GET").status == 200
            c.send(wh.build_request("GET", "/here", []))
            assert c.read_response("GET").body == b"here"
            local_port = c.sock.getsockname()[1]
        lines = [json.loads(x) for x in wait_lines(log, 2)]
    finally:
        up.close()
    first, second = lines
    assert first["ua"] == 'say "hi"\\\tnow' and first["ref"] == ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", first["t"])
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}", first["local"])
    assert abs(first["msec"] - time.time()) < 60
    assert 0 <= first["rt"] < 10 and re.fullmatch(r"\d+\.\d{3}", first["ut"])
    assert second["ut"] == "", "no upstream: the value does not exist (empty in JSON)"
    assert all(re.fullmatch(r"[0-9a-f]{32}", x["id"]) for x in lines)
    assert first["id"] != second["id"]
    assert first["pid"] == p.daemon.proc.pid
    assert first["port"] == str(local_port) and first["sp"] == str(p.address[1])


def test_a_bad_format_is_refused_with_its_line(proxies, tmp_path):
    binary = proxy_binary_or_skip()
    bad = tmp_path / "bad.ini"
    bad.write_text("[server]\nlisten = 127.0.0.1:1\n\nlog_format = $remote_addr $nope\n"
                   "log_escape = yaml\n")
    out = subprocess.run([binary, "-c", str(bad), "--check-config"], capture_output=True,
                         text=True)
    assert out.returncode != 0
    assert f"{bad}:4: key 'log_format': unknown variable $nope" in out.stderr
    assert f"{bad}:5: key 'log_escape': 'yaml' is not default, json or none" in out.stderr
