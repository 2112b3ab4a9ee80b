#!/usr/bin/env bash
# End-to-end tests on the compose deployment (test/compose): builds the images and keys, then
# runs the Go tests with REPLCTL_COMPOSE=1. Every test starts and removes its own compose
# project; the trap below removes whatever a crashed run left behind.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
export CGO_ENABLED=0

command -v docker >/dev/null || die "docker is not installed: the compose tests need a Docker engine"
init_state
began=$SECONDS
prefix="replctl-t$$"

cleanup() {
	local ids
	ids=$(docker ps -aq --filter "name=^${prefix}-")
	if [ -n "$ids" ]; then
		docker unpause $ids >/dev/null 2>&1 || true
		docker rm -f $ids >/dev/null 2>&1 || true
	fi
	ids=$(docker volume ls -q --filter "name=^${prefix}-")
	[ -z "$ids" ] || docker volume rm $ids >/dev/null 2>&1 || true
	ids=$(docker network ls -q --filter "name=^${prefix}-")
	[ -z "$ids" ] || docker network rm $ids >/dev/null 2>&1 || true
}
trap cleanup EXIT

bash "$DEPLOY_DIR/images.sh"
bash "$DEPLOY_DIR/keys.sh"
log "running test/compose (projects ${prefix}-*)"
cd "$REPO_ROOT"
set +e
REPLCTL_COMPOSE=1 REPLCTL_COMPOSE_PREFIX="$prefix" REPLCTL_BIN="$STATE_DIR/build/replctl" \
	go test -count=1 -timeout "${COMPOSE_TEST_TIMEOUT:-25m}" -v ${COMPOSE_TEST_RUN:+-run "$COMPOSE_TEST_RUN"} ./test/compose/ 2>&1 |
	tee "$STATE_DIR/compose-test.log" | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go:[0-9]+:'
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" != 0 ]; then
	# The filter above drops a failure's message and the containers' logs (lines without a
	# file:line prefix); print each failed test's whole output, its last 300 lines at most.
	awk '/^=== RUN/ { name = $3; n = 0 } name != "" { buf[name, ++n] = $0; len[name] = n }
		/^--- FAIL/ { f = $3; first = len[f] > 300 ? len[f] - 299 : 1
			print "----- output of failed " f " -----"
			for (i = first; i <= len[f]; i++) print buf[f, i] }' "$STATE_DIR/compose-test.log"
fi
log "compose tests took $((SECONDS - began))s (full output: $STATE_DIR/compose-test.log)"
exit "$rc"
