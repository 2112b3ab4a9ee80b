package test

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/internal/testworld"
)

// startCluster starts Temporal as four `replctl server` processes, one per service, on
// the PostgreSQL database db with 8 history shards and a cluster CA, checks that history
// refuses a client without the CA's certificate, and stops the cluster with the test.
func startCluster(t *testing.T, dir, db string) *testworld.Cluster {
	t.Helper()
	c, err := testworld.StartCluster(context.Background(), testworld.ClusterOptions{Bin: replctlBin, Dir: dir, Database: db, Shards: 8})
	require.NoError(t, err)
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			for _, s := range testworld.ClusterServices {
				t.Logf("%s log:\n%s", s, testworld.Tail(c.Procs[s].Log(), 3000))
			}
		}
	})
	// Internode mutual TLS: history takes no connection without a certificate of the
	// cluster CA.
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.Ports["history"]), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err == nil {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	require.Error(t, err, "history accepted a TLS client without a certificate")
	assert.Contains(t, err.Error(), "certificate required")
	return c
}

// Temporal on a real PostgreSQL (Debian's package), its four services as four processes,
// 8 history shards: the replication runs as on the embedded server and survives, mid-run,
// (1) the history service killed and restarted while the pushing agent is killed (a
// takeover), (2) PostgreSQL restarted, (3) the frontend killed and restarted, and
// (4) matching killed and restarted.
func TestReplicationOnPostgresCluster(t *testing.T) {
	pg := testworld.StartPostgresFor(t)
	dir := t.TempDir()
	srv := startCluster(t, dir, pg.URL("temporal"))
	// Timeouts longer than the harness's 1 s / 2 s: a frontend restarting on a loaded machine
	// (CI) is away for several seconds, which 1 s heartbeats would take for every agent of
	// the order dying (seen: push lost on all three, then the resume skipped on both).
	e := newEnvWith(t, envOptions{frontend: srv.Frontend, heartbeat: "4s", scheduleToStart: "10s"})
	writeDataset(t, e.sourceDir(), 300, 512<<10, 11)
	e.startAgents("a1", "a2", "b1", "b2")

	// (1) history and the pushing agent die together; history comes back 1 s later.
	run := e.start("orders")
	require.Equal(t, "replctl-agent-a1", e.waitPushing(run))
	srv.Procs["history"].Kill()
	e.kill("a1")
	time.Sleep(time.Second)
	require.NoError(t, srv.Procs["history"].Start())
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
		e.waitPushing(run)
		srv.Procs[service].Kill()
		time.Sleep(500 * time.Millisecond)
		require.NoError(t, srv.Procs[service].Start())
		_, err = e.wait(run)
		require.NoError(t, err, "the run goes on once %s is back", service)
		t.Logf("%s killed and restarted: run done %s after start", service, time.Since(startedAt(t, e, run)).Round(time.Millisecond))
		assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()), "after %s restarted", service)
	}
}

// startedAt is when run started, as the server recorded it.
func startedAt(t *testing.T, e *env, run client.WorkflowRun) time.Time {
	t.Helper()
	d, err := e.c.DescribeWorkflowExecution(context.Background(), run.GetID(), run.GetRunID())
	require.NoError(t, err)
	return d.GetWorkflowExecutionInfo().GetStartTime().AsTime()
}
