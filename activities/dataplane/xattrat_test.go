package dataplane

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// listxattrat(2) and the /proc/self/fd way list the same names, and neither follows a
// symlink to its target's attributes.
func TestListXattrsAtBothWays(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(f, nil, 0o600))
	if err := unix.Lsetxattr(f, "user.replctl", []byte("v"), 0); err != nil {
		t.Skipf("user xattrs not kept here: %v", err)
	}
	require.NoError(t, os.Symlink("f", filepath.Join(dir, "link")))
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(dfd)
	saved := noListxattrat.Load()
	defer noListxattrat.Store(saved)
	for _, fallback := range []bool{false, true} {
		noListxattrat.Store(fallback)
		names, err := listXattrsAt(dfd, "f")
		require.NoError(t, err)
		assert.Equal(t, []string{"user.replctl"}, names, "fallback %v", fallback)
		xs, err := readXattrsAt(dfd, "f")
		require.NoError(t, err)
		assert.Equal(t, []Xattr{{Name: "user.replctl", Value: []byte("v")}}, xs, "fallback %v", fallback)
		names, err = listXattrsAt(dfd, "link")
		require.NoError(t, err)
		assert.Empty(t, names, "the symlink's own, not its target's (fallback %v)", fallback)
		names, err = listXattrsAt(dfd, "gone")
		require.NoError(t, err)
		assert.Empty(t, names)
	}
}
