#!/bin/bash
# Runs inside the booted container (tests/systemd/run.sh): the .debs are in
# /e2e/debs, the example project in /e2e/examples. Every check prints one
# line; the first failure ends the run with status 1.
set -euo pipefail

failures=0
pass() { echo "ok   - $*"; }
fail() {
	echo "FAIL - $*"
	exit 1
}
check() { # check DESCRIPTION COMMAND...
	local what=$1
	shift
	if "$@"; then pass "$what"; else fail "$what"; fi
}
measure() { echo "#    $*"; }

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 20 "$@"; }

# A bounded client loop: N requests to URL, one connection each; prints
# "ok failed" when done.
load() { # load URL N OUTFILE
	python3 - "$1" "$2" >"$3" <<'EOF'
import sys, urllib.request, urllib.error
url, n = sys.argv[1], int(sys.argv[2])
ok = failed = 0
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
for i in range(n):
    try:
        with opener.open(url, timeout=20) as r:
            r.read()
            ok += r.status == 200
            failed += r.status != 200
    except (urllib.error.URLError, OSError):
        failed += 1
print(ok, failed)
EOF
}

# ---- install -------------------------------------------------------------

dpkg -i /e2e/debs/wharf-*.deb >/tmp/dpkg.log 2>&1 || {
	cat /tmp/dpkg.log
	fail "dpkg -i of the wharf packages"
}
pass "dpkg -i $(cd /e2e/debs && echo wharf-*.deb)"
check "system users and the group wharf-upstream exist" \
	getent passwd wharf-proxy wharf-static wharf-wsgi >/dev/null
check "wharf-proxy is in wharf-upstream" bash -c 'id -nG wharf-proxy | grep -qw wharf-upstream'
check "the sockets are enabled and listening" \
	systemctl is-active --quiet wharf-proxy.socket wharf-static.socket
check "the services wait for their first connection" \
	bash -c '! systemctl is-active --quiet wharf-proxy.service'

# ---- the example project as wharf-wsgi@server_dev ------------------------

cp -r /e2e/examples/server_dev /srv/server_dev
rm -rf /srv/server_dev/run /srv/server_dev/db.sqlite3 /srv/server_dev/static_root
state=/var/lib/wharf/wsgi/server_dev
mkdir -p "$state"
secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
export DJANGO_DATABASE_PATH=$state/db.sqlite3 DJANGO_STATIC_ROOT=/var/lib/wharf/static
export DJANGO_MEDIA_ROOT=$state/media DJANGO_ALLOWED_HOSTS=127.0.0.1,localhost
export DJANGO_SECRET_KEY=$secret
/srv/server_dev/prepare.sh e2e-password >/tmp/prepare.log 2>&1 || {
	cat /tmp/prepare.log
	fail "prepare.sh (migrate, collectstatic)"
}
chown -R wharf-wsgi:wharf-wsgi "$state"
cat >/etc/wharf/wsgi/server_dev.ini <<EOF
[uwsgi]
base = /srv/server_dev
chdir = %(base)
module = server_dev.wsgi:application
socket = /tmp/django.sock
master = true
processes = 2
enable-threads = true
vacuum = true
env = DJANGO_DATABASE_PATH=$state/db.sqlite3
env = DJANGO_STATIC_ROOT=/var/lib/wharf/static
env = DJANGO_MEDIA_ROOT=$state/media
env = DJANGO_ALLOWED_HOSTS=127.0.0.1,localhost
env = DJANGO_SECRET_KEY=$secret
EOF
check "wharf-wsgi --check-config accepts the app's ini" \
	wharf-wsgi --ini /etc/wharf/wsgi/server_dev.ini --check-config
systemctl enable --now wharf-wsgi@server_dev.socket >/dev/null 2>&1
check "wharf-wsgi@server_dev.socket listens" systemctl is-active --quiet wharf-wsgi@server_dev.socket

# ---- the first request activates everything ------------------------------

