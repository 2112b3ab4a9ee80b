package dataplane

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPublishGroup: two datasets pulled with Defer are invisible until PublishGroup, then
// both point at the same group replica; a second round swaps both with one rename, keeps
// hard-link incrementals working through the group links, and a stale epoch is refused.
func TestPublishGroup(t *testing.T) {
	e := newEnv(t)
	dss := []string{"grp/db", "grp/logs"}
	srcs := map[string]string{}
	for _, ds := range dss {
		srcs[ds] = filepath.Join(e.src, ds)
		makeTree(t, srcs[ds])
	}

	round := func(name string) {
		t.Helper()
		for _, ds := range dss {
			pres, err := e.repos.Push(context.Background(), PushRequest{Repo: e.cfg, Job: e.job, SourceDir: srcs[ds], Dataset: ds}, nil)
			require.NoError(t, err)
			req := e.pullReq(pres.ImageID, name)
			req.Dataset, req.Defer = ds, true
			res, err := e.repos.Pull(context.Background(), req, nil)
			require.NoError(t, err)
			require.True(t, res.Verified)
			requireSameTree(t, srcs[ds], res.ReplicaPath)
		}
	}

	round("r1")
	for _, ds := range dss {
		_, err := os.Lstat(filepath.Join(e.target, ds))
		require.ErrorIs(t, err, os.ErrNotExist, "nothing is visible before the group publish")
	}
	e.epoch++
	res, err := PublishGroup(context.Background(), GroupPublishRequest{TargetRoot: e.target, Job: e.job, ReplicaName: "r1", Datasets: dss, Epoch: e.epoch, Agent: "agent-a"})
	require.NoError(t, err)
	require.Len(t, res.Links, 2)
	for _, ds := range dss {
		requireSameTree(t, srcs[ds], resolve(t, filepath.Join(e.target, ds)))
		reps, err := ListReplicas(e.target, ds)
		require.NoError(t, err)
		require.Len(t, reps, 1)
		require.True(t, reps[0].Current)
	}

	// Second round: a change in one dataset; the unchanged files are hard links to r1.
	writeFile(t, filepath.Join(srcs["grp/logs"], "new.log"), []byte("appended"), 0o644, baseTime)
	round("r2")
	requireSameTree(t, filepath.Join(e.target, ".replctl/replicas/grp%2Flogs/r1"), resolve(t, filepath.Join(e.target, "grp/logs")))
	e.epoch++
	_, err = PublishGroup(context.Background(), GroupPublishRequest{TargetRoot: e.target, Job: e.job, ReplicaName: "r2", Datasets: dss, Epoch: e.epoch, Agent: "agent-a"})
	require.NoError(t, err)
	cur, err := os.Readlink(filepath.Join(e.target, ".replctl/groups/job1/current"))
	require.NoError(t, err)
	require.Equal(t, "r2", cur)
	for _, ds := range dss {
		requireSameTree(t, srcs[ds], resolve(t, filepath.Join(e.target, ds)))
	}
	db1 := filepath.Join(e.target, ".replctl/replicas/grp%2Fdb/r1")
	db2 := filepath.Join(e.target, ".replctl/replicas/grp%2Fdb/r2")
	ents := walkTree(t, db2)
	for rel, ei := range ents {
		if ei.Type == "file" {
			require.Equal(t, inode(t, filepath.Join(db1, rel)), inode(t, filepath.Join(db2, rel)), "unchanged %s is linked", rel)
		}
	}

	// An older epoch cannot publish (a stale agent).
	_, err = PublishGroup(context.Background(), GroupPublishRequest{TargetRoot: e.target, Job: e.job, ReplicaName: "r1", Datasets: dss, Epoch: 1, Agent: "stale"})
	require.ErrorIs(t, err, ErrFenced)
	// A dataset that was not pulled for the replica: refused, nothing changes.
	_, err = PublishGroup(context.Background(), GroupPublishRequest{TargetRoot: e.target, Job: e.job, ReplicaName: "r9", Datasets: dss, Epoch: e.epoch + 1, Agent: "agent-a"})
	require.ErrorIs(t, err, ErrBadInput)
	cur, _ = os.Readlink(filepath.Join(e.target, ".replctl/groups/job1/current"))
	require.Equal(t, "r2", cur)
}

func resolve(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	require.NoError(t, err)
	return r
}
