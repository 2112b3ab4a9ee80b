package activities

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A pull returns before its image retention runs; retention still deletes what the policy
// says once it has run, and the agent's Close waits for it.
func TestPullPrunesImagesAfterItsResult(t *testing.T) {
	w := newPushWorld(t)
	w.keepImages = 1
	cfg := readString(t, w.cfgFile)
	require.Contains(t, cfg, "retention: {replicas: 3}")
	cfg = strings.Replace(cfg, "retention: {replicas: 3}", "retention: {replicas: 3, images: 1}", 1)
	require.NoError(t, os.WriteFile(w.cfgFile, []byte(cfg), 0o600))
	require.NoError(t, os.MkdirAll(w.src, 0o755))
	a := w.agent()
	a.ChangeJournal = JournalOff
	release, began := make(chan struct{}), make(chan struct{}, 8)
	a.beforeRetention = func() {
		began <- struct{}{}
		select {
		case <-release:
		case <-time.After(10 * time.Second): // a pull that waits for its retention waits here
			t.Error("retention was held for 10 s")
		}
	}
	images := func() int {
		ims, err := a.dataplane().ListImages(context.Background(), a.repoConfig(w.repo), "orders", "orders")
		require.NoError(t, err)
		return len(ims)
	}

	for i := range 3 {
		require.NoError(t, os.WriteFile(filepath.Join(w.src, "f"), []byte{byte(i)}, 0o644))
		w.run(a) // returns while the retention of the pulls before it is held
	}
	<-began // the first retention runs; the next two wait behind it
	require.Equal(t, 3, images(), "no image was deleted while retention was held")

	close(release)
	a.housekeep.wait()
	require.Len(t, began, 2, "each pull's retention ran, one after another")
	require.Equal(t, 1, images(), "retention keeps the newest image")
}

// Tasks of one key run in the order they were started, one at a time; another key's task
// does not wait for them.
func TestHousekeepingOrdersTasksOfAKey(t *testing.T) {
	var (
		h   housekeeping
		mu  sync.Mutex
		got []string
	)
	hold := make(chan struct{})
	add := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, s)
	}
	require.True(t, h.start("job", func(context.Context) { <-hold; add("job 1") }))
	require.True(t, h.start("job", func(context.Context) { add("job 2") }))
	other := make(chan struct{})
	require.True(t, h.start("other", func(context.Context) { add("other"); close(other) }))
	<-other // ran while job 1 is held
	close(hold)
	h.wait()
	require.Equal(t, []string{"other", "job 1", "job 2"}, got)
	require.Empty(t, h.tails, "a key's tail goes once its last task ended")
}

// close waits for a task under way; past its grace it cancels the task's context, and it
// refuses tasks started after it.
func TestHousekeepingClose(t *testing.T) {
	var h housekeeping
	finished := make(chan struct{})
	require.True(t, h.start("job", func(context.Context) { time.Sleep(50 * time.Millisecond); close(finished) }))
	h.close(time.Minute)
	select {
	case <-finished:
	default:
		t.Fatal("close returned before the task ended")
	}
	require.False(t, h.start("job", func(context.Context) { t.Error("ran after close") }))

	var h2 housekeeping
	cancelled := make(chan error, 1)
	require.True(t, h2.start("job", func(ctx context.Context) { <-ctx.Done(); cancelled <- ctx.Err() }))
	queued := false
	require.True(t, h2.start("job", func(context.Context) { queued = true }))
	h2.close(10 * time.Millisecond)
	require.ErrorIs(t, <-cancelled, context.Canceled)
	require.False(t, queued, "a task queued behind a cancelled one does not run")
}
