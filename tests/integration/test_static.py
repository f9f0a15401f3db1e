# SPDX-License-Identifier: MIT
"""wharf-static as a direct HTTP server, against docs/wharf-static.md.

Tests that only read share the module's `site` daemon; a test that needs
its own configuration, changes files or signals the daemon starts one with
`start_static`. Every daemon is stopped with SIGTERM at the end and must exit
0 without a sanitizer report.
"""

import email.utils
import hashlib
import os
import random
import re
import signal
import subprocess
import threading
import time
import urllib.parse

import pytest

import wharf_harness as wh
from conftest import (
    MTIME,
    SECRET,
    STATIC_DEFAULTS,
    UTF8_NAME,
    build_tree,
    format_ini,
    static_binary_or_skip,
)

static_binary_or_skip(module_level=True)

VERSION = wh.project_version()
LAST_MODIFIED = email.utils.formatdate(MTIME, usegmt=True)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def date_of(value: str) -> float:
    return email.utils.parsedate_to_datetime(value).timestamp()


def media_type(r: wh.Response) -> str:
    """Content-Type without spaces, lowercased: "text/html;charset=utf-8"."""
    return (r.header("Content-Type") or "").replace(" ", "").lower()


def assert_no_leak(r: wh.Response) -> None:
    assert SECRET not in r.body, "content from outside the root was served"
    assert b"root:x:0:0" not in r.body, "/etc/passwd was served"


def assert_served(r: wh.Response, content: bytes) -> None:
    assert r.status == 200, r
    assert r.body == content
    assert r.header("Content-Length") == str(len(content))


# ---------------------------------------------------------------------------
# Responses and their headers


def test_get_has_exact_body_and_headers(site, site_tree):
    r = site.get("/index.html")
    assert_served(r, site_tree.files["index.html"])
    assert r.version == "1.1"
    assert media_type(r) == "text/html;charset=utf-8"
    assert r.header("Last-Modified") == LAST_MODIFIED
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', r.header("ETag"))
    assert r.header("ETag") == f'"{MTIME:x}-{len(site_tree.files["index.html"]):x}"'
    assert r.header("Accept-Ranges") == "bytes"
    assert abs(date_of(r.header("Date")) - time.time()) < 10
    assert r.header("Server") == f"wharf-static/{VERSION}"
    for absent in ("Content-Encoding", "Cache-Control", "Expires", "Vary", "Content-Range"):
        assert r.header(absent) is None, absent


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/style.css", "text/css;charset=utf-8"),
        ("/app.js", re.compile(r"(text|application)/javascript;charset=utf-8")),
        ("/data.json", re.compile(r"application/json(;charset=utf-8)?")),
        ("/sub/page.txt", "text/plain;charset=utf-8"),
        ("/small.bin", "application/octet-stream"),
        ("/unknown.zzqx", "application/octet-stream"),
        ("/README", "application/octet-stream"),
    ],
)
def test_content_type(site, path, expected):
    r = site.get(path)
    assert r.status == 200
    if isinstance(expected, str):
        assert media_type(r) == expected
    else:
        assert expected.fullmatch(media_type(r)), media_type(r)


def test_default_type_is_configurable(start_static):
    s = start_static(config={"default_type": "text/x-wharf-test"})
    assert media_type(s.get("/unknown.zzqx")).startswith("text/x-wharf-test")
    assert media_type(s.get("/style.css")).startswith("text/css")


def test_internal_serves_nothing_directly(start_static):
    """internal = on: only wharf-proxy's internal redirects (X-Accel-Redirect,
    tested with the proxy) are served; a client on a listener gets 404,
    and Wharf-Response-Header from a client does nothing."""
    s = start_static(config={"internal": True})
    r = s.get("/index.html", headers={"Wharf-Response-Header": "Set-Cookie: x=1"})
    assert r.status == 404 and r.header("Set-Cookie") is None
    plain = start_static()
    r = plain.get("/index.html", headers={"Wharf-Response-Header": "Set-Cookie: x=1"})
    assert r.status == 200 and r.header("Set-Cookie") is None


def test_server_tokens_off(start_static):
    s = start_static(config={"server_tokens": False})
    assert s.get("/index.html").header("Server") == "wharf"
    assert s.get("/missing").header("Server") == "wharf"


def test_head_has_the_headers_of_get_and_no_body(site):
    with site.connect() as c:
        for path in ("/index.html", "/big.bin", "/empty.txt"):
            head = c.exchange("HEAD", path)
            get = c.exchange("GET", path)
            assert head.status == get.status == 200
            for name in (
                "Content-Type",
                "Content-Length",
                "ETag",
                "Last-Modified",
                "Accept-Ranges",
            ):
                assert head.header(name) == get.header(name), name
        # Had a HEAD carried a body, the next response would not parse.
        assert c.exchange("GET", "/style.css").status == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_get_405_with_allow(site, method):
    r = site.get("/index.html", {"Content-Length": "0", "Connection": "close"}, method=method)
    assert r.status == 405
    allow = {t.strip() for t in (r.header("Allow") or "").split(",")}
    assert allow == {"GET", "HEAD"}


def test_405_with_a_body_keeps_the_connection_in_sync(site, site_tree):
    with site.connect() as c:
        c.send(
            wh.build_request("POST", "/index.html", {"Content-Length": "5"}, body=b"HELLO")
            + wh.build_request("GET", "/style.css")
        )
        assert c.read_response().status == 405
        try:
            second = c.read_response()
        except wh.ConnectionClosed:
            return  # closing after a request with a body is allowed
        assert_served(second, site_tree.files["style.css"])


# ---------------------------------------------------------------------------
# Connections: HTTP/1.0, keep-alive, pipelining


def test_http10_closes_by_default(site, site_tree):
    with site.connect() as c:
        r = c.exchange("GET", "/index.html", version="HTTP/1.0", host=None)
        assert_served(r, site_tree.files["index.html"])
        assert c.read_until_closed(3) == b""


def test_http10_keep_alive(site, site_tree):
    with site.connect() as c:
        for path in ("/index.html", "/style.css"):
            r = c.exchange("GET", path, {"Connection": "keep-alive"}, version="HTTP/1.0", host=None)
            assert_served(r, site_tree.files[path[1:]])
            assert r.has_token("Connection", "keep-alive")
        assert c.is_open()


