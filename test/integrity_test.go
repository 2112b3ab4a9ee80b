package test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A write into the published replica (mtime put back) is not carried into the next
// replica: the next run writes that file anew from the image, and status says how many
// files it found changed on the target.
func TestTamperedReplicaIsNotCarriedAndShown(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 20, 4<<10, 3)
	e.startAgents("a1", "b1")
	_, err := e.wait(e.start("orders"))
	require.NoError(t, err)

	rel := "d00/s0/f00000.bin"
	p := filepath.Join(e.targetLink(), rel)
	fi, err := os.Stat(p)
	require.NoError(t, err)
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("DAMAGE"), 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Chtimes(p, fi.ModTime(), fi.ModTime()))

	st, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	require.NotNil(t, st.Replica)
	assert.Equal(t, int64(1), st.Replica.Distrusted, "one file was changed on the target")
	want, err := os.ReadFile(filepath.Join(e.sourceDir(), rel))
	require.NoError(t, err)
	got, err := os.ReadFile(filepath.Join(e.targetLink(), rel))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, got), "the new replica has the image's content")
	out, err := e.cli("status", "orders")
	require.NoError(t, err, out)
	assert.Contains(t, out, "DAMAGE SEEN")
	assert.Contains(t, out, "1 files of the replica before had been changed on the target")
	t.Logf("replctl status orders:\n%s", out)
}