code=$(http_code http://127.0.0.1/)
check "GET / through wharf-proxy and wharf-wsgi: 200 (got $code)" test "$code" = 200
code=$(http_code http://127.0.0.1/static/admin/css/base.css)
if [[ $code != 200 ]]; then
	cat /etc/wharf/static.ini
	ls -la /var/lib/wharf /var/lib/wharf/static /var/lib/wharf/static/admin/css | head -20
	runuser -u wharf-static -- head -c 100 /var/lib/wharf/static/admin/css/base.css || true
fi
check "a static file through the handoff: 200 (got $code)" test "$code" = 200
server=$(curl -s -D - -o /dev/null http://127.0.0.1/static/admin/css/base.css | tr -d '\r' |
	awk -F': ' 'tolower($1)=="server"{print $2}')
check "... served by wharf-static ($server)" bash -c "[[ '$server' == wharf* && '$server' != 'wharf/'* ]] || [[ '$server' == wharf ]]"
check "the first connections started all three services" \
	systemctl is-active --quiet wharf-proxy.service wharf-static.service wharf-wsgi@server_dev.service
sleep 1.5 # STATUS= is sent once a second
for u in wharf-proxy.service wharf-static.service wharf-wsgi@server_dev.service; do
	text=$(systemctl show -p StatusText --value "$u")
	check "$u shows a STATUS line ('$text')" test -n "$text"
done
check "the access log is in the journal of wharf-proxy" \
	bash -c 'journalctl --no-pager -u wharf-proxy.service | grep -q "\"GET / HTTP/1.1\" 200"'

# ---- a request body read whole first, under the unit's sandbox ----------

head -c 300000 /dev/urandom >/tmp/upload.bin
want=$(sha256sum </tmp/upload.bin | cut -d' ' -f1)
got=$(curl -s --max-time 20 --data-binary @/tmp/upload.bin -H 'Content-Type: application/octet-stream' \
	http://127.0.0.1/echo/ | python3 -c 'import json,sys; print(json.load(sys.stdin)["body_sha256"])')
check "a 300 KB body, buffered in wharf-proxy's private /var/tmp, reaches Django whole" \
	test "$got" = "$want"

# ---- attachments: X-Accel-Redirect to a wharf-static@media ---------------

install -d /etc/systemd/system/wharf-wsgi@server_dev.service.d
cp /usr/share/doc/wharf-common/drop-ins/wharf-wsgi@server_dev.service.d/media.conf \
	/etc/systemd/system/wharf-wsgi@server_dev.service.d/
echo "env = DJANGO_X_ACCEL_PREFIX=/protected/" >>/etc/wharf/wsgi/server_dev.ini
printf '%s\n' "[static]" "root = $state/media" "prefix = /protected/" "internal = on" \
	"access_log = journal" >/etc/wharf/static-media.ini
printf '%s\n' "" "[location /protected/]" "static = /run/wharf/static-media.handoff" \
	"internal = on" >>/etc/wharf/proxy.ini
systemctl daemon-reload
systemctl enable --now wharf-static@media.socket >/dev/null 2>&1
systemctl restart wharf-wsgi@server_dev.service
systemctl reload wharf-proxy.service
post=$(runuser -u wharf-wsgi -- /usr/bin/python3 /srv/server_dev/manage.py shell -c "
from django.core.files.base import ContentFile
from board.models import Post
p = Post(title='e2e attachment')
p.attachment.save('e2e.txt', ContentFile(b'protected e2e bytes'))
print(p.pk)" 2>/tmp/post.err) || { cat /tmp/post.err; fail "a post with an attachment"; }
body=$(curl -s --max-time 20 -D /tmp/att.head "http://127.0.0.1/posts/$post/attachment/")
check "the attachment through X-Accel-Redirect ('$body')" test "$body" = "protected e2e bytes"
check "... with the view's Content-Disposition" \
	grep -qi "^content-disposition: attachment; filename\*=UTF-8''e2e" /tmp/att.head
check "... sent by wharf-static@media" systemctl is-active --quiet wharf-static@media.service
code=$(http_code "http://127.0.0.1/protected/$(basename "$(find "$state/media" -name 'e2e*')")")
check "the internal location is not there for a client: 404 (got $code)" test "$code" = 404

# ---- restarts and reloads under load lose nothing -----------------------

for u in wharf-proxy.service wharf-static.service wharf-wsgi@server_dev.service; do
	for action in restart reload; do
		url=http://127.0.0.1/
		[[ $u == wharf-static.service ]] && url=http://127.0.0.1/static/admin/css/base.css
		load "$url" 300 /tmp/load.out &
		loader=$!
		sleep 0.5
		systemctl "$action" "$u"
		sleep 0.5
		systemctl "$action" "$u"
		wait "$loader"
		read -r ok failed </tmp/load.out
		measure "$action $u twice under load: $ok ok, $failed failed"
		check "$action $u under load: no failed request" test "$failed" = 0
	done
done

# ---- an upgrade (the same packages again) under load ----------------------

pids_before=$(systemctl show -p MainPID --value wharf-proxy.service wharf-wsgi@server_dev.service)
sockets="wharf-proxy.socket wharf-static.socket wharf-wsgi@server_dev.socket"
# A socket unit restarted (closed and bound again) gets a new activation time.
# shellcheck disable=SC2086 # one word per unit
sockets_since() { systemctl show -p ActiveEnterTimestampMonotonic --value $sockets | tr '\n' ' '; }
since_before=$(sockets_since)
load http://127.0.0.1/ 400 /tmp/load.out &
loader=$!
sleep 0.3
dpkg -i /e2e/debs/wharf-*.deb >/tmp/dpkg2.log 2>&1 || {
	cat /tmp/dpkg2.log
	fail "dpkg -i again (an upgrade)"
}
wait "$loader"
read -r ok failed </tmp/load.out
pids_after=$(systemctl show -p MainPID --value wharf-proxy.service wharf-wsgi@server_dev.service)
measure "upgrade under load: $ok ok, $failed failed"
same=$(comm -12 <(echo "$pids_before" | grep . | sort) <(echo "$pids_after" | grep . | sort) | wc -l)
check "the upgrade restarted the services (main pids $(echo $pids_before) -> $(echo $pids_after))" \
	test "$same" = 0
check "the upgrade under load: no failed request" test "$failed" = 0
# shellcheck disable=SC2086
check "the sockets stayed up" systemctl is-active --quiet $sockets
since_after=$(sockets_since)
check "and were never closed: activated at $since_before, still at $since_after" \
	test "$since_before" = "$since_after"

# ---- the watchdog --------------------------------------------------------

# The front: what a frozen daemon leaves is its listening socket, which
# systemd holds; connections wait in its backlog for the new process.
u=wharf-proxy.service
wd=$(systemctl show -p WatchdogUSec --value "$u")
before=$(systemctl show -p NRestarts --value "$u")
pid=$(systemctl show -p MainPID --value "$u")
kill -STOP "$pid"
start=$(date +%s.%N)
# A request made while it is frozen waits in the socket's backlog.
code_file=/tmp/frozen.code
(http_code http://127.0.0.1/ >"$code_file") &
waiter=$!
for _ in $(seq 300); do
	now=$(systemctl show -p NRestarts --value "$u")
	newpid=$(systemctl show -p MainPID --value "$u")
	[[ $now != "$before" && $newpid != 0 && $newpid != "$pid" ]] && break
	sleep 0.1
done
took=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
measure "watchdog: WatchdogSec=$wd, frozen $u restarted after ${took} s"
check "SIGSTOP: the watchdog has systemd restart $u (restarts $before -> $now)" \
	test "$now" != "$before"
wait "$waiter" || true
check "the request made while it was frozen is served ($(cat $code_file))" \
	test "$(cat $code_file)" = 200

# ---- a worker killed under load ------------------------------------------

u=wharf-wsgi@server_dev.service
master=$(systemctl show -p MainPID --value "$u")
workers_before=$(pgrep -P "$master" | wc -l)
load http://127.0.0.1/ 200 /tmp/load.out &
loader=$!
sleep 0.5
victim=$(pgrep -P "$master" | head -1)
kill -9 "$victim"
wait "$loader"
read -r ok failed </tmp/load.out
sleep 1
workers_after=$(pgrep -P "$master" | wc -l)
measure "kill -9 of a worker under load: $ok ok, $failed failed; workers $workers_before -> $workers_after"
check "a killed worker is replaced ($workers_before -> $workers_after)" \
	test "$workers_after" = "$workers_before"
check "at most the killed worker's request was lost ($failed)" test "$failed" -le 1

# ---- a second app from the same template ---------------------------------

mkdir -p /srv/second
cat >/srv/second/second.py <<'EOF'
def application(environ, start_response):
    body = b"second app\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
EOF
printf '[uwsgi]\nchdir = /srv/second\nmodule = second:application\nmaster = true\nprocesses = 1\n' \
	>/etc/wharf/wsgi/second.ini
systemctl enable --now wharf-wsgi@second.socket >/dev/null 2>&1
cat >>/etc/wharf/proxy.ini <<'EOF'

[upstream second]
server = unix:/run/wharf/wsgi/second.sock

[location /second/]
uwsgi_pass = second
EOF
systemctl reload wharf-proxy.service
body=$(curl -s --max-time 20 http://127.0.0.1/second/)
check "wharf-wsgi@second from the template, routed by the proxy ('$body')" \
	test "$body" = "second app"
check "and the first app still answers" test "$(http_code http://127.0.0.1/)" = 200

# ---- log files and their rotation ----------------------------------------

# Waits until WORD is in FILE (the proxy writes its access log within a moment).
logged() { # logged WORD FILE
	for _ in $(seq 50); do
		grep -q "$1" "$2" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}
sed -i 's|^access_log = journal$|access_log = file:/var/log/wharf/proxy/access.log|' \
	/etc/wharf/proxy.ini
systemctl reload wharf-proxy.service
for _ in $(seq 50); do # the reload is a signal: until the new config takes
	curl -s -o /dev/null --max-time 20 "http://127.0.0.1/?before-rotation"
	[[ -s /var/log/wharf/proxy/access.log ]] && break
	sleep 0.1
done
check "access_log = file: in the unit's LogsDirectory" \
	logged before-rotation /var/log/wharf/proxy/access.log
check "/etc/logrotate.d/wharf-common is installed and valid" \
	bash -c 'logrotate -d /etc/logrotate.d/wharf-common >/dev/null 2>&1'
logrotate -f /etc/logrotate.d/wharf-common
check "logrotate moved the lines so far to access.log.1" \
	logged before-rotation /var/log/wharf/proxy/access.log.1
for _ in $(seq 50); do # reopened on the reload logrotate asked for
	curl -s -o /dev/null --max-time 20 "http://127.0.0.1/?after-rotation"
	grep -q after-rotation /var/log/wharf/proxy/access.log 2>/dev/null && break
	sleep 0.1
done
check "and wharf-proxy writes the next ones to a new access.log" \
	bash -c 'grep -q after-rotation /var/log/wharf/proxy/access.log &&
		! grep -q before-rotation /var/log/wharf/proxy/access.log'
check "the connections of the reload survived: GET / still 200" \
	test "$(http_code http://127.0.0.1/)" = 200

# ---- the sandbox ---------------------------------------------------------

for u in wharf-proxy.service wharf-static.service wharf-static@media.service \
	wharf-wsgi@server_dev.service; do
	score=$(systemd-analyze security "$u" 2>/dev/null |
		grep -oE 'Overall exposure level for [^:]+: [0-9.]+' | awk '{print $NF}')
	measure "systemd-analyze security $u: $score"
	check "$u exposure $score <= 2.0" python3 -c "import sys; sys.exit(not float('$score') <= 2.0)"
done
check "systemd-analyze verify of the installed units (no man in this container)" \
	systemd-analyze verify --man=no /lib/systemd/system/wharf-proxy.socket \
	/lib/systemd/system/wharf-proxy.service /lib/systemd/system/wharf-static.socket \
	/lib/systemd/system/wharf-static.service /lib/systemd/system/wharf-static@media.socket \
	/lib/systemd/system/wharf-static@media.service /lib/systemd/system/wharf-wsgi@server_dev.socket \
	/lib/systemd/system/wharf-wsgi@server_dev.service

# ---- stop: nothing left behind --------------------------------------------

systemctl stop wharf-proxy.socket wharf-static.socket wharf-wsgi@server_dev.socket \
	wharf-wsgi@second.socket wharf-static@media.socket wharf-proxy.service wharf-static.service \
	wharf-wsgi@server_dev.service wharf-wsgi@second.service wharf-static@media.service
sleep 0.5
check "no wharf process is left" bash -c '! pgrep -x wharf-proxy && ! pgrep -x wharf-static && ! pgrep -x wharf-wsgi'
left=$(find /run/wharf -type s 2>/dev/null | wc -l)
check "no socket is left in /run/wharf ($left)" test "$left" = 0
echo "all checks passed"
