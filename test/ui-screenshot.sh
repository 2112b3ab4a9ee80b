#!/usr/bin/env bash
# Screenshots of the Temporal Web UI served by `replctl dev`, taken with headless Chromium
# (Debian: apt-get install -y chromium). Starts dev on non-default ports with a fresh state
# dir, runs the job orders, then captures the workflow list (docs/ui-list.png), the finished
# run's timeline with the activity summaries (docs/ui-run.png) and its event history
# (docs/ui-history.png). Not run by CI.
#   PORT=17233 UI_PORT=18233 bash test/ui-screenshot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-17233}; ui=${UI_PORT:-18233}
work=$(mktemp -d /tmp/replctl-ui.XXXXXX)
bin="$work/replctl"
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium not found: apt-get install -y chromium" >&2; exit 2; }
CGO_ENABLED=0 GOTOOLCHAIN=local go build -o "$bin" ./cmd/replctl
"$bin" dev --port "$port" --ui-port "$ui" --state-dir "$work/state" --run orders --log-level warn >"$work/dev.log" 2>&1 &
dev=$!
cleanup() { kill "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
rc() { "$bin" --state-dir "$work/state" --address "127.0.0.1:$port" "$@"; }
run=""
for _ in $(seq 1 180); do
  if st=$(rc status orders -o json 2>/dev/null) && [ "$(jq -r .phase <<<"$st")" = completed ]; then
    run=$(jq -r .run_id <<<"$st"); break
  fi
  sleep 1
done
[ -n "$run" ] || { echo "run of orders did not complete; dev log:" >&2; tail -40 "$work/dev.log" >&2; exit 1; }
# A second run, so the list shows more than one row (and the UI a takeover-free history).
rc start orders --wait >/dev/null
shoot() { # $1 = output file, $2 = URL
  "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,${HEIGHT:-1000} \
    --virtual-time-budget=15000 --screenshot="$1" "$2" >/dev/null 2>&1
  echo "wrote $1 ($2)"
}
base="http://127.0.0.1:$ui/namespaces/default/workflows"
shoot docs/ui-list.png "$base"
shoot docs/ui-run.png "$base/replctl-orders/$run/timeline"
shoot docs/ui-history.png "$base/replctl-orders/$run/history"
