#!/bin/sh
# Quiesce script of the compose example (runs on the application host, locally by its own
# agent or over SSH by the agent that took over). It freezes the sample application writing to
# the source dataset, waits until it acknowledges, and records the digest of the quiesced
# dataset (tree-digest) in $REPLCTL_STATE_DIR/digests/JOB-RUN_ID: the replica of this run must
# have exactly that digest. Every call is logged to $REPLCTL_STATE_DIR/markers.log.
set -eu
src=${REPLCTL_SOURCE_PATH:-}
state=${REPLCTL_STATE_DIR:-/var/lib/replctl}
mkdir -p "$state/digests"
if [ -n "$src" ]; then
	sample-app freeze "$src"
fi
digest=-
if [ -n "$src" ] && [ -d "$src" ]; then
	digest=$(tree-digest "$src")
	echo "$digest" >"$state/digests/${REPLCTL_JOB}-${REPLCTL_RUN_ID}"
fi
line="$(date -u +%Y-%m-%dT%H:%M:%SZ) step=${REPLCTL_STEP:-quiesce} job=${REPLCTL_JOB:-} host=${REPLCTL_HOST:-} agent=${REPLCTL_AGENT:-} failed=${REPLCTL_FAILED_HOST:-} via=${SSH_CONNECTION:+ssh}${SSH_CONNECTION:-local} run=${REPLCTL_RUN_ID:-} digest=$digest"
echo "$line" >>"$state/markers.log"
echo "freeze: $line"
