package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/replctl/replctl/cmd/replctl/internal/devserver"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/workflows"
)

// roleLog keeps the role authorizer's log lines (allowed and refused calls) and drops the
// rest of the server's logs.
type roleLog struct {
	zapcore.LevelEnabler
	mu      *sync.Mutex
	entries *[]string // "role api decision"
	fields  []zapcore.Field
}

func (r roleLog) With(f []zapcore.Field) zapcore.Core {
	r.fields = append(slices.Clone(r.fields), f...)
	return r
}

func (r roleLog) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if strings.HasPrefix(e.Message, "replctl role ") {
		return ce.AddCore(e, r)
	}
	return ce
}

func (r roleLog) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(slices.Clone(r.fields), fields...) {
		f.AddTo(enc)
	}
	decision := strings.TrimPrefix(strings.TrimSuffix(e.Message, " a call"), "replctl role ")
	line := fmt.Sprintf("%v %v %s", enc.Fields["role"], enc.Fields["api"], decision)
	if reason, ok := enc.Fields["reason"]; ok {
		line += fmt.Sprintf(" (%v)", reason)
	}
	r.mu.Lock()
	*r.entries = append(*r.entries, line)
	r.mu.Unlock()
	return nil
}

func (r roleLog) Sync() error { return nil }

func (r roleLog) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(*r.entries)
}

// Four real agents, each with its own host:<name> certificate, run a replication that an
// operator starts with the CLI, against the embedded server with mutual TLS and roles. The
// role authorizer refuses none of the agents' calls (the list of calls each host made is
// logged: it is what roles.go allows hosts). A reader can watch but not start; a host's
// certificate cannot start a run.
func TestAgentsAndCLIUnderRoles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Temporal server")
	}
	files := newTLSFiles(t)
	dir := t.TempDir()
	t.Setenv("REPLCTL_STATE", dir)
	layoutCLIWorld(t, dir)
	cfgFile := filepath.Join(dir, "replctl.yaml")
	writeCLIConfig(t, cfgFile, dir, nil)
	cfg, err := config.Load(cfgFile)
	require.NoError(t, err)

	rl := roleLog{LevelEnabler: zapcore.DebugLevel, mu: &sync.Mutex{}, entries: &[]string{}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv, err := devserver.Start(ctx, devserver.Options{UIPort: -1, LogLevel: "debug", Logger: zap.New(rl),
		SearchAttributes: workflows.SearchAttributes(), Access: replctlAccess(cfg.Temporal.TaskQueue),
		TLS: &devserver.TLSOptions{CertFile: files.serverCert, KeyFile: files.serverKey, CAFile: files.ca, RequireClientCert: true}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })

	conn := func(cn string) []string {
		cert, key := files.client(cn)
		return []string{"--address", srv.FrontendAddress(), "--tls-ca", files.ca, "--tls-cert", cert, "--tls-key", key, "--tls-server-name", "localhost"}
	}
	for _, h := range []string{"a1", "a2", "b1", "b2"} {
		f := rootWith(t, cfgFile, conn("host:"+h)...)
		c, err := f.Client(ctx)
		require.NoError(t, err, "agent %s connects with its host certificate", h)
		t.Cleanup(c.Close)
		a, err := startAgent(c, cfg, h, nil, agentJournal{})
		require.NoError(t, err)
		t.Cleanup(a.Stop)
	}

	cli := func(cn string, args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		f := NewFactory(&out, &errOut)
		root := NewCmdRoot(f)
		root.SetOut(&out)
		root.SetErr(&errOut)
		root.SetArgs(append(append([]string{"--config", cfgFile, "--log-level", "error"}, conn(cn)...), args...))
		cctx, ccancel := context.WithTimeout(ctx, 90*time.Second)
		defer ccancel()
		err := execute(cctx, f, root)
		return out.String(), errOut.String(), err
	}

	_, errOut, err := cli("reader", "start", "orders")
	require.Error(t, err, "a reader cannot start a run")
	require.Contains(t, err.Error()+errOut, "reader may not call StartWorkflowExecution")
	t.Logf("reader: replctl start orders: %v", err)
	_, errOut, err = cli("host:a1", "start", "orders")
	require.Error(t, err, "a host cannot start a run")
	require.Contains(t, err.Error()+errOut, "host:a1 may not call StartWorkflowExecution")

	out, errOut, err := cli("operator", "start", "orders", "--wait", "-o", "json")
	require.NoError(t, err, "operator: replctl start orders --wait: %s", errOut)
	var st workflows.Status
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	require.Equal(t, workflows.PhaseCompleted, st.Phase)
	require.NotNil(t, st.Replica)
	t.Logf("operator's run: phase %s, replica on %s", st.Phase, st.Replica.Agent)

	out, errOut, err = cli("reader", "status", "orders", "-o", "json")
	require.NoError(t, err, "a reader can read a run's status: %s", errOut)
	var rst workflows.Status
	require.NoError(t, json.Unmarshal([]byte(out), &rst), out)
	require.Equal(t, workflows.PhaseCompleted, rst.Phase)

	// What each host called, and that none of it was refused.
	calls := map[string]bool{}
	var refusedHosts []string
	for _, l := range rl.lines() {
		f := strings.Fields(l)
		if len(f) < 3 || !strings.HasPrefix(f[0], "host:") {
			continue
		}
		if f[2] == "refused" {
			if !strings.HasSuffix(f[1], "/StartWorkflowExecution") || f[0] != "host:a1" {
				refusedHosts = append(refusedHosts, l)
			}
			continue
		}
		calls[f[1][strings.LastIndex(f[1], "/")+1:]] = true
	}
	list := make([]string, 0, len(calls))
	for c := range calls {
		list = append(list, c)
	}
	slices.Sort(list)
	t.Logf("calls the real agents made (all allowed): %s", strings.Join(list, ", "))
	require.Empty(t, refusedHosts, "the agents' own calls must not be refused")
	require.Contains(t, list, "PollActivityTaskQueue")
	require.Contains(t, list, "RespondWorkflowTaskCompleted")
}
