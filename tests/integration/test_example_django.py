# SPDX-License-Identifier: MIT
"""The example Django project, examples/server_dev, that wharf-wsgi serves.

Everything runs on a copy of the project in a temporary directory, with its
database, STATIC_ROOT and MEDIA_ROOT in another one (the settings read them
from DJANGO_* variables), so the repository is left exactly as it was; the
last test checks that.

- the project's own Django tests (`manage.py test board`) and the migration
  being up to date with the models;
- prepare.sh: migrate, collectstatic, the demo superuser, run again;
- every page through the WSGI application object of server_dev/wsgi.py,
  called as a WSGI server calls it (in a subprocess, wrapped in wsgiref's
  PEP 3333 validator): the CSRF-protected form with the token taken from
  the page and the cookie sent back, a 1 MiB upload, /echo/, the admin;
- the settings read from the environment.
"""

import base64
import hashlib
import html
import json
import os
import re
import select
import shutil
import subprocess
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "examples" / "server_dev"
PYTHON = "/usr/bin/python3"
DEMO_PASSWORD = "wharf-demo-password-1"
TIMEOUT = 60

if subprocess.run([PYTHON, "-c", "import django"], capture_output=True).returncode != 0:
    pytest.skip(f"{PYTHON} has no Django (apt install python3-django)", allow_module_level=True)


def project_files() -> set:
    """Every path under the project, for the check that nothing was added."""
    return {
        str(Path(dirpath, name).relative_to(PROJECT))
        for dirpath, dirnames, filenames in os.walk(PROJECT)
        for name in dirnames + filenames
    }


FILES_BEFORE = project_files()

CSRF_INPUT = re.compile(r'<input type="hidden" name="csrfmiddlewaretoken" value="([^"]+)">')


def csrf_token(page: str) -> str:
    m = CSRF_INPUT.search(page)
    assert m, "no CSRF token in the form"
    return m.group(1)


def dd(page: str, ident: str) -> str:
    """The text of <dd id="ident">, tags removed."""
    m = re.search(rf'<dd id="{re.escape(ident)}">(.*?)</dd>', page, re.S)
    assert m, f"no <dd id={ident!r}> in the page"
    return html.unescape(re.sub(r"<[^>]+>", "", m.group(1)))