def test_http11_connection_close_is_honoured(site):
    with site.connect() as c:
        r = c.exchange("GET", "/index.html", {"Connection": "close"})
        assert r.status == 200 and r.has_token("Connection", "close")
        assert c.read_until_closed(3) == b""


def test_http11_keep_alive_many_requests(site, site_tree):
    paths = ["index.html", "style.css", "small.bin", "empty.txt", "sub/page.txt", "app.js"]
    with site.connect() as c:
        for i in range(120):
            path = paths[i % len(paths)]
            assert_served(c.exchange("GET", "/" + path), site_tree.files[path])
        assert c.is_open()


def test_keepalive_requests_cap(start_static, site_tree):
    s = start_static(config={"keepalive_requests": 3})
    with s.connect() as c:
        for i in range(3):
            r = c.exchange("GET", "/style.css")
            assert r.status == 200
            assert r.has_token("Connection", "close") == (i == 2), r
        assert c.read_until_closed(3) == b""
    with s.connect() as c:  # pipelined: three answers, then the close
        c.send(wh.build_request("GET", "/style.css") * 5)
        rs = c.read_responses(["GET"] * 3)
        assert [r.status for r in rs] == [200, 200, 200]
        assert rs[2].has_token("Connection", "close")
        assert c.read_until_closed(3) == b""


def test_pipelining_answers_in_order(site, site_tree):
    with site.connect() as c:
        c.send(
            wh.build_request("GET", "/index.html")
            + wh.build_request("HEAD", "/style.css")
            + wh.build_request("GET", "/does-not-exist")
            + wh.build_request("GET", "/small.bin")
            + wh.build_request("GET", "/empty.txt")
        )
        rs = c.read_responses(["GET", "HEAD", "GET", "GET", "GET"])
        assert [r.status for r in rs] == [200, 200, 404, 200, 200]
        assert rs[0].body == site_tree.files["index.html"]
        assert rs[1].body == b"" and rs[1].header("Content-Length") == str(
            len(site_tree.files["style.css"])
        )
        assert rs[3].body == site_tree.files["small.bin"]
        assert c.is_open()


def test_pipelining_around_large_bodies(site, site_tree):
    big = site_tree.files["big.bin"]
    reqs = [
        ("GET", "/small.bin", {}),
        ("GET", "/big.bin", {}),
        ("GET", "/big.bin", {"Range": "bytes=1000-400000"}),
        ("HEAD", "/big.bin", {}),
        ("GET", "/index.html", {}),
        ("GET", "/big.bin", {}),
        ("GET", "/style.css", {}),
    ]
    with site.connect() as c:
        c.send(b"".join(wh.build_request(m, p, h) for m, p, h in reqs))
        rs = c.read_responses([m for m, _, _ in reqs])
    assert [r.status for r in rs] == [200, 200, 206, 200, 200, 200, 200]
    assert sha(rs[1].body) == sha(big) and sha(rs[5].body) == sha(big)
    assert rs[2].body == big[1000:400001]
    assert rs[4].body == site_tree.files["index.html"]
    assert rs[6].body == site_tree.files["style.css"]


def test_requests_split_anywhere_across_reads(site, site_tree):
    data = wh.build_request("GET", "/index.html", {"X-Pad": "p" * 100}) + wh.build_request(
        "GET", "/style.css"
    )
    rng = random.Random(7)
    with site.connect() as c:
        for _ in range(3):
            cuts = sorted(rng.sample(range(1, len(data)), 6))
            for a, b in zip([0] + cuts, cuts + [len(data)]):
                c.send(data[a:b])
                time.sleep(0.01)
            rs = c.read_responses(["GET", "GET"])
            assert rs[0].body == site_tree.files["index.html"]
            assert rs[1].body == site_tree.files["style.css"]


# ---------------------------------------------------------------------------
# URL to file


@pytest.mark.parametrize("how", ["argument", "config"])
def test_prefix_mapping(start_static, how):
    if how == "argument":
        s = start_static(args=["--prefix", "/static/"])
    else:
        s = start_static(config={"prefix": "/static/"})
    assert s.get("/static/index.html").body == (s.root / "index.html").read_bytes()
    assert s.get("/static/sub/page.txt").body == b"sub page\n"
    assert b"<p>index</p>" in s.get("/static/").body
    r = s.get("/static/sub")
    assert r.status == 301 and r.header("Location").endswith("/static/sub/")
    for outside in ("/index.html", "/other", "/", "/staticx/index.html", "/sub/page.txt"):
        assert s.get(outside).status == 404, outside


def test_percent_decoded_names(site, site_tree):
    assert_served(site.get("/my%20file.txt"), site_tree.files["my file.txt"])
    assert_served(site.get("/" + urllib.parse.quote(UTF8_NAME)), site_tree.files[UTF8_NAME])
    assert_served(site.get("/%69ndex.html"), site_tree.files["index.html"])
    assert_served(site.get("/sub/%70age%2etxt"), site_tree.files["sub/page.txt"])


def test_query_string_is_not_part_of_the_name(site, site_tree):
    assert_served(site.get("/style.css?v=123&x=%2F"), site_tree.files["style.css"])


@pytest.mark.parametrize(
    "target",
    [
        "/sub/../index.html",
        "/./index.html",
        "/sub/./../index.html",
        "//index.html",
        "/sub/%2e%2e/index.html",
    ],
)
def test_dot_segments_inside_the_root(site, site_tree, target):
    assert_served(site.get(target), site_tree.files["index.html"])


ESCAPES = [
    "/../secret.txt",
    "/../../../../../../etc/passwd",
    "/%2e%2e/secret.txt",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/.%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/sub/../../secret.txt",
    "/a/..%2f..%2fetc/passwd",
    "/..%2fsecret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/%252e%252e/secret.txt",
    "/%2F",
    "/%2fetc/passwd",
    "/x%00.html",
    "/secret.txt%00.html",
    "/..",
    "/../",
    "//etc/passwd",
    "/passwd-link",
    "/secret-link.txt",
    "/secret-abs-link.txt",
    "/outside-dir/secret.txt",
    "/outside-dir/www/index.html",
    "http://x/../../etc/passwd",
    "http://x/%2e%2e/secret.txt",
    "http://x/../secret.txt",
]


