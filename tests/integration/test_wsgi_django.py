# SPDX-License-Identifier: MIT
"""wharf-wsgi serving the tutorial's Django project (examples/server_dev)
in both protocols, with a master and two workers: pages, the JSON view, a
CSRF-protected form POST and a file upload."""

import hashlib
import json
import os
import re
import subprocess
import urllib.parse

import pytest

import wharf_harness as wh
from wsgi_fixtures import WsgiServer, wsgi_binary_or_skip

BINARY = wsgi_binary_or_skip(module_level=True)
PROJECT = wh.REPO / "examples" / "server_dev"
PROTOS = ["http", "uwsgi"]

if not (PROJECT / "server_dev" / "wsgi.py").exists():
    pytest.skip("examples/server_dev is not there", allow_module_level=True)


@pytest.fixture(scope="module")
def django():
    workdir = wh.short_tempdir("wsgi-dj-")
    env = {
        "DJANGO_DATABASE_PATH": str(workdir / "db.sqlite3"),
        "DJANGO_STATIC_ROOT": str(workdir / "static_root"),
        "DJANGO_MEDIA_ROOT": str(workdir / "media"),
        "DJANGO_ALLOWED_HOSTS": "localhost,example.org",
    }
    r = subprocess.run(
        ["/usr/bin/python3", "manage.py", "migrate", "--noinput"],
        cwd=PROJECT,
        env={**os.environ, **env},
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
    try:
        server.start(20)
        yield server
        server.stop_and_check()
    finally:
        server.daemon.close()
        wh.remove_tree(workdir)


HOST = [("Host", "localhost")]


def test_example_ini_loads_unchanged():
    r = subprocess.run(
        [str(BINARY), "--ini", str(PROJECT / "server_dev.ini"), "--check-config"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr
    assert "module server_dev.wsgi:application, master" in r.stdout


@pytest.mark.parametrize("proto", PROTOS)
def test_hello_and_json(django, proto):
    c = django.client(proto)
    r = c.request("GET", "/hello/", HOST)
    assert r.status == 200 and r.body == b"Hello, world!\n"
    r = c.request("GET", "/api/posts/", HOST)
    assert r.status == 200 and "posts" in json.loads(r.body)


@pytest.mark.parametrize("proto", PROTOS)
def test_echo_body(django, proto):
    body = os.urandom(300_000)
    r = django.client(proto).request(
        "POST", "/echo/?a=1", HOST + [("Content-Type", "application/x-raw")], body=body
    )
    assert r.status == 200, r.body[:500]
    e = json.loads(r.body)
    assert e["body_length"] == len(body)
    assert e["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert e["QUERY_STRING"] == "a=1" and e["SCRIPT_NAME"] == ""
    assert e["wsgi.multiprocess"] is True


def test_echo_chunked_body(django):
    """A chunked upload reaches the view decoded, with its length, as nginx would pass it."""
    body = os.urandom(300_001)
    coded = bytearray()
    for i in range(0, len(body), 65_537):
        piece = body[i : i + 65_537]
        coded += b"%x\r\n" % len(piece) + piece + b"\r\n"
    coded += b"0\r\n\r\n"
    with wh.HttpConnection(("127.0.0.1", django.port), timeout=20) as c:
        c.request(
            "POST",
            "/echo/",
            HOST + [("Content-Type", "application/x-raw"), ("Transfer-Encoding", "chunked")],
            body=bytes(coded),
        )
        r = c.read_response()
    assert r.status == 200, r.body[:500]
    e = json.loads(r.body)
    assert e["body_length"] == len(body)
    assert e["body_sha256"] == hashlib.sha256(body).hexdigest()


def csrf(client, path):
    r = client.request("GET", path, HOST)
    assert r.status == 200
    cookie = next(v for v in r.header_all("Set-Cookie") if v.startswith("csrftoken="))
    token = cookie.split(";")[0].split("=", 1)[1]
    m = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', r.body)
    return token, m.group(1).decode()


@pytest.mark.parametrize("proto", PROTOS)
def test_form_post_with_csrf(django, proto):
    c = django.client(proto)
    cookie, token = csrf(c, "/posts/new/")
    form = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token, "title": f"via {proto}", "body": "posted through wharf-wsgi"}
    ).encode()
    headers = HOST + [
        ("Cookie", f"csrftoken={cookie}"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ]
    r = c.request("POST", "/posts/new/", headers, body=form)
    assert r.status == 303, r.body[:300]
    posts = json.loads(c.request("GET", "/api/posts/", HOST).body)["posts"]
    assert any(p["title"] == f"via {proto}" for p in posts)
    r = c.request(
        "POST",
        "/posts/new/",
        HOST + [("Content-Type", "application/x-www-form-urlencoded")],
        body=b"title=x&body=y",
    )
    assert r.status == 403


@pytest.mark.parametrize("proto", PROTOS)
def test_upload(django, proto):
    c = django.client(proto)
    cookie, token = csrf(c, "/upload/")
    data = os.urandom(3 * 1024 * 1024 + 5)
    boundary = "wharfBoundary7MA4YWxkTrZu0gW"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n'
            f'{token}\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="blob-{proto}.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = HOST + [
        ("Cookie", f"csrftoken={cookie}"),
        ("Content-Type", f"multipart/form-data; boundary={boundary}"),
    ]
    r = c.request("POST", "/upload/", headers, body=body)
    assert r.status == 200, r.body[:500]
    assert f'id="upload-sha256">{hashlib.sha256(data).hexdigest()}<'.encode() in r.body
