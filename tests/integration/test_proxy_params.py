"""uwsgi_param and proxy_set_header, as nginx's: what the application gets,
with variables ($request_id to follow one request from the access log
into the application's own logs, $host, $http_NAME, ...)."""

import json
import re
import subprocess
import time

import wharf_harness as wh
from proxy_fixtures import (  # noqa: F401 (fixtures)
    RawUpstream,
    app,
    proxies,
    proxy_binary_or_skip,
    read_http_request,
)


def test_uwsgi_param(proxies, app, tmp_path):
    log = tmp_path / "access.log"
    p = proxies(f"[server]\nworkers = 1\naccess_log = file:{log}\nlog_format = $request_id\n"
                f"[upstream app]\nserver = unix:{app.uwsgi_path}\n[location /]\nuwsgi_pass = app\n"
                "uwsgi_param = HTTP_X_REQUEST_ID $request_id\n"
                "uwsgi_param = HTTPS on\n"
                "uwsgi_param = APP_WHERE $host$uri and $http_x_tenant\n"
                "uwsgi_param = APP_MISSING $http_x_missing if_not_empty\n"
                "uwsgi_param = APP_EMPTY $http_x_missing\n"
                "uwsgi_param = REMOTE_ADDR 192.0.2.7\n")
    r = p.get("/env", [("X-Request-ID", "sent-by-the-client"), ("X-Tenant", "acme"),
                       ("Host", "Example.org:8080")])
    env = json.loads(r.body)
    request_id = env["HTTP_X_REQUEST_ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), "the client's own is replaced"
    assert env["HTTPS"] == "on" and env["wsgi.url_scheme"] == "https"
    assert env["APP_WHERE"] == "example.org/env and acme"
    assert "APP_MISSING" not in env and env["APP_EMPTY"] == ""
    assert env["REMOTE_ADDR"] == "192.0.2.7", "a built-in variable is replaced"
    # The same id in the access log: one request, followed from end to end.
    deadline = time.monotonic() + 5
    while request_id not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the access log has another $request_id"
        time.sleep(0.05)
    assert json.loads(p.get("/env").body)["HTTP_X_REQUEST_ID"] != request_id, "one per request"


def test_proxy_set_header(proxies):
    got = []

    def handler(conn):
        head, _ = read_http_request(conn)
        got.append(head)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    up = RawUpstream(handler)
    try:
        p = proxies(f"[server]\nworkers = 1\n[upstream u]\nserver = {up.address}\n"
                    "[location /]\nproxy_pass = u\n"
                    "proxy_set_header = X-Request-ID $request_id\n"
                    "proxy_set_header = Host backend.internal\n"
                    "proxy_set_header = X-Forwarded-For $remote_addr\n"
                    "proxy_set_header = Accept-Encoding\n"
                    "proxy_set_header = X-Empty $http_x_missing\n"
                    "proxy_set_header = X-Path ${uri}?$args\n")
        r = p.get("/a/../b?c=1", [("X-Forwarded-For", "10.9.9.9"), ("Accept-Encoding", "gzip"),
                                  ("X-Request-ID", "client"), ("X-Other", "kept")])
        assert r.status == 200
    finally:
        up.close()
    lines = got[0].decode().split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(": ")
            hdrs.setdefault(k.lower(), []).append(v)
    assert re.fullmatch(r"[0-9a-f]{32}", hdrs["x-request-id"][0]) and \
        len(hdrs["x-request-id"]) == 1
    assert hdrs["host"] == ["backend.internal"]
    assert hdrs["x-forwarded-for"] == ["127.0.0.1"], "replaced, not appended to"
    assert "accept-encoding" not in hdrs, "a line without a value removes the header"
    assert "x-empty" not in hdrs, "an empty value sends no header (nginx)"
    assert hdrs["x-path"] == ["/b?c=1"]
    assert hdrs["x-other"] == ["kept"] and hdrs["x-real-ip"] == ["127.0.0.1"]


def test_refusals(tmp_path):
    ini = tmp_path / "p.ini"
    ini.write_text("[server]\nlisten = 127.0.0.1:1\n[upstream u]\nserver = unix:/nowhere\n"
                   "[location /a/]\nuwsgi_pass = u\nproxy_set_header = X-A 1\n"
                   "[location /b/]\nproxy_pass = u\nproxy_set_header = Connection close\n"
                   "proxy_set_header = X-S $status\nproxy_set_header = X-U $nope\n"
                   "[location /c/]\nuwsgi_pass = u\nuwsgi_param = BAD-NAME 1\n")
    out = subprocess.run([str(proxy_binary_or_skip()), "-c", str(ini), "--check-config"],
                         capture_output=True, text=True)
    assert out.returncode != 0
    for text in ("proxy_set_header': needs proxy_pass here",
                 "'Connection close' names a header wharf-proxy sets itself",
                 "'X-S $status' names a variable that has no value before the response",
                 "'X-U $nope' names an unknown variable",
                 "'BAD-NAME 1' is not 'NAME VALUE'"):
        assert text in out.stderr, (text, out.stderr)
