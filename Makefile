# replctl — the commands the README promises. `make test` is the one command that runs all tests.
SHELL := /bin/bash
GO ?= go
# One build configuration for binaries and tests: static binaries (container images FROM
# scratch) and one shared build cache, so the Temporal server compiles once.
export CGO_ENABLED := 0
WORKFLOWCHECK := go.temporal.io/sdk/contrib/tools/workflowcheck@v0.6.0
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TEST_TIMEOUT ?= 40m

.PHONY: all build build-agent dev test test-deps vet staticcheck workflowcheck unit race race-all smoke fidelity package package-test

all: build

build:
	CGO_ENABLED=0 $(GO) build -o bin/replctl ./cmd/replctl

# The Debian package (deploy/package: nfpm pinned in build.sh): dist/replctl_<version>_<arch>.deb
# with the binary, systemd units, a default config and man pages.
# Two packages: replctl (agent and CLI, built -tags noserver: 35 MB instead of 164 MB) and
# replctl-server (the full binary as /usr/bin/replctl-server, for replctl-server.service).
package:
	mkdir -p dist
	CGO_ENABLED=0 $(GO) build -tags noserver -ldflags "-s -w -X main.version=$(PKG_VERSION)" -o dist/replctl ./cmd/replctl
	CGO_ENABLED=0 $(GO) build -ldflags "-s -w -X main.version=$(PKG_VERSION)" -o dist/replctl-server ./cmd/replctl
	bash deploy/package/build.sh replctl dist/replctl dist $(PKG_VERSION)
	bash deploy/package/build.sh replctl-server dist/replctl-server dist $(PKG_VERSION)

# Installs the packages in a clean container of the deployment's Debian base and checks them.
package-test: package
	bash deploy/package/test.sh dist/replctl_*.deb dist/replctl-server_*.deb

# The agent and CLI without the embedded Temporal server and Web UI (bin/replctl-agent).
build-agent:
	CGO_ENABLED=0 $(GO) build -tags noserver -o bin/replctl-agent ./cmd/replctl

PKG_VERSION ?= 0.1.0+git$(shell git rev-parse --short=8 HEAD 2>/dev/null || echo unknown)

# Runs everything on the embedded default (what `go run ./cmd/replctl dev` does).
dev:
	$(GO) run ./cmd/replctl dev

# Everything the tests need that Go does not bring: OpenSSH's sshd (real SSH tests), rsync,
# jq and curl (smoke test), debootstrap (container images of the compose suite), xfsprogs
# (a loop-mounted XFS with reflink for the clone tests), postgresql (Temporal on PostgreSQL:
# the tests start their own server; Debian's package also starts one on 5432, unused).
test-deps:
	@if ! command -v /usr/sbin/sshd >/dev/null || ! command -v rsync >/dev/null || ! command -v jq >/dev/null || ! command -v curl >/dev/null || ! command -v debootstrap >/dev/null || ! command -v mkfs.xfs >/dev/null || ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client rsync jq curl debootstrap xfsprogs postgresql >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client rsync jq curl debootstrap xfsprogs postgresql >/dev/null; fi; \
	fi

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# staticcheck's default checks over the whole module, pinned (2026.2.2 builds with this Go).
# A deliberate finding carries a //lint:ignore CHECK reason next to it.
staticcheck:
	$(GO) run $(STATICCHECK) ./...

# Static check that workflow code is deterministic.
workflowcheck:
	$(GO) run $(WORKFLOWCHECK) ./workflows/...

unit:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# The race detector over the packages with goroutines whose tests it runs in a few minutes:
# the agent's workers, the activities (heartbeats, leases, SSH commands), workflows,
# internal/... and, of the data plane (every test builds a kopia
# repository, about 7-12x slower under -race: 5-9 min in full), the tests of its parallel
# push/pull, remote repository, fencing, resume and verify paths. About 2 min on 2 cores.
# Not ./test, test/chaos, test/bench (too slow with -race), nor ./cmd/replctl: its tests link
# the Temporal server, whose -race build costs a fresh machine minutes of CI time (race-all
# adds it). Unlike every other target it builds with CGO_ENABLED=1,
# since -race needs cgo (and gcc): that is a second build cache entry beside the static one.
RACE_DATAPLANE := TestPushPullRoundTrip|TestConcurrentInit|TestRemoteRepository|TestRemoteReconnectsAfterLostConnection|TestResumeAfterCancel|TestFencing|TestFencedMidRestore|TestPublishGroup$$|TestIncrementalPullHardLinks|TestVerifyCatchesCorruption|TestPullRecyclesRetiredReplica|TestPullReadsDirectoriesAhead|TestVerifyReadsDirectoriesAhead|TestPackFiles
race:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -run '^($(RACE_DATAPLANE))' ./activities/dataplane
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./activities ./activities/hostexec ./workers ./workflows ./internal/...

