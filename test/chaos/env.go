package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/replctl/replctl/internal/testworld"
	"github.com/replctl/replctl/workflows"
	"github.com/rs/zerolog"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
)

// hosts are the four agents of the test world, in a fixed order (logs, restarts).
var hosts = []string{"a1", "a2", "b1", "b2"}

// appHost is the application host of the job: its QUIESCED flag and markers are checked.
const appHost = "a1"

// job is the one job every trial runs.
const job = "orders"

// configTemplate is the config of the test world (the integration tests' world: two storage
// systems, four local hosts). %[1]s is the world's dir, %[2]s the heartbeat timeout, %[3]s the
// schedule-to-start timeout. The temporal address is a placeholder: every agent gets its own
// proxy address with --address.
const configTemplate = `
temporal: {address: 127.0.0.1:7233, namespace: default}
storage:
  - {name: array-a, path: %[1]s/storage/array-a}
  - {name: array-b, path: %[1]s/storage/array-b}
hosts:
  - {name: a1, attach: {array-a: %[1]s/storage/array-a, array-b: %[1]s/storage/array-b}, scripts: %[1]s/scripts, state: %[1]s/hosts/a1}
  - {name: a2, attach: {array-a: %[1]s/storage/array-a, array-b: %[1]s/storage/array-b}, scripts: %[1]s/scripts, state: %[1]s/hosts/a2}
  - {name: b1, attach: {array-b: %[1]s/storage/array-b, array-a: %[1]s/storage/array-a}, scripts: %[1]s/scripts, state: %[1]s/hosts/b1}
  - {name: b2, attach: {array-b: %[1]s/storage/array-b, array-a: %[1]s/storage/array-a}, scripts: %[1]s/scripts, state: %[1]s/hosts/b2}
jobs:
  - name: orders
    source: {storage: array-a, dataset: orders}
    target: {storage: array-b, dataset: orders}
    application: {host: a1, quiesce: freeze.sh, resume: thaw.sh, takeover: takeover.sh, timeout: 30s}
    order:
      application: [a1, a2]
      source: [a1, a2, b2]
      target: [b1, b2, a2]
    timeouts: {heartbeat: %[2]s, schedule_to_start: %[3]s, start_to_close: 5m}
    retention: {replicas: 3, images: 10}
    repository: {storage: array-b}
    precopy: always   # small datasets: auto would skip it, and faults could not hit it
`

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

// proc is a child process of the harness (the Temporal server or an agent).
type proc struct {
	name    string
	bin     string
	args    []string
	logPath string

	cmd     *exec.Cmd
	done    chan struct{}
	started time.Time
}

// start starts the process; its output goes to logPath (appended across restarts).
func (p *proc) start() error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: opening log %s: %w", p.name, p.logPath, err)
	}
	fmt.Fprintf(logf, "=== %s start %s %v\n", time.Now().Format(time.RFC3339Nano), p.bin, p.args)
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group (a Ctrl-C of the harness does not hit it half-way: the harness tears
	// it down), and killed with the harness if the harness dies without tearing down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("%s: starting %s: %w", p.name, p.bin, err)
	}
	p.cmd, p.done, p.started = cmd, make(chan struct{}), time.Now()
	go func(done chan struct{}) {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}(p.done)
	return nil
}

// alive tells whether the process is running (possibly stopped).
func (p *proc) alive() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the process (not its group: scripts it started run on, like on a
// real host whose agent crashed).
func (p *proc) signal(sig syscall.Signal) error {
	if !p.alive() {
		return fmt.Errorf("%s is not running", p.name)
	}
	return syscall.Kill(p.cmd.Process.Pid, sig)
}

// kill kills the process with SIGKILL and waits for it to be reaped.
func (p *proc) kill() {
	if !p.alive() {
		return
	}
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGCONT) // harmless; a stopped process dies either way
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// stop asks the process to exit (SIGTERM), then kills it after grace.
func (p *proc) stop(grace time.Duration) {
	if !p.alive() {
		return
	}
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGCONT)
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

// agent is one host's agent process and the proxy it reaches Temporal through.
type agent struct {
	host  string
	proc  *proc
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
	srv         *proc
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
	for _, d := range []string{"storage/array-a/" + job, "storage/array-b", "scripts", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return w, err
		}
	}
	script := fmt.Sprintf(scriptTemplate, strconv.FormatFloat(scriptSleep.Seconds(), 'f', 3, 64))
	for _, s := range []string{"freeze.sh", "thaw.sh", "takeover.sh"} {
		if err := os.WriteFile(filepath.Join(dir, "scripts", s), []byte(script), 0o755); err != nil {
			return w, err
		}
	}
	w.cfgFile = filepath.Join(dir, "replctl.yaml")
	cfg := fmt.Sprintf(configTemplate, dir, hb, s2s)
	if err := os.WriteFile(w.cfgFile, []byte(cfg), 0o644); err != nil {
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
	w.srv = &proc{name: "server", bin: bin, logPath: filepath.Join(dir, "logs/server.log"), args: append([]string{
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
	for _, h := range hosts {
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
		a := &agent{host: h, proxy: px, proc: &proc{name: "agent " + h, bin: bin, logPath: filepath.Join(dir, "logs/agent-"+h+".log"), args: append([]string{
			"agent", "--host", h, "--config", w.cfgFile, "--address", px.Listen, "--namespace", "default", "--log-level", "warn",
		}, tlsArgs...)}}
		w.agents[h] = a
		if err := a.proc.start(); err != nil {
			return w, err
		}
	}
	for _, h := range hosts {
		if err := w.waitPolling(ctx, h, w.agents[h].proc.started, 60*time.Second); err != nil {
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
	var offset int64
	if st, err := os.Stat(w.srv.logPath); err == nil {
		offset = st.Size()
	}
	if err := w.srv.start(); err != nil {
		return err
	}
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if !w.srv.alive() {
			return fmt.Errorf("the Temporal server exited during start; see %s", w.srv.logPath)
		}
		if b, err := os.ReadFile(w.srv.logPath); err == nil && int64(len(b)) > offset &&
			strings.Contains(string(b[offset:]), "Temporal server on ") {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("the Temporal server on %s not ready after 90s; see %s", w.frontend(), w.srv.logPath)
}

// restartServer kills the server with SIGKILL and starts it again on the same DB file.
func (w *world) restartServer(ctx context.Context) error {
	w.srv.kill()
	return w.startServer(ctx)
}

// waitPolling waits until host's agent polls its own queue after since: the server saw a
// poll from it (identity workflows.AgentIdentity(host)) at or after that time.
func (w *world) waitPolling(ctx context.Context, host string, since time.Time, timeout time.Duration) error {
	id := workflows.AgentIdentity(host)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if a := w.agents[host]; a != nil && !a.proc.alive() {
			return fmt.Errorf("agent %s exited; see %s", host, a.proc.logPath)
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
	for _, h := range hosts {
		if a := w.agents[h]; a != nil {
			a.proc.kill()
			if a.proxy != nil {
				a.proxy.Stop()
			}
		}
	}
	if w.srv != nil {
		w.srv.stop(10 * time.Second)
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
	for _, h := range hosts {
		copyFile(filepath.Join(w.hostDir(h), "markers.log"), "markers-"+h+".log")
	}
	copyFile(w.cfgFile, "replctl.yaml")
	return errors.Join(errs...)
}
