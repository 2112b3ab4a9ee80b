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
	type blobFile struct {
		path string
		mod  time.Time
	}
	var files []blobFile
	require.NoError(t, filepath.WalkDir(filepath.Join(dir, "x"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasPrefix(strings.TrimPrefix(p, filepath.Join(dir, "x")+"/"), "n") {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			files = append(files, blobFile{p, fi.ModTime()})
		}
		return err
	}))
	sort.Slice(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.path
	}
	return out
}

// fillIndexEpoch pushes until the current epoch holds 21 more index blobs (kopia closes an
// epoch at 20) and sets the first of them back an epoch and a minute, as if the epoch had
// been written over that long.
func (e *env) fillIndexEpoch() {
	e.t.Helper()
	before := len(indexBlobFiles(e.t, e.cfg.Dir))
	for len(indexBlobFiles(e.t, e.cfg.Dir)) < before+21 {
		e.push()
	}
	old := time.Now().Add(-indexEpoch - time.Minute)
	require.NoError(e.t, os.Chtimes(indexBlobFiles(e.t, e.cfg.Dir)[before], old, old))
}

// indexEpochs is what a refresh of a repository knows of its index epochs.
type indexEpochs struct {
	write       int         // the epoch being written
	uncompacted map[int]int // index blobs a refresh lists, by epoch
	compacted   map[int]bool
}

// listed is how many index blobs a refresh lists.
func (ie indexEpochs) listed() int {
	n := 0
	for _, c := range ie.uncompacted {
		n += c
	}
	return n
}

// indexEpochs refreshes e's repository and reads its epoch state.
func (e *env) indexEpochs() indexEpochs {
	e.t.Helper()
	ctx := context.Background()
	dr, err := e.repos.open(ctx, e.cfg, false)
	require.NoError(e.t, err)
	em, ok, err := dr.ContentReader().EpochManager(ctx)
	require.NoError(e.t, err)
	require.True(e.t, ok, "the repository has an epoch manager")
	cs, err := em.Current(ctx)
	require.NoError(e.t, err)
	ie := indexEpochs{write: cs.WriteEpoch, uncompacted: map[int]int{}, compacted: map[int]bool{}}
	for ep, bs := range cs.UncompactedEpochSets {
		ie.uncompacted[ep] = len(bs)
	}
	for ep, bs := range cs.SingleEpochCompactionSets {
		ie.compacted[ep] = len(bs) > 0
	}
	return ie
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
	tidy := func() { // every pull's image retention ends with tidyIndexes
		t.Helper()
		_, err := e.repos.PruneImages(ctx, e.cfg, e.job, e.ds, keep)
		require.NoError(t, err)
	}
	e.push()
	tidy()
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

	require.Equal(t, 0, e.indexEpochs().write)
	e.fillIndexEpoch()
	tidy()
	require.Equal(t, 1, e.indexEpochs().write, "an epoch with 20 blobs across 10 min is closed")
	e.fillIndexEpoch()
	tidy()
	require.Equal(t, 2, e.indexEpochs().write)
	e.push()
	tidy() // epoch 0 has settled now

	ie := e.indexEpochs()
	require.True(t, ie.compacted[0], "epoch 0 is compacted")
	require.NotContains(t, ie.uncompacted, 0, "a refresh no longer lists epoch 0's blobs")
	require.Less(t, ie.listed(), len(indexBlobFiles(t, e.cfg.Dir))-15)

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
		e.push()
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
		if i < 2 {
			e.fillIndexEpoch()
		}
	}
	refresh()
	after := refresh()
	ie := e.indexEpochs()
	require.True(t, ie.compacted[0])
	t.Logf("%d pushes, %d index blobs: refresh %s; after the tidy (%d blobs listed, %d on disk): refresh %s",
		pushes, files, before, ie.listed(), len(indexBlobFiles(t, e.cfg.Dir)), after)
}
