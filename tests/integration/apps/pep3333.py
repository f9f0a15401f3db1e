# SPDX-License-Identifier: MIT
"""A WSGI application for wharf-wsgi's integration tests.

Everything under / runs inside wsgiref.validate.validator, which checks both
sides of PEP 3333; the daemon runs with PYTHONWARNINGS=error, so a warning of
the validator becomes an exception and a test that sees a 500 fails. Paths
under /raw/ are served without the validator, for what it cannot wrap
(wsgi.file_wrapper's zero-copy path, an application that breaks the rules on
purpose).

WSGI_TEST_DIR names a directory where the application leaves traces (close()
calls) for the test to look at.
"""

import hashlib
import json
import os
import sys
import time
from wsgiref.validate import validator

TRACE_DIR = os.environ.get("WSGI_TEST_DIR", "/tmp")
# What a reload must change: read once, at import.
try:
    with open(os.path.join(TRACE_DIR, "version.txt")) as f:
        VERSION = f.read().strip()
except OSError:
    VERSION = "none"
if VERSION == "broken":
    raise RuntimeError("this version does not load")


def trace(name):
    with open(os.path.join(TRACE_DIR, name), "a") as f:
        f.write(f"{os.getpid()}\n")


def query(environ):
    out = {}
    for part in environ.get("QUERY_STRING", "").split("&"):
        if part:
            k, _, v = part.partition("=")
            out[k] = v
    return out


class Closing:
    """An iterable whose close() leaves a trace."""

    def __init__(self, chunks, name, fail_after=None):
        self.chunks = chunks
        self.name = name
        self.fail_after = fail_after

    def __iter__(self):
        for i, c in enumerate(self.chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("failure in the middle of the body")
            yield c
            if self.name == "slow":
                time.sleep(0.05)

    def close(self):
        trace("close-" + self.name)


def big_body(n):
    """n bytes that differ everywhere (a reordered or repeated piece shows):
    the blake2b digests of 0, 1, 2, ... one after the other."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.blake2b(i.to_bytes(8, "little")).digest()
        i += 1
    return bytes(out[:n])


def plain(start_response, body, status="200 OK", ctype="text/plain", length=True):
    headers = [("Content-Type", ctype)]
    if length:
        headers.append(("Content-Length", str(len(body))))
    start_response(status, headers)
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = query(environ)
    if path == "/env":
        env = {k: v for k, v in environ.items() if isinstance(v, str)}
        env["wsgi.version"] = list(environ["wsgi.version"])
        for k in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once"):
            env[k] = environ[k]
        env["has_file_wrapper"] = "wsgi.file_wrapper" in environ
        environ["wsgi.errors"].write("env requested\n")
        environ["wsgi.errors"].flush()
        return plain(start_response, json.dumps(env).encode(), ctype="application/json")
    if path == "/echo":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        how = q.get("how", "read")
        inp = environ["wsgi.input"]
        if how == "read":
            body = inp.read(n)
        elif how == "chunks":
            parts = []
            while True:
                b = inp.read(int(q.get("size", "7")))
                if not b:
                    break
                parts.append(b)
            body = b"|".join(parts)
        elif how == "readline":
            lines = []
            while True:
                line = inp.readline()
                if not line:
                    break
                lines.append(line)
            body = json.dumps([x.decode("latin-1") for x in lines]).encode()
        elif how == "readlines":
            body = json.dumps([x.decode("latin-1") for x in inp.readlines()]).encode()
        elif how == "iter":
            body = json.dumps([x.decode("latin-1") for x in inp]).encode()
        else:
            body = b"?"
        return plain(start_response, body)
    if path == "/body-info":
        # The body as wsgi.input gives it, and whether it sits in a file under
        # TMPDIR while the application runs (spooled).
        inp = environ["wsgi.input"]
        n = int(environ.get("CONTENT_LENGTH") or 0)
        first = inp.readline()
        rest = inp.read(n - len(first))
        tail = inp.read(1)
        tmp = os.environ.get("TMPDIR", "/tmp")
        spooled = False
        for fd in os.listdir("/proc/self/fd"):
            try:
                spooled |= os.readlink(f"/proc/self/fd/{fd}").startswith(tmp + "/")
            except OSError:
                pass
        info = {
            "content_length": environ.get("CONTENT_LENGTH"),
            "transfer_encoding": environ.get("HTTP_TRANSFER_ENCODING"),
            "length": len(first) + len(rest),
            "sha256": hashlib.sha256(first + rest).hexdigest(),
            "first_line": first.decode("latin-1"),
            "past_end": tail.decode("latin-1"),
            "spooled": spooled,
        }
        return plain(start_response, json.dumps(info).encode(), ctype="application/json")
    if path == "/ignore-body":
        return plain(start_response, b"ignored your body\n")
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing([b"one\n", b"", b"two\n", b"three\n"], "stream")
    if path == "/slow-stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing([b"x" * 65536] * 200, "slow")
    if path == "/big":
        # ?n=BYTES with a Content-Length; &fail=BYTES raises after that many.
        body = big_body(int(q.get("n", "1048576")))
        fail = int(q["fail"]) if "fail" in q else None
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
        return Closing(chunks, "big", fail_after=None if fail is None else fail // 65536)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"then ")
        return [b"returned\n"]
    if path == "/error-before":
        raise ValueError("boom before the body")
    if path == "/error-after":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing([b"first part\n", b"never\n"], "error-after", fail_after=1)
    if path == "/error-after-length":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        return Closing([b"first part\n", b"never\n"], "error-after-length", fail_after=1)
    if path == "/exc-info":
        try:
            raise KeyError("handled")
        except KeyError:
            start_response("200 OK", [("Content-Type", "text/plain")])
            start_response(
                "503 Service Unavailable",
                [("Content-Type", "text/plain"), ("Content-Length", "8")],
                sys.exc_info(),
            )
        return [b"handled\n"]
    if path == "/sleep":
        time.sleep(float(q.get("s", "1")))
        return plain(start_response, b"slept\n")
    if path == "/pid":
        return plain(start_response, str(os.getpid()).encode())
    if path == "/version":
        return plain(start_response, VERSION.encode())
    if path == "/status-204":
        start_response("204 No Content", [])
        return []
    return plain(start_response, b"not found\n", status="404 Not Found")


validated = validator(app)


def raw(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/raw/file":
        f = open(os.path.join(TRACE_DIR, "file.bin"), "rb")
        f.seek(int(query(environ).get("skip", "0")))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 4096)
    if path == "/raw/osenv":
        return plain(start_response, os.environ.get(query(environ)["name"], "-").encode())
    if path == "/raw/no-start":
        return [b"no start_response"]
    if path == "/raw/bad-header":
        start_response("200 OK", [("X-Evil", "a\r\nInjected: yes")])
        return [b""]
    return plain(start_response, b"raw not found\n", status="404 Not Found")


def application(environ, start_response):
    if environ["PATH_INFO"].startswith("/raw/"):
        return raw(environ, start_response)
    return validated(environ, start_response)
