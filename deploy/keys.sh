#!/usr/bin/env bash
# Generates the SSH keys and TLS certificates of the compose deployment (once; existing ones
# are kept):
#   KEYS/agent/id_ed25519        the key agents log in with (user root) to run a host's scripts
#   KEYS/agent/authorized_keys   its public key: mounted into every host
#   KEYS/agent/known_hosts       every host's key under its compose hostname: the agents check it
#   KEYS/hosts/HOST/ssh_host_ed25519_key  each host's own sshd key (mounted only into HOST)
#   KEYS/agent/secrets/*.password  the repository passwords (secrets_dir of
#                                config/examples/compose.yaml): the same on every host, 0600
# Mutual TLS to Temporal (the role is the certificate's subject CN, see README "Security:
# roles and TLS"):
#   KEYS/tls/ca/ca.key           the CA's key: never mounted anywhere
#   KEYS/tls/server/             ca.pem + server.pem/.key for `temporal` (also 127.0.0.1 and
#                                localhost: the published port): mounted into the server
#   KEYS/tls/hosts/HOST/         ca.pem + agent.pem/.key, CN host:HOST: mounted only into HOST
#   KEYS/tls/operator/           ca.pem + operator.pem/.key, CN operator: the CLI on this machine
#   KEYS/tls/reader/             ca.pem + reader.pem/.key, CN reader: read-only access
# Private keys are mode 0600. KEYS is $REPLCTL_KEYS_DIR, default .deploy/keys (ignored by
# git). Never commit these.
# Usage: deploy/keys.sh [HOST...]   (default: a1 a2 b1 b2)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

init_state
keys=${REPLCTL_KEYS_DIR:-$STATE_DIR/keys}
hosts=("$@")
[ ${#hosts[@]} -gt 0 ] || hosts=(a1 a2 b1 b2)
mkdir -p "$keys/agent" "$keys/hosts"
chmod 700 "$keys"

# keygen FILE COMMENT makes an unencrypted ed25519 key pair unless FILE exists. Without a local
# ssh-keygen it uses the one in the host image.
keygen() {
	[ -s "$1" ] && return 0
	if command -v ssh-keygen >/dev/null 2>&1; then
		ssh-keygen -q -t ed25519 -N '' -C "$2" -f "$1"
	else
		local dir base
		dir=$(cd "$(dirname "$1")" && pwd) base=$(basename "$1")
		docker run --rm --entrypoint /bin/sh -v "$dir:/k" replctl-host:"${REPLCTL_IMAGE_TAG:-latest}" -c \
			"ssh-keygen -q -t ed25519 -N '' -C '$2' -f '/k/$base' && chown $(id -u):$(id -g) '/k/$base' '/k/$base.pub'"
	fi
}

keygen "$keys/agent/id_ed25519" replctl-agent
cp "$keys/agent/id_ed25519.pub" "$keys/agent/authorized_keys"
: >"$keys/agent/known_hosts.new"
for h in "${hosts[@]}"; do
	mkdir -p "$keys/hosts/$h"
	keygen "$keys/hosts/$h/ssh_host_ed25519_key" "$h"
	# "HOST key-type key": the name agents dial (port 22), as in the config's connect.ssh.address.
	echo "$h $(cut -d' ' -f1,2 "$keys/hosts/$h/ssh_host_ed25519_key.pub")" >>"$keys/agent/known_hosts.new"
done
mv "$keys/agent/known_hosts.new" "$keys/agent/known_hosts"
# Repository passwords, one per repository of config/examples/compose.yaml (named as
# config.PasswordFileName does): every host reads the same password from its own mount,
# never from the repository storage. Agents refuse them unless they are 0600.
mkdir -p "$keys/agent/secrets"
chmod 700 "$keys/agent/secrets"
for repo in vault array-a array-b; do
	pw="$keys/agent/secrets/$repo-replctl-repository.password"
	[ -s "$pw" ] && continue
	(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$pw.new" && echo >>"$pw.new" && mv "$pw.new" "$pw")
done
# Readable by the containers' root only; the host directories hold private keys.
chmod 600 "$keys/agent/id_ed25519" "$keys"/hosts/*/ssh_host_ed25519_key "$keys"/agent/secrets/*.password
log "SSH keys in $keys (hosts: ${hosts[*]})"

# --- TLS: a CA and one certificate per role ---
command -v openssl >/dev/null 2>&1 || die "openssl is needed to make the TLS certificates"
tls=$keys/tls

# make_ca DIR CN makes DIR/ca.key (0600) and the self-signed DIR/ca.pem; kept when they exist.
make_ca() {
	mkdir -p "$1"
	chmod 700 "$1"
	if [ ! -s "$1/ca.key" ] || [ ! -s "$1/ca.pem" ]; then
		(umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$1/ca.key")
		openssl req -x509 -new -key "$1/ca.key" -sha256 -days 3650 -subj "/CN=$2" \
			-addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
			-out "$1/ca.pem" 2>/dev/null
	fi
	chmod 600 "$1/ca.key"
}
make_ca "$tls/ca" "replctl compose CA"

# leaf DIR NAME CN USAGE [SAN] makes DIR/NAME.pem and DIR/NAME.key (0600) signed by the CA,
# with the CA's certificate beside them as DIR/ca.pem; kept when they exist.
leaf() {
	local dir=$1 name=$2 cn=$3 usage=$4 san=${5:-} ext
	mkdir -p "$dir"
	cp "$tls/ca/ca.pem" "$dir/ca.pem"
	[ -s "$dir/$name.pem" ] && [ -s "$dir/$name.key" ] && return 0
	(umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$dir/$name.key")
	ext=$(mktemp)
	{
		echo "basicConstraints=CA:FALSE"
		echo "keyUsage=critical,digitalSignature"
		echo "extendedKeyUsage=$usage"
		[ -z "$san" ] || echo "subjectAltName=$san"
	} >"$ext"
	openssl req -new -key "$dir/$name.key" -subj "/CN=$cn" 2>/dev/null |
		openssl x509 -req -CA "$tls/ca/ca.pem" -CAkey "$tls/ca/ca.key" -CAcreateserial -days 825 -sha256 \
			-extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
	rm -f "$ext"
	chmod 600 "$dir/$name.key"
}

leaf "$tls/server" server temporal serverAuth "DNS:temporal,DNS:localhost,IP:127.0.0.1"
for h in "${hosts[@]}"; do
	leaf "$tls/hosts/$h" agent "host:$h" clientAuth
done
leaf "$tls/operator" operator operator clientAuth
leaf "$tls/reader" reader reader clientAuth
rm -f "$tls/ca/ca.srl"
log "TLS certificates in $tls (server temporal; host:${hosts[*]}; operator; reader)"

# --- the Temporal cluster on PostgreSQL (docker-compose.postgres.yml) ---
#   KEYS/tls/cluster/ca.pem, ca.key  the cluster CA (its own, not the clients' CA): every
#                                server process signs its internode certificate with it;
#                                mounted only into the server containers
#   KEYS/postgres/password       the database user temporal's password (0600): mounted into
#                                the postgres container and the server containers
cluster=$tls/cluster
make_ca "$cluster" "replctl compose cluster CA"
mkdir -p "$keys/postgres"
chmod 700 "$keys/postgres"
pw="$keys/postgres/password"
[ -s "$pw" ] || (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$pw.new" && echo >>"$pw.new" && mv "$pw.new" "$pw")
log "Temporal cluster CA in $cluster, database password in $keys/postgres"
