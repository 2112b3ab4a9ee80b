package dataplane

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// indexBlobFiles are the repository's epoch index blobs (x/n<epoch>_...) as files, oldest
// first.
func indexBlobFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(filepath.Join(dir, "x"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(strings.TrimPrefix(p, filepath.Join(dir, "x")+"/"), "n") {
			out = append(out, p)
		}
		return err
	}))
	sort.Slice(out, func(i, j int) bool {
		a, _ := os.Stat(out[i])
		b, _ := os.Stat(out[j])
		return a.ModTime().Before(b.ModTime())
	})
	return out
}

// A repository's index epochs are kept short: the first pull's tidy gives it kopia's
// shortest epoch; an epoch that holds enough index blobs across that duration is closed,
// a settled one is compacted, so a refresh no longer lists every index blob ever written;
// and every image still reads back after it. (Epoch ages come from the blobs' times, which
// the test sets back instead of waiting.)
func TestIndexEpochsStayShort(t *testing.T) {
	e := newEnv(t)
	makeTree(t, e.src)
	ctx := context.Background()
	keep := Retention{Last: 100}
	e.push()
	_, err := e.repos.PruneImages(ctx, e.cfg, e.job, e.ds, keep)
	require.NoError(t, err)
	// An agent with the repository open sees new parameters when kopia next reads the
	// format blob (within 15 min); another agent, or a restarted one, at once.
	require.NoError(t, e.repos.Close())
	e.repos = NewRepos(func(msg string, kv ...any) { t.Logf("%s %v", msg, kv) })
	dr, err := e.repos.open(ctx, e.cfg, false)
	require.NoError(t, err)
	mp, err := dr.FormatManager().GetMutableParameters(ctx)
	require.NoError(t, err)
	require.Equal(t, indexEpoch, mp.EpochParameters.MinEpochDuration)
	require.Equal(t, indexEpochRefresh, mp.EpochParameters.EpochRefreshFrequency)

	writeEpoch := func() int {
		t.Helper()
		dr, err := e.repos.open(ctx, e.cfg, false)
		require.NoError(t, err)
		em, ok, err := dr.ContentReader().EpochManager(ctx)
		require.NoError(t, err)
		require.True(t, ok)
		cs, err := em.Current(ctx)
		require.NoError(t, err)
		return cs.WriteEpoch
	}
	// Fill the current epoch with 20 index blobs (kopia's count to close one), the first
	// written an epoch before the last, and tidy.
	fillAndTidy := func() {
		t.Helper()
		before := len(indexBlobFiles(t, e.cfg.Dir))
		for len(indexBlobFiles(t, e.cfg.Dir)) < before+21 {
			e.push()
		}
		old := time.Now().Add(-indexEpoch - time.Minute) // the epoch's first blob
		require.NoError(t, os.Chtimes(indexBlobFiles(t, e.cfg.Dir)[before], old, old))
		_, err := e.repos.PruneImages(ctx, e.cfg, e.job, e.ds, keep)
		require.NoError(t, err)
	}
	require.Equal(t, 0, writeEpoch())
	fillAndTidy()
	require.Equal(t, 1, writeEpoch(), "an epoch with 20 blobs across 10 min is closed")
	fillAndTidy()
	require.Equal(t, 2, writeEpoch())
	e.push()
	_, err = e.repos.PruneImages(ctx, e.cfg, e.job, e.ds, keep) // epoch 0 has settled now
	require.NoError(t, err)

	dr, err = e.repos.open(ctx, e.cfg, false)
	require.NoError(t, err)
	em, _, err := dr.ContentReader().EpochManager(ctx)
	require.NoError(t, err)
	cs, err := em.Current(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, cs.SingleEpochCompactionSets[0], "epoch 0 is compacted")
	require.NotContains(t, cs.UncompactedEpochSets, 0, "a refresh no longer lists epoch 0's blobs")
	listed := 0
	for _, bs := range cs.UncompactedEpochSets {
		listed += len(bs)
	}
	require.Less(t, listed, len(indexBlobFiles(t, e.cfg.Dir))-15)

	// Every image reads back through the compacted index, also for an agent that opens the
	// repository afresh.
	require.NoError(t, e.repos.Close())
	e.repos = NewRepos(nil)
	imgs, err := e.repos.ListImages(ctx, e.cfg, e.job, e.ds)
	require.NoError(t, err)
	require.Greater(t, len(imgs), 40)
	res := e.pull(imgs[len(imgs)-1].ID, "oldest")
	require.True(t, res.Verified)
}

