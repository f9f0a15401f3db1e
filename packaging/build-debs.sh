#!/bin/sh
# Builds wharf's Debian packages: packaging/build-debs.sh [OUTDIR]
# (default out/debs). The tree is copied to a scratch directory with
# packaging/debian as its debian/, built with dpkg-buildpackage -us -uc -b,
# and the .debs are moved to OUTDIR; lintian then checks them.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/out/debs}
case $out in /*) ;; *) out=$PWD/$out ;; esac

need="debhelper dpkg-dev build-essential fakeroot lintian meson ninja-build pkg-config
      liburing-dev libsystemd-dev libinih-dev python3-dev media-types"
missing=
for p in $need; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	sudo=
	[ "$(id -u)" = 0 ] || sudo=sudo
	echo "==> installing build dependencies:$missing"
	$sudo apt-get install -y --no-install-recommends $missing >/dev/null
fi

scratch=$(mktemp -d /tmp/wharf-deb.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
src=$scratch/wharf-0.1.0
mkdir -p "$src"
# The tracked files only: no build directories, no out/.
git -C "$here" ls-files -z | (cd "$here" && xargs -0 cp --parents -t "$src")
cp -r "$here/packaging/debian" "$src/debian"
echo "==> dpkg-buildpackage in $src"
(cd "$src" && dpkg-buildpackage -us -uc -b) >"$scratch/build.log" 2>&1 || {
	tail -40 "$scratch/build.log" >&2
	echo "build-debs: dpkg-buildpackage failed" >&2
	exit 1
}
mkdir -p "$out"
rm -f "$out"/wharf*.deb
mv "$scratch"/wharf*.deb "$out"/
echo "==> lintian"
lintian --fail-on error "$out"/wharf*.deb
ls -l "$out"/wharf*.deb