@pytest.mark.parametrize("target", ESCAPES)
def test_nothing_outside_the_root_is_served(site, target):
    r = site.get(target)
    assert_no_leak(r)
    assert r.status in (400, 403, 404), r


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/../../secret.txt",
        "/a/..%2f..%2fetc/passwd",
        "/%2F",
        "/x%00.html",
    ],
)
def test_encoded_slash_nul_and_climbing_dots_are_400(site, target):
    """docs: "%2F, %00 and any .. above the root are 400"."""
    assert site.get(target).status == 400


def test_symlinks_inside_the_root_are_served(site, site_tree):
    assert_served(site.get("/inside-link.css"), site_tree.files["style.css"])
    assert_served(site.get("/sub/up-link.css"), site_tree.files["style.css"])


def test_only_regular_files_are_served(site):
    start = time.monotonic()
    r = site.get("/fifo")
    assert r.status in (403, 404)
    assert time.monotonic() - start < 2, "opening a FIFO must not block"


def test_directory_without_slash_redirects(site):
    for path in ("/sub", "/noindex"):
        r = site.get(path)
        assert r.status == 301
        assert r.header("Location").endswith(path + "/")


def test_directory_with_slash_serves_its_index(site, site_tree):
    r = site.get("/sub/")
    assert_served(r, site_tree.files["sub/index.html"])
    assert media_type(r) == "text/html;charset=utf-8"
    assert_served(site.get("/"), site_tree.files["index.html"])


def test_directory_without_index_is_not_listed(site):
    r = site.get("/noindex/")
    assert r.status in (403, 404)  # docs: 404
    assert b"alpha-listed" not in r.body and b"beta-listed" not in r.body


@pytest.mark.parametrize(
    "path", ["/does-not-exist", "/sub/nope.html", "/index.html/", "/index.html/x", "/nodir/x"]
)
def test_missing_is_404(site, path):
    r = site.get(path)
    assert r.status == 404
    assert r.header("Date") and r.header("Server")
    assert r.header("Content-Length") == str(len(r.body))


def test_empty_file(site):
    r = site.get("/empty.txt")
    assert r.status == 200 and r.body == b"" and r.header("Content-Length") == "0"


def test_unreadable_file_is_403(site, start_static):
    if os.geteuid() != 0:
        assert site.get("/unreadable.txt").status == 403
        return
    # root reads anything: run a daemon as nobody over a tree nobody can reach.
    base = wh.short_tempdir()
    try:
        tree = build_tree(base)
        s = start_static(tree.root, user="nobody")
        assert_served(s.get("/style.css"), tree.files["style.css"])
        r = s.get("/unreadable.txt")
        assert r.status == 403
        assert b"nobody may read" not in r.body
    finally:
        wh.remove_tree(base)


# ---------------------------------------------------------------------------
# Conditional requests


@pytest.mark.parametrize(
    "inm",
    ["{etag}", "*", '"nope", {etag}', "W/{etag}", '"a",W/{etag} , "b"', '{etag}, "x"'],
)
def test_if_none_match_matching_is_304(site, site_tree, inm):
    etag = site_tree.etag("style.css")
    with site.connect() as c:
        r = c.exchange("GET", "/style.css", {"If-None-Match": inm.format(etag=etag)})
        assert r.status == 304
        assert r.header("ETag") == etag
        # A 304 has no body: the next response on the connection proves it.
        assert_served(c.exchange("GET", "/style.css"), site_tree.files["style.css"])


@pytest.mark.parametrize("inm", ['"nope"', 'W/"nope"', '"{mtime:x}-0"'])
def test_if_none_match_not_matching_is_200(site, site_tree, inm):
    r = site.get("/style.css", {"If-None-Match": inm.format(mtime=MTIME)})
    assert_served(r, site_tree.files["style.css"])


@pytest.mark.parametrize(
    "ims, status",
    [
        (LAST_MODIFIED, 304),
        (http_date(MTIME + 3600), 304),
        (http_date(MTIME - 1), 200),
        (http_date(0), 200),
        ("Tuesday, 14-Nov-23 22:13:20 GMT", 304),  # RFC 850 form of LAST_MODIFIED
        ("Tue Nov 14 22:13:20 2023", 304),  # asctime form
        ("not a date", 200),
    ],
)
def test_if_modified_since(site, ims, status):
    assert LAST_MODIFIED == "Tue, 14 Nov 2023 22:13:20 GMT"
    r = site.get("/style.css", {"If-Modified-Since": ims})
    assert r.status == status
    if status == 304:
        assert r.body == b"" and r.header("ETag")


def test_if_none_match_takes_precedence(site, site_tree):
    etag = site_tree.etag("style.css")
    r = site.get("/style.css", {"If-None-Match": '"other"', "If-Modified-Since": LAST_MODIFIED})
    assert r.status == 200
    r = site.get(
        "/style.css", {"If-None-Match": etag, "If-Modified-Since": http_date(MTIME - 3600)}
    )
    assert r.status == 304


def test_conditional_head(site, site_tree):
    r = site.get("/style.css", {"If-None-Match": site_tree.etag("style.css")}, method="HEAD")
    assert r.status == 304


# ---------------------------------------------------------------------------
# Range


@pytest.mark.parametrize(
    "spec, first, last",
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, 1023),
        ("bytes=-100", 924, 1023),
        ("bytes=0-0", 0, 0),
        ("bytes=1023-", 1023, 1023),
        ("bytes=1000-5000", 1000, 1023),
        ("bytes=-5000", 0, 1023),
    ],
)
def test_single_range(site, site_tree, spec, first, last):
    data = site_tree.files["small.bin"]
    r = site.get("/small.bin", {"Range": spec})
    assert r.status == 206
    assert r.header("Content-Range") == f"bytes {first}-{last}/{len(data)}"
    assert r.header("Content-Length") == str(last - first + 1)
    assert r.body == data[first : last + 1]
    assert r.header("ETag") == site_tree.etag("small.bin")
    assert media_type(r) == "application/octet-stream"


@pytest.mark.parametrize(
    "path, spec",
    [("/small.bin", "bytes=1024-"), ("/small.bin", "bytes=5000-6000"), ("/empty.txt", "bytes=0-0")],
)
def test_unsatisfiable_range_is_416(site, site_tree, path, spec):
    size = len(site_tree.files[path[1:]])
    with site.connect() as c:
        r = c.exchange("GET", path, {"Range": spec})
        assert r.status == 416
        assert r.header("Content-Range") == f"bytes */{size}"
        assert c.exchange("GET", "/style.css").status == 200  # still in sync


