package dataplane

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// countTree counts the directories under dir (itself included) and the entries below it,
// the way WarmReplica counts them: no symlink followed.
func countTree(t *testing.T, dir string) (dirs, entries int64) {
	t.Helper()
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		if d.IsDir() {
			dirs++
		}
		if p != dir {
			entries++
		}
		return nil
	}))
	return dirs, entries
}

func TestWarmReplicaReadsTheCurrentReplicaAndTheRetiringOne(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	req := WarmRequest{TargetRoot: e.target, Dataset: e.ds, Keep: Retention{Last: 2}, Recycle: true, Workers: 3}

	// No replica yet: nothing to read, and nothing is created under the target.
	res, err := e.repos.WarmReplica(ctx, req)
	require.NoError(t, err)
	require.Equal(t, WarmResult{}, res)
	_, err = os.Lstat(filepath.Join(e.target, replctlDir))
	require.ErrorIs(t, err, fs.ErrNotExist)

	makeTree(t, e.src)
	e.pull(e.push().ImageID, "r1")
	e.pull(e.push().ImageID, "r2")
	cur := e.replicaDir()
	require.Equal(t, "r2", filepath.Base(cur))

	// A symlink to a directory outside the replica is stat'ed, never followed.
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "secret", "a"), []byte("x"), 0o644, baseTime)
	require.NoError(t, os.Chmod(filepath.Join(cur, "a"), 0o755))
	require.NoError(t, os.Symlink(outside, filepath.Join(cur, "a", "escape")))

	dirs, entries := countTree(t, cur)
	oldDirs, _ := countTree(t, filepath.Join(filepath.Dir(cur), "r1"))

	res, err = e.repos.WarmReplica(ctx, req)
	require.NoError(t, err)
	require.Equal(t, "r2", res.Replica)
	require.Equal(t, "r1", res.Retiring, "with 2 replicas kept, the next pull retires r1")
	// The retiring replica's directories are listed; its entries are not stat'ed (the
	// filesystem gives every entry's type here).
	require.Equal(t, dirs+oldDirs, res.Dirs)
	require.Equal(t, entries, res.Entries)

	// Without recycling only the current replica is read.
	req.Recycle = false
	res, err = e.repos.WarmReplica(ctx, req)
	require.NoError(t, err)
	require.Equal(t, "", res.Retiring)
	require.Equal(t, dirs, res.Dirs)

	// A cancelled context ends it with the context's error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = e.repos.WarmReplica(cctx, req)
	require.ErrorIs(t, err, context.Canceled)
}

func TestWarmReplicaRefusesWhatIsNotAReplica(t *testing.T) {
	e := newEnv(t)
	req := WarmRequest{TargetRoot: e.target, Dataset: e.ds, Workers: 2}

	// T/D is a directory of someone else's, not a replica link: refused, nothing read.
	require.NoError(t, os.MkdirAll(e.link(), 0o755))
	_, err := e.repos.WarmReplica(context.Background(), req)
	require.ErrorIs(t, err, ErrBadInput)

	// T/D links out of the replicas directory: refused.
	require.NoError(t, os.Remove(e.link()))
	require.NoError(t, os.Symlink(t.TempDir(), e.link()))
	_, err = e.repos.WarmReplica(context.Background(), req)
	require.ErrorIs(t, err, ErrBadInput)

	// A target root that is not a directory.
	req.TargetRoot = filepath.Join(e.target, "missing")
	_, err = e.repos.WarmReplica(context.Background(), req)
	require.Error(t, err)
}
