#!/bin/bash
# wharf under a real systemd: tests/systemd/run.sh DEB_DIR
#
# PID 1 on the development machines is not systemd, so this boots a minimal
# Debian bookworm with systemd-nspawn, installs the freshly built .debs into
# it, and runs tests/systemd/checks.sh inside: socket activation, the
# example Django project through all three daemons on :80, restarts and
# reloads under load, the watchdog, a killed worker, a second app from the
# template, the units' security scores, and a clean stop.
#
# The root is made once with debootstrap and cached in $WHARF_NSPAWN_CACHE
# (default /var/tmp/wharf-nspawn); each run boots it with a volatile overlay,
# so the cache is never modified.
#
# Exit status: 0 passed, 1 failed, 77 skipped (the reason is printed).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
debs=${1:?usage: tests/systemd/run.sh DEB_DIR}
debs=$(cd "$debs" && pwd)
cache=${WHARF_NSPAWN_CACHE:-/var/tmp/wharf-nspawn}
suite=bookworm
# What the container needs besides the .debs; a change makes a new root.
packages=systemd,systemd-sysv,dbus,procps,curl,ca-certificates,python3,python3-django,libjs-jquery,media-types,libinih1,liburing2,libpython3.11,logrotate
key=$(printf '%s %s r1' "$suite" "$packages" | sha256sum | cut -c1-12)
root=$cache/rootfs-$suite-$key
name=wharf-e2e-$$
leader=

skip() {
	echo "tests/systemd: SKIPPED: $*"
	exit 77
}
say() { echo "==> $*"; }

[[ $(id -u) == 0 ]] || skip "needs root (systemd-nspawn and debootstrap)"
compgen -G "$debs/wharf-*.deb" >/dev/null || skip "no wharf .debs in $debs (./dev deb)"
if ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null; then
	say "installing systemd-container and debootstrap"
	apt-get install -y --no-install-recommends systemd-container debootstrap >/dev/null 2>&1 ||
		skip "cannot install systemd-container and debootstrap"
fi

# The mirror apt uses here, for debootstrap.
mirror() {
	local m
	m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
		/etc/apt/sources.list.d/*.sources 2>/dev/null |
		grep -oE '^(deb|URIs:)\s+(\[[^]]*\]\s+)?[a-z]+://[^ ]+' | grep -oE '[a-z]+://[^ ]+' |
		grep -E '/debian/?$' | head -1)
	echo "${m:-http://deb.debian.org/debian}"
}

if [[ ! -d $root ]]; then
	say "building the $suite root in $root (once; cached)"
	mkdir -p "$cache"
	rm -rf "$root.tmp"
	if ! debootstrap --variant=minbase --include="$packages" "$suite" "$root.tmp" "$(mirror)" \
		>"$cache/debootstrap.log" 2>&1; then
		tail -5 "$cache/debootstrap.log"
		rm -rf "$root.tmp"
		skip "debootstrap failed (log: $cache/debootstrap.log)"
	fi
	# A machine-id that is set: an empty one means first boot, which prompts.
	systemd-id128 new >"$root.tmp/etc/machine-id"
	rm -rf "$root.tmp"/var/cache/apt/archives/*.deb
	mv "$root.tmp" "$root"
fi

cleanup() {
	if [[ -n ${WHARF_E2E_KEEP:-} && -n $leader ]]; then
		echo "kept: nsenter -t $leader -m -u -i -n -p -C bash (then kill $leader)"
		return
	fi
	if [[ -n $leader ]] && kill -0 "$leader" 2>/dev/null; then
		nsenter -t "$leader" -m -u -i -n -p -C systemctl poweroff >/dev/null 2>&1 || true
		for _ in $(seq 50); do kill -0 "$leader" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$leader" 2>/dev/null || true
	fi
	[[ -n ${nspawn_pid:-} ]] && wait "$nspawn_pid" 2>/dev/null || true
	rm -rf "/run/systemd/nspawn/propagate/$name"
	for d in /sys/fs/cgroup/systemd/$name /sys/fs/cgroup/unified/$name; do
		[[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}
trap cleanup EXIT

say "booting $name"
(
	# Its own cgroup, so that nspawn's payload cgroups do not land in the root one.
	for d in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
		if [[ -d $d ]]; then
			mkdir -p "$d/$name" && echo $BASHPID >"$d/$name/cgroup.procs" || true
		fi
	done
	exec env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -D "$root" -M "$name" \
		--register=no --keep-unit --private-network --volatile=overlay \
		--bind-ro="$debs:/e2e/debs" --bind-ro="$here:/e2e/tests" \
		--bind-ro="$repo/examples:/e2e/examples" \
		-b --console=passive >"$cache/$name.log" 2>&1
) &
nspawn_pid=$!

# The container's PID 1: the child of nspawn that is systemd.
for _ in $(seq 100); do
	for p in $(pgrep -P "$nspawn_pid" 2>/dev/null; pgrep -f "systemd-nspawn -D $root" 2>/dev/null); do
		for c in $(pgrep -P "$p" 2>/dev/null); do
			if [[ $(cat /proc/"$c"/comm 2>/dev/null) == systemd ]]; then
				leader=$c
			fi
		done
	done
	[[ -n $leader ]] && break
	kill -0 "$nspawn_pid" 2>/dev/null || break
	sleep 0.1
done
if [[ -z $leader ]]; then
	cat "$cache/$name.log" >&2 || true
	skip "systemd-nspawn did not boot a container here"
fi

inside() {
	nsenter -t "$leader" -m -u -i -n -p -C \
		env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}
for _ in $(seq 100); do
	state=$(inside systemctl is-system-running 2>/dev/null || true)
	[[ $state == running || $state == degraded ]] && break
	sleep 0.1
done
say "container is $state"

status=0
inside bash /e2e/tests/checks.sh || status=$?
if ((status != 0)); then
	echo "---- journal of the wharf units ----"
	inside journalctl --no-pager -n 80 -u 'wharf-*' || true
fi
exit "$status"
