package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/cmd/replctl/internal/devserver"
)

// An agent started before its namespace exists (a cluster's frontend opens its port first)
// waits for it instead of exiting; a namespace that never comes ends the wait with an error
// naming it, and an error that no wait can cure ends it at once.
func TestAgentWaitsForItsNamespace(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Temporal server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	srv, err := devserver.Start(ctx, devserver.Options{UIPort: -1, Logger: zap.NewNop(), LogLevel: "error"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })
	c, err := client.DialContext(ctx, client.Options{HostPort: srv.FrontendAddress(), Namespace: "late", Logger: newSDKLogger(zap.NewNop())})
	require.NoError(t, err)
	defer c.Close()

	var errOut bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- waitNamespace(ctx, c, "late", time.Minute, &errOut) }()
	time.Sleep(time.Second)
	select {
	case err := <-done:
		t.Fatalf("waitNamespace returned before the namespace existed: %v", err)
	default:
	}
	_, err = c.WorkflowService().RegisterNamespace(ctx, &workflowservice.RegisterNamespaceRequest{
		Namespace: "late", WorkflowExecutionRetentionPeriod: durationpb.New(24 * time.Hour)})
	require.NoError(t, err)
	require.NoError(t, <-done)
	assert.Contains(t, errOut.String(), "waiting for namespace late (up to 1m0s)")
	assert.Contains(t, errOut.String(), "namespace late answered after")

	err = waitNamespace(ctx, c, "never", 2*time.Second, &bytes.Buffer{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "namespace never not usable after 2s (--wait-for-server)")

	errOut.Reset()
	err = waitNamespace(ctx, c, "", time.Minute, &errOut)
	require.Error(t, err, "an empty namespace name is refused by the server")
	assert.NotContains(t, err.Error(), "not usable after", "a bad name is not waited on")
	assert.Empty(t, errOut.String(), "a bad name is not waited on")
}

func TestAgentWaitForServerFlag(t *testing.T) {
	var agent *AgentOptions
	_, err := run(t, NewCmdAgent(NewFactory(&bytes.Buffer{}, &bytes.Buffer{}), func(o *AgentOptions) error { agent = o; return nil }), "--host", "a1")
	require.NoError(t, err)
	assert.Equal(t, DefaultWaitForServer, agent.WaitForServer)
	_, err = run(t, NewCmdAgent(NewFactory(&bytes.Buffer{}, &bytes.Buffer{}), func(*AgentOptions) error { t.Fatal("must not run"); return nil }), "--host", "a1", "--wait-for-server", "0s")
	assert.ErrorContains(t, err, "--wait-for-server 0s: must be more than 0")
	assert.Equal(t, ExitUsage, exitCode(err))
}

func TestAgentChangeJournalFlag(t *testing.T) {
	parse := func(args ...string) (agentJournal, error) {
		var got agentJournal
		_, err := run(t, NewCmdAgent(NewFactory(&bytes.Buffer{}, &bytes.Buffer{}), func(o *AgentOptions) error { got = o.journal; return nil }), append([]string{"--host", "a1"}, args...)...)
		return got, err
	}
	for args, want := range map[string]activities.JournalUse{"": activities.JournalOff, "--change-journal": activities.JournalPreflight,
		"--change-journal=off": activities.JournalOff, "--change-journal=preflight": activities.JournalPreflight, "--change-journal=push": activities.JournalPush} {
		got, err := parse(strings.Fields(args)...)
		require.NoError(t, err, args)
		assert.Equal(t, agentJournal{use: want, rescan: activities.DefaultJournalRescan}, got, args)
	}
	got, err := parse("--change-journal=push", "--change-journal-rescan", "1h")
	require.NoError(t, err)
	assert.Equal(t, time.Hour, got.rescan)
	for args, want := range map[string]string{
		"--change-journal=all":       `--change-journal: change journal "all": want off, preflight or push`,
		"--change-journal-rescan=0s": "--change-journal-rescan 0s: must be more than 0",
	} {
		_, err := parse(args)
		assert.ErrorContains(t, err, want, args)
		assert.Equal(t, ExitUsage, exitCode(err), args)
	}
}
