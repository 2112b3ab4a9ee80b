#!/bin/sh
# Starts PostgreSQL for Temporal: on first start, initdb with the one user temporal, whose
# password is the mounted /etc/replctl/postgres/password; logins from the network must give
# it (scram-sha-256).
set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
data=/var/lib/postgresql/data
pwfile=/etc/replctl/postgres/password
if [ ! -s "$data/PG_VERSION" ]; then
	[ -s "$pwfile" ] || { echo "replctl-postgres: $pwfile is missing or empty" >&2; exit 1; }
	mkdir -p "$data"
	chown postgres:postgres "$data"
	chmod 0700 "$data"
	tmp=$(mktemp)
	cat "$pwfile" >"$tmp"
	chown postgres "$tmp"
	setpriv --reuid=postgres --regid=postgres --init-groups "$bin/initdb" -D "$data" -U temporal \
		--pwfile="$tmp" -A scram-sha-256 --no-sync >/dev/null
	rm -f "$tmp"
	echo "host all temporal 0.0.0.0/0 scram-sha-256" >>"$data/pg_hba.conf"
	echo "replctl-postgres: database cluster created in $data" >&2
fi
# Temporal's services hold up to 20 connections per store each (two stores per process).
exec setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -D "$data" \
	-c listen_addresses='*' -c unix_socket_directories=/tmp -c max_connections=300
