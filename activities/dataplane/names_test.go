package dataplane

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestImageNameIsValidAndOneToOne(t *testing.T) {
	for _, c := range []struct{ raw, img string }{
		{"plain", "plain"},
		{"ünïcode", "ünïcode"},
		{"bad-\xff", "bad-\uf7ff"},
		{"\x80\xc3", "\uf780\uf7c3"},
		{"mixed-\xe2\x82-ü-\xfe", "mixed-\uf7e2\uf782-ü-\uf7fe"},
	} {
		got := imageName(c.raw)
		require.Equal(t, c.img, got, "%q", c.raw)
		require.True(t, utf8.ValidString(got))
	}
	require.NotEqual(t, imageName("a\xff"), imageName("a\xfe"))
	require.Equal(t, "d-\uf7ff/f-\uf780", imagePath("d-\xff/f-\x80"))
	m := diskNames{"d-\uf7ff": "d-\xff", "d-\uf7ff/f-\uf780": "f-\x80"}
	require.Equal(t, "d-\xff/f-\x80", m.disk("d-\uf7ff/f-\uf780"))
	require.Equal(t, "d-\xff/ok", m.disk("d-\uf7ff/ok"))
	require.Equal(t, "other/f", m.disk("other/f"))

	for _, e := range []ExtraEntry{
		{Path: "a/b\uf7ff", Name: []byte("../x")},
		{Path: "a/b\uf7ff", Name: []byte("b\xfe")},
		{Path: "a/b", Name: []byte("b")},
		{Path: ".", Name: []byte("\xff")},
	} {
		require.Error(t, e.checkName(), "%q %q", e.Path, e.Name)
	}
	require.NoError(t, (&ExtraEntry{Path: "a/b\uf7ff", Name: []byte("b\xff")}).checkName())
}

// TestNamesNotValidUTF8AreReplicated: entries whose names are not valid UTF-8 (a file, a
// directory with a file, a hard link pair and an xattr beneath, a symlink whose target is not
// valid UTF-8 either) come back under their own bytes, verified; a rename on the target is
// a difference.
func TestNamesNotValidUTF8AreReplicated(t *testing.T) {
	e := newEnv(t)
	writeFile(t, filepath.Join(e.src, "ok"), []byte("plain"), 0o644, baseTime)
	writeFile(t, filepath.Join(e.src, "bad-\xff"), []byte("bad name"), 0o640, baseTime)
	dir := filepath.Join(e.src, "dir-\xfe\xfd")
	require.NoError(t, os.MkdirAll(dir, 0o750))
	writeFile(t, filepath.Join(dir, "inner-\x80"), []byte("inner"), 0o600, baseTime)
	require.NoError(t, os.Link(filepath.Join(dir, "inner-\x80"), filepath.Join(dir, "link-\x81")))
	require.NoError(t, unix.Lsetxattr(filepath.Join(dir, "inner-\x80"), "user.k", []byte("v"), 0))
	require.NoError(t, os.Symlink("target-\xff", filepath.Join(e.src, "ln-\xc3")))
	setTimesDeepestFirst(t, e.src, baseTime)

	res := e.push()
	require.Nil(t, res.Unsupported)
	pres := e.pull(res.ImageID, "r1")
	require.True(t, pres.Verified)
	requireSameTree(t, e.src, pres.ReplicaPath)
	require.Equal(t, inode(t, filepath.Join(pres.ReplicaPath, "dir-\xfe\xfd", "inner-\x80")), inode(t, filepath.Join(pres.ReplicaPath, "dir-\xfe\xfd", "link-\x81")))
	v, err := getXattr(filepath.Join(pres.ReplicaPath, "dir-\xfe\xfd", "inner-\x80"), "user.k")
	require.NoError(t, err)
	require.Equal(t, "v", string(v))

	// The next pull of an unchanged tree is verified too.
	pres2 := e.pull(e.push().ImageID, "r2")
	requireSameTree(t, e.src, pres2.ReplicaPath)

	d, err := e.repos.CheckReplica(context.Background(), e.cfg, e.job, e.ds, res.ImageID, pres.ReplicaPath, 0, 10)
	require.NoError(t, err)
	require.Zero(t, d.Count, "%v", d.First)
	require.NoError(t, os.Rename(filepath.Join(pres.ReplicaPath, "bad-\xff"), filepath.Join(pres.ReplicaPath, "bad-\xfe")))
	d, err = e.repos.CheckReplica(context.Background(), e.cfg, e.job, e.ds, res.ImageID, pres.ReplicaPath, 0, 10)
	require.NoError(t, err)
	require.NotZero(t, d.Count)
	t.Logf("after a rename on the target: %v", d.First)
}
