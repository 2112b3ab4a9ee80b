package dataplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kopia/kopia/repo/object"
	"github.com/stretchr/testify/require"
)

// The plan reads the image's directories ahead of its walk: a subdirectory's read is still
// going on when the next one's begins (each waits up to 10 s for another to start; one at a
// time, none would: REPLCTL_TEST_NOREADAHEAD=1 fails). The replica is as without.
func TestPullReadsDirectoriesAhead(t *testing.T) {
	e := newEnv(t)
	for i := range 4 {
		makeManyFiles(t, filepath.Join(e.src, fmt.Sprintf("d%d", i)), 5, 64)
	}

	img := e.push().ImageID

	e.repos.hooks.noReadAhead = os.Getenv("REPLCTL_TEST_NOREADAHEAD") != "" // shows the test fails without
	// The first read is the root's: nothing else can be read yet.
	probe := newOverlapProbe(true)
	e.repos.hooks.dirRead = probe.read

	res, err := e.repos.Pull(context.Background(), e.pullReq(img, "r1"), nil)
	require.NoError(t, err)
	require.True(t, res.Verified)
	calls, most := probe.counts()
	require.GreaterOrEqual(t, most, 2, "two directory reads at once")
	require.Equal(t, countDirs(t, e.src), calls, "each directory of the image read once")
	requireSameTree(t, e.src, e.replicaDir())
}

// Verification reads the image's directories ahead of its walk too (verify_ahead.go): the
// reads of a directory's subdirectories overlap (REPLCTL_TEST_NOREADAHEAD=1 fails), each
// is read once, and a replica changed on disk is still found.
func TestVerifyReadsDirectoriesAhead(t *testing.T) {
	e := newEnv(t)
	for i := range 4 {
		makeManyFiles(t, filepath.Join(e.src, fmt.Sprintf("d%d", i)), 5, 64)
	}

	img := e.push().ImageID
	_, err := e.repos.Pull(context.Background(), e.pullReq(img, "r1"), nil)
	require.NoError(t, err)

	e.repos.hooks.noReadAhead = os.Getenv("REPLCTL_TEST_NOREADAHEAD") != ""
	probe := newOverlapProbe(false)
	e.repos.hooks.verifyDirRead = probe.read

	require.NoError(t, e.repos.VerifyReplica(context.Background(), e.cfg, e.job, e.ds, img, e.replicaDir(), 0))
	calls, most := probe.counts()
	require.GreaterOrEqual(t, most, 2, "two directory reads at once")
	require.Equal(t, countDirs(t, e.src)-1, calls, "each directory but the root read ahead once")

	require.NoError(t, os.Chmod(filepath.Join(e.replicaDir(), "d3", "d000", "f00004"), 0o600))
	err = e.repos.VerifyReplica(context.Background(), e.cfg, e.job, e.ds, img, e.replicaDir(), 0)
	require.ErrorIs(t, err, ErrVerify)
	require.ErrorContains(t, err, "d3/d000/f00004: mode")
}

// countDirs counts the directories of the tree at root, root included.
func countDirs(t *testing.T, root string) int {
	dirs := 0
	require.NoError(t, filepath.WalkDir(root, func(_ string, d os.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			dirs++
		}
		return err
	}))

	return dirs
}

// overlapProbe is a read hook that records how many reads run at once. Each read but the
// first (when skipFirst) waits up to 10 s for two reads to overlap, so reads made one at a
// time take that long and never overlap.
type overlapProbe struct {
	mu                    sync.Mutex
	calls, inFlight, most int
	skipFirst             bool
	once                  sync.Once
	overlap               chan struct{}
}

func newOverlapProbe(skipFirst bool) *overlapProbe {
	return &overlapProbe{skipFirst: skipFirst, overlap: make(chan struct{})}
}

func (p *overlapProbe) read(object.ID) {
	p.mu.Lock()
	p.calls++
	first := p.calls == 1 && p.skipFirst
	p.inFlight++
	p.most = max(p.most, p.inFlight)
	n := p.inFlight
	p.mu.Unlock()

	if n >= 2 {
		p.once.Do(func() { close(p.overlap) })
	}

	if !first {
		select {
		case <-p.overlap:
		case <-time.After(10 * time.Second):
		}
	}

	p.mu.Lock()
	p.inFlight--
	p.mu.Unlock()
}

// counts are the reads seen and the most at once.
func (p *overlapProbe) counts() (calls, most int) {
	p.mu.Lock()
	defer p.mu.Unlock()

	return p.calls, p.most
}
