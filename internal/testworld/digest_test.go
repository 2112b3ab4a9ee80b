package testworld

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The digest sees content, mode, kind and link target changes, and the root's own mode.
func TestDigestSeesModeAndLinkChanges(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "g"), []byte("y"), 0o644))
	require.NoError(t, os.Symlink("f", filepath.Join(dir, "l")))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	d1, err := Digest(dir)
	require.NoError(t, err)
	require.Equal(t, Entry{Kind: KindLink, Link: "f"}, d1["l"])
	require.Equal(t, KindFile, d1["f"].Kind)
	require.EqualValues(t, 1, d1["f"].Size)
	require.Len(t, d1.Files(), 2)

	d2, err := Digest(dir)
	require.NoError(t, err)
	require.Empty(t, d1.Diff(d2, 5))
	require.Equal(t, d1.Sum(), d2.Sum())

	require.NoError(t, os.Chmod(filepath.Join(dir, "f"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "g"), []byte("z"), 0o644))
	require.NoError(t, os.Remove(filepath.Join(dir, "l")))
	require.NoError(t, os.Symlink("g", filepath.Join(dir, "l")))
	require.NoError(t, os.Remove(filepath.Join(dir, "d")))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "d"), nil, 0o644))
	require.NoError(t, os.Chmod(dir, 0o700))
	d3, err := Digest(dir)
	require.NoError(t, err)
	require.NotEqual(t, d1.Sum(), d3.Sum())
	diff := d1.Differences(d3)
	require.Len(t, diff, 5, "%v", diff)
	for i, p := range []string{".", "d", "f", "g", "l"} {
		require.Contains(t, diff[i], "differs "+p+":")
	}
	require.Contains(t, d1.Diff(d3, 2), "… 5 differences in all")

	require.NoError(t, os.Remove(filepath.Join(dir, "g")))
	d4, err := Digest(dir)
	require.NoError(t, err)
	require.Contains(t, d3.Differences(d4), "missing g")
	require.Contains(t, d4.Differences(d3), "extra g")
}

// A symlink root is followed: a replica's published link digests as the replica.
func TestDigestFollowsRootLink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "r")
	require.NoError(t, os.Mkdir(real, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(real, "f"), []byte("x"), 0o644))
	require.NoError(t, os.Symlink("r", filepath.Join(dir, "link")))
	a, err := Digest(real)
	require.NoError(t, err)
	b, err := Digest(filepath.Join(dir, "link"))
	require.NoError(t, err)
	require.Equal(t, a, b)
}