@pytest.mark.parametrize(
    "spec",
    ["bytes=abc", "bytes=", "items=0-5", "bytes=0-1,5-6", "bytes=0-99, 200-299", "bytes=--5"],
)
def test_ignored_range_gives_the_whole_file(site, site_tree, spec):
    r = site.get("/small.bin", {"Range": spec})
    assert_served(r, site_tree.files["small.bin"])
    assert r.header("Content-Range") is None


def test_inverted_range(site, site_tree):
    r = site.get("/small.bin", {"Range": "bytes=500-100"})
    assert r.status in (200, 416)  # an invalid range-spec may be ignored or refused
    if r.status == 200:
        assert r.body == site_tree.files["small.bin"]


def test_if_range(site, site_tree):
    etag = site_tree.etag("small.bin")
    data = site_tree.files["small.bin"]
    cases = [
        (etag, 206),
        ('"0-0"', 200),
        (f"W/{etag}", 200),
        (LAST_MODIFIED, 206),
        (http_date(MTIME - 60), 200),
    ]
    for if_range, status in cases:
        r = site.get("/small.bin", {"Range": "bytes=10-19", "If-Range": if_range})
        assert r.status == status, if_range
        assert r.body == (data[10:20] if status == 206 else data)


def test_ranges_of_the_large_file(site, site_tree):
    big = site_tree.files["big.bin"]
    with site.connect() as c:
        for spec, a, b in [
            ("bytes=300000-700000", 300000, 700000),
            ("bytes=524288-", 524288, len(big) - 1),
            ("bytes=-1", len(big) - 1, len(big) - 1),
            ("bytes=1-", 1, len(big) - 1),
        ]:
            r = c.exchange("GET", "/big.bin", {"Range": spec})
            assert r.status == 206
            assert r.header("Content-Range") == f"bytes {a}-{b}/{len(big)}"
            assert sha(r.body) == sha(big[a : b + 1])


def test_head_with_range(site, site_tree):
    with site.connect() as c:
        r = c.exchange("HEAD", "/small.bin", {"Range": "bytes=0-99"})
        assert r.status in (200, 206)
        if r.status == 206:
            assert r.header("Content-Range") == "bytes 0-99/1024"
            assert r.header("Content-Length") == "100"
        assert_served(c.exchange("GET", "/style.css"), site_tree.files["style.css"])


def test_range_with_matching_if_none_match_is_304(site, site_tree):
    r = site.get("/small.bin", {"Range": "bytes=0-9", "If-None-Match": site_tree.etag("small.bin")})
    assert r.status == 304


# ---------------------------------------------------------------------------
# gzip_static, expires


@pytest.mark.parametrize(
    "accept", ["gzip", "deflate, gzip;q=0.5", "GZIP", "br, gzip", "gzip;q=1.0, identity"]
)
def test_gzip_static_serves_the_gz_sibling(site, site_tree, accept):
    r = site.get("/app.js", {"Accept-Encoding": accept})
    gz = site_tree.files["app.js.gz"]
    assert r.status == 200
    assert r.header("Content-Encoding") == "gzip"
    assert r.body == gz and r.header("Content-Length") == str(len(gz))
    assert r.has_token("Vary", "Accept-Encoding")
    assert "javascript" in media_type(r)


@pytest.mark.parametrize("accept", [None, "gzip;q=0", "gzip; q=0.000", "deflate", "identity", "br"])
def test_gzip_static_plain_when_not_accepted(site, site_tree, accept):
    r = site.get("/app.js", {"Accept-Encoding": accept} if accept is not None else {})
    assert_served(r, site_tree.files["app.js"])
    assert r.header("Content-Encoding") is None
    assert r.has_token("Vary", "Accept-Encoding")


def test_gzip_static_head(site, site_tree):
    r = site.get("/app.js", {"Accept-Encoding": "gzip"}, method="HEAD")
    assert r.header("Content-Encoding") == "gzip"
    assert r.header("Content-Length") == str(len(site_tree.files["app.js.gz"]))


def test_no_vary_without_a_gz_sibling(site, site_tree):
    r = site.get("/style.css", {"Accept-Encoding": "gzip"})
    assert_served(r, site_tree.files["style.css"])
    assert r.header("Content-Encoding") is None
    assert r.header("Vary") is None


def test_gz_sibling_leading_outside_is_not_served(site, site_tree):
    r = site.get("/evil.js", {"Accept-Encoding": "gzip"})
    assert_no_leak(r)
    if r.status == 200:
        assert r.body == site_tree.files["evil.js"] and r.header("Content-Encoding") is None


def test_gzip_static_off(start_static):
    s = start_static(config={"gzip_static": False})
    r = s.get("/app.js", {"Accept-Encoding": "gzip"})
    assert r.status == 200 and r.header("Content-Encoding") is None
    assert b"plain app.js" in r.body


@pytest.mark.parametrize("expires, seconds", [("1h", 3600), ("30d", 30 * 86400), ("90s", 90)])
def test_expires_duration(start_static, expires, seconds):
    s = start_static(config={"expires": expires})
    r = s.get("/style.css")
    assert r.header("Cache-Control") == f"max-age={seconds}"
    assert abs(date_of(r.header("Expires")) - (time.time() + seconds)) < 10


def test_expires_epoch_and_max(start_static):
    r = start_static(config={"expires": "epoch"}).get("/style.css")
    assert date_of(r.header("Expires")) < 86400
    r = start_static(config={"expires": "max"}).get("/style.css")
    assert date_of(r.header("Expires")) > time.time() + 5 * 365 * 86400
    m = re.fullmatch(r"max-age=(\d+)", r.header("Cache-Control") or "")
    assert m and int(m.group(1)) >= 5 * 365 * 86400


def test_expires_off_by_default(site):
    r = site.get("/style.css")
    assert r.header("Cache-Control") is None and r.header("Expires") is None


# ---------------------------------------------------------------------------
# Bodies: large files, slow readers, the send paths, freshness


def test_large_file_over_keep_alive(site, site_tree):
    big = sha(site_tree.files["big.bin"])
    with site.connect() as c:
        for _ in range(3):
            r = c.exchange("GET", "/big.bin")
            assert r.status == 200 and r.header("Content-Length") == str(1 << 20)
            assert sha(r.body) == big
            assert_served(c.exchange("GET", "/small.bin"), site_tree.files["small.bin"])


