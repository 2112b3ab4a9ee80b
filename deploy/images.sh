#!/usr/bin/env bash
# Builds the container images of the multi-host deployment without any registry:
#   replctl-base:<key>  a Debian root filesystem made with debootstrap (minbase + the packages
#                       in deploy/base/packages), `docker import`ed. Cached: rebuilt only when
#                       the package list, the suite or the recipe below changes.
#   replctl-server      the replctl binary on an empty image (FROM scratch): `replctl server`.
#   replctl-host        base + replctl + sshd + sample application: sshd and `replctl agent`.
#   replctl-postgres    Debian's PostgreSQL (its own debootstrap, replctl-pgbase:<key>, cached
#                       like the base) for the Temporal cluster of docker-compose.postgres.yml.
# Works offline with the machine's apt mirror, and online with deb.debian.org.
#
# Environment: REPLCTL_DEBIAN_MIRROR, REPLCTL_DEBIAN_SUITE (where debootstrap downloads from;
# default: this machine's apt source for its release, else deb.debian.org bookworm),
# REPLCTL_BIN (use this replctl binary instead of building one), REPLCTL_IMAGE_TAG (default
# latest), REPLCTL_REBUILD_BASE=1 (ignore the cached base).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# Bump when the way the base is made changes (not the package list: that is hashed).
BASE_RECIPE=1
TAG=${REPLCTL_IMAGE_TAG:-latest}
export CGO_ENABLED=0

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine (is it running, may this user use it?)"
init_state
began=$SECONDS

# --- base root filesystems ---
read -r mirror suite < <(debian_source)
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)

