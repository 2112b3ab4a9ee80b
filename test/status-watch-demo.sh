#!/usr/bin/env bash
# `replctl status orders --watch` while the pushing agent is killed and the next one takes
# over. Runs `replctl server` and one `replctl agent` per host of config/examples/dev.yaml as
# separate processes (dev would run them all in one), on non-default ports, with a random
# dataset big enough (SIZE_MB, default 1536) that the push takes several seconds; kill -9s
# the agent doing the push once it has copied about a third, and writes the watch output to
# docs/status-watch-takeover.txt (OUT=... to change). Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-17433}
size_mb=${SIZE_MB:-1536}
out=${OUT:-docs/status-watch-takeover.txt}
work=$(mktemp -d /tmp/replctl-watch.XXXXXX)
bin="$work/replctl"
CGO_ENABLED=0 GOTOOLCHAIN=local go build -o "$bin" ./cmd/replctl
export REPLCTL_STATE="$work/state"
cfg=config/examples/dev.yaml
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
rc() { "$bin" --config "$cfg" --address "127.0.0.1:$port" --log-level warn "$@"; }

# The source dataset: random 8 MiB files (incompressible, nothing deduplicates).
src="$REPLCTL_STATE/storage/array-a/orders"
mkdir -p "$src" "$REPLCTL_STATE/storage/array-b"
for i in $(seq 1 $((size_mb / 8))); do head -c 8M /dev/urandom >"$src/part-$i.bin"; done
echo "dataset: $(du -sh "$src" | cut -f1) in $((size_mb / 8)) files"

"$bin" server --db "$work/temporal.db" --port "$port" --ui-port -1 --log-level warn >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do rc list >/dev/null 2>&1 && break; sleep 1; done
declare -A agent
for h in a1 a2 b1 b2; do
  # The binary itself (not through rc): $! must be the agent's own pid for kill -9.
  "$bin" --config "$cfg" --address "127.0.0.1:$port" --log-level warn agent --host "$h" >"$work/agent-$h.log" 2>&1 &
  agent[$h]=$!; pids+=($!)
done
sleep 3

rc start orders
rc status orders --watch --interval 500ms >"$work/watch.txt" 2>&1 &
watch=$!

# Kill the pushing agent once it has reported about a third of the bytes.
victim=""
for _ in $(seq 1 600); do
  st=$(rc status orders -o json 2>/dev/null || true)
  done_b=$(jq -r '.live.progress.BytesDone // 0' <<<"$st" 2>/dev/null || echo 0)
  who=$(jq -r '.live.progress.Agent // ""' <<<"$st" 2>/dev/null || echo "")
  step=$(jq -r '.live.progress.Step // ""' <<<"$st" 2>/dev/null || echo "")
  if [ "$step" = push ] && [ -n "$who" ] && [ $((done_b * 3)) -ge $((size_mb * 1048576)) ]; then
    victim=$who; break
  fi
  sleep 0.2
done
[ -n "$victim" ] || { echo "push never got going; watch output:"; cat "$work/watch.txt"; exit 1; }
killed_at=$(date +%T)
kill -9 "${agent[$victim]}"
echo "kill -9 agent $victim (pid ${agent[$victim]}) at $killed_at"
wait "$watch" && code=0 || code=$?
{
  echo "# replctl status orders --watch   (stdout not a terminal: one line per change)"
  echo "# push agent $victim killed with kill -9 at $killed_at after a third of the data; $size_mb MiB random data"
  cat "$work/watch.txt"
  echo "# exit code: $code"
} >"$out"
cat "$out"
