"""Which response headers of an upstream reach the client: nginx's hidden
ones (X-Accel-*; Server, Date and X-Pad from an HTTP server, not a uwsgi one),
uwsgi_hide_header / proxy_hide_header and uwsgi_pass_header /
proxy_pass_header (Server and Date included), beside Debian's nginx with
the same lines and upstream answers, over both protocols."""

import os

import pytest

import wharf_harness as wh
from proxy_fixtures import (RawUpstream, check_config_refused, proxies,  # noqa: F401
                            read_http_request, read_uwsgi_request)

# Every header the upstream sends, so that the client's set can be compared.
UPSTREAM_HEADERS = [
    ("Server", "upstream/1"),
    ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
    ("X-Accel-Buffering", "no"),
    ("X-Accel-Expires", "60"),
    ("X-Pad", "avoid browser bug"),
    ("Status", "200 OK"),
    ("X-Powered-By", "Django"),
    ("X-Frame-Options", "DENY"),
    ("X-Keep", "1"),
]
WATCHED = [name for name, _ in UPSTREAM_HEADERS]


def answer(conn, uwsgi):
    head = "".join(f"{n}: {v}\r\n" for n, v in UPSTREAM_HEADERS)
    while True:
        try:
            got = read_uwsgi_request(conn) if uwsgi else read_http_request(conn)
        except ConnectionError:
            return
        if not got[0]:
            return
        conn.sendall(f"HTTP/1.1 200 OK\r\n{head}Content-Length: 2\r\n\r\nok".encode())


# location -> (wharf's lines, nginx's lines), with {p} for uwsgi or proxy
LOCATIONS = {
    "/plain/": ("", ""),
    "/custom/": ("{p}_hide_header = X-Powered-By\n{p}_pass_header = X-Accel-Buffering\n"
                 "{p}_pass_header = Server\n",
                 "{p}_hide_header X-Powered-By; {p}_pass_header X-Accel-Buffering; "
                 "{p}_pass_header Server;"),
    "/date/": ("{p}_pass_header = Date\n{p}_hide_header = X-Keep\n{p}_pass_header = X-Keep\n",
               "{p}_pass_header Date; {p}_hide_header X-Keep; {p}_pass_header X-Keep;"),
}


def seen(address, path):
    with wh.HttpConnection(address, timeout=10) as c:
        r = c.exchange("GET", path)
    assert r.status == 200 and r.body == b"ok"
    server = r.header("Server")
    return ({n: r.header(n) for n in WATCHED if r.header(n) is not None and n != "Server"},
            server == "upstream/1")


@pytest.mark.skipif(not os.access(wh.NGINX, os.X_OK), reason="Debian's nginx is not installed")
@pytest.mark.parametrize("protocol", ["uwsgi", "http"])
def test_the_same_headers_reach_the_client_as_through_nginx(proxies, protocol):
    uwsgi = protocol == "uwsgi"
    p_ = "uwsgi" if uwsgi else "proxy"
    up = RawUpstream(lambda conn: answer(conn, uwsgi))
    ngx_pass = f"uwsgi_pass {up.address};" if uwsgi else f"proxy_pass http://{up.address};"
    ngx_locations = "\n".join(
        f"        location {path} {{ {ngx.format(p=p_)} {ngx_pass} }}"
        for path, (_, ngx) in LOCATIONS.items())
    with wh.NginxRun("ph-ngx-") as ngx:
        ngx.start(f"""\
    server {{
        listen 127.0.0.1:{ngx.port};
{ngx_locations}
    }}""")
        theirs = {path: seen(ngx.address, path) for path in LOCATIONS}
    action = "uwsgi_pass" if uwsgi else "proxy_pass"
    site = f"[server]\nworkers = 1\n[upstream u]\nserver = {up.address}\n" + "".join(
        f"[location {path}]\n{action} = u\n{ours.format(p=p_)}"
        for path, (ours, _) in LOCATIONS.items())
    try:
        p = proxies(site)
        ours = {path: seen(p.address, path) for path in LOCATIONS}
    finally:
        up.close()
    # What nginx does, spelled out, so that a change on either side shows.
    fixed_date = "Mon, 01 Jan 2024 00:00:00 GMT"
    plain, from_upstream = theirs["/plain/"]
    assert from_upstream == uwsgi, "a uwsgi server's Server goes through, an HTTP one's not"
    assert (plain["Date"] == fixed_date) == uwsgi
    assert "X-Accel-Buffering" not in plain and "X-Accel-Expires" not in plain
    assert "Status" in plain and ("X-Pad" in plain) == uwsgi
    assert theirs["/custom/"][1] and theirs["/custom/"][0].get("X-Accel-Buffering") == "no"
    assert "X-Powered-By" not in theirs["/custom/"][0]
    assert theirs["/date/"][0]["Date"] == fixed_date
    assert theirs["/date/"][0]["X-Keep"] == "1"
    for path in LOCATIONS:
        ours_path = dict(ours[path][0])
        theirs_path = dict(theirs[path][0])
        if theirs_path["Date"] != fixed_date:  # the Date of the moment: only that each has one
            assert ours_path.pop("Date") != fixed_date and theirs_path.pop("Date")
        assert (ours_path, ours[path][1]) == (theirs_path, theirs[path][1]), path


def test_server_lines_reach_locations_without_their_own(proxies):
    up = RawUpstream(lambda conn: answer(conn, True))
    try:
        p = proxies(f"[server]\nworkers = 1\nuwsgi_hide_header = X-Frame-Options\n"
                    f"uwsgi_pass_header = X-Accel-Expires\n"
                    f"[upstream u]\nserver = {up.address}\n"
                    f"[location /]\nuwsgi_pass = u\n"
                    f"[location /own/]\nuwsgi_pass = u\nuwsgi_hide_header = X-Keep\n")
        inherited, _ = seen(p.address, "/")
        own, _ = seen(p.address, "/own/")
    finally:
        up.close()
    assert "X-Frame-Options" not in inherited and inherited["X-Accel-Expires"] == "60"
    assert own["X-Frame-Options"] == "DENY" and "X-Keep" not in own
    assert "X-Accel-Expires" in own, "the server's pass_header: the location has none of its own"


def test_refusals(tmp_path):
    check_config_refused(tmp_path, "[server]\nlisten = 127.0.0.1:1\nproxy_hide_header = X-A X-B\n"
                         "[upstream u]\nserver = unix:/run/u.sock\n"
                         "[location /]\nuwsgi_pass = u\nproxy_pass_header = Server\n"
                         "uwsgi_hide_header = Bad:Name\n",
                         [(3, "'X-A X-B' is not one header name"),
                          (8, "key 'proxy_pass_header': needs proxy_pass here"),
                          (9, "'Bad:Name' is not one header name")])
