package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/workflows"
)

// A replica that lacks unsupported entries says so wherever it shows: never just verified.
func TestIncompleteReplicaShowsEverywhere(t *testing.T) {
	u := &activities.Unsupported{Count: 1, ByKind: map[string]int{"fifo": 1}, First: []string{"orders/pipe (fifo)"}}
	v := statusView{WorkflowID: "replctl-orders"}
	v.Job, v.RunID, v.Phase = "orders", "r1", workflows.PhaseCompleted
	v.Unsupported = u
	v.Replica = &workflows.Replica{Path: "/b/.replctl/replicas/orders/r", Verified: true, Incomplete: true, Agent: "b1", Epoch: 3}
	var out bytes.Buffer
	printStatus(&out, v)
	require.Contains(t, out.String(), "(verified=true, INCOMPLETE, by b1, epoch 3)")
	require.Contains(t, out.String(), "INCOMPLETE    1 entry cannot be replicated (fifo 1): orders/pipe (fifo) (on_unsupported: skip)")

	// The replica's meta record on the target (written at publish) feeds `replctl replicas`.
	root := t.TempDir()
	rdir := filepath.Join(root, ".replctl", "replicas", "orders", "r")
	require.NoError(t, os.MkdirAll(rdir, 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(root, ".replctl", "meta", "orders"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, ".replctl", "meta", "orders", "r.json"),
		[]byte(`{"job":"orders","verified":true,"incomplete":true,"unsupported":{"count":1,"by_kind":{"fifo":1},"first":["orders/pipe (fifo)"]}}`), 0o644))
	m, err := readReplicaMeta(rdir)
	require.NoError(t, err)
	require.True(t, m.Incomplete)
	require.Equal(t, u, m.Unsupported)

	yes := true
	out.Reset()
	printReplicas(&out, &replicasView{Job: "orders", Replicas: []replicaRow{{Name: "r", Verified: &yes, Incomplete: true, Note: "INCOMPLETE: " + u.String()}}})
	require.Contains(t, out.String(), "yes, INCOMPLETE")
	require.Contains(t, out.String(), "note: r: INCOMPLETE: 1 entry cannot be replicated (fifo 1): orders/pipe (fifo)")
}

// `replctl history` marks the push that left entries out and the pull of its image.
func TestHistoryMarksIncompleteSteps(t *testing.T) {
	dc := converter.GetDefaultDataConverter()
	u := &activities.Unsupported{Count: 1, ByKind: map[string]int{"socket": 1}, First: []string{"orders/s (socket)"}}
	p, err := dc.ToPayloads(activities.PushResult{ImageID: "k1", Files: 3, Bytes: 10, Unsupported: u})
	require.NoError(t, err)
	r := &historyRow{Activity: activities.PushName, Agent: "a1"}
	describeResult(r, p, dc)
	require.Equal(t, "image k1: 3 files, 10 B; INCOMPLETE: 1 entry cannot be replicated (socket 1): orders/s (socket)", r.Detail)

	p, err = dc.ToPayloads(activities.PullResult{ReplicaName: "r", Verified: true, Incomplete: true, Epoch: 2, Files: 3, Bytes: 10})
	require.NoError(t, err)
	r = &historyRow{Activity: activities.PullName, Agent: "b1"}
	describeResult(r, p, dc)
	require.Equal(t, "replica r (verified=true, INCOMPLETE, epoch 2): 3 files, 10 B", r.Detail)
}
