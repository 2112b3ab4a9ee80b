#!/usr/bin/env bash
# Starts the compose deployment (docker-compose.yml): SSH keys and TLS certificates first
# (deploy/keys.sh, kept in .deploy/keys), then the containers; waits until every agent polls.
# Images must exist (`make compose-up` builds them first with deploy/images.sh).
# Environment: see docker-compose.yml (COMPOSE_PROJECT_NAME, REPLCTL_TEMPORAL_PORT, …);
# REPLCTL_COMPOSE_DB=postgres runs Temporal as a cluster on PostgreSQL
# (docker-compose.postgres.yml).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

images=(replctl-server replctl-host)
[ "${REPLCTL_COMPOSE_DB:-sqlite}" != postgres ] || images+=(replctl-postgres)
for img in "${images[@]}"; do
	docker image inspect "$img:${REPLCTL_IMAGE_TAG:-latest}" >/dev/null 2>&1 ||
		die "image $img:${REPLCTL_IMAGE_TAG:-latest} is missing: run make images (deploy/images.sh)"
done
bash "$DEPLOY_DIR/keys.sh"
compose up -d --remove-orphans
port=${REPLCTL_TEMPORAL_PORT:-7233}

# Ready when the frontend accepts connections and each host's log says its agent polls.
deadline=$((SECONDS + 180))
for h in a1 a2 b1 b2; do
	until compose logs --no-color "$h" 2>/dev/null | grep -q "agent $h polling"; do
		[ $SECONDS -lt $deadline ] || {
			compose logs --no-color --tail=30 temporal "$h" >&2
			die "agent $h did not start within 180s (logs above)"
		}
		sleep 1
	done
done
# Every agent checks its own host (replctl check): a problem is shown, not fatal.
op=${REPLCTL_KEYS_DIR:-$STATE_DIR/keys}/tls/operator
if [ -x "$STATE_DIR/build/replctl" ]; then
	if "$STATE_DIR/build/replctl" check --config "$REPO_ROOT/config/examples/compose.yaml" --address "127.0.0.1:$port" \
		--tls-ca "$op/ca.pem" --tls-cert "$op/operator.pem" --tls-key "$op/operator.key" >&2; then
		log "replctl check: every host ok"
	else
		log "replctl check found problems (table above): fix them before starting runs"
	fi
fi
log "deployment up: Temporal on 127.0.0.1:$port (mutual TLS; the CLI uses the operator certificate in ${REPLCTL_KEYS_DIR:-.deploy/keys}/tls/operator)"
log "try: replctl start orders --wait --config config/examples/compose.yaml --address 127.0.0.1:$port"
log "stop: bash deploy/compose-down.sh  (add -v to delete the volumes: storage and Temporal's DB)"
