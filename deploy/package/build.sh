#!/usr/bin/env bash
# Builds a .deb from a built binary: man pages from the binary's own help, then nfpm
# (pinned: NFPM below). Two packages: replctl (the agent and CLI, a binary built with
# -tags noserver; deploy/package/nfpm.yaml) and replctl-server (the full binary with the
# embedded Temporal server; nfpm-server.yaml). Used by `make package` and by
# deploy/images.sh (the compose hosts install the replctl package).
#   deploy/package/build.sh replctl|replctl-server BINARY OUTDIR [VERSION]  -> the .deb's path
set -euo pipefail
NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
usage="usage: build.sh replctl|replctl-server BINARY OUTDIR [VERSION]"
pkg=${1:?$usage}
bin=${2:?$usage}
out=${3:?$usage}
case $pkg in
replctl) conf=nfpm.yaml ;;
replctl-server) conf=nfpm-server.yaml ;;
*) echo "$usage" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/../.." && pwd)
version=${4:-0.1.0+git$(git -C "$root" rev-parse --short=8 HEAD 2>/dev/null || echo unknown)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/replctl-pkg.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$bin" "$work/replctl"
chmod 0755 "$work/replctl"
"$work/replctl" man --dir "$work/man" >/dev/null
cp -r "$root/deploy/package" "$work/package"
mkdir -p "$work/doc"
cp "$root/config/REFERENCE.md" "$root/README.md" "$work/doc/"
arch=$(dpkg --print-architecture 2>/dev/null || go env GOARCH)
rm -f "$out/${pkg}"_*.deb
# nfpm at the pinned version (go install PKG@VERSION), packaging from $work.
GOBIN=$work go install "$NFPM"
nfpm=$work/nfpm
(cd "$work" && REPLCTL_VERSION=$version REPLCTL_ARCH=$arch \
	"$nfpm" package --packager deb --config "package/$conf" --target "$out/" >&2)
ls "$out/${pkg}"_*.deb
