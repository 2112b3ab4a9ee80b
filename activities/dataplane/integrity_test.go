package dataplane

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPullRepairsTamperedReplica: a write into the published replica with its
// mtime restored afterwards is not carried into the next replica.
func TestPullRepairsTamperedReplica(t *testing.T) {
	e := newEnv(t)
	mt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	good := []byte("the image's content\n")
	writeFile(t, filepath.Join(e.src, "a.txt"), good, 0o644, mt)
	writeFile(t, filepath.Join(e.src, "same.txt"), []byte("never touched\n"), 0o644, mt)
	img := e.push().ImageID

	e.pull(img, "r1")
	r1 := e.replicaDir()
	damaged := filepath.Join(r1, "a.txt")
	// Same size, mtime restored: size, mtime, mode and owner all still match.
	require.NoError(t, os.WriteFile(damaged, []byte("THE IMAGE'S CONTENT\n"), 0o644))
	require.NoError(t, os.Chtimes(damaged, mt, mt))

	req := e.pullReq(img, "r2")
	req.Verify = "changed"
	res, err := e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	require.True(t, res.Verified)

	r2 := e.replicaDir()
	require.Equal(t, filepath.Join(e.target, ".replctl", "replicas", "data%2Fset1", "r2"), r2)
	got, err := os.ReadFile(filepath.Join(r2, "a.txt"))
	require.NoError(t, err)
	require.Equal(t, string(good), string(got), "the damage was carried into r2")
	require.NotEqual(t, inode(t, damaged), inode(t, filepath.Join(r2, "a.txt")))
	require.Equal(t, int64(1), res.Distrusted)
	require.Equal(t, int64(1), res.Linked)

	// The untouched file is still shared: the incremental cost stays.
	require.Equal(t, inode(t, filepath.Join(r1, "same.txt")), inode(t, filepath.Join(r2, "same.txt")))
}

// TestTrustSurvivesOwnLinksAndUnlinks: our own links (a pull that fails after
// linking) and unlinks (retention's trash sweep, reclaim) change ctimes too;
// they never cost a restore, while a write after them is still caught.
func TestTrustSurvivesOwnLinksAndUnlinks(t *testing.T) {
	e := newEnv(t)
	mt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, n := range []string{"a", "b", "c"} {
		writeFile(t, filepath.Join(e.src, n), []byte("content of "+n), 0o644, mt)
	}
	img := e.push().ImageID

	e.pull(img, "r1")

	// A pull that links everything, then fails: its staging is reclaimed by the next.
	ctx, cancel := context.WithCancel(context.Background())
	e.repos.hooks.beforeVerify = func(string) { cancel() }
	_, err := e.repos.Pull(ctx, e.pullReq(img, "r-failed"), nil)
	require.Error(t, err)
	e.repos.hooks.beforeVerify = nil

	// Keep 2: every pull from r3 on retires one replica (swept in the background).
	for _, name := range []string{"r2", "r3", "r4", "r5"} {
		req := e.pullReq(img, name)
		req.Keep, req.Verify = 2, "changed"
		res, err := e.repos.Pull(context.Background(), req, nil)
		require.NoError(t, err)
		require.Equal(t, int64(3), res.Linked, name)
		require.Zero(t, res.Distrusted, name)
		WaitTrash()
	}

	// A write after all that is still caught.
	f := filepath.Join(e.replicaDir(), "b")
	require.NoError(t, os.WriteFile(f, []byte("CONTENT OF B"), 0o644))
	require.NoError(t, os.Chtimes(f, mt, mt))

	req := e.pullReq(img, "r6")
	req.Keep, req.Verify = 2, "changed"
	res, err := e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Distrusted)
	require.Equal(t, int64(2), res.Linked)
	got, err := os.ReadFile(filepath.Join(e.replicaDir(), "b"))
	require.NoError(t, err)
	require.Equal(t, "content of b", string(got))
}
