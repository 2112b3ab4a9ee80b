#!/usr/bin/env bash
# The fleet simulator (see test/fleet/main.go and docs/scale.md).
#   bash test/fleet/run.sh [harness flags...]      e.g. make fleet, make fleet-ci
# Builds bin/replctl (its `server` is started when no -address is given) and the harness,
# then runs the harness from the repository root. The harness starts and stops its own
# processes; logs stay in the directory it prints.
set -euo pipefail
cd "$(dirname "$0")/../.."

echo "fleet: building bin/replctl and the harness" >&2
mkdir -p bin
CGO_ENABLED=0 go build -o bin/replctl ./cmd/replctl
tmp="$(mktemp -d)"
CGO_ENABLED=0 go build -o "$tmp/fleet" ./test/fleet

pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$tmp/fleet" -bin bin/replctl "$@" &
pid=$!
set +e
wait "$pid"
rc=$?
set -e
pid=
exit "$rc"