# rootfs_image NAME PACKAGES_FILE makes NAME:<key>, a debootstrap of the suite with the
# packages of PACKAGES_FILE, unless it is cached; prints the image's name.
rootfs_image() {
	local name=$1 packages key image
	packages=$(grep -v '^[[:space:]]*\(#\|$\)' "$2" | sort -u | paste -sd, -)
	key=$(printf 'recipe=%s\nsuite=%s\narch=%s\npackages=%s\n' "$BASE_RECIPE" "$suite" "$arch" "$packages" | sha256_of | cut -c1-12)
	image=$name:$key
	if [ "${REPLCTL_REBUILD_BASE:-}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
		log "image $image is cached (suite $suite, packages $packages)"
		echo "$image"
		return 0
	fi
	command -v debootstrap >/dev/null || die "debootstrap is not installed: apt-get install debootstrap"
	local keyring=()
	[ -r /usr/share/keyrings/debian-archive-keyring.gpg ] && keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
	work=$(mktemp -d "${TMPDIR:-/var/tmp}/replctl-rootfs.XXXXXX")
	# debootstrap mounts /proc and /sys in the target while it installs: make sure nothing
	# stays mounted before the tree is removed, even when it fails half-way.
	cleanup_rootfs() {
		for m in proc sys dev/pts; do
			mountpoint -q "$work/rootfs/$m" 2>/dev/null && as_root umount -l "$work/rootfs/$m"
		done
		as_root rm -rf --one-file-system "$work"
	}
	trap cleanup_rootfs EXIT
	log "debootstrap $suite from $mirror (minbase + $packages) …"
	local t0=$SECONDS
	if ! as_root debootstrap --variant=minbase --arch="$arch" --include="$packages" "${keyring[@]}" \
		"$suite" "$work/rootfs" "$mirror" >"$STATE_DIR/debootstrap-$name.log" 2>&1; then
		tail -n 30 "$STATE_DIR/debootstrap-$name.log" >&2
		die "debootstrap of $suite from $mirror failed (full log: $STATE_DIR/debootstrap-$name.log)"
	fi
	log "debootstrap took $((SECONDS - t0))s"
	local r=$work/rootfs
	# Slim it down: package caches, docs, manuals, locales, logs.
	as_root rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/* \
		"$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* \
		"$r"/var/log/*.log "$r"/var/log/apt/* "$r"/debootstrap
	# No host keys in the image: every host gets its own, generated at set-up (compose-up.sh).
	as_root rm -f "$r"/etc/ssh/ssh_host_*
	# /dev, /proc and /sys are provided by the container runtime.
	log "importing the root filesystem as $image"
	as_root tar --numeric-owner --one-file-system -C "$r" --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -c . |
		docker import \
			--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
			--change 'ENV LANG=C.UTF-8' \
			--change 'CMD ["/bin/bash"]' \
			--message "debootstrap --variant=minbase $suite + $packages" \
			- "$image" >/dev/null
	cleanup_rootfs
	trap - EXIT
	echo "$image"
}

BASE_IMAGE=$(rootfs_image replctl-base "$DEPLOY_DIR/base/packages")
# PostgreSQL for the compose set-up's Temporal cluster (docker-compose.postgres.yml):
# Debian's package, on a root filesystem of its own so the hosts' stays small.
PG_BASE_IMAGE=$(rootfs_image replctl-pgbase "$DEPLOY_DIR/postgres/packages")
docker tag "$BASE_IMAGE" replctl-base:latest

# --- the replctl binary (static) ---
build=$STATE_DIR/build
mkdir -p "$build"
if [ -n "${REPLCTL_BIN:-}" ]; then
	cp "$REPLCTL_BIN" "$build/replctl.new"
	mv "$build/replctl.new" "$build/replctl"
else
	log "go build ./cmd/replctl (CGO_ENABLED=0, static) …"
	t0=$SECONDS
	(cd "$REPO_ROOT" && go build -ldflags='-s -w' -o "$build/replctl" ./cmd/replctl)
	log "go build took $((SECONDS - t0))s"
fi
file_info=$(file -b "$build/replctl" 2>/dev/null || true)
case $file_info in *dynamically*) die "$build/replctl is dynamically linked: build with CGO_ENABLED=0" ;; esac

# --- images ---
# Build contexts hold only what the images need (hard links: the binary is not copied).
ctx() {
	rm -rf "$build/ctx-$1"
	mkdir -p "$build/ctx-$1"
	ln "$build/replctl" "$build/ctx-$1/replctl" 2>/dev/null || cp "$build/replctl" "$build/ctx-$1/replctl"
}
docker_build() {
	local tag=${*: -2:1} old
	old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
	# The classic builder works with every engine and uses local images only; BuildKit with
	# a non-default builder would try to pull the base from a registry.
	DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build --quiet "$@" >/dev/null 2>"$build/docker-build.log" || {
		cat "$build/docker-build.log" >&2
		die "docker build $* failed"
	}
	# Drop the image this one replaced (unless a container still uses it): every rebuild
	# would otherwise leave a few hundred MB behind.
	if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
		docker rmi "$old" >/dev/null 2>&1 || true
	fi
}

ctx server
mkdir -p "$build/ctx-server/rootfs/tmp" "$build/ctx-server/rootfs/data" "$build/ctx-server/rootfs/root" "$build/ctx-server/rootfs/etc"
chmod 1777 "$build/ctx-server/rootfs/tmp"
chmod 0700 "$build/ctx-server/rootfs/root"
# The server looks up the current user (OpenTelemetry resource detection): without cgo that
# reads /etc/passwd.
echo 'root:x:0:0:root:/root:/nonexistent' >"$build/ctx-server/rootfs/etc/passwd"
echo 'root:x:0:' >"$build/ctx-server/rootfs/etc/group"
cp "$DEPLOY_DIR/server/Dockerfile" "$build/ctx-server/Dockerfile"
log "building replctl-server:$TAG"
docker_build -t "replctl-server:$TAG" "$build/ctx-server"

# The hosts install the Debian package made from this binary; it is checked first in a
# clean container of the base (deploy/package/test.sh).
# The agent package holds the binary built without the embedded server (-tags noserver).
log "go build -tags noserver ./cmd/replctl (the agent package's binary) …"
# The version the package gets (deploy/package/build.sh), so `replctl --version` says it too.
pkg_version=0.1.0+git$(git -C "$REPO_ROOT" rev-parse --short=8 HEAD 2>/dev/null || echo unknown)
(cd "$REPO_ROOT" && go build -tags noserver -ldflags="-s -w -X main.version=$pkg_version" -o "$build/replctl-agent" ./cmd/replctl)
log "packaging replctl as a .deb …"
deb=$(bash "$DEPLOY_DIR/package/build.sh" replctl "$build/replctl-agent" "$build/dist" "$pkg_version" 2>"$build/package.log") || {
	cat "$build/package.log" >&2
	die "building the .deb failed"
}
bash "$DEPLOY_DIR/package/test.sh" "$deb" || die "the .deb failed its test"

ctx host
rm -f "$build/ctx-host/replctl"
cp "$deb" "$build/ctx-host/replctl.deb"
cp -r "$DEPLOY_DIR/host/." "$build/ctx-host/"
chmod 0755 "$build/ctx-host/entrypoint.sh" "$build/ctx-host"/bin/* "$build/ctx-host"/scripts/*
chmod 0644 "$build/ctx-host/sshd_config"
log "building replctl-host:$TAG on $BASE_IMAGE"
docker_build --build-arg "BASE=$BASE_IMAGE" -t "replctl-host:$TAG" "$build/ctx-host"

rm -rf "$build/ctx-postgres"
cp -r "$DEPLOY_DIR/postgres/." "$build/ctx-postgres/"
chmod 0755 "$build/ctx-postgres/entrypoint.sh"
log "building replctl-postgres:$TAG on $PG_BASE_IMAGE"
docker_build --build-arg "BASE=$PG_BASE_IMAGE" -t "replctl-postgres:$TAG" "$build/ctx-postgres"

docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^replctl-(base:${BASE_IMAGE#*:}|server:$TAG|host:$TAG|postgres:$TAG) " >&2 || true
log "images ready in $((SECONDS - began))s"
