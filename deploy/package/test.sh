#!/usr/bin/env bash
# Checks a replctl .deb: its systemd units verify cleanly, and it installs, runs and removes
# cleanly in a fresh container of the deployment's Debian base (replctl-base:latest, made by
# deploy/images.sh, which runs this test on every build).
#   deploy/package/test.sh PATH/TO/replctl_*.deb
set -euo pipefail
deb=$(cd "$(dirname "${1:?usage: test.sh DEB}")" && pwd)/$(basename "$1")
[ -f "$deb" ] || { echo "package-test: no such package $1" >&2; exit 1; }
say() { echo "package-test: $*" >&2; }
fail() { echo "package-test: FAILED: $*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/replctl-pkgtest.XXXXXX")
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/root"

# 1. The units: systemd-analyze prints a line for every unknown key or bad value (and exits 0
# all the same): any output fails. Paths point into the unpacked package.
if command -v systemd-analyze >/dev/null; then
	mkdir -p "$work/units"
	for u in replctl-agent replctl-server; do
		sed -e "s#/usr/bin/replctl#$work/root/usr/bin/replctl#g" -e "s#EnvironmentFile=-\?/etc/default#EnvironmentFile=-$work/root/etc/default#" \
			"$work/root/usr/lib/systemd/system/$u.service" >"$work/units/$u.service"
	done
	out=$(systemd-analyze verify --man=no "$work/units/"*.service 2>&1) || fail "systemd-analyze verify: $out"
	[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
	say "units verify cleanly (systemd-analyze $(systemd-analyze --version | head -1 | awk '{print $2}'))"
else
	say "systemd-analyze missing: units not verified"
fi

# 2. A clean container: install, run, remove.
docker image inspect replctl-base:latest >/dev/null 2>&1 || fail "image replctl-base:latest is missing: run make images (deploy/images.sh) first"
cp "$deb" "$work/replctl.deb"
docker run --rm --network none -v "$work/replctl.deb:/tmp/replctl.deb:ro" replctl-base:latest bash -euo pipefail -c '
	dpkg -i /tmp/replctl.deb >/dev/null
	replctl --version
	replctl config validate --config /etc/replctl/config.yaml
	for f in /usr/lib/systemd/system/replctl-agent.service /usr/lib/systemd/system/replctl-server.service \
		/etc/default/replctl-agent /usr/share/man/man1/replctl.1.gz /usr/share/man/man1/replctl-agent.1.gz \
		/usr/share/doc/replctl/REFERENCE.md; do
		[ -f "$f" ] || { echo "missing $f" >&2; exit 1; }
	done
	[ "$(stat -c %a /var/lib/replctl)" = 700 ] || { echo "/var/lib/replctl is not 0700" >&2; exit 1; }
	dpkg-query -W -f="\${Package} \${Version} \${Status}\n" replctl
	echo "# edited" >>/etc/replctl/config.yaml
	dpkg -r replctl >/dev/null
	[ ! -e /usr/bin/replctl ] || { echo "binary left after remove" >&2; exit 1; }
	grep -q "# edited" /etc/replctl/config.yaml || { echo "edited config lost on remove" >&2; exit 1; }
	dpkg -P replctl >/dev/null
	[ ! -e /etc/replctl/config.yaml ] || { echo "config left after purge" >&2; exit 1; }
	echo "installed, ran, removed (config kept), purged"
' >&2 || fail "install in a clean container"
say "ok: $(basename "$deb")"