@pytest.mark.parametrize("zero_copy", ["sendfile", "splice"])
def test_slow_reader_on_each_zero_copy_path(start_static, zero_copy):
    # A full socket makes sendfile and splice stop short: both must resume.
    s = start_static(config={"zero_copy": zero_copy, "splice_min": "64k"})
    data = (s.root / "big.bin").read_bytes()
    with s.connect(rcvbuf=4096, recv_size=4096) as c:
        c.request("GET", "/big.bin")
        time.sleep(0.3)
        c.read_delay = 0.0002
        r = c.read_response()
        assert sha(r.body) == sha(data)
        c.read_delay = 0
        assert c.exchange("GET", "/style.css").status == 200


def test_slow_reader_gets_the_whole_body(site, site_tree):
    with site.connect(rcvbuf=4096, recv_size=4096) as c:
        c.request("GET", "/big.bin")
        time.sleep(0.5)  # let every buffer on the way fill up
        c.read_delay = 0.0005
        r = c.read_response()
        assert sha(r.body) == sha(site_tree.files["big.bin"])
        c.read_delay = 0
        assert c.exchange("GET", "/style.css").status == 200


@pytest.mark.parametrize(
    "config",
    [
        {"open_file_cache": 0, "splice_min": 1},
        {"open_file_cache": 0, "splice_min": 1, "zero_copy": "splice"},
        {"zero_copy": "splice"},
        {"splice_min": "64M"},
        {"open_file_cache": "16M", "cache_max_file": "2M"},
    ],
    ids=[
        "no-cache-always-sendfile",
        "no-cache-always-splice",
        "io-uring-splice",
        "never-zero-copy",
        "cache-everything",
    ],
)
def test_every_send_path_sends_the_same_bytes(start_static, config):
    s = start_static(config=config)
    tree_root = s.root
    files = {
        p: (tree_root / p).read_bytes() for p in ("small.bin", "big.bin", "style.css", "empty.txt")
    }
    with s.connect() as c:
        for _ in range(2):  # the second round may come from the cache
            for p, data in files.items():
                assert_served(c.exchange("GET", "/" + p), data)
            r = c.exchange("GET", "/big.bin", {"Range": "bytes=70000-"})
            assert sha(r.body) == sha(files["big.bin"][70000:])
            r = c.exchange("GET", "/small.bin", {"Range": "bytes=10-20"})
            assert r.body == files["small.bin"][10:21]


