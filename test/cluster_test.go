package test

import (
	"context"
	"crypto/tls"
	"fmt"
	mathrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/internal/testworld"
)

// serverProc is one `replctl server` process of a cluster: its arguments stay, so it can
// be killed and started again as a service that crashed and was restarted.
type serverProc struct {
	t       *testing.T
	service string
	args    []string
	log     string
	cmd     *exec.Cmd
}

func (p *serverProc) start() {
	p.t.Helper()
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(p.t, err)
	cmd := exec.Command(replctlBin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	require.NoError(p.t, cmd.Start())
	p.cmd = cmd
	go func() { _ = cmd.Wait(); logf.Close() }()
}

// kill kills the process with SIGKILL, as a crash would.
func (p *serverProc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		for p.cmd.ProcessState == nil && syscall.Kill(p.cmd.Process.Pid, 0) == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// clusterPorts picks a free gRPC port for each service whose membership port (+100) is
// free as well, below 32667: Temporal's SQL schema keeps membership ports as smallint.
func clusterPorts(t *testing.T) map[string]int {
	t.Helper()
	ports := map[string]int{}
	used := map[int]bool{}
	for _, s := range []string{"frontend", "history", "matching", "worker"} {
		for {
			p := 20000 + mathrand.IntN(12000)
			if !used[p] && !used[p+100] && portFree(p) && portFree(p+100) {
				ports[s], used[p], used[p+100] = p, true, true
				break
			}
		}
	}
	return ports
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// startCluster starts Temporal as four `replctl server` processes, one per service, on
// the PostgreSQL database db with 8 history shards, and waits until the frontend serves.
func startCluster(t *testing.T, dir, db string) map[string]*serverProc {
	t.Helper()
	ports := clusterPorts(t)
	frontend := fmt.Sprintf("127.0.0.1:%d", ports["frontend"])
	ca, err := testworld.NewPKI(filepath.Join(dir, "cluster-ca"))
	require.NoError(t, err)
	caKey, err := ca.CAKey()
	require.NoError(t, err)
	common := []string{"server", "--db", db, "--history-shards", "8", "--bind-ip", "127.0.0.1",
		"--cluster-ca-cert", ca.CA, "--cluster-ca-key", caKey,
		"--history-port", fmt.Sprint(ports["history"]), "--matching-port", fmt.Sprint(ports["matching"]),
		"--worker-port", fmt.Sprint(ports["worker"]), "--frontend-address", frontend, "--ui-port", "-1", "--server-log-level", "error"}
	procs := map[string]*serverProc{}
	for _, s := range []string{"frontend", "history", "matching", "worker"} {
		args := append(append([]string{}, common...), "--services", s, "--port", fmt.Sprint(ports["frontend"]))
		if s != "frontend" {
			args = append(args, "--db-setup=false")
		}
		p := &serverProc{t: t, service: s, args: args, log: filepath.Join(dir, "server-"+s+".log")}
		p.start()
		procs[s] = p
		t.Cleanup(p.kill)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range []string{"frontend", "history", "matching", "worker"} {
				b, _ := os.ReadFile(procs[s].log)
				t.Logf("%s log:\n%s", s, tail(string(b), 3000))
			}
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		b, _ := os.ReadFile(procs["frontend"].log)
		if strings.Contains(string(b), "Temporal server on") {
			break
		}
		require.True(t, time.Now().Before(deadline), "frontend not ready in 90s:\n%s", tail(string(b), 3000))
		time.Sleep(200 * time.Millisecond)
	}
	// Internode mutual TLS: history takes no connection without a certificate of the
	// cluster CA.
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports["history"]), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err == nil {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	require.Error(t, err, "history accepted a TLS client without a certificate")
	assert.Contains(t, err.Error(), "certificate required")
	return procs
}

// Temporal on a real PostgreSQL (Debian's package), its four services as four processes,
// 8 history shards: the replication runs as on the embedded server and survives, mid-run,
// (1) the history service killed and restarted while the pushing agent is killed (a
// takeover), (2) PostgreSQL restarted, (3) the frontend killed and restarted, and
// (4) matching killed and restarted.
func TestReplicationOnPostgresCluster(t *testing.T) {
	if testworld.PostgresBin() == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("PostgreSQL is not installed: make test-deps installs it")
		}
		t.Skip("PostgreSQL is not installed (apt-get install postgresql)")
	}
	pg, err := testworld.StartPostgres()
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postgres log:\n%s", tail(pg.Log(), 3000))
		}
		_ = pg.Stop()
	})
	dir := t.TempDir()
	srv := startCluster(t, dir, pg.URL("temporal"))
	e := newEnvWith(t, envOptions{frontend: fmt.Sprintf("127.0.0.1:%s", portOf(srv["frontend"].args))})
	writeDataset(t, e.sourceDir(), 300, 512<<10, 11)
	e.startAgents("a1", "a2", "b1", "b2")

	// (1) history and the pushing agent die together; history comes back 1 s later.
	run := e.start("orders")
	require.Equal(t, "replctl-agent-a1", e.waitStarted(run, "Push"))
	srv["history"].kill()
	e.kill("a1")
	time.Sleep(time.Second)
	srv["history"].start()
	st, err := e.wait(run)
	require.NoError(t, err)
	t.Logf("(1) history and a1 killed: run done, %d takeover(s), %s after start", len(st.Takeovers), time.Since(startedAt(t, e, run)).Round(time.Millisecond))
	require.NotEmpty(t, st.Takeovers, "a1 died mid-push: the next source agent takes over")
	assert.Equal(t, "a1", st.Takeovers[0].From)
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
	e.startAgent("a1")

	// (2) PostgreSQL restarted (fast: connections cut) while the target pulls.
	writeDataset(t, filepath.Join(e.sourceDir(), "second"), 100, 256<<10, 12)
	run = e.start("orders")
	e.waitStarted(run, "Pull")
	require.NoError(t, pg.Restart())
	_, err = e.wait(run)
	require.NoError(t, err, "the run goes on once the database is back")
	t.Logf("(2) PostgreSQL restarted: run done %s after start", time.Since(startedAt(t, e, run)).Round(time.Millisecond))
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))

	// (3) the frontend and (4) matching killed and restarted mid-run.
	for _, service := range []string{"frontend", "matching"} {
		writeDataset(t, filepath.Join(e.sourceDir(), service), 100, 256<<10, 13)
		run = e.start("orders")
		e.waitStarted(run, "Push")
		srv[service].kill()
		time.Sleep(500 * time.Millisecond)
		srv[service].start()
		_, err = e.wait(run)
		require.NoError(t, err, "the run goes on once %s is back", service)
		t.Logf("%s killed and restarted: run done %s after start", service, time.Since(startedAt(t, e, run)).Round(time.Millisecond))
		assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()), "after %s restarted", service)
	}
}

// portOf is the value of --port in args.
func portOf(args []string) string {
	for i, a := range args {
		if a == "--port" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// startedAt is when run started, as the server recorded it.
func startedAt(t *testing.T, e *env, run client.WorkflowRun) time.Time {
	t.Helper()
	d, err := e.c.DescribeWorkflowExecution(context.Background(), run.GetID(), run.GetRunID())
	require.NoError(t, err)
	return d.GetWorkflowExecutionInfo().GetStartTime().AsTime()
}
