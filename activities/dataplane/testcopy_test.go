package dataplane

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOpenTestCopyIsWritableAndIndependent(t *testing.T) {
	root := t.TempDir()
	l := newLayout(root, "db/orders")
	rep := l.replicaDir("r1")
	require.NoError(t, os.MkdirAll(filepath.Join(rep, "sub"), 0o555))
	require.NoError(t, os.WriteFile(filepath.Join(rep, "sub", "f"), []byte("replica data"), 0o444))
	require.NoError(t, os.Symlink("sub/f", filepath.Join(rep, "link")))
	require.NoError(t, os.MkdirAll(filepath.Dir(l.link), 0o755))
	rel, err := filepath.Rel(filepath.Dir(l.link), rep)
	require.NoError(t, err)
	require.NoError(t, os.Symlink(rel, l.link))

	_, err = OpenTestCopy(context.Background(), root, "db/orders", "", "../evil")
	require.ErrorIs(t, err, ErrBadInput)
	_, err = OpenTestCopy(context.Background(), root, "db/orders", "nope", "t1")
	require.ErrorIs(t, err, ErrNotFound)

	tc, err := OpenTestCopy(context.Background(), root, "db/orders", "", "t1")
	require.NoError(t, err)
	assert.Equal(t, "r1", tc.Replica, "defaults to the current replica")
	assert.Equal(t, int64(1), tc.Files)
	got, err := os.ReadFile(filepath.Join(tc.Path, "sub", "f"))
	require.NoError(t, err)
	assert.Equal(t, "replica data", string(got))
	target, err := os.Readlink(filepath.Join(tc.Path, "link"))
	require.NoError(t, err)
	assert.Equal(t, "sub/f", target)

	// Writing the copy leaves the replica alone: different inode, replica content intact.
	f := filepath.Join(tc.Path, "sub", "f")
	require.NoError(t, os.Chmod(f, 0o644))
	require.NoError(t, os.WriteFile(f, []byte("tested"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(tc.Path, "sub", "new"), []byte("x"), 0o644), "dirs are writable")
	a, _ := os.Stat(f)
	b, _ := os.Stat(filepath.Join(rep, "sub", "f"))
	assert.NotEqual(t, a.Sys().(*syscall.Stat_t).Ino, b.Sys().(*syscall.Stat_t).Ino)
	orig, err := os.ReadFile(filepath.Join(rep, "sub", "f"))
	require.NoError(t, err)
	assert.Equal(t, "replica data", string(orig))

	_, err = OpenTestCopy(context.Background(), root, "db/orders", "", "t1")
	require.ErrorIs(t, err, ErrBadInput, "an existing copy is not overwritten")
	require.NoError(t, RemoveTestCopy(root, "db/orders", "t1"))
	_, err = os.Stat(tc.Path)
	assert.True(t, os.IsNotExist(err))
	require.NoError(t, RemoveTestCopy(root, "db/orders", "t1"), "removing twice is fine")
}