def poll_until(fn, timeout: float = 1.5, interval: float = 0.05):
    """Calls fn until it returns a true value or timeout passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def test_changed_file_is_served_fresh(start_static):
    s = start_static()
    path = s.root / "fresh.txt"
    for _ in range(3):  # hot, so a cache would hold it
        assert s.get("/fresh.txt").body == b"version one\n"
    path.write_bytes(b"version two\n")  # same size
    os.utime(path, (MTIME + 2, MTIME + 2))
    r = poll_until(
        lambda: (lambda r: r if r.body == b"version two\n" else None)(s.get("/fresh.txt"))
    )
    assert r, "a rewritten file was not served fresh within 1.5 s"
    assert r.header("ETag") == f'"{MTIME + 2:x}-c"'
    path.write_bytes(b"a longer third version\n")
    os.utime(path, (MTIME + 4, MTIME + 4))
    r = poll_until(
        lambda: (lambda r: r if r.body == b"a longer third version\n" else None)(
            s.get("/fresh.txt")
        )
    )
    assert r and r.header("Content-Length") == "23"


def test_deleted_and_created_files(start_static):
    s = start_static()
    assert s.get("/fresh.txt").status == 200
    (s.root / "fresh.txt").unlink()
    assert poll_until(lambda: s.get("/fresh.txt").status == 404), "a deleted file was still served"
    assert s.get("/later.txt").status == 404
    (s.root / "later.txt").write_bytes(b"new\n")
    assert poll_until(lambda: s.get("/later.txt").body == b"new\n"), "a new file stayed 404"


# ---------------------------------------------------------------------------
# Bad input


def test_garbage_request_line_is_400_and_closed(site):
    with site.connect() as c:
        c.send(b"HELLO WORLD\r\n\r\n")
        r = c.read_response()
        assert r.status == 400
        assert c.read_until_closed(3) == b""


BAD_REQUESTS = {
    "bare LF": b"GET /index.html HTTP/1.1\nHost: x\n\n",
    "bare CR": b"GET /index.html HTTP/1.1\rHost: x\r\n\r\n",
    "CL and TE": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE and CL": b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "two CLs": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "CL list": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
    "negative CL": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "signed CL": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "TE xchunked": b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "TE chunked twice": b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n",
    "header without colon": b"GET / HTTP/1.1\r\nHost: x\r\nX-A\r\n\r\n",
    "control char in value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "NUL in value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "no Host in 1.1": b"GET /index.html HTTP/1.1\r\n\r\n",
    "HTTP/0.9": b"GET /index.html\r\n\r\n",
    "two spaces": b"GET  /index.html HTTP/1.1\r\nHost: x\r\n\r\n",
    "space in target": b"GET /my file.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    "tab separator": b"GET\t/index.html HTTP/1.1\r\nHost: x\r\n\r\n",
    "lowercase version": b"GET /index.html http/1.1\r\nHost: x\r\n\r\n",
    "relative target": b"GET index.html HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_malformed_request_is_400_and_closed(site, name):
    with site.connect() as c:
        c.send(BAD_REQUESTS[name])
        r = c.read_response()
        assert r.status == 400
        assert not r.has_token("Connection", "keep-alive")
        closed, extra = c.wait_closed(3)
        assert closed and extra == b""


def test_unknown_transfer_coding(site):
    with site.connect() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n")
        assert c.read_response().status in (400, 501)
        assert c.wait_closed(3)[0]


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/1.2", "HTTP/3.0"])
def test_unsupported_version_is_505(site, version):
    r = wh.parse_responses(
        wh.raw_exchange(site.address, f"GET / {version}\r\nHost: x\r\n\r\n".encode()), ["GET"]
    )[0]
    assert r.status == 505


def test_long_target_is_414(site):
    r = wh.parse_responses(
        wh.raw_exchange(site.address, wh.build_request("GET", "/" + "a" * 9000)), ["GET"]
    )[0]
    assert r.status == 414


def test_too_many_headers_is_431(site):
    headers = [(f"X-H{i}", "v") for i in range(120)]
    r = wh.parse_responses(
        wh.raw_exchange(site.address, wh.build_request("GET", "/", headers)), ["GET"]
    )[0]
    assert r.status == 431


def test_head_over_max_header_size_is_431(start_static):
    s = start_static(config={"max_header_size": "4k"})
    assert s.get("/style.css", {"X-Fits": "f" * 3000}).status == 200
    out = wh.raw_exchange(s.address, wh.build_request("GET", "/style.css", {"X-Big": "b" * 5000}))
    assert wh.parse_responses(out, ["GET"])[0].status == 431
    # Also when the oversized head never ends.
    with s.connect() as c:
        c.send(b"GET /style.css HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 8000)
        assert c.read_response().status == 431
        assert c.wait_closed(3)[0]


def test_body_on_get_never_desyncs(site, site_tree):
    for body_headers, body in [
        ({"Content-Length": "5"}, b"hello"),
        ({"Transfer-Encoding": "chunked"}, b"5\r\nhello\r\n0\r\n\r\n"),
    ]:
        with site.connect() as c:
            c.send(
                wh.build_request("GET", "/index.html", body_headers, body=body)
                + wh.build_request("GET", "/style.css")
            )
            first = c.read_response()
            if first.status != 200:
                assert first.status in (400, 411, 413)
                assert c.wait_closed(3)[0], "after refusing a body the connection must close"
                continue
            assert first.body == site_tree.files["index.html"]
            second = c.read_response()
            assert_served(second, site_tree.files["style.css"])


def test_smuggled_request_is_not_served(site):
    smuggled = b"GET /secret-link.txt HTTP/1.1\r\nHost: x\r\n\r\n"
    data = (
        b"GET /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: "
        + str(len(smuggled)).encode()
        + b"\r\n\r\n"
        + smuggled
    )
    rs = wh.parse_responses(wh.raw_exchange(site.address, data))
    assert [r.status for r in rs] == [400]


def mutate(rng: random.Random, base: bytes) -> bytes:
    data = bytearray(base)
    nasty = [
        b"\r",
        b"\n",
        b"\0",
        b" ",
        b":",
        b"\x7f",
        b"\xff",
        b"%",
        b"%2",
        b"..",
        b"/",
        b"\t",
        b"\r\n",
        b",",
        b";",
    ]
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        i = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(i, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[i:i] = rng.choice(nasty)
        elif op == 2 and data:
            j = rng.randint(i, min(len(data), i + 20))
            del data[i:j]
        elif op == 3:
            j = rng.randint(i, min(len(data), i + 30))
            data[i:i] = data[i:j] * rng.randint(2, 50)
        elif op == 4:
            data = data[:i]
        else:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
    return bytes(data)


def test_fuzzish_malformed_requests(start_static):
    # Long timeouts: every input ends with the client's half-close, after
    # which the daemon has nothing to wait for, so each exchange must end
    # well before any timeout could end it.
    s = start_static(config={"client_header_timeout": "10s", "keepalive_timeout": "10s"})
    bases = [
        wh.build_request("GET", "/index.html"),
        wh.build_request("HEAD", "/style.css", {"Accept-Encoding": "gzip"}),
        wh.build_request("GET", "/small.bin", {"Range": "bytes=1-5", "If-None-Match": '"x"'}),
        wh.build_request("GET", "/sub/", {"Connection": "close"}, version="HTTP/1.0"),
        wh.build_request("GET", "/app.js", {"Content-Length": "3"}, body=b"abc")
        + wh.build_request("GET", "/"),
        wh.build_request("GET", "/%2e%2e/secret.txt"),
    ]
    rng = random.Random(0x5EED)
    for i in range(200):
        data = (
            mutate(rng, rng.choice(bases))
            if i % 10
            else bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
        )
        try:
            out = wh.raw_exchange(s.address, data, timeout=1.5)
        except AssertionError as e:
            raise AssertionError(f"input {i} {data!r}: {e}") from None
        assert SECRET not in out
        if out:
            # The first response must be well formed; its body is not checked
            # (the mutated method may have become HEAD or anything else).
            r = wh.parse_responses(out, ["HEAD"])[0]
            assert 100 <= r.status <= 599, (data, out[:200])
        assert s.daemon.running(), f"died on input {data!r}"
    assert_served(s.get("/style.css"), (s.root / "style.css").read_bytes())


# ---------------------------------------------------------------------------
# Slow and idle clients


def test_stalled_head_is_closed_after_client_header_timeout(start_static):
    s = start_static(config={"client_header_timeout": "1s"})
    with s.connect() as c:
        start = time.monotonic()
        c.send(b"GET /index.html HTTP/1.1\r\nHost: x\r\n")
        closed, data = c.wait_closed(2.5)
        elapsed = time.monotonic() - start
        assert closed, "a stalled request head was not timed out"
        assert elapsed > 0.5
        if data:
            assert wh.parse_responses(data)[0].status == 408


def test_client_header_timeout_covers_the_whole_head(start_static):
    s = start_static(config={"client_header_timeout": "1s"})
    with s.connect() as c:
        start = time.monotonic()
        head = b"GET /index.html HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"s" * 100
        closed = False
        for byte in head:
            try:
                c.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            closed, data = c.wait_closed(0.3)
            if closed or data:
                closed = True
                break
            if time.monotonic() - start > 3:
                break
        assert closed and time.monotonic() - start < 2.5, "a trickling head was not timed out"


def test_silent_connection_is_closed(start_static):
    s = start_static(config={"client_header_timeout": "1s", "keepalive_timeout": "1s"})
    with s.connect() as c:
        closed, data = c.wait_closed(2.5)
        assert closed
        assert data == b"" or wh.parse_responses(data)[0].status == 408


def test_idle_keep_alive_is_closed_after_keepalive_timeout(start_static):
    s = start_static(config={"keepalive_timeout": "1s"})
    with s.connect() as c:
        assert c.exchange("GET", "/style.css").status == 200
        start = time.monotonic()
        closed, data = c.wait_closed(2.5)
        assert closed, "an idle keep-alive connection stayed open"
        assert time.monotonic() - start > 0.5
        assert data == b"" or wh.parse_responses(data)[0].status == 408


def test_slowloris_does_not_block_others(start_static):
    s = start_static(config={"client_header_timeout": "5s"})
    loris = [s.connect() for _ in range(50)]
    stop = threading.Event()
    head = b"GET /index.html HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 1000

    def trickle():
        i = 0
        while not stop.is_set() and i < len(head):
            for c in loris:
                try:
                    c.send(head[i : i + 1])
                except OSError:
                    pass
            i += 1
            stop.wait(0.3)

    t = threading.Thread(target=trickle)
    t.start()
    try:
        slowest = 0.0
        with s.connect() as c:
            for _ in range(10):
                start = time.monotonic()
                assert c.exchange("GET", "/style.css").status == 200
                start2 = time.monotonic()
                assert s.get("/small.bin").status == 200
                slowest = max(slowest, start2 - start, time.monotonic() - start2)
                time.sleep(0.2)
        assert slowest < 1.0, f"a normal client waited {slowest:.2f} s"
    finally:
        stop.set()
        t.join()
        for c in loris:
            c.close()


def test_max_connections_pauses_accepting(start_static):
    s = start_static(config={"max_connections": 8, "client_header_timeout": "10s"})
    idle = [s.connect() for _ in range(20)]
    waiting = s.connect()
    waiting.request("GET", "/style.css")
    time.sleep(0.3)
    assert s.daemon.running()
    for c in idle:
        c.close()
    r = waiting.read_response()  # the socket timeout (5 s) bounds the wait
    assert r.status == 200
    assert s.get("/index.html").status == 200


# ---------------------------------------------------------------------------
# Command line and configuration


def run_static(static_binary, *args, timeout: float = 10.0) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_"))
    }
    return subprocess.run(
        [str(static_binary), *map(str, args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_check_config_accepts_a_good_file(static_binary, tmp_path, site_tree):
    conf = tmp_path / "good.ini"
    conf.write_text(
        format_ini(
            "static",
            {"root": site_tree.root, "prefix": "/static/", **STATIC_DEFAULTS, "expires": "30d"},
        )
    )
    p = run_static(static_binary, "--check-config", "-c", conf)
    assert p.returncode == 0, p.stderr


def test_check_config_names_every_problem(static_binary, tmp_path, site_tree):
    conf = tmp_path / "bad.ini"
    conf.write_text(
        "[static]\n"  # 1
        f"root = {site_tree.root}\n"  # 2
        "rooot = /srv\n"  # 3: unknown key
        "keepalive_timeout = banana\n"  # 4: bad duration
        "gzip_static = maybe\n"  # 5: bad boolean
        "max_header_size = 12Q\n"  # 6: bad size
        "workers = many\n"  # 7: bad number
    )
    p = run_static(static_binary, "--check-config", "-c", conf)
    assert p.returncode != 0
    out = p.stderr + p.stdout
    for line, key in [
        (3, "rooot"),
        (4, "keepalive_timeout"),
        (5, "gzip_static"),
        (6, "max_header_size"),
        (7, "workers"),
    ]:
        assert re.search(
            rf"{re.escape(str(conf))}:{line}\b.*\b{key}\b", out
        ), f"line {line} ({key}) not named in:\n{out}"


def test_check_config_without_root(static_binary, tmp_path):
    conf = tmp_path / "noroot.ini"
    conf.write_text("[static]\nworkers = 1\n")
    p = run_static(static_binary, "--check-config", "-c", conf)
    assert p.returncode != 0 and "root" in p.stderr + p.stdout


def test_missing_config_file(static_binary, tmp_path):
    p = run_static(static_binary, "--check-config", "-c", tmp_path / "nope.ini")
    assert p.returncode != 0 and "nope.ini" in p.stderr + p.stdout


def test_help_and_version(static_binary):
    p = run_static(static_binary, "--help")
    assert p.returncode == 0
    for option in (
        "--root",
        "--prefix",
        "--listen",
        "--handoff",
        "--workers",
        "--check-config",
        "--version",
    ):
        assert option in p.stdout, option
    p = run_static(static_binary, "--version")
    assert p.returncode == 0
    assert "wharf-static" in p.stdout and VERSION in p.stdout


def test_unknown_option(static_binary):
    p = run_static(static_binary, "--no-such-option")
    assert p.returncode != 0 and "no-such-option" in p.stderr


def test_missing_root_fails_at_start(start_static):
    s = start_static("/nonexistent/wharf-root", start=False)
    s.daemon.start()
    rc = s.daemon.wait_exit(5)
    assert rc != 0
    assert "/nonexistent/wharf-root" in s.daemon.log_text()
    assert "READY=1" not in s.notify.messages()


def test_root_that_is_a_file_fails_at_start(start_static, site_tree):
    s = start_static(site_tree.root / "style.css", start=False)
    s.daemon.start()
    assert s.daemon.wait_exit(5) != 0


def test_no_socket_at_all_is_an_error(start_static):
    s = start_static(start=False, sockets=())
    s.daemon.start()
    assert s.daemon.wait_exit(5) != 0
    assert s.daemon.log_text().strip(), "the daemon should say why it stops"


def test_listen_without_systemd(start_static, site_tree):
    port = wh.free_tcp_port()
    s = start_static(site_tree.root, sockets=(), args=["--listen", f"127.0.0.1:{port}"])
    s.port = port
    assert_served(s.get("/index.html"), site_tree.files["index.html"])


def test_listen_from_the_config_file_on_unix(start_static, site_tree):
    s = start_static(site_tree.root, sockets=(), start=False)
    s.unix_path = s.workdir / "own.sock"
    s.write_config(listen=f"unix:{s.unix_path}")
    s.start()
    assert_served(s.get("/style.css"), site_tree.files["style.css"])


def test_unix_socket_from_systemd(start_static, site_tree):
    s = start_static(site_tree.root, sockets=("unix",))
    assert_served(s.get("/small.bin"), site_tree.files["small.bin"])
    with s.connect() as c:
        assert sha(c.exchange("GET", "/big.bin").body) == sha(site_tree.files["big.bin"])


def test_command_line_overrides_the_file(start_static, make_tree):
    a, b = make_tree(), make_tree()
    (a.root / "which.txt").write_bytes(b"tree a\n")
    (b.root / "which.txt").write_bytes(b"tree b\n")
    s = start_static(a.root, args=["--root", str(b.root), "--prefix", "/p/"])
    assert s.get("/p/which.txt").body == b"tree b\n"


def test_under_systemd_socket_activate(static_binary, site_tree, workdir):
    conf = workdir / "activated.ini"
    conf.write_text(format_ini("static", {"root": site_tree.root, **STATIC_DEFAULTS}))
    port = wh.free_tcp_port()
    d = wh.socket_activate(
        [static_binary, "-c", conf],
        workdir=workdir,
        port=port,
        watchdog_usec=400000,
        name="activated",
    )
    try:
        sock = wh.wait_connectable(("127.0.0.1", port))
        with wh.HttpConnection(sock=sock) as c:
            assert_served(c.exchange("GET", "/index.html"), site_tree.files["index.html"])
        d.wait_ready()
        mark = d.notify.mark()
        time.sleep(1.0)
        assert d.notify.count("WATCHDOG=1", since=mark) >= 3
        d.check_clean_exit(d.stop())
        assert "STOPPING=1" in d.notify.messages()
    finally:
        d.close()


# ---------------------------------------------------------------------------
# sd_notify, workers, signals


def test_notify_ready_watchdog_status(start_static):
    s = start_static(watchdog_usec=400000)
    ready = [d for d in s.notify.datagrams() if d.has("READY=1")]
    assert len(ready) == 1 and ready[0].pid == s.daemon.pid
    mark = s.notify.mark()
    time.sleep(1.0)
    assert s.notify.count("WATCHDOG=1", since=mark) >= 3, s.notify.messages()
    for _ in range(5):
        assert s.get("/style.css").status == 200

    def counts(line):
        m = re.fullmatch(r"STATUS=(\d+) connections?, (\d+) requests?, [0-9.]+ req/s.*", line)
        return m and int(m.group(2)) >= 5

    s.notify.wait_for(counts, timeout=2.5)


def test_no_watchdog_without_watchdog_usec(start_static):
    s = start_static()
    time.sleep(0.5)
    assert s.notify.count("WATCHDOG=1") == 0


def test_two_workers_serve(start_static, site_tree):
    s = start_static(site_tree.root, args=["--workers", "2"])
    errors = []

    def client():
        try:
            with s.connect() as c:
                for path in ("index.html", "small.bin", "big.bin", "style.css"):
                    r = c.exchange("GET", "/" + path)
                    if r.body != site_tree.files[path]:
                        errors.append(path)
        except Exception as e:  # reported below, in the test's thread
            errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    s.notify.wait_for(
        lambda line: line.startswith("STATUS=") and "connection" in line and "request" in line, 2.5
    )


def test_sighup_reloads_without_closing_connections(start_static, site_tree):
    s = start_static(site_tree.root, config={"server_tokens": True})
    with s.connect() as old:
        assert old.exchange("GET", "/style.css").header("Server").startswith("wharf-static/")
        s.write_config(server_tokens=False, expires="1h")
        s.reload()
        reloading = [d for d in s.notify.datagrams() if d.has("RELOADING=1")]
        assert reloading and reloading[-1].value(
            "MONOTONIC_USEC"
        ), "RELOADING=1 needs MONOTONIC_USEC="
        assert_served(old.exchange("GET", "/style.css"), site_tree.files["style.css"])
        r = s.get("/style.css")
        assert r.header("Server") == "wharf"
        assert r.header("Cache-Control") == "max-age=3600"
        assert_served(old.exchange("GET", "/index.html"), site_tree.files["index.html"])


def test_sighup_can_change_the_root(start_static, make_tree):
    a, b = make_tree(), make_tree()
    (b.root / "only-in-b.txt").write_bytes(b"b\n")
    s = start_static(a.root)
    assert s.get("/only-in-b.txt").status == 404
    s.write_config(root=str(b.root))
    s.reload()
    assert s.get("/only-in-b.txt").body == b"b\n"


def test_sighup_with_a_broken_config_keeps_the_old_one(start_static, site_tree):
    s = start_static(site_tree.root)
    with s.connect() as old:
        assert old.exchange("GET", "/style.css").status == 200
        good = s.config_path.read_text()
        offset = s.daemon.log_size()
        s.config_path.write_text(good + "bogus_key = 1\nexpires = 1h\n")
        s.daemon.signal(signal.SIGHUP)
        s.daemon.wait_log(r"bogus_key", since=offset)
        time.sleep(0.2)
        assert s.daemon.running()
        r = old.exchange("GET", "/style.css")
        assert (
            r.status == 200 and r.header("Cache-Control") is None
        ), "the broken config was applied"
        r = s.get("/style.css")
        assert r.header("Server").startswith("wharf-static/") and r.header("Cache-Control") is None
    s.write_config(expires="90s")  # a good config afterwards still reloads
    s.reload()
    assert s.get("/style.css").header("Cache-Control") == "max-age=90"


def test_sigterm_finishes_the_response_in_flight(start_static, site_tree):
    s = start_static(site_tree.root)
    with s.connect(rcvbuf=4096, recv_size=4096) as c:
        c.request("GET", "/big.bin")
        time.sleep(0.3)
        s.daemon.signal(signal.SIGTERM)
        time.sleep(0.2)
        r = c.read_response()
        assert sha(r.body) == sha(site_tree.files["big.bin"])
        closed, _ = c.wait_closed(3)
        assert closed, "the connection should close once the response is done"
    s.daemon.check_clean_exit(s.daemon.wait_exit(5))
    assert "STOPPING=1" in s.notify.messages()


def test_sigterm_serves_the_first_request_of_a_fresh_connection(start_static):
    """Accepted just before the stop, a connection may have its request on
    the way: it is served (then closed), not dropped with the idle ones."""
    s = start_static()
    with s.connect() as fresh, s.connect() as silent:
        time.sleep(0.2)
        start = time.monotonic()
        s.daemon.signal(signal.SIGTERM)
        time.sleep(0.3)
        r = fresh.exchange("GET", "/style.css")
        assert r.status == 200 and r.header("Connection") == "close"
        assert fresh.wait_closed(3)[0]
        assert silent.wait_closed(3) == (True, b""), "a silent one is closed after a short grace"
    s.daemon.check_clean_exit(s.daemon.wait_exit(5))
    assert time.monotonic() - start < 3


def test_sigterm_closes_idle_and_half_read_connections(start_static):
    s = start_static()
    idle = s.connect()
    assert idle.exchange("GET", "/style.css").status == 200
    half = s.connect()
    half.send(b"GET /style.css HTTP/1.1\r\nHo")
    time.sleep(0.1)
    start = time.monotonic()
    s.daemon.signal(signal.SIGTERM)
    assert idle.wait_closed(3)[0]
    assert half.wait_closed(3)[0]
    s.daemon.check_clean_exit(s.daemon.wait_exit(5))
    assert time.monotonic() - start < 5