def multipart(fields: dict, files: dict) -> tuple:
    """(content type, body) of a multipart/form-data form; files maps a field
    name to (file name, content)."""
    boundary = "wharf-" + hashlib.sha256(os.urandom(16)).hexdigest()[:24]
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for name, (filename, content) in files.items():
        parts.append(
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


# ---------------------------------------------------------------------------
# The project copy and its environment


def ignore_generated(directory, names):
    """copytree's ignore: what running the project makes, should a developer
    have run it in the checkout."""
    generated = {"db.sqlite3", "static_root", "media", "__pycache__"}
    ignored = {n for n in names if n in generated or n.startswith("db.sqlite3-")}
    if Path(directory) == PROJECT / "run":
        ignored |= {n for n in names if n != ".gitignore"}
    return ignored


def django_env(state: Path, **extra) -> dict:
    """The environment of every command: no DJANGO_* of the caller's, the
    database, static and media directories under state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        PYTHONDONTWRITEBYTECODE="1",
        DJANGO_DATABASE_PATH=str(state / "db.sqlite3"),
        DJANGO_STATIC_ROOT=str(state / "static_root"),
        DJANGO_MEDIA_ROOT=str(state / "media"),
        DJANGO_LOG_LEVEL="ERROR",
    )
    env.update(extra)
    return env


def run(args, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(map(str, args))} exited with {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("example") / "server_dev"
    shutil.copytree(PROJECT, dst, ignore=ignore_generated, symlinks=True)
    return dst


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def prepared(copy, state) -> subprocess.CompletedProcess:
    """prepare.sh, run once with a password: the database, static files and
    demo user that the application uses."""
    return run(["sh", copy / "prepare.sh", DEMO_PASSWORD], copy, django_env(state))


# ---------------------------------------------------------------------------
# The WSGI application, called as a server calls it

# Runs in the subprocess: imports server_dev.wsgi from the project directory
# (argv[1]) and answers one JSON request per line of stdin with one JSON line
# on its own copy of stdout; stdout itself goes to stderr, so that nothing
# the application prints can corrupt the exchange.
DRIVER = r"""
import base64, io, json, os, sys, traceback
from wsgiref.validate import validator

protocol = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.path.insert(0, sys.argv[1])
os.chdir(sys.argv[1])
from server_dev.wsgi import application

app = validator(application)
for line in sys.stdin:
    req = json.loads(line)
    body = base64.b64decode(req["body"])
    environ = {
        "REQUEST_METHOD": req["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": req["path"],
        "QUERY_STRING": req["query"],
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in req["headers"]:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        environ[key] = environ[key] + "," + value if key in environ else value
    reply = {}
    chunks = []

    def start_response(status, headers, exc_info=None):
        reply["status"] = status
        reply["headers"] = headers
        return chunks.append

    try:
        result = app(environ, start_response)
        try:
            for chunk in result:
                chunks.append(chunk)
        finally:
            result.close()
        reply["body"] = base64.b64encode(b"".join(chunks)).decode()
    except BaseException:
        reply = {"error": traceback.format_exc()}
    protocol.write(json.dumps(reply) + "\n")
    protocol.flush()
"""


@dataclass
class Response:
    status: int
    reason: str
    headers: list
    body: bytes

    def header(self, name: str):
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(values) <= 1, f"{name} appears {len(values)} times"
        return values[0] if values else None

    def cookies(self) -> SimpleCookie:
        jar = SimpleCookie()
        for k, v in self.headers:
            if k.lower() == "set-cookie":
                jar.load(v)
        return jar

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self):
        assert self.header("Content-Type") == "application/json"
        return json.loads(self.body)


class WsgiApp:
    """server_dev.wsgi:application in a subprocess, one request at a time."""

    def __init__(self, project: Path, env: dict, log: Path):
        self.log = log
        with open(log, "wb") as errors:
            self.proc = subprocess.Popen(
                [PYTHON, "-c", DRIVER, str(project)],
                cwd=project,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def request(self, method: str, target: str, headers=(), body: bytes = b"") -> Response:
        path, _, query = target.partition("?")
        line = json.dumps(
            {
                "method": method,
                "path": path,
                "query": query,
                "headers": [("Host", "localhost:8000"), *headers],
                "body": base64.b64encode(body).decode(),
            }
        )
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        reply = self.proc.stdout.readline() if ready else ""
        assert reply, f"the WSGI driver did not answer; its stderr:\n{self.log.read_text()}"
        reply = json.loads(reply)
        assert "error" not in reply, reply["error"]
        code, _, reason = reply["status"].partition(" ")
        return Response(
            int(code), reason, [tuple(h) for h in reply["headers"]], base64.b64decode(reply["body"])
        )

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Browser:
    """Keeps cookies between requests, like a browser."""

    app: WsgiApp
    cookies: dict = field(default_factory=dict)

    def request(self, method: str, target: str, headers=(), body: bytes = b"") -> Response:
        headers = list(headers)
        if self.cookies:
            headers.append(("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        response = self.app.request(method, target, headers, body)
        for name, morsel in response.cookies().items():
            self.cookies[name] = morsel.value
        return response

    def get(self, target: str, headers=()) -> Response:
        return self.request("GET", target, headers)

    def post_form(self, target: str, fields: dict, files=None) -> Response:
        content_type, body = multipart(fields, files or {})
        return self.request("POST", target, [("Content-Type", content_type)], body)


@pytest.fixture(scope="module")
def app(copy, state, prepared, tmp_path_factory):
    wsgi = WsgiApp(copy, django_env(state), tmp_path_factory.mktemp("log") / "driver.log")
    yield wsgi
    wsgi.close()


@pytest.fixture
def browser(app) -> Browser:
    return Browser(app)


# ---------------------------------------------------------------------------
# The project's own tests


def test_django_test_suite(copy, tmp_path):
    proc = run(
        [PYTHON, "manage.py", "test", "board", "--noinput", "-v", "2"], copy, django_env(tmp_path)
    )
    ran = re.search(r"^Ran (\d+) tests? ", proc.stderr, re.M)
    assert ran and int(ran.group(1)) >= 40, proc.stderr
    assert re.search(r"^OK$", proc.stderr, re.M), proc.stderr
    assert not (tmp_path / "db.sqlite3").exists(), "the tests used the real database"


def test_migrations_match_the_models(copy, tmp_path):
    proc = run(
        [PYTHON, "manage.py", "makemigrations", "--check", "--dry-run"],
        copy,
        django_env(tmp_path),
        check=False,
    )
    assert proc.returncode == 0, f"a migration is missing:\n{proc.stdout}{proc.stderr}"


# ---------------------------------------------------------------------------
# prepare.sh


def test_prepare_creates_everything(prepared, state):
    assert "Superuser created successfully." in prepared.stdout
    assert "password:" not in prepared.stdout  # given, so not printed
    assert (state / "db.sqlite3").is_file()
    assert (state / "static_root" / "admin" / "css" / "base.css").is_file()
    assert (state / "static_root" / "css" / "site.css").read_bytes() == (
        PROJECT / "static" / "css" / "site.css"
    ).read_bytes()


def check_password(copy: Path, env: dict, password: str) -> bool:
    code = (
        "import os\n"
        "from django.contrib.auth import authenticate\n"
        "user = authenticate(username='demo', password=os.environ['PW'])\n"
        "print(user is not None and user.is_superuser and user.is_staff)\n"
    )
    proc = run([PYTHON, "manage.py", "shell", "-c", code], copy, {**env, "PW": password})
    return proc.stdout.strip() == "True"


def test_prepare_again_and_generated_password(copy, tmp_path):
    env = django_env(tmp_path)
    first = run(["sh", copy / "prepare.sh"], copy, env)
    m = re.search(r'^Superuser "demo" has the password: (\S+)$', first.stdout, re.M)
    assert m, first.stdout
    generated = m.group(1)
    assert len(generated) >= 12
    assert check_password(copy, env, generated)

    again = run(["sh", copy / "prepare.sh"], copy, env)
    assert "No migrations to apply." in again.stdout
    assert re.search(
        r"^0 static files copied .*, \d+ unmodified\.$", again.stdout, re.M
    ), again.stdout
    assert 'Superuser "demo" exists; its password is unchanged.' in again.stdout
    assert check_password(copy, env, generated)

    changed = run(["sh", copy / "prepare.sh", "another-password-2"], copy, env)
    assert 'Superuser "demo" exists; its password was set.' in changed.stdout
    assert check_password(copy, env, "another-password-2")
    assert not check_password(copy, env, generated)

    usage = run(["sh", copy / "prepare.sh", "a", "b"], copy, env, check=False)
    assert usage.returncode == 2 and "usage:" in usage.stderr


# ---------------------------------------------------------------------------
# Every page through the WSGI application


def test_hello(app):
    r = app.request("GET", "/hello/")
    assert (r.status, r.reason) == (200, "OK")
    assert r.header("Content-Type") == "text/plain; charset=utf-8"
    assert r.header("Content-Length") == "14"
    assert r.body == b"Hello, world!\n"


def test_index_extends_the_base_and_links_static_css(app, state):
    r = app.request("GET", "/")
    assert r.status == 200
    assert r.header("Content-Type") == "text/html; charset=utf-8"
    assert '<link rel="stylesheet" href="/static/css/site.css">' in r.text
    assert "<h1>Board</h1>" in r.text
    assert 'href="/posts/new/"' in r.text  # the base template's navigation
    # What the page links is what collectstatic put where the web server looks.
    assert (state / "static_root" / "css" / "site.css").is_file()


def test_api_posts(app):
    r = app.request("GET", "/api/posts/")
    assert r.status == 200
    posts = r.json()["posts"]
    assert isinstance(posts, list)
    for post in posts:
        assert set(post) == {"id", "title", "body", "created", "attachment"}


def test_new_post_with_csrf(browser, app):
    form = browser.get("/posts/new/")
    assert form.status == 200
    assert 'enctype="multipart/form-data"' in form.text
    token = csrf_token(form.text)
    assert "csrftoken" in browser.cookies
    cookie = form.cookies()["csrftoken"]
    assert not cookie["secure"], "a Secure cookie never comes back over plain http"

    # No token, a token without its cookie: refused, nothing created.
    assert browser.post_form("/posts/new/", {"title": "no token"}).status == 403
    stranger = Browser(app)
    assert (
        stranger.post_form("/posts/new/", {"csrfmiddlewaretoken": token, "title": "x"}).status
        == 403
    )

    title = "Posted through WSGI " + os.urandom(4).hex()
    r = browser.post_form(
        "/posts/new/", {"csrfmiddlewaretoken": token, "title": title, "body": "line one\nline two"}
    )
    assert r.status == 303
    assert r.header("Location") == "/"
    assert title in browser.get("/").text
    newest = app.request("GET", "/api/posts/").json()["posts"][0]
    assert (newest["title"], newest["body"], newest["attachment"]) == (
        title,
        "line one\nline two",
        None,
    )

    invalid = browser.post_form("/posts/new/", {"csrfmiddlewaretoken": token, "title": ""})
    assert invalid.status == 400
    assert "This field is required." in invalid.text


def test_upload_one_mib(browser, state):
    token = csrf_token(browser.get("/upload/").text)
    data = os.urandom(1 << 20)
    r = browser.post_form(
        "/upload/", {"csrfmiddlewaretoken": token}, {"file": ("one-mib.bin", data)}
    )
    assert r.status == 200
    assert dd(r.text, "upload-size") == str(len(data))
    assert dd(r.text, "upload-sha256") == hashlib.sha256(data).hexdigest()
    name = dd(r.text, "upload-name")
    assert re.fullmatch(r"uploads/one-mib[^/]*\.bin", name), name
    assert (state / "media" / name).read_bytes() == data


def test_upload_needs_the_csrf_token(browser, state):
    browser.get("/upload/")
    r = browser.post_form("/upload/", {}, {"file": ("refused.bin", b"refused")})
    assert r.status == 403
    assert not list((state / "media").rglob("refused*"))


def test_echo(app):
    body = os.urandom(100_000)
    r = app.request(
        "POST",
        "/echo/?a=1&b=%C3%A9",
        [("Content-Type", "application/octet-stream"), ("X-Wharf-Test", "yes"), ("Accept", "*/*")],
        body,
    )
    assert r.status == 200
    echo = r.json()
    assert echo["REQUEST_METHOD"] == "POST"
    assert echo["PATH_INFO"] == "/echo/"
    assert echo["SCRIPT_NAME"] == ""
    assert echo["QUERY_STRING"] == "a=1&b=%C3%A9"
    assert echo["CONTENT_TYPE"] == "application/octet-stream"
    assert echo["CONTENT_LENGTH"] == str(len(body))
    assert (echo["SERVER_NAME"], echo["SERVER_PORT"]) == ("127.0.0.1", "8000")
    assert echo["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert echo["REMOTE_ADDR"] == "127.0.0.1"
    assert echo["wsgi.url_scheme"] == "http"
    assert (echo["wsgi.multithread"], echo["wsgi.multiprocess"]) == (False, True)
    assert echo["HTTP_HOST"] == "localhost:8000"
    assert echo["HTTP_X_WHARF_TEST"] == "yes"
    assert echo["HTTP_ACCEPT"] == "*/*"
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert echo["pid"] == app.pid


def test_echo_without_a_body(app):
    echo = app.request("GET", "/echo/").json()
    assert echo["CONTENT_LENGTH"] is None
    assert echo["CONTENT_TYPE"] is None
    assert echo["QUERY_STRING"] == ""
    assert echo["body_length"] == 0


def test_admin_login(browser):
    page = browser.get("/admin/login/?next=/admin/")
    assert page.status == 200
    assert "/static/admin/css/base.css" in page.text
    token = csrf_token(page.text)

    wrong = browser.post_form(
        "/admin/login/?next=/admin/",
        {"csrfmiddlewaretoken": token, "username": "demo", "password": "wrong", "next": "/admin/"},
    )
    assert wrong.status == 200
    assert "Please enter the correct username and password" in wrong.text

    r = browser.post_form(
        "/admin/login/?next=/admin/",
        {
            "csrfmiddlewaretoken": token,
            "username": "demo",
            "password": DEMO_PASSWORD,
            "next": "/admin/",
        },
    )
    assert r.status == 302
    assert r.header("Location") == "/admin/"
    assert "sessionid" in browser.cookies
    index = browser.get("/admin/")
    assert index.status == 200
    assert 'href="/admin/board/post/"' in index.text
    assert browser.get("/admin/board/post/").status == 200


def test_unknown_host_and_page(app):
    assert app.request("GET", "/hello/", [("Host", "evil.example")]).status == 400
    assert app.request("GET", "/no/such/page/").status == 404


# ---------------------------------------------------------------------------
# Settings from the environment

SHOW_SETTINGS = (
    "import json\n"
    "from django.conf import settings as s\n"
    "print(json.dumps([s.DEBUG, s.ALLOWED_HOSTS, str(s.DATABASES['default']['NAME']),\n"
    "                  str(s.STATIC_ROOT), str(s.MEDIA_ROOT), s.SECRET_KEY]))\n"
)


def test_settings_defaults(copy):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    out = run([PYTHON, "manage.py", "shell", "-c", SHOW_SETTINGS], copy, env).stdout
    debug, hosts, db, static_root, media_root, key = json.loads(out)
    assert debug is False
    assert hosts == ["localhost", "127.0.0.1", "[::1]", "testserver"]
    assert (db, static_root, media_root) == (
        str(copy / "db.sqlite3"),
        str(copy / "static_root"),
        str(copy / "media"),
    )
    assert key.startswith("django-insecure-DEVELOPMENT-ONLY-")
    assert not (copy / "db.sqlite3").exists()  # reading settings creates nothing


def test_settings_from_the_environment(copy, tmp_path):
    env = django_env(
        tmp_path,
        DJANGO_DEBUG="on",
        DJANGO_ALLOWED_HOSTS=" example.com, .example.org ,",
        DJANGO_SECRET_KEY="a-real-secret",
    )
    out = run([PYTHON, "manage.py", "shell", "-c", SHOW_SETTINGS], copy, env).stdout
    debug, hosts, db, static_root, media_root, key = json.loads(out)
    assert debug is True
    assert hosts == ["example.com", ".example.org"]
    assert (db, static_root, media_root) == (
        str(tmp_path / "db.sqlite3"),
        str(tmp_path / "static_root"),
        str(tmp_path / "media"),
    )
    assert key == "a-real-secret"


def test_settings_refuse_a_bad_debug_value(copy, tmp_path):
    proc = run(
        [PYTHON, "manage.py", "check"],
        copy,
        django_env(tmp_path, DJANGO_DEBUG="Flase"),
        check=False,
    )
    assert proc.returncode != 0
    assert "DJANGO_DEBUG='Flase'" in proc.stderr


# ---------------------------------------------------------------------------


def test_repository_untouched():
    """Runs last: nothing above wrote into examples/server_dev."""
    assert project_files() == FILES_BEFORE
