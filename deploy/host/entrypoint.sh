#!/bin/bash
# Entrypoint of replctl-host (run under tini): sshd, the optional sample application and the
# replctl agent of $REPLCTL_HOST.
#
# The container lives as long as sshd does, not as long as the agent: when the agent dies
# (crash, kill -9), the host stays reachable over SSH and the next agent in the job's order
# runs this host's scripts on it. The agent is restarted only when REPLCTL_AGENT_RESTART is
# set (seconds to wait); a process supervisor would do the same on a real host.
#
# Environment:
#   REPLCTL_HOST          this host's name in the config (required)
#   REPLCTL_CONFIG        config file (default /etc/replctl/replctl.yaml)
#   REPLCTL_HOSTKEY_DIR   holds ssh_host_ed25519_key made at set-up (default /etc/replctl/hostkey)
#   REPLCTL_KEYS          holds authorized_keys: who may log in (default /etc/replctl/keys)
#   REPLCTL_WAIT_FOR      host:port to wait for before starting the agent (the Temporal frontend)
#   REPLCTL_AGENT_RESTART seconds before restarting an agent that exited; empty = never
#   REPLCTL_SAMPLE_APP    dataset directories (space-separated) a sample application writes
#                         to, one writer each; empty = none
#   TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TLS_*, TEMPORAL_API_KEY  passed to the agent
# Extra arguments are passed to `replctl agent`.
set -euo pipefail

host=${REPLCTL_HOST:?set REPLCTL_HOST to this host\'s name in the replctl config}
config=${REPLCTL_CONFIG:-/etc/replctl/replctl.yaml}
hostkey_dir=${REPLCTL_HOSTKEY_DIR:-/etc/replctl/hostkey}
keys=${REPLCTL_KEYS:-/etc/replctl/keys}
pidfile=/run/replctl-agent.pid

say() { echo "replctl-host[$host]: $*" >&2; }

# --- sshd ---
if [ -r "$hostkey_dir/ssh_host_ed25519_key" ]; then
	# A copy: sshd refuses a key file that others may read, whatever the mount's modes.
	install -m 600 "$hostkey_dir/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
else
	ssh-keygen -q -t ed25519 -N '' -C "$host" -f /etc/ssh/ssh_host_ed25519_key <<<y >/dev/null
	say "WARNING: no host key in $hostkey_dir; generated one that no known_hosts file lists (other agents will refuse this host)"
fi
if [ -r "$keys/authorized_keys" ]; then
	install -d -m 700 /root/.ssh
	install -m 600 "$keys/authorized_keys" /root/.ssh/authorized_keys
else
	say "WARNING: no $keys/authorized_keys: nobody can log in over SSH, other agents cannot run this host's scripts"
fi
mkdir -p /run/sshd
/usr/sbin/sshd -D -e &
sshd_pid=$!

# --- sample application ---
for dir in ${REPLCTL_SAMPLE_APP:-}; do
	sample-app run "$dir" &
	say "sample application writing to $dir (pid $!)"
done

stopping=
trap 'stopping=1' TERM INT

# --- the agent ---
if [ -n "${REPLCTL_WAIT_FOR:-}" ]; then
	wait_host=${REPLCTL_WAIT_FOR%:*} wait_port=${REPLCTL_WAIT_FOR##*:}
	for ((i = 0; i < 240; i++)); do
		[ -z "$stopping" ] || break
		if (exec 3<>"/dev/tcp/$wait_host/$wait_port") 2>/dev/null; then break; fi
		((i % 20 == 19)) && say "still waiting for $REPLCTL_WAIT_FOR"
		sleep 0.5
	done
fi
while [ -z "$stopping" ]; do
	replctl agent --host "$host" --config "$config" "$@" &
	agent=$!
	echo "$agent" >"$pidfile"
	rc=0
	wait "$agent" || rc=$?
	[ -z "$stopping" ] || break
	rm -f "$pidfile"
	say "agent exited with status $rc; sshd stays up"
	[ -n "${REPLCTL_AGENT_RESTART:-}" ] || break
	say "restarting the agent in ${REPLCTL_AGENT_RESTART}s"
	sleep "$REPLCTL_AGENT_RESTART" || true
done

# The host stays up for SSH until it is stopped; if sshd itself dies the host is broken.
while [ -z "$stopping" ] && kill -0 "$sshd_pid" 2>/dev/null; do
	wait "$sshd_pid" || true
done
if [ -z "$stopping" ]; then
	say "sshd exited: stopping the host"
	exit 1
fi
# Stopping: tini -g sent the signal to every process of the group; let them finish.
wait || true
