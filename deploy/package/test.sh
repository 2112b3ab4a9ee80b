#!/usr/bin/env bash
# Checks replctl's .debs: their systemd units verify cleanly, and they install, run and
# remove cleanly in a fresh container of the deployment's Debian base (replctl-base:latest,
# made by deploy/images.sh, which runs this test on every build).
#   deploy/package/test.sh replctl_*.deb [replctl-server_*.deb]
set -euo pipefail
say() { echo "package-test: $*" >&2; }
fail() { echo "package-test: FAILED: $*" >&2; exit 1; }
[ $# -ge 1 ] || fail "usage: test.sh replctl_*.deb [replctl-server_*.deb]"

work=$(mktemp -d "${TMPDIR:-/tmp}/replctl-pkgtest.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs"
for deb in "$@"; do
	[ -f "$deb" ] || fail "no such package $deb"
	cp "$deb" "$work/debs/"
	dpkg-deb -x "$deb" "$work/root"
done
with_server=false
ls "$work/debs"/replctl-server_*.deb >/dev/null 2>&1 && with_server=true

# 1. The units: systemd-analyze prints a line for every unknown key or bad value (and exits 0
# all the same): any output fails. Paths point into the unpacked packages.
if command -v systemd-analyze >/dev/null; then
	mkdir -p "$work/units"
	for u in "$work/root/usr/lib/systemd/system/"*.service; do
		sed -e "s#/usr/bin/replctl#$work/root/usr/bin/replctl#g" -e "s#EnvironmentFile=-\?/etc/default#EnvironmentFile=-$work/root/etc/default#" \
			"$u" >"$work/units/$(basename "$u")"
	done
	out=$(systemd-analyze verify --man=no "$work/units/"*.service 2>&1) || fail "systemd-analyze verify: $out"
	[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
	say "units verify cleanly: $(cd "$work/units" && echo *.service)"
else
	say "systemd-analyze missing: units not verified"
fi

# 2. A clean container: install, run, remove, purge.
docker image inspect replctl-base:latest >/dev/null 2>&1 || fail "image replctl-base:latest is missing: run make images (deploy/images.sh) first"
docker run --rm --network none -e WITH_SERVER=$with_server -v "$work/debs:/debs:ro" replctl-base:latest bash -euo pipefail -c '
	dpkg -i /debs/replctl_*.deb >/dev/null
	replctl --version
	replctl config validate --config /etc/replctl/config.yaml
	if replctl dev 2>/dev/null; then echo "the agent package must not hold the server" >&2; exit 1; fi
	for f in /usr/lib/systemd/system/replctl-agent.service /etc/default/replctl-agent \
		/usr/share/man/man1/replctl.1.gz /usr/share/man/man1/replctl-verify.1.gz /usr/share/doc/replctl/REFERENCE.md; do
		[ -f "$f" ] || { echo "missing $f" >&2; exit 1; }
	done
	[ "$(stat -c %a /var/lib/replctl)" = 700 ] || { echo "/var/lib/replctl is not 0700" >&2; exit 1; }
	if [ "$WITH_SERVER" = true ]; then
		dpkg -i /debs/replctl-server_*.deb >/dev/null
		replctl-server --version
		replctl-server server --help | grep -q -- "--db" || { echo "replctl-server has no server command" >&2; exit 1; }
		[ -f /usr/lib/systemd/system/replctl-server.service ] || { echo "missing replctl-server.service" >&2; exit 1; }
		dpkg -P replctl-server >/dev/null
	fi
	dpkg-query -W -f="\${Package} \${Version} \${Status}\n" replctl
	echo "# edited" >>/etc/replctl/config.yaml
	dpkg -r replctl >/dev/null
	[ ! -e /usr/bin/replctl ] || { echo "binary left after remove" >&2; exit 1; }
	grep -q "# edited" /etc/replctl/config.yaml || { echo "edited config lost on remove" >&2; exit 1; }
	dpkg -P replctl >/dev/null
	[ ! -e /etc/replctl/config.yaml ] || { echo "config left after purge" >&2; exit 1; }
	echo "installed, ran, removed (config kept), purged"
' >&2 || fail "install in a clean container"
say "ok: $*"
