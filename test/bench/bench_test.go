package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func tinySpec() Spec {
	return Spec{Name: "t", Files: 300, MinSize: 100, MaxSize: 900, PerDir: 40, AddDel: 3, Seed: 7}
}

// A generated dataset mutates by about 1 %, reverts to exactly its base state, and is
// reused from the cache (including reverting a run that died mid-way).
func TestDatasetMutateRevertReuse(t *testing.T) {
	dir := t.TempDir()
	data, meta := filepath.Join(dir, "data"), filepath.Join(dir, "meta")
	var logs []string
	logf := func(f string, a ...any) { logs = append(logs, f) }

	ds, err := PrepareDataset(tinySpec(), data, meta, logf)
	require.NoError(t, err)
	require.Contains(t, logs[len(logs)-1], "generating")
	base, err := TreeDigest(data)
	require.NoError(t, err)
	// 300 files + empty-file + empty-dir + link + 8 leaf dirs and their parents.
	require.Len(t, filterPrefix(base, "file"), 301)

	m1, err := ds.Mutate()
	require.NoError(t, err)
	require.Len(t, m1.Rewrite, 3)
	require.Len(t, m1.Delete, 3)
	require.Len(t, m1.Add, 3)
	after1, err := TreeDigest(data)
	require.NoError(t, err)
	kinds := map[string]int{}
	for _, l := range base.Differences(after1) {
		kinds[strings.Fields(l)[0]]++
	}
	require.Equal(t, map[string]int{"differs": 3, "missing": 3, "extra": 3}, kinds)

	_, err = ds.Mutate()
	require.NoError(t, err)
	require.NoError(t, ds.Revert())
	reverted, err := TreeDigest(data)
	require.NoError(t, err)
	require.Empty(t, base.Diff(reverted))

	// A bench that died after two rounds: the next one reverts and reuses the copy.
	_, err = ds.Mutate()
	require.NoError(t, err)
	_, err = ds.Mutate()
	require.NoError(t, err)
	logs = nil
	_, err = PrepareDataset(tinySpec(), data, meta, logf)
	require.NoError(t, err)
	require.Contains(t, logs[0], "reverting")
	require.Contains(t, logs[len(logs)-1], "reusing")
	again, err := TreeDigest(data)
	require.NoError(t, err)
	require.Empty(t, base.Diff(again))

	// Changed parameters regenerate; a damaged tree too.
	logs = nil
	s2 := tinySpec()
	s2.Files = 310
	_, err = PrepareDataset(s2, data, meta, logf)
	require.NoError(t, err)
	require.Contains(t, logs[len(logs)-1], "generating")
	require.NoError(t, os.Remove(filepath.Join(data, s2.path(5))))
	logs = nil
	_, err = PrepareDataset(s2, data, meta, logf)
	require.NoError(t, err)
	require.Contains(t, logs[0], "unusable")
}

// Mutation rounds never rewrite or delete a file an earlier round deleted, and are the
// same whenever recomputed (revert depends on it).
func TestMutationsDeterministic(t *testing.T) {
	s := tinySpec()
	a, b := s.mutations(20), s.mutations(20)
	require.Equal(t, a, b)
	deleted := map[int]bool{}
	for _, m := range a {
		for _, i := range append(append([]int(nil), m.Rewrite...), m.Delete...) {
			require.False(t, deleted[i], "round %d touches file %d deleted earlier", m.Round, i)
		}
		for _, i := range m.Delete {
			deleted[i] = true
		}
	}
}

func TestDigestSeesModeAndLinkChanges(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644))
	require.NoError(t, os.Symlink("f", filepath.Join(dir, "l")))
	d1, err := TreeDigest(dir)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(filepath.Join(dir, "f"), 0o600))
	require.NoError(t, os.Remove(filepath.Join(dir, "l")))
	require.NoError(t, os.Symlink("g", filepath.Join(dir, "l")))
	d2, err := TreeDigest(dir)
	require.NoError(t, err)
	diff := d1.Diff(d2)
	require.Contains(t, diff, "differs f")
	require.Contains(t, diff, "differs l")
}

// Goals are judged on medians, with the right numerator and denominator.
func TestGoals(t *testing.T) {
	r := &Report{heartbeat: 2 * time.Second}
	add := func(d, m, tool string, secs, freeze float64, rss int64) {
		r.Samples = append(r.Samples, Sample{Dataset: d, Mode: m, Tool: tool, Seconds: secs, FreezeSeconds: freeze, PeakRSS: map[string]int64{"a1": rss}})
	}
	for _, v := range []float64{1, 2, 30} { // median 2, not mean 11
		add("a", "incremental", "replctl", v, v/10, 100<<20)
	}
	add("a", "incremental", "rsync", 4, 3, 0)
	add("b", "full", "replctl", 13, 10, 300<<20)
	add("b", "full", "rsync", 10, 10, 0)
	add("empty", "empty", "replctl", 0.4, 0.1, 0)
	r.Takeovers = []TakeoverSample{{LatencySeconds: 2.5}, {LatencySeconds: 3.2}}
	r.finish()

	got := map[string]Goal{}
	for _, g := range r.Goals {
		got[g.Name] = g
	}
	g := got["freeze window, 1% incremental, A: replctl freeze / rsync incremental copy"]
	require.True(t, g.Known)
	require.InDelta(t, 0.2/3, g.Value, 1e-9)
	require.True(t, g.Met)
	g = got["end to end, 1% incremental, A: replctl / rsync"]
	require.InDelta(t, 0.5, g.Value, 1e-9)
	require.True(t, g.Met)
	g = got["end to end, full, B: replctl / rsync"]
	require.InDelta(t, 1.3, g.Value, 1e-9)
	require.True(t, g.Met)
	require.False(t, got["end to end, full, A: replctl / rsync"].Known)
	g = got["agent peak RSS on B (any agent, full and incremental)"]
	require.False(t, g.Met)
	require.True(t, got["empty-dataset replication, end to end (median, warm agents)"].Met)
	g = got["takeover: kill -9 of the pushing agent → next agent's first activity (worst sample)"]
	require.InDelta(t, 3.2, g.Value, 1e-9)
	require.False(t, g.Met)

	row := r.row("a", "incremental", "replctl")
	require.Equal(t, 3, row.Runs)
	require.InDelta(t, 0.5, row.VsRsync, 1e-9)
	require.Zero(t, row.VsCp)

	dir := t.TempDir()
	require.NoError(t, r.write(dir))
	md, err := os.ReadFile(filepath.Join(dir, "results.md"))
	require.NoError(t, err)
	require.Contains(t, string(md), "| A | incremental | replctl | 3 | 2.00 s |")
	require.Contains(t, string(md), "MISSED")
}

func filterPrefix(d Digest, prefix string) []string {
	var out []string
	for k, v := range d {
		if len(v) >= len(prefix) && v[:len(prefix)] == prefix {
			out = append(out, k)
		}
	}
	return out
}

// watchTree sees the peak RSS of a grandchild (dd's 64 MiB buffer under sh).
func TestWatchTreePeak(t *testing.T) {
	cmd := exec.Command("sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=40 2>/dev/null; true")
	require.NoError(t, cmd.Start())
	w := watchTree(cmd.Process.Pid, 5*time.Millisecond)
	require.NoError(t, cmd.Wait())
	peak := w.finish()
	require.GreaterOrEqual(t, peak, int64(64<<20), "dd's buffer")
	require.Less(t, peak, int64(160<<20))
}
