#!/usr/bin/env bash
# Randomized fault trials of replctl's failover protocol (see test/chaos/main.go).
#   bash test/chaos/run.sh [TRIALS] [harness flags...]     e.g. make chaos TRIALS=20
# Builds bin/replctl and the harness, then runs the harness from the repository root. The
# harness sets up and tears down its own world (server, proxies, agents) in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/../.."

trials="${1:-20}"
shift || true

echo "chaos: building bin/replctl and the harness" >&2
mkdir -p bin
CGO_ENABLED=0 go build -o bin/replctl ./cmd/replctl
harness="$(mktemp -d)/chaos"
CGO_ENABLED=0 go build -o "$harness" ./test/chaos

# Stop the harness (it tears its world down) if this script is interrupted.
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$(dirname "$harness")"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$harness" -bin bin/replctl -trials "$trials" "$@" &
pid=$!
set +e
wait "$pid"
rc=$?
set -e
pid=
exit "$rc"
