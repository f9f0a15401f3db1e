# SPDX-License-Identifier: MIT
"""The demo stack in a real browser.

wharf-wsgi (the example Django project), wharf-static (its STATIC_ROOT) and
wharf-proxy in front, each given its socket as systemd gives it, wired as
`./dev demo` wires them. Debian's Chromium, headless and driven through
chromedriver (python3-selenium), opens /admin/, logs in as the demo user
and the test checks that the admin's style sheet, which only wharf-static
serves (through the connection handoff), was applied. A screenshot of the
logged-in page is kept in out/test-artifacts/.
"""

import hashlib
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

import wharf_harness as wh
from wsgi_fixtures import daemon_env

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "examples" / "server_dev"
PYTHON = "/usr/bin/python3"
PASSWORD = "wharf-browser-test-1"
ARTIFACTS = REPO / "out" / "test-artifacts"

webdriver = pytest.importorskip("selenium.webdriver", reason="python3-selenium is not installed")
if not shutil.which("chromedriver") or not shutil.which("chromium"):
    pytest.skip("chromium and chromium-driver are not installed", allow_module_level=True)
if subprocess.run([PYTHON, "-c", "import django"], capture_output=True).returncode != 0:
    pytest.skip(f"{PYTHON} has no Django (apt install python3-django)", allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def stack():
    """The three daemons, as ./dev demo runs them; yields the proxy's base URL."""
    work = wh.short_tempdir()
    state = work / "state"
    state.mkdir()
    env = {
        "DJANGO_DATABASE_PATH": str(state / "db.sqlite3"),
        "DJANGO_STATIC_ROOT": str(state / "static"),
        "DJANGO_MEDIA_ROOT": str(state / "media"),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECRET_KEY": "browser-test-" + os.urandom(16).hex(),
        "DJANGO_X_ACCEL_PREFIX": "/protected/",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    project = work / "server_dev"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns(
        "run", "db.sqlite3", "media", "static_root", "__pycache__"))
    (project / "run").mkdir()
    out = subprocess.run([str(project / "prepare.sh"), PASSWORD], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr

    daemons = []
    try:
        wsgi_path = work / "wsgi.sock"
        wsgi = wh.Daemon(
            [wh.daemon_binary("wsgi"), "--ini", project / "server_dev.ini"],
            sockets=[("uwsgi", wh.bind_unix(wsgi_path))], workdir=work,
            env={**daemon_env(work, warnings_are_errors=False), **env},
            name="wharf-wsgi")
        daemons.append(wsgi.start())
        wsgi.wait_ready(30)

        handoff = work / "static.handoff"
        (work / "static.ini").write_text(
            f"[static]\nroot = {state / 'static'}\nprefix = /static/\n")
        static = wh.Daemon(
            [wh.daemon_binary("static"), "-c", work / "static.ini"],
            sockets=[("handoff", wh.bind_unix(handoff, socket.SOCK_SEQPACKET))], workdir=work,
            name="wharf-static")
        daemons.append(static.start())
        static.wait_ready()

        # MEDIA_ROOT, for the board's X-Accel-Redirect only.
        media_handoff = work / "media.handoff"
        (state / "media").mkdir(exist_ok=True)
        (work / "media.ini").write_text(
            f"[static]\nroot = {state / 'media'}\nprefix = /protected/\ninternal = on\n")
        media = wh.Daemon(
            [wh.daemon_binary("static"), "-c", work / "media.ini"],
            sockets=[("handoff", wh.bind_unix(media_handoff, socket.SOCK_SEQPACKET))],
            workdir=work, name="wharf-static-media")
        daemons.append(media.start())
        media.wait_ready()

        (work / "proxy.ini").write_text(
            "[server]\nserver_name = localhost\nclient_max_body_size = 75M\ngzip = on\n"
            f"access_log = file:{work / 'access.log'}\n\n"
            f"[upstream django]\nserver = unix:{wsgi_path}\nkeepalive = 4\n\n"
            f"[location /static/]\nstatic = {handoff}\n\n"
            f"[location /protected/]\nstatic = {media_handoff}\ninternal = on\n\n"
            "[location /]\nuwsgi_pass = django\n")
        http = wh.bind_tcp()
        port = http.getsockname()[1]
        proxy = wh.Daemon([wh.daemon_binary("proxy"), "-c", work / "proxy.ini"],
                          sockets=[("http", http)], workdir=work, name="wharf-proxy")
        daemons.append(proxy.start())
        proxy.wait_ready()
        yield f"http://127.0.0.1:{port}", work, project, env
        # Every daemon is stopped before any problem is reported.
        problems = []
        for d in reversed(daemons):
            rc = d.stop(15)
            try:
                d.check_clean_exit(rc)
            except AssertionError as e:
                problems.append(str(e))
        assert not problems, "\n".join(problems)
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:  # a failed start left it
                d.proc.kill()
                d.proc.wait()
            d.close()
        # The daemons' logs are kept beside the screenshot.
        logs = ARTIFACTS / "demo-logs"
        logs.mkdir(parents=True, exist_ok=True)
        for f in list(work.glob("*.stderr")) + list(work.glob("access.log")):
            shutil.copy(f, logs / f.name)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-proxy-server"):
        options.add_argument(arg)
    service = Service(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_admin_login_with_static_styles(stack, browser):
    base, work, _, _ = stack
    browser.get(base + "/admin/")
    # Not logged in: Django redirects to the login form.
    WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "id_username")))
    assert "/admin/login/" in browser.current_url

    # The admin's base.css is linked from /static/ and served by wharf-static.
    sheets = browser.execute_script(
        "return Array.from(document.styleSheets).map(s => s.href).filter(h => h)")
    assert any(h.endswith("/static/admin/css/base.css") for h in sheets), sheets

    browser.find_element(By.ID, "id_username").send_keys("demo")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "user-tools")))
    assert browser.current_url.rstrip("/").endswith("/admin")
    assert "demo" in browser.find_element(By.ID, "user-tools").text.lower()

    # The page came gzip-compressed (gzip = on) and Chromium inflated it.
    sizes = browser.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "return [n.encodedBodySize, n.decodedBodySize]")
    assert 0 < sizes[0] < sizes[1] / 2, f"encoded, decoded body sizes: {sizes}"

    # Styles applied: the header has the admin's colour, not the browser default.
    header_bg = browser.execute_script(
        "return getComputedStyle(document.getElementById('header')).backgroundColor")
    assert header_bg not in ("", "rgba(0, 0, 0, 0)", "transparent"), header_bg
    rules = browser.execute_script(
        "return Array.from(document.styleSheets)"
        ".filter(s => s.href && s.href.includes('/static/admin/css/'))"
        ".reduce((n, s) => n + s.cssRules.length, 0)")
    assert rules > 50, f"the admin style sheets have only {rules} rules"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "demo-admin.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # The static files came through wharf-proxy, handed to wharf-static; the
    # pages from Django through the uwsgi upstream.
    log = (work / "access.log").read_text()
    assert '"POST /admin/login/?next=/admin/ HTTP/1.1" 302' in log
    assert 'upstream="unix:' in log


