#!/usr/bin/env bash
# Builds the replctl .deb from a built binary: man pages from the binary's own help, then
# nfpm (pinned: NFPM below) with deploy/package/nfpm.yaml. Used by `make package` and by
# deploy/images.sh (the compose hosts install this package).
#   deploy/package/build.sh BINARY OUTDIR [VERSION]   -> prints the .deb's path
set -euo pipefail
NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
bin=${1:?usage: build.sh BINARY OUTDIR [VERSION]}
out=${2:?usage: build.sh BINARY OUTDIR [VERSION]}
root=$(cd "$(dirname "$0")/../.." && pwd)
version=${3:-0.1.0+git$(git -C "$root" rev-parse --short=8 HEAD 2>/dev/null || echo unknown)}
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
rm -f "$out"/replctl_*.deb
# go run from the module (its go.sum pins nfpm's dependencies), packaging from $work.
GOBIN=$work go install "$NFPM"
nfpm=$work/nfpm
(cd "$work" && REPLCTL_VERSION=$version REPLCTL_ARCH=$arch \
	"$nfpm" package --packager deb --config package/nfpm.yaml --target "$out/" >&2)
ls "$out"/replctl_*.deb
