#!/bin/sh
# Check hook of the dev example (application.check): tells `replctl failback` whether the
# application is stopped on this host, before the failback replaces its dataset.
#
# Contract: exit 0 = the application is stopped; exit 3 = it is running (the failback is
# refused); any other exit, or running past application.timeout, = unknown (refused too).
# Print one line saying why: it ends up in the run's status. A real check asks the
# application itself, e.g. `systemctl is-active --quiet postgresql && exit 3`, or
# `pg_ctl status -D "$REPLCTL_SOURCE_PATH"` (exit 3 when no server runs there: map it).
#
# The dev example's stand-in application "runs" while $REPLCTL_STATE_DIR/RUNNING exists.
#
# Environment (set by the agent): REPLCTL_JOB, REPLCTL_STEP (check), REPLCTL_HOST,
# REPLCTL_AGENT, REPLCTL_RUN_ID, REPLCTL_SOURCE_PATH (may be empty), REPLCTL_STATE_DIR.
set -eu

if [ -n "${REPLCTL_STATE_DIR:-}" ] && [ -e "$REPLCTL_STATE_DIR/RUNNING" ]; then
	echo "check: application running on ${REPLCTL_HOST:-?} ($REPLCTL_STATE_DIR/RUNNING exists)"
	exit 3
fi
echo "check: application stopped on ${REPLCTL_HOST:-?}"
exit 0
