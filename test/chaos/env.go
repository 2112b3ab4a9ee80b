package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/replctl/replctl/internal/testworld"
	"github.com/replctl/replctl/workflows"
	"github.com/rs/zerolog"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
)

// appHost is the application host of the job: its QUIESCED flag and markers are checked.
const appHost = "a1"

// job is the one job every trial runs.
const job = "orders"

// scriptTemplate is freeze.sh, thaw.sh and takeover.sh at once (they differ only by the step
// the agent passes). Like config/examples/scripts, each logs one marker line to the state dir
// of the host it is for; freeze creates the QUIESCED flag and thaw removes it. Flag and marker
// are written FIRST, then the script sleeps (%[1]s seconds for quiesce and resume), standing
// in for an application that takes a while to flush or restart, so a fault can land mid-step.
// An orphaned script (its agent was killed) therefore never changes the flag late.
const scriptTemplate = `#!/bin/sh
set -eu
mkdir -p "$REPLCTL_STATE_DIR"
case "$REPLCTL_STEP" in
quiesce) echo "run=$REPLCTL_RUN_ID" > "$REPLCTL_STATE_DIR/QUIESCED" ;;
resume) rm -f "$REPLCTL_STATE_DIR/QUIESCED" ;;
esac
echo "$(date -u +%%Y-%%m-%%dT%%H:%%M:%%S.%%NZ) step=$REPLCTL_STEP host=$REPLCTL_HOST agent=$REPLCTL_AGENT failed=${REPLCTL_FAILED_HOST:-} run=$REPLCTL_RUN_ID" >> "$REPLCTL_STATE_DIR/markers.log"
case "$REPLCTL_STEP" in
quiesce|resume) sleep %[1]s ;;
esac
`

// agent is one host's agent process and the proxy it reaches Temporal through.
type agent struct {
	host  string
	proc  *testworld.Proc
	proxy *toxiproxy.Proxy
	// cut is set while the proxy refuses this agent's connections.
	cut bool
	// stopped is set while the process is SIGSTOPped.
	stopped bool
}

// world is the test world: directories, config, the server, the agents and a client.
type world struct {
	dir         string
	bin         string
	cfgFile     string
	srvPort     int
	pki         *testworld.PKI
	srv         *testworld.Proc
	agents      map[string]*agent
	toxi        *toxiproxy.ApiServer
	c           client.Client
	sdkLog      *os.File
	hbTO        time.Duration
	s2sTO       time.Duration
	scriptSleep time.Duration
}

func (w *world) source() string     { return filepath.Join(w.dir, "storage/array-a", job) }
func (w *world) targetRoot() string { return filepath.Join(w.dir, "storage/array-b") }
func (w *world) targetLink() string { return filepath.Join(w.targetRoot(), job) }
func (w *world) metaDir() string    { return filepath.Join(w.targetRoot(), ".replctl/meta", job) }
func (w *world) replicasDir() string {
	return filepath.Join(w.targetRoot(), ".replctl/replicas", job)
}
func (w *world) fenceFile() string {
	return filepath.Join(w.targetRoot(), ".replctl/fence", job+".json")
}
func (w *world) hostDir(h string) string {
	return filepath.Join(w.dir, "hosts", h)
}

