#!/usr/bin/env bash
# End-to-end smoke test of the embedded default: starts `replctl dev` in the background on
# free ports with a fresh state dir, runs `replctl start orders --wait`, and checks with
# `diff -r` that the published replica equals the source. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
bin="$work/replctl"
CGO_ENABLED=0 go build -o "$bin" ./cmd/replctl
# Ports from the ephemeral range's upper end, picked per run; dev refuses busy ones loudly.
port=$((20000 + RANDOM % 20000)); ui=$((port + 1))
export REPLCTL_STATE="$work/state"
"$bin" dev --port "$port" --ui-port "$ui" --log-level warn >"$work/dev.log" 2>&1 &
dev=$!
cleanup() { kill "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "SMOKE FAIL: $*"; echo "--- dev log"; tail -50 "$work/dev.log"; exit 1; }
start=$(date +%s%N)
"$bin" --address "127.0.0.1:$port" start orders --wait || fail "start orders --wait"
end=$(date +%s%N)
"$bin" --address "127.0.0.1:$port" status orders --output json >"$work/status.json" || fail "status"
src=$(jq -r .source_path "$work/status.json")
replica=$(jq -r .replica.path "$work/status.json")
diff -r "$src" "$replica" || fail "replica differs from source"
curl -fsS -o /dev/null "http://127.0.0.1:$ui/" || fail "Web UI not answering on $ui"
# dev synced the schedules on start: both repositories have their maintenance schedule.
"$bin" --address "127.0.0.1:$port" schedule sync --dry-run -o json >"$work/sync.json" || fail "schedule sync --dry-run"
[ "$(jq '[.[] | select(.repository != null and .change == "unchanged")] | length' "$work/sync.json")" = 2 ] ||
  fail "dev did not sync the repository maintenance schedules: $(cat "$work/sync.json")"
echo "smoke: replctl dev + start orders --wait OK in $(( (end - start) / 1000000 )) ms; diff -r $src $replica: identical"