// What a refresh costs with many uncompacted index blobs, and after the tidy compacted them
// (blob times set back instead of waiting):
//
//	REPLCTL_MEASURE=1 REPLCTL_MEASURE_PUSHES=600 go test ./activities/dataplane -run TestMeasureIndexEpochs -v
func TestMeasureIndexEpochs(t *testing.T) {
	if os.Getenv("REPLCTL_MEASURE") == "" {
		t.Skip("set REPLCTL_MEASURE=1 to run")
	}
	pushes := envInt("REPLCTL_MEASURE_PUSHES", 600)
	e := newEnv(t)
	e.repos = NewRepos(nil)
	makeTree(t, e.src)
	ctx := context.Background()
	for range pushes {
		_, err := e.repos.Push(ctx, PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds}, nil)
		require.NoError(t, err)
	}
	// A refresh's CPU (user + system, this process), less disturbed by other load than its time.
	cpu := func() time.Duration {
		var ru unix.Rusage
		require.NoError(t, unix.Getrusage(unix.RUSAGE_SELF, &ru))
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	refresh := func() string {
		t0, c0 := time.Now(), cpu()
		for range 20 {
			_, err := e.repos.open(ctx, e.cfg, false)
			require.NoError(t, err)
		}
		return fmt.Sprintf("%v (CPU %v)", (time.Since(t0) / 20).Round(10*time.Microsecond), ((cpu() - c0) / 20).Round(10*time.Microsecond))
	}
	refresh() // the first refresh after the pushes reads their index blobs
	before, files := refresh(), len(indexBlobFiles(t, e.cfg.Dir))
	keep := Retention{Last: pushes + 10}
	// Tidies: set the parameters; close epoch 0; close epoch 1; compact epoch 0.
	for i := range 4 {
		_, err := e.repos.PruneImages(ctx, e.cfg, e.job, e.ds, keep)
		require.NoError(t, err)
		require.NoError(t, e.repos.Close()) // new parameters: read at the next open
		e.repos = NewRepos(nil)
		if i < 2 { // fill the next epoch: 21 blobs, the first an epoch older than the last
			n := len(indexBlobFiles(t, e.cfg.Dir))
			for len(indexBlobFiles(t, e.cfg.Dir)) < n+21 {
				_, err := e.repos.Push(ctx, PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds}, nil)
				require.NoError(t, err)
			}
			old := time.Now().Add(-indexEpoch - time.Minute)
			require.NoError(t, os.Chtimes(indexBlobFiles(t, e.cfg.Dir)[n], old, old))
		}
	}
	refresh()
	after := refresh()
	dr, err := e.repos.open(ctx, e.cfg, false)
	require.NoError(t, err)
	em, _, err := dr.ContentReader().EpochManager(ctx)
	require.NoError(t, err)
	cs, err := em.Current(ctx)
	require.NoError(t, err)
	listed := 0
	for _, bs := range cs.UncompactedEpochSets {
		listed += len(bs)
	}
	require.NotEmpty(t, cs.SingleEpochCompactionSets[0])
	t.Logf("%d pushes, %d index blobs: refresh %s; after the tidy (%d blobs listed, %d on disk): refresh %s",
		pushes, files, before, listed, len(indexBlobFiles(t, e.cfg.Dir)), after)
}