# race plus the CLI's tests (with an embedded server built with -race).
race-all: race
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./cmd/replctl

# The fidelity suite (verbose): the checker's own tests, rsync -aHAXS as the bar, and a
# replctl replica of the awkward tree against its source with a table of diffs per class.
# `unit` runs the same tests as part of ./...
fidelity:
	$(GO) test -count=1 -v ./internal/fidelity/...
	$(GO) test -count=1 -v -run 'TestReplicaFidelityAgainstRsync' ./test/

# End to end on the embedded default: `replctl dev`, `replctl start orders --wait`, diff.
smoke:
	bash test/smoke-dev.sh

# The one command that runs all tests: static checks, unit + integration tests, the dev smoke
# test, a few fault trials of every kind, the small benchmark (timings printed, never
# asserted), a small fleet simulation and, where Docker runs, the multi-host compose suite.
test: test-deps vet staticcheck workflowcheck unit race smoke chaos-ci bench-small fleet-ci compose-ci

# Five trials: each fault kind once (kinds go round-robin).
chaos-ci:
	bash test/chaos/run.sh 5

# --- harnesses (each owned by its directory) ---
TRIALS ?= 20
.PHONY: chaos chaos-ci bench bench-small fleet fleet-ci images compose-up compose-test compose-ci
# Randomized fault trials: agents as processes, real server; prints one summary line.
chaos:
	bash test/chaos/run.sh $(TRIALS)

# Benchmark against cp -a and rsync -a --delete in the same run (full size: datasets A, B, C).
bench:
	bash test/bench/run.sh full

# The same benchmark on small datasets (CI runs this so the command cannot rot), in its own
# directory so it never disturbs a full benchmark's datasets.
bench-small:
	BENCH_DIR=$${BENCH_DIR:-/tmp/replctl-bench-small} bash test/bench/run.sh small

# The fleet simulator (test/fleet, docs/scale.md): simulated hosts as real workers, jobs on
# Temporal Schedules, the real workflows. `fleet` runs against a Temporal cluster on PostgreSQL
# that it starts (FLEET_SERVER, default -postgres -shards 16: Debian's PostgreSQL and the four
# services as four processes; FLEET_SERVER= for the SQLite `replctl server`, or -address ...
# for another cluster). It is the full measurement, long (about 20 minutes): a ramp of 1,000 hosts up to
# the goal's 11 runs/s (1-minute intervals: time compression, see docs/scale.md) that stops
# at the first rate whose lag p99 exceeds 5 s, then the goal's shape (1,000 hosts, 1,320
# jobs every 2 minutes = 11 runs/s) for one window and a kill of 10 hosts. Reports in
# fleet-ramp.txt and fleet-goal.txt. FLEET_ARGS adds or overrides flags of both.
FLEET_ARGS ?=
FLEET_SERVER ?= -postgres -shards 16
fleet:
	bash test/fleet/run.sh $(FLEET_SERVER) -hosts 1000 -jobs-per-host 10 -procs 4 -interval 60s -ramp 0.5,1,2,4,6,8,11 -ramp-step 80s -step-time 10s -out fleet-ramp.txt $(FLEET_ARGS)
	bash test/fleet/run.sh $(FLEET_SERVER) -hosts 1000 -jobs-per-host 10 -jobs 1320 -interval 2m -procs 4 -victims 10 -step-time 10s -out fleet-goal.txt $(FLEET_ARGS)

# Small and asserted, on the SQLite server (the cluster is tested by test/cluster_test.go and
# the compose suite): 20 hosts, 40 jobs every 20 s, a process of 2 hosts killed; fails unless
# the runs completed, lag was measured and every step lost to the kill was taken over.
fleet-ci:
	bash test/fleet/run.sh -ci -hosts 20 -jobs-per-host 2 -interval 20s -warmup 20s -window 30s -idle 5s -victims 2 -step-time 3s -heartbeat 2s -schedule-to-start 3s $(FLEET_ARGS)

# Container images for the multi-host deployment, built offline from Debian packages.
images:
	bash deploy/images.sh

compose-up: images
	bash deploy/compose-up.sh

compose-test:
	bash deploy/compose-test.sh

# The compose suite when a Docker engine answers; says so loudly when it does not.
compose-ci:
	@if docker info >/dev/null 2>&1; then $(MAKE) compose-test; \
	else echo "compose-ci: NO DOCKER ENGINE: multi-host compose suite not run"; fi