def test_attachment_download_through_x_accel(stack, browser):
    """A post's attachment, as the board links it: Django's view answers
    with X-Accel-Redirect, and the file comes from the second wharf-static
    (internal, MEDIA_ROOT), with the view's Content-Disposition."""
    base, work, project, env = stack
    data = bytes(range(256)) * 300
    make = ("from django.core.files.base import ContentFile\n"
            "from board.models import Post\n"
            "p = Post(title='with a file')\n"
            "p.attachment.save('report 1.pdf', ContentFile(bytes(range(256)) * 300))\n")
    out = subprocess.run([PYTHON, "manage.py", "shell"], input=make, cwd=project,
                         env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr

    browser.get(base + "/")
    link = browser.find_element(By.CSS_SELECTOR, "a[href$='/attachment/']")
    status, disposition, ctype, digest = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(async r => {"
        "  const sum = await crypto.subtle.digest('SHA-256', await r.arrayBuffer());"
        "  const hex = Array.from(new Uint8Array(sum), b => b.toString(16).padStart(2, '0'));"
        "  done([r.status, r.headers.get('content-disposition'),"
        "        r.headers.get('content-type'), hex.join('')]);"
        "}).catch(e => done([0, String(e), '', '']));", link.get_attribute("href"))
    assert status == 200, disposition
    assert digest == hashlib.sha256(data).hexdigest()
    assert ctype == "application/pdf"
    assert disposition.startswith("attachment; filename*=UTF-8''report_1")  # storage's name

    # A range of it, and the internal location is not there for a client.
    path = link.get_attribute("href")[len(base):]
    address = ("127.0.0.1", int(base.rsplit(":", 1)[1]))
    with wh.HttpConnection(address, timeout=10) as c:
        r = c.exchange("GET", path, [("Range", "bytes=256-511")])
        assert r.status == 206 and r.body == data[256:512]
        assert c.exchange("GET", "/protected/posts/").status == 404
