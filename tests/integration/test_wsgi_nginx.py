# SPDX-License-Identifier: MIT
"""Compatibility with the real peer: Debian's nginx with uwsgi_pass and its
stock /etc/nginx/uwsgi_params in front of wharf-wsgi, serving the Django
example: pages, the admin login, a form POST and a 20 MiB upload."""

import hashlib
import os
import re
import shutil
import subprocess
import time
import urllib.parse

import pytest

import wharf_harness as wh
from wsgi_fixtures import WsgiServer, wsgi_binary_or_skip

BINARY = wsgi_binary_or_skip(module_level=True)
PROJECT = wh.REPO / "examples" / "server_dev"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PASSWORD = "wharf-demo-Pa55"

if not os.access(NGINX, os.X_OK) or not os.path.exists("/etc/nginx/uwsgi_params"):
    pytest.skip("Debian's nginx is not installed", allow_module_level=True)
if not (PROJECT / "server_dev" / "wsgi.py").exists():
    pytest.skip("examples/server_dev is not there", allow_module_level=True)

NGINX_SITE = """\
    client_max_body_size 75M;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        location / {{
            include /etc/nginx/uwsgi_params;
            uwsgi_pass unix:{sock};
        }}
    }}"""


@pytest.fixture(scope="module")
def front():
    workdir = wh.short_tempdir("wsgi-ngx-")
    env = {
        "DJANGO_DATABASE_PATH": str(workdir / "db.sqlite3"),
        "DJANGO_STATIC_ROOT": str(workdir / "static_root"),
        "DJANGO_MEDIA_ROOT": str(workdir / "media"),
    }
    full = {**os.environ, **env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}
    for args in (
        ["migrate", "--noinput"],
        ["createsuperuser", "--noinput", "--username", "demo", "--email", "demo@example.org"],
    ):
        r = subprocess.run(
            ["/usr/bin/python3", "manage.py", *args],
            cwd=PROJECT,
            env=full,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
    server = WsgiServer(
        BINARY,
        workdir,
        ["--chdir", PROJECT, "--master", "--processes", "2"],
        module="server_dev.wsgi",
        env=env,
        warnings_are_errors=False,
        name="django",
    )
    port = wh.free_tcp_port()
    conf = workdir / "nginx.conf"
    conf.write_text(wh.nginx_conf(workdir, NGINX_SITE.format(port=port, sock=server.uwsgi_path)))
    nginx = None
    try:
        server.start(20)
        nginx = subprocess.Popen(
            [NGINX, "-c", str(conf), "-e", str(workdir / "nginx-error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wh.wait_connectable(("127.0.0.1", port)).close()
        yield server, ("127.0.0.1", port), workdir
        server.stop_and_check()
    finally:
        if nginx:
            nginx.terminate()
            nginx.wait(10)
        server.daemon.close()
        wh.remove_tree(workdir)


def request(addr, method, target, headers=(), body=b""):
    items = [("Host", "localhost"), *headers]
    if body:
        items.append(("Content-Length", str(len(body))))
    with wh.HttpConnection(addr, timeout=30) as c:
        c.request(method, target, items, body=body)
        return c.read_response(method)


def cookies_of(r) -> dict:
    out = {}
    for v in r.header_all("Set-Cookie"):
        name, _, rest = v.partition("=")
        out[name] = rest.split(";")[0]
    return out


def csrf_token(body: bytes) -> str:
    return re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()


def test_pages_through_nginx(front):
    _, addr, _ = front
    assert request(addr, "GET", "/hello/").body == b"Hello, world!\n"
    r = request(addr, "GET", "/api/posts/")
    assert r.status == 200 and r.body.startswith(b"{")
    r = request(addr, "GET", "/")
    assert r.status == 200 and b"<html" in r.body.lower()


def test_admin_login_through_nginx(front):
    _, addr, _ = front
    r = request(addr, "GET", "/admin/login/?next=/admin/")
    assert r.status == 200
    jar = cookies_of(r)
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": csrf_token(r.body),
            "username": "demo",
            "password": PASSWORD,
            "next": "/admin/",
        }
    ).encode()
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    r = request(
        addr,
        "POST",
        "/admin/login/?next=/admin/",
        [("Cookie", cookie), ("Content-Type", "application/x-www-form-urlencoded")],
        body=form,
    )
    assert r.status == 302 and r.header("Location") == "/admin/", r.body[:300]
    jar.update(cookies_of(r))
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    r = request(addr, "GET", "/admin/", [("Cookie", cookie)])
    assert r.status == 200 and b"Site administration" in r.body


def test_upload_20mib_through_nginx(front):
    _, addr, _ = front
    r = request(addr, "GET", "/upload/")
    jar = cookies_of(r)
    data = os.urandom(20 * 1024 * 1024)
    boundary = "wharfNginxBoundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n'
            f'{csrf_token(r.body)}\r\n--{boundary}\r\nContent-Disposition: form-data; name="file";'
            f' filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    t0 = time.monotonic()
    r = request(
        addr,
        "POST",
        "/upload/",
        [
            ("Cookie", f"csrftoken={jar['csrftoken']}"),
            ("Content-Type", f"multipart/form-data; boundary={boundary}"),
        ],
        body=body,
    )
    assert r.status == 200, r.body[:300]
    assert f'id="upload-sha256">{hashlib.sha256(data).hexdigest()}<'.encode() in r.body
    assert time.monotonic() - t0 < 20


def test_ignored_body_is_no_502(front):
    """Django's CSRF check answers 403 without reading the body: the client
    must get that answer (nginx + uWSGI give a 502 here)."""
    _, addr, _ = front
    r = request(
        addr,
        "POST",
        "/hello/",
        [("Content-Type", "application/octet-stream")],
        body=b"q" * (8 * 1024 * 1024),
    )
    assert r.status == 403 and b"CSRF" in r.body, r
    assert request(addr, "GET", "/hello/").status == 200
