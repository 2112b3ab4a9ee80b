package activities

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/activities/dataplane"
)

// TestMeasureEmptyRuns times the data plane's share of an empty run: the push and the pull
// of an empty dataset by one agent, REPLCTL_MEASURE_RUNS rounds (default 40) after one to
// warm up, and prints the medians. Skipped unless REPLCTL_MEASURE is set;
// REPLCTL_MEASURE_PROFILE=FILE writes a CPU profile of the timed rounds.
//
//	REPLCTL_MEASURE=1 go test ./activities -run TestMeasureEmptyRuns -v
func TestMeasureEmptyRuns(t *testing.T) {
	if os.Getenv("REPLCTL_MEASURE") == "" {
		t.Skip("set REPLCTL_MEASURE=1 to run")
	}
	rounds := 40
	if n, err := strconv.Atoi(os.Getenv("REPLCTL_MEASURE_RUNS")); err == nil && n > 0 {
		rounds = n
	}
	w := newPushWorld(t)
	require.NoError(t, os.MkdirAll(w.src, 0o755))
	a := w.agent()
	a.ChangeJournal = JournalOff
	ctx := context.Background()
	round := func() (push, pull time.Duration) {
		w.runs++
		run := fmt.Sprintf("r%d", w.runs)
		t0 := time.Now()
		res, err := a.Push(ctx, PushInput{Job: "orders", RunID: run, Agent: "a1", SourceDir: w.src, Dataset: "orders", Repo: w.repo})
		require.NoError(t, err)
		t1 := time.Now()
		w.epoch++
		_, err = a.Pull(ctx, PullInput{Job: "orders", RunID: run, Agent: "a1", ImageID: res.ImageID, TargetRoot: filepath.Join(w.base, "T"),
			Dataset: "orders", Repo: w.repo, ReplicaName: fmt.Sprintf("20261206T%06dZ-%s", w.runs, run), Epoch: w.epoch, Keep: 3, Verify: dataplane.VerifyFull, SourceDataset: "orders", KeepImages: 10})
		require.NoError(t, err)
		return t1.Sub(t0), time.Since(t1)
	}
	round()
	if p := os.Getenv("REPLCTL_MEASURE_PROFILE"); p != "" {
		f, err := os.Create(p)
		require.NoError(t, err)
		require.NoError(t, pprof.StartCPUProfile(f))
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	var push, pull []time.Duration
	for range rounds {
		a, b := round()
		push, pull = append(push, a), append(pull, b)
	}
	slices.Sort(push)
	slices.Sort(pull)
	t.Logf("empty dataset, %d rounds: push median %v (min %v), pull median %v (min %v)", rounds,
		push[rounds/2].Round(10*time.Microsecond), push[0].Round(10*time.Microsecond), pull[rounds/2].Round(10*time.Microsecond), pull[0].Round(10*time.Microsecond))
}
