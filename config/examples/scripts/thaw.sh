#!/bin/sh
# Resume hook of the dev example: stands in for "unfreeze the application".
# It removes the QUIESCED flag freeze.sh left in the host's state dir and logs
# there.
#
# Environment (set by the agent): REPLCTL_JOB, REPLCTL_STEP (resume),
# REPLCTL_HOST, REPLCTL_AGENT, REPLCTL_RUN_ID, REPLCTL_SOURCE_PATH (may be
# empty), REPLCTL_STATE_DIR.
set -eu

now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
line="$now job=${REPLCTL_JOB:-?} step=${REPLCTL_STEP:-resume} host=${REPLCTL_HOST:-?} agent=${REPLCTL_AGENT:-?} run=${REPLCTL_RUN_ID:-?}"

if [ -n "${REPLCTL_STATE_DIR:-}" ]; then
	mkdir -p "$REPLCTL_STATE_DIR"
	rm -f "$REPLCTL_STATE_DIR/QUIESCED"
	echo "$line" >>"$REPLCTL_STATE_DIR/markers.log"
fi

echo "thaw: $line"
