#!/bin/sh
# Takeover script of the compose example: runs on a host whose agent was lost, started by the
# agent taking over (usually over SSH). A real one would fence or hand over the application;
# this one only logs to $REPLCTL_STATE_DIR/markers.log.
set -eu
state=${REPLCTL_STATE_DIR:-/var/lib/replctl}
mkdir -p "$state"
line="$(date -u +%Y-%m-%dT%H:%M:%SZ) step=${REPLCTL_STEP:-takeover} job=${REPLCTL_JOB:-} host=${REPLCTL_HOST:-} agent=${REPLCTL_AGENT:-} failed=${REPLCTL_FAILED_HOST:-} via=${SSH_CONNECTION:+ssh}${SSH_CONNECTION:-local} run=${REPLCTL_RUN_ID:-}"
echo "$line" >>"$state/markers.log"
echo "takeover: $line"
