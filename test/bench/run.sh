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
# The bench runs its own copies, so a rebuild of bin/replctl (or another bench) during a
# long run cannot swap binaries under it. As in the packages (make package), the CLI and the
# agents are the slim build (-tags noserver: no Temporal server linked in, a third of the
# start-up time) and only `replctl server` is the full one.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/replctl-bench-bin.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
cp bin/replctl "$tmp/replctl-server"
echo "bench: building the slim replctl (-tags noserver)" >&2
CGO_ENABLED=0 timeout 30m go build -tags noserver -o "$tmp/replctl" ./cmd/replctl
echo "bench: building the bench command" >&2
timeout 15m go build -o "$tmp/bench" ./test/bench

# Which replctl is measured: the commit and how many files differ from it.
rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$( (git status --porcelain 2>/dev/null || true) | wc -l | tr -d ' ')"
[ "$dirty" = 0 ] || rev="$rev + $dirty uncommitted file(s)"

# The bench stops its own processes on SIGTERM/SIGINT; the outer timeout is a backstop
# (--foreground: Ctrl-C reaches the bench; its servers and agents die with it)
# (the command's own -timeout is 45m small / 4h full).
case "$mode" in
  small) limit=50m ;;
  full) limit=270m ;;
esac
# shellcheck disable=SC2086
timeout --foreground --kill-after=60s "$limit" "$tmp/bench" -mode "$mode" -dir "$BENCH_DIR" -replctl "$tmp/replctl" -replctl-server "$tmp/replctl-server" -rev "$rev" ${BENCH_ARGS:-}
