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

	var (
		mu              sync.Mutex
		calls, inFlight int
		most            int
		once            sync.Once
	)

	overlap := make(chan struct{})
	e.repos.hooks.noReadAhead = os.Getenv("REPLCTL_TEST_NOREADAHEAD") != "" // shows the test fails without
	e.repos.hooks.dirRead = func(object.ID) {
		mu.Lock()
		calls++
		first := calls == 1 // the root: nothing else can be read yet
		inFlight++
		most = max(most, inFlight)
		n := inFlight
		mu.Unlock()

		if n >= 2 {
			once.Do(func() { close(overlap) })
		}

		if !first {
			select {
			case <-overlap:
			case <-time.After(10 * time.Second):
			}
		}

		mu.Lock()
		inFlight--
		mu.Unlock()
	}

	res, err := e.repos.Pull(context.Background(), e.pullReq(img, "r1"), nil)
	require.NoError(t, err)
	require.True(t, res.Verified)
	require.GreaterOrEqual(t, most, 2, "two directory reads at once")
	dirs := 0
	require.NoError(t, filepath.WalkDir(e.src, func(_ string, d os.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			dirs++
		}
		return err
	}))
	require.Equal(t, dirs, calls, "each directory of the image read once")
	requireSameTree(t, e.src, e.replicaDir())
}
