#!/bin/sh
# Takeover hook of the dev example: stands in for "start the application on
# this host because its previous host failed". It only logs.
#
# Environment (set by the agent): REPLCTL_JOB, REPLCTL_STEP (takeover),
# REPLCTL_HOST, REPLCTL_AGENT, REPLCTL_FAILED_HOST, REPLCTL_RUN_ID,
# REPLCTL_SOURCE_PATH (may be empty), REPLCTL_STATE_DIR.
set -eu

now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
line="$now job=${REPLCTL_JOB:-?} step=${REPLCTL_STEP:-takeover} host=${REPLCTL_HOST:-?} agent=${REPLCTL_AGENT:-?} failed_host=${REPLCTL_FAILED_HOST:-?} run=${REPLCTL_RUN_ID:-?}"

if [ -n "${REPLCTL_STATE_DIR:-}" ]; then
	mkdir -p "$REPLCTL_STATE_DIR"
	echo "$line" >>"$REPLCTL_STATE_DIR/markers.log"
fi

echo "takeover: $line"
