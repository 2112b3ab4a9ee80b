#!/usr/bin/env bash
# Benchmark replctl against cp -a and rsync -a --delete: `make bench` (full) or
# `make bench-small` (CI size). Builds bin/replctl and the bench command, installs nothing.
# Env: BENCH_DIR (default /tmp/replctl-bench) keeps the generated datasets between runs and
# receives results.md / results.json; BENCH_ARGS adds flags (e.g. "-runs 5").
set -euo pipefail

mode="${1:-small}"
case "$mode" in
  small|full) ;;
  *) echo "usage: $0 small|full" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

for tool in rsync cp sync go timeout; do
  if ! command -v "$tool" >/dev/null; then
    echo "bench: $tool not found. rsync comes with \`make test-deps\` (apt-get install rsync)." >&2
    exit 1
  fi
done

export BENCH_DIR="${BENCH_DIR:-/tmp/replctl-bench}"
mkdir -p "$BENCH_DIR"

echo "bench: building bin/replctl" >&2
CGO_ENABLED=0 timeout 30m go build -o bin/replctl ./cmd/replctl
echo "bench: building the bench command" >&2
timeout 15m go build -o "$BENCH_DIR/bench" ./test/bench

# The bench stops its own processes on SIGTERM; the outer timeout is a backstop
# (the command's own -timeout is 45m small / 4h full).
case "$mode" in
  small) limit=50m ;;
  full) limit=270m ;;
esac
# shellcheck disable=SC2086
exec timeout --kill-after=60s "$limit" "$BENCH_DIR/bench" -mode "$mode" -dir "$BENCH_DIR" -replctl bin/replctl ${BENCH_ARGS:-}
