#!/bin/sh
# Quiesce hook of the dev example: stands in for "flush and freeze the
# application". It leaves a QUIESCED flag file in the host's state dir (thaw.sh
# removes it: a flag still there after a run means the application was left
# frozen) and logs to the host's state dir. It writes nothing into the dataset,
# so the replica equals the source byte for byte.
#
# Environment (set by the agent): REPLCTL_JOB, REPLCTL_STEP (quiesce),
# REPLCTL_HOST, REPLCTL_AGENT, REPLCTL_RUN_ID, REPLCTL_SOURCE_PATH (may be
# empty), REPLCTL_STATE_DIR.
set -eu

now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
line="$now job=${REPLCTL_JOB:-?} step=${REPLCTL_STEP:-quiesce} host=${REPLCTL_HOST:-?} agent=${REPLCTL_AGENT:-?} run=${REPLCTL_RUN_ID:-?}"

if [ -n "${REPLCTL_STATE_DIR:-}" ]; then
	mkdir -p "$REPLCTL_STATE_DIR"
	{
		echo "run_id=${REPLCTL_RUN_ID:-}"
		echo "host=${REPLCTL_HOST:-}"
		echo "agent=${REPLCTL_AGENT:-}"
		echo "source=${REPLCTL_SOURCE_PATH:-}"
		echo "time=$now"
	} >"$REPLCTL_STATE_DIR/QUIESCED"
	echo "$line" >>"$REPLCTL_STATE_DIR/markers.log"
fi

echo "freeze: $line"
