package test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/internal/fidelity"
	"github.com/replctl/replctl/internal/runhistory"
	"github.com/replctl/replctl/internal/testworld"
)

// A real agent started with --change-journal=push lists, in each push after its first,
// only the directories changed since its previous image, and every replica still holds
// what rsync -aHAXS keeps of the source (the fidelity tree: xattrs, ACLs, hard links,
// sparse files, odd names), through writes, a new file, a chmod and an xattr.
func TestPushFollowsTheJournalOnAnAgent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the change journal needs CAP_SYS_ADMIN")
	}
	e := newEnv(t)
	src := e.sourceDir()
	// The source on a filesystem of its own: a file another test holds open for writing
	// elsewhere, with several links (an integrity test writing into a linked replica),
	// would make a push whole (the agent's look at files held for writing).
	require.NoError(t, os.RemoveAll(src))
	unmount, err := testworld.MountTmpfs(src, 256<<20)
	require.NoError(t, err)
	t.Cleanup(unmount)
	m, err := fidelity.Generate(src, fidelity.Options{Seed: 16, Without: fidelity.SpecialFeatures})
	require.NoError(t, err)
	writeDataset(t, filepath.Join(src, "bulk"), 120, 2<<10, 16)
	e.startAgentConfig("a1", e.cfgFile, "--change-journal=push")
	e.startAgent("b1")

	runAndCheck := func(what string) activities.PushResult {
		t.Helper()
		run := e.start("orders")
		st, err := e.wait(run)
		require.NoError(t, err, what)
		require.NotNil(t, st.Replica, what)
		assertGaps(t, check(t, src, e.targetLink()), knownGaps, expectedGapPaths(m))
		assert.Equal(t, treeDigest(t, src), treeDigest(t, e.targetLink()), what)
		return pushResult(t, e, run)
	}
	first := runAndCheck("first run")
	require.Zero(t, first.ReusedDirs+first.PartialDirs, "an agent's first push lists the whole tree")

	bulk := filepath.Join(src, "bulk")
	require.NoError(t, os.WriteFile(filepath.Join(bulk, "d03/s1/f00010.bin"), []byte("rewritten"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(bulk, "d05/s2/new.bin"), []byte("new"), 0o600))
	require.NoError(t, os.Chmod(filepath.Join(bulk, "d01/s0"), 0o700))
	require.NoError(t, unix.Lsetxattr(filepath.Join(bulk, "d06/s1/f00013.bin"), "user.tag", []byte("later"), 0))
	changed := runAndCheck("after changes")
	assert.Positive(t, changed.ReusedDirs, "the second push took unchanged directories from the first image")
	assert.Positive(t, changed.PartialDirs, "and looked only at the entries changed in the others")
	assert.Positive(t, runAndCheck("unchanged").ReusedDirs)
}

// pushResult is the result of the run's completed push.
func pushResult(t *testing.T, e *env, run client.WorkflowRun) activities.PushResult {
	t.Helper()
	h, err := runhistory.Load(context.Background(), e.c, run.GetID(), run.GetRunID())
	require.NoError(t, err)
	for _, a := range h.Attempts {
		if a.Type == activities.PushName && a.Outcome == runhistory.Completed {
			var res activities.PushResult
			require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(a.Result, &res))
			return res
		}
	}
	t.Fatalf("run %s has no completed push", run.GetRunID())
	return activities.PushResult{}
}
