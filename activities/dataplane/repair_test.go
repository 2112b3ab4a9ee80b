package dataplane

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRepairReplacesDamagedReplicas: a write through T/D (mtime restored) damages every
// replica sharing the inode; a repair of the current replica and then of an older one
// rebuilds each from its own image, reusing only files whose content is read and matches,
// takes its place (T/D, publish time) and leaves no damaged copy behind.
func TestRepairReplacesDamagedReplicas(t *testing.T) {
	e := newEnv(t)
	mt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	writeFile(t, filepath.Join(e.src, "a.txt"), []byte("the image's content\n"), 0o644, mt)
	writeFile(t, filepath.Join(e.src, "same.txt"), []byte("never touched\n"), 0o644, mt)
	writeFile(t, filepath.Join(e.src, "empty"), nil, 0o600, mt)
	img1 := e.push().ImageID
	e.pull(img1, "r1")
	writeFile(t, filepath.Join(e.src, "b.txt"), []byte("new in image 2\n"), 0o644, mt)
	img2 := e.push().ImageID
	e.pull(img2, "r2")

	r2 := e.replicaDir()
	damaged := filepath.Join(r2, "a.txt") // shared with r1
	require.NoError(t, os.WriteFile(damaged, []byte("THE IMAGE'S CONTENT\n"), 0o644))
	require.NoError(t, os.Chtimes(damaged, mt, mt))
	require.NoError(t, os.WriteFile(filepath.Join(r2, "junk"), []byte("not in the image"), 0o644))

	before, err := ListReplicas(e.target, e.ds)
	require.NoError(t, err)
	require.Len(t, before, 2)

	for _, r := range []struct{ name, image string }{{"r2", img2}, {"r1", img1}} {
		d, err := e.repos.CheckReplica(context.Background(), e.cfg, e.job, e.ds, r.image, filepath.Join(filepath.Dir(r2), r.name), 0, 10)
		require.NoError(t, err)
		require.NotZero(t, d.Count, "replica %s should show the damage", r.name)
	}

	// The current replica: its repair becomes T/D.
	req := e.pullReq(img2, "r2-fix")
	req.Replaces = "r2"
	res, err := e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	require.True(t, res.Verified)
	require.Equal(t, "r2", res.Replaced)
	require.Equal(t, int64(3), res.Linked, "same.txt, empty and b.txt are read, match and are reused")
	require.Equal(t, int64(1), res.Restored, "a.txt is written from the repository")
	require.Equal(t, filepath.Join(filepath.Dir(r2), "r2-fix"), e.replicaDir())
	require.NoDirExists(t, r2)
	require.Equal(t, inode(t, filepath.Join(filepath.Dir(r2), "r1", "same.txt")), inode(t, filepath.Join(e.replicaDir(), "same.txt")))

	// An older replica: repaired beside the current one, T/D unchanged.
	req = e.pullReq(img1, "r1-fix")
	req.Replaces = "r1"
	res, err = e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Restored)
	require.Equal(t, filepath.Join(filepath.Dir(r2), "r2-fix"), e.replicaDir())

	after, err := ListReplicas(e.target, e.ds)
	require.NoError(t, err)
	require.Len(t, after, 2)
	for i, r := range after {
		require.Equal(t, before[i].Name+"-fix", r.Name, "retention ranks the repaired replicas as the ones they replace")
		require.True(t, r.ModTime.Equal(before[i].ModTime))
		require.False(t, r.Repaired.IsZero())
		d, err := e.repos.CheckReplica(context.Background(), e.cfg, e.job, e.ds, r.Image, r.Path, 0, 10)
		require.NoError(t, err)
		require.Zero(t, d.Count, "repaired replica %s: %v", r.Name, d.First)
	}
	got, err := os.ReadFile(filepath.Join(e.replicaDir(), "a.txt"))
	require.NoError(t, err)
	require.Equal(t, "the image's content\n", string(got))
}

// TestRepairRefusesForeignReplicas: a repair names a replica of the same job and image, and a
// new name; anything else is bad input and nothing is written.
func TestRepairRefusesForeignReplicas(t *testing.T) {
	e := newEnv(t)
	writeFile(t, filepath.Join(e.src, "a.txt"), []byte("a\n"), 0o644, baseTime)
	img1 := e.push().ImageID
	e.pull(img1, "r1")
	writeFile(t, filepath.Join(e.src, "b.txt"), []byte("b\n"), 0o644, baseTime)
	img2 := e.push().ImageID

	for _, c := range []struct{ name, image, replaces, want string }{
		{"missing", img1, "r9", "no replica r9"},
		{"other image", img2, "r1", "not image"},
		{"same name", img1, "r1", "new replica name"},
		{"path", img1, "../r1", "Replaces"},
	} {
		t.Run(c.name, func(t *testing.T) {
			name := "fix"
			if c.name == "same name" {
				name = "r1"
			}
			req := e.pullReq(c.image, name)
			req.Replaces = c.replaces
			_, err := e.repos.Pull(context.Background(), req, nil)
			require.Error(t, err)
			require.True(t, errors.Is(err, ErrBadInput), "%v", err)
			require.Contains(t, err.Error(), c.want)
			require.NoDirExists(t, filepath.Join(filepath.Dir(e.replicaDir()), "fix"))
			require.DirExists(t, e.replicaDir())
		})
	}
}
