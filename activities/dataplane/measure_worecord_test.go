package dataplane

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/internal/worecord"
)

// TestMeasureWriteOnceRecord times write once with the code a run would use, where
// TestMeasureWriteOnce times its floor: worecord.Copy of the tree into a staging through an
// os.Root (the source host's own mount of the target storage), the record written beside
// it, syncfs, then the target's side: the record read and authenticated and worecord.Check
// (every file re-hashed, owners, modes and times set). Skipped unless
// REPLCTL_MEASURE_WORECORD_SRC names the tree; the staging (REPLCTL_MEASURE_WORECORD_DST)
// must not exist. The page cache is dropped first when the test may (root).
func TestMeasureWriteOnceRecord(t *testing.T) {
	src := os.Getenv("REPLCTL_MEASURE_WORECORD_SRC")
	if src == "" {
		t.Skip("set REPLCTL_MEASURE_WORECORD_SRC to a tree to run")
	}
	dst := envString("REPLCTL_MEASURE_WORECORD_DST", filepath.Join(t.TempDir(), "staging"))
	workers := envInt("REPLCTL_MEASURE_PARALLEL", 8)
	require.NoError(t, os.Mkdir(dst, 0o700))
	require.NoError(t, os.Mkdir(filepath.Join(dst, "tree"), 0o700))
	root, err := os.OpenRoot(filepath.Join(dst, "tree"))
	require.NoError(t, err)
	defer root.Close()
	hdr := worecord.Header{Job: "measure", Dataset: "measure", Run: "r", Epoch: 1}
	key, err := worecord.Key([]byte("measure"), hdr.Job, hdr.Dataset)
	require.NoError(t, err)
	t.Logf("page cache dropped: %v; %d workers", dropPageCache(), workers)

	cpu0, start := cpuTime(), time.Now()
	var rec bytes.Buffer
	w, err := worecord.NewWriter(&rec, key, hdr)
	require.NoError(t, err)
	st := worecord.NewRootStaging(root)
	res, err := worecord.Copy(src, st, w, workers)
	st.Close()
	require.NoError(t, err)
	require.NoError(t, w.Close())
	require.NoError(t, os.WriteFile(filepath.Join(dst, "record"), rec.Bytes(), 0o600))
	synced := time.Now()
	fd, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, unix.Syncfs(fd))
	require.NoError(t, unix.Close(fd))
	copied := time.Since(start)
	t.Logf("copy: %d files, %d dirs, %d bytes, record %d bytes in %v (syncfs %v), CPU %v", res.Files, res.Dirs, res.Bytes,
		rec.Len(), copied.Round(time.Millisecond), time.Since(synced).Round(time.Millisecond), (cpuTime() - cpu0).Round(time.Millisecond))

	cpu1, cstart := cpuTime(), time.Now()
	b, err := os.ReadFile(filepath.Join(dst, "record"))
	require.NoError(t, err)
	entries, err := worecord.Read(b, key, hdr)
	require.NoError(t, err)
	cres, err := worecord.Check(root, entries, workers)
	require.NoError(t, err)
	t.Logf("check (record read, files re-hashed, metadata set): %d bytes in %v, CPU %v; total %v", cres.Bytes,
		time.Since(cstart).Round(time.Millisecond), (cpuTime() - cpu1).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