// newWorld lays out dir (config, scripts, storage) and starts the server, the proxies and the
// agents. On error the caller still calls teardown.
func newWorld(ctx context.Context, dir, bin string, hb, s2s, scriptSleep time.Duration) (*world, error) {
	w := &world{dir: dir, bin: bin, agents: map[string]*agent{}, hbTO: hb, s2sTO: s2s, scriptSleep: scriptSleep}
	script := fmt.Sprintf(scriptTemplate, strconv.FormatFloat(scriptSleep.Seconds(), 'f', 3, 64))
	if err := testworld.Layout(dir, script, "array-a", "array-b"); err != nil {
		return w, err
	}
	for _, d := range []string{"storage/array-a/" + job, "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return w, err
		}
	}
	// The integration tests' world as it is; the temporal address is a placeholder: every
	// agent gets its own proxy address with --address.
	w.cfgFile = filepath.Join(dir, "replctl.yaml")
	if err := testworld.WriteConfig(w.cfgFile, testworld.Config(dir, hb, s2s)); err != nil {
		return w, err
	}

	port, err := testworld.FreePort()
	if err != nil {
		return w, err
	}
	w.srvPort = port
	// Mutual TLS with roles, as in production: each agent presents its own host:<name>
	// certificate (through its proxy: TLS runs end to end), the harness an operator's.
	w.pki, err = testworld.NewPKI(filepath.Join(dir, "tls"))
	if err != nil {
		return w, fmt.Errorf("TLS certificates: %w", err)
	}
	w.srv = &testworld.Proc{Name: "server", Bin: bin, LogPath: filepath.Join(dir, "logs/server.log"), Args: append([]string{
		"server", "--db", filepath.Join(dir, "t.db"), "--port", strconv.Itoa(port), "--ui-port", "-1",
		"--server-namespace", "default", "--log-level", "warn",
	}, w.pki.ServerArgs()...)}
	if err := w.startServer(ctx); err != nil {
		return w, err
	}
	w.sdkLog, err = os.OpenFile(filepath.Join(dir, "logs/harness-sdk.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return w, err
	}
	operatorTLS, err := w.pki.ClientTLS("operator")
	if err != nil {
		return w, err
	}
	w.c, err = client.DialContext(ctx, client.Options{
		HostPort: w.frontend(), Namespace: "default", ConnectionOptions: client.ConnectionOptions{TLS: operatorTLS},
		Logger: sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(w.sdkLog, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	})
	if err != nil {
		return w, fmt.Errorf("connecting to the Temporal server at %s: %w", w.frontend(), err)
	}

	w.toxi = toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.New(io.Discard))
	for _, h := range testworld.Hosts {
		pp, err := testworld.FreePort()
		if err != nil {
			return w, err
		}
		px := toxiproxy.NewProxy(w.toxi, "agent-"+h, "127.0.0.1:"+strconv.Itoa(pp), w.frontend())
		if err := px.Start(); err != nil {
			return w, fmt.Errorf("proxy of agent %s on port %d: %w", h, pp, err)
		}
		tlsArgs, err := w.pki.ClientArgs("host:" + h)
		if err != nil {
			return w, err
		}
		a := &agent{host: h, proxy: px, proc: &testworld.Proc{Name: "agent " + h, Bin: bin, LogPath: filepath.Join(dir, "logs/agent-"+h+".log"), Args: append([]string{
			"agent", "--host", h, "--config", w.cfgFile, "--address", px.Listen, "--namespace", "default", "--log-level", "warn",
		}, tlsArgs...)}}
		w.agents[h] = a
		if err := a.proc.Start(); err != nil {
			return w, err
		}
	}
	for _, h := range testworld.Hosts {
		if err := w.waitPolling(ctx, h, w.agents[h].proc.Started(), 60*time.Second); err != nil {
			return w, err
		}
	}
	return w, nil
}

func (w *world) frontend() string { return "127.0.0.1:" + strconv.Itoa(w.srvPort) }

// startServer starts the server process and waits until it says it is ready: `replctl
// server` prints "Temporal server on ..." once the frontend answers and the namespace and
// search attributes exist.
func (w *world) startServer(ctx context.Context) error {
	if err := w.srv.Start(); err != nil {
		return err
	}
	return w.srv.WaitLog(ctx, "Temporal server on ", 90*time.Second)
}

// restartServer kills the server with SIGKILL and starts it again on the same DB file.
func (w *world) restartServer(ctx context.Context) error {
	w.srv.Kill()
	return w.startServer(ctx)
}

// waitPolling waits until host's agent polls its own queue after since: the server saw a
// poll from it (identity workflows.AgentIdentity(host)) at or after that time.
func (w *world) waitPolling(ctx context.Context, host string, since time.Time, timeout time.Duration) error {
	id := workflows.AgentIdentity(host)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if a := w.agents[host]; a != nil && !a.proc.Alive() {
			return fmt.Errorf("agent %s exited; see %s", host, a.proc.LogPath)
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := w.c.DescribeTaskQueue(cctx, workflows.HostQueue(host), enums.TASK_QUEUE_TYPE_ACTIVITY)
		cancel()
		if err == nil {
			for _, p := range resp.GetPollers() {
				if p.GetIdentity() == id && !p.GetLastAccessTime().AsTime().Before(since.Add(-50*time.Millisecond)) {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("agent %s did not poll its queue %s within %s", host, workflows.HostQueue(host), timeout)
}

// teardown stops everything the world started. It is safe on a half-built world.
func (w *world) teardown() {
	if w.c != nil {
		w.c.Close()
	}
	for _, h := range testworld.Hosts {
		if a := w.agents[h]; a != nil {
			a.proc.Kill()
			if a.proxy != nil {
				a.proxy.Stop()
			}
		}
	}
	if w.srv != nil {
		w.srv.Stop(10 * time.Second)
	}
	if w.sdkLog != nil {
		w.sdkLog.Close()
	}
}

// keepLogs copies the world's logs and markers to dst (the world's dir is removed).
func (w *world) keepLogs(dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	var errs []error
	copyFile := func(src, name string) {
		b, err := os.ReadFile(src)
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(dst, name), b, 0o644)
		}
		errs = append(errs, err)
	}
	ents, _ := os.ReadDir(filepath.Join(w.dir, "logs"))
	for _, e := range ents {
		copyFile(filepath.Join(w.dir, "logs", e.Name()), e.Name())
	}
	for _, h := range testworld.Hosts {
		copyFile(filepath.Join(w.hostDir(h), "markers.log"), "markers-"+h+".log")
	}
	copyFile(w.cfgFile, "replctl.yaml")
	return errors.Join(errs...)
}
