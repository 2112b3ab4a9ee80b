#!/bin/sh
# Resume script of the compose example: lets the sample application go on. Logged to
# $REPLCTL_STATE_DIR/markers.log.
set -eu
src=${REPLCTL_SOURCE_PATH:-}
state=${REPLCTL_STATE_DIR:-/var/lib/replctl}
mkdir -p "$state"
if [ -n "$src" ]; then
	sample-app thaw "$src"
fi
line="$(date -u +%Y-%m-%dT%H:%M:%SZ) step=${REPLCTL_STEP:-resume} job=${REPLCTL_JOB:-} host=${REPLCTL_HOST:-} agent=${REPLCTL_AGENT:-} failed=${REPLCTL_FAILED_HOST:-} via=${SSH_CONNECTION:+ssh}${SSH_CONNECTION:-local} run=${REPLCTL_RUN_ID:-}"
echo "$line" >>"$state/markers.log"
echo "thaw: $line"
