package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/internal/testworld"
)

func (b *bench) job(name string) benchJob {
	for _, j := range b.h.jobs {
		if j.Name == name {
			return j
		}
	}
	panic("bench: no job " + name)
}

// rotate returns tools rotated by r, so every tool runs first, middle and last in turn.
func rotate(tools []string, r int) []string {
	r %= len(tools)
	return append(append([]string(nil), tools[r:]...), tools[:r]...)
}

// datasetPhase measures full copies (replctl, rsync, cp; the read floor) and then 1 %
// incremental ones (replctl, rsync; the walk floor) of one dataset.
func (b *bench) datasetPhase(ctx context.Context, ds *Dataset) error {
	name := ds.Spec.Name
	job := b.job("bench-" + name)
	if err := b.fullRounds(ctx, job, ds, nil); err != nil {
		return err
	}
	// cp's copy is not needed any more; rsync's is the incremental starting point.
	if err := removeAll(ctx, b.peerDir("cp", name)); err != nil {
		return err
	}
	for r := 1; r <= b.o.runs; r++ {
		if err := b.mutate(ds, ""); err != nil {
			return err
		}
		for _, tool := range rotate([]string{"replctl", "rsync", toolWalk}, r-1) {
			if err := ctx.Err(); err != nil {
				return err
			}
			s, err := b.copyBy(ctx, tool, job, ds, false)
			if err != nil {
				return fmt.Errorf("incremental copy %d by %s: %w", r, tool, err)
			}
			s.Round = r
			b.record(s)
		}
	}
	// The same 1 % change with `precopy: never`: the shortest end to end, the longest freeze.
	if err := b.withPrecopy("never", func() error {
		for r := 1; r <= b.o.runs; r++ {
			if err := b.mutate(ds, " (for precopy: never)"); err != nil {
				return err
			}
			s, err := b.replctlTimed(ctx, job, ds, "incremental", toolNoPrecopy)
			if err != nil {
				return fmt.Errorf("incremental copy %d by %s: %w", r, toolNoPrecopy, err)
			}
			s.Round = r
			b.record(s)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := ds.Revert(); err != nil {
		return err
	}
	delete(b.srcDigest, name)
	return removeAll(ctx, b.peerDir("rsync", name))
}

// fullRounds takes the source's digest and runs full copies of ds by replctl, rsync and cp,
// and the read floor (toolRead), in rotating order, b.o.runs rounds; note (may be nil) adds
// to each sample before it is recorded.
func (b *bench) fullRounds(ctx context.Context, job benchJob, ds *Dataset, note func(tool string, s *Sample) error) error {
	if err := b.digestSource(ds); err != nil {
		return err
	}
	for r := 1; r <= b.o.runs; r++ {
		for _, tool := range rotate([]string{"replctl", "rsync", "cp", toolRead}, r-1) {
			if err := ctx.Err(); err != nil {
				return err
			}
			s, err := b.copyBy(ctx, tool, job, ds, true)
			if err == nil && note != nil {
				err = note(tool, s)
			}
			if err != nil {
				return fmt.Errorf("full copy %d by %s: %w", r, tool, err)
			}
			s.Round = r
			b.record(s)
		}
	}
	return nil
}

// copyBy makes one timed copy of ds by tool: replctl (full: fresh target and repository)
// or a peer tool.
func (b *bench) copyBy(ctx context.Context, tool string, job benchJob, ds *Dataset, full bool) (*Sample, error) {
	switch {
	case tool == "replctl" && full:
		return b.replctlFull(ctx, job, ds)
	case tool == "replctl":
		return b.replctlIncremental(ctx, job, ds)
	case tool == toolRead:
		return b.readFloor(ctx, ds)
	case tool == toolWalk:
		return b.walkFloor(ctx, ds, "incremental")
	}
	return b.peer(ctx, tool, ds, full)
}

func (b *bench) record(s *Sample) {
	b.report.Samples = append(b.report.Samples, *s)
	extra := ""
	if isReplctl(s.Tool) {
		extra = fmt.Sprintf(", workflow %.2fs, steps %s, rss %s, background deletion after the run %.2fs", s.WorkflowSeconds, fmtSteps(s.Steps), fmtRSS(s.PeakRSS), s.TrashSeconds)
		if s.Recycled != "" {
			extra += fmt.Sprintf(", recycled %s (%d files kept)", s.Recycled, s.Kept)
		}
	} else {
		extra = fmt.Sprintf(", rss %s", fmtRSS(s.PeakRSS))
	}
	if s.Allocated > 0 {
		extra += ", allocated on the target " + human(s.Allocated)
	}
	b.logf("  %-7s %-11s %-7s #%d: %.2fs (sync %.2fs), freeze %.2fs%s", s.Dataset, s.Mode, s.Tool, s.Round, s.Seconds, s.SyncSeconds, s.FreezeSeconds, extra)
}

func (b *bench) digestSource(ds *Dataset) error {
	d, err := testworld.Digest(ds.Dir)
	if err != nil {
		return err
	}
	b.srcDigest[ds.Spec.Name] = d
	return nil
}

// verify compares a copy with the source's current digest.
func (b *bench) verify(ds *Dataset, copyDir, who string) error {
	got, err := testworld.Digest(copyDir)
	if err != nil {
		return err
	}
	if diff := b.srcDigest[ds.Spec.Name].Diff(got, 5); diff != "" {
		return fmt.Errorf("REPLICA DIFFERS from source %s: %s's copy %s: %s", ds.Dir, who, copyDir, diff)
	}
	return nil
}

// prepareTimed drops the page cache and samples the load right before a timed run.
func (b *bench) prepareTimed(s *Sample) {
	s.CacheDropped = dropCaches()
	s.Load1 = load1()
}

// finalSync runs the `sync` every timed run ends with.
func finalSync(ctx context.Context) (time.Duration, error) {
	t := time.Now()
	_, err := runCmd(ctx, 10*time.Minute, "sync")
	return time.Since(t), err
}

func (b *bench) replctlFull(ctx context.Context, job benchJob, ds *Dataset) (*Sample, error) {
	// Fresh target and fresh repository: agents are restarted with empty state, because
	// they keep repositories open and cache their contents.
	if err := b.h.wipeTarget(ctx, job); err != nil {
		return nil, err
	}
	if err := b.h.restartAgents(ctx, true); err != nil {
		return nil, err
	}
	return b.replctlTimed(ctx, job, ds, "full", "replctl")
}

// mutate applies the dataset's next 1 % mutation and takes the source's new digest.
func (b *bench) mutate(ds *Dataset, note string) error {
	m, err := ds.Mutate()
	if err != nil {
		return err
	}
	b.logf("dataset %s: mutation %d: %d rewritten, %d deleted, %d added%s", ds.Spec.Name, m.Round, len(m.Rewrite), len(m.Delete), len(m.Add), note)
	return b.digestSource(ds)
}

func (b *bench) replctlIncremental(ctx context.Context, job benchJob, ds *Dataset) (*Sample, error) {
	return b.replctlTimed(ctx, job, ds, "incremental", "replctl")
}

// toolNoPrecopy labels replctl runs of jobs with `precopy: never`.
const toolNoPrecopy = "replctl-noprecopy"

// isReplctl tells replctl's samples and rows (every variant) from the peer tools'.
func isReplctl(tool string) bool { return strings.HasPrefix(tool, "replctl") }

// withPrecopy runs f with every job's precopy set to mode (the agents read the config at
// each run's Plan), then restores the default.
func (b *bench) withPrecopy(mode string, f func() error) error {
	b.h.precopy = mode
	if err := b.h.writeConfig(); err != nil {
		return err
	}
	err := f()
	b.h.precopy = ""
	if werr := b.h.writeConfig(); err == nil {
		err = werr
	}
	return err
}

// replctlTimed runs one timed `replctl start --wait` plus sync and verifies the replica.
func (b *bench) replctlTimed(ctx context.Context, job benchJob, ds *Dataset, mode, tool string) (*Sample, error) {
	s := &Sample{Dataset: ds.Spec.Name, Mode: mode, Tool: tool}
	if err := b.h.resetPeaks(ctx); err != nil {
		return nil, err
	}
	b.prepareTimed(s)
	t0 := time.Now()
	r, err := b.h.run(ctx, job.Name, b.o.step)
	if err != nil {
		return nil, err
	}
	syncd, err := finalSync(ctx)
	if err != nil {
		return nil, err
	}
	s.Seconds = (r.Exited.Sub(t0) + syncd).Seconds()
	s.SyncSeconds = syncd.Seconds()
	s.PeakRSS = b.h.peaks()
	if err := fillReplctl(s, r); err != nil {
		return nil, err
	}
	if r.Status.Replica == nil || !r.Status.Replica.Verified {
		return nil, fmt.Errorf("run %s published no verified replica", r.Status.RunID)
	}
	// Before the comparison with the source, whose walk would hide the deletion's time.
	t1 := time.Now()
	if err := waitEmptyTrash(ctx, b.h.targetRoot(job)); err != nil {
		return nil, err
	}
	s.TrashSeconds = time.Since(t1).Seconds()
	if err := b.verify(ds, filepath.Join(b.h.targetRoot(job), job.Dataset), "replctl"); err != nil {
		return nil, err
	}
	return s, nil
}

// waitEmptyTrash waits until the agents deleted every retired replica under the target's
// trash dir (T/.replctl/trash/<dataset>/...), which they do in the background after a run.
func waitEmptyTrash(ctx context.Context, target string) error {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		left, _ := filepath.Glob(filepath.Join(target, ".replctl", "trash", "*", "*"))
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agents did not empty the trash of %s within 10 minutes: %v", target, left)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// fillReplctl takes the freeze window and step times of a run from its history and markers.
func fillReplctl(s *Sample, r *replctlRun) error {
	fr, err := r.History.freeze()
	if err != nil {
		return fmt.Errorf("run %s: %w", r.Status.RunID, err)
	}
	s.FreezeSeconds = fr.Seconds()
	if q, ok := r.Markers["quiesce-end"]; ok {
		if rs, ok := r.Markers["resume-start"]; ok {
			s.FreezeScriptSeconds = rs.Sub(q).Seconds()
		}
	}
	s.WorkflowSeconds = r.History.End.Sub(r.History.Start).Seconds()
	s.CLISeconds = r.Elapsed.Seconds()
	s.Steps = r.History.steps()
	s.PushFiles, s.PushReused = r.History.pushStats()
	if rep := r.Status.Replica; rep != nil {
		s.Linked, s.Restored, s.Kept, s.Recycled = rep.Linked, rep.Restored, rep.Kept, rep.Recycled
	}
	return nil
}

func (b *bench) peerDir(tool, dataset string) string {
	return filepath.Join(b.h.work, "peers", tool+"-"+dataset)
}

// peer runs cp -a (full) or rsync -a --delete (full into an empty target, or incremental
// onto its previous copy), then sync, and verifies the copy.
func (b *bench) peer(ctx context.Context, tool string, ds *Dataset, full bool) (*Sample, error) {
	mode := "incremental"
	if full {
		mode = "full"
	}
	s := &Sample{Dataset: ds.Spec.Name, Mode: mode, Tool: tool}
	dst := b.peerDir(tool, ds.Spec.Name)
	if full {
		if err := removeAll(ctx, dst); err != nil {
			return nil, err
		}
	}
	var args []string
	switch tool {
	case "cp":
		args = []string{"-a", ds.Dir, dst}
	case "rsync":
		args = []string{"-a", "--delete", ds.Dir + "/", dst + "/"}
	}
	if ds.Spec.Name == "sparse" { // each tool's option that keeps holes
		args = append([]string{map[string]string{"cp": "--sparse=always", "rsync": "-S"}[tool]}, args...)
	}
	b.prepareTimed(s)
	cctx, cancel := context.WithTimeout(ctx, b.o.step)
	defer cancel()
	cmd := exec.CommandContext(cctx, tool, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", tool, err)
	}
	peak := watchTree(cmd.Process.Pid, 20*time.Millisecond)
	err := cmd.Wait()
	copyTime := time.Since(t0)
	s.PeakRSS = map[string]int64{tool: peak.finish()}
	if cctx.Err() == context.DeadlineExceeded {
		return nil, fmt.Errorf("%s %s: timed out after %s", tool, strings.Join(args, " "), b.o.step)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, testworld.Tail(out.String(), 2000))
	}
	syncd, err := finalSync(ctx)
	if err != nil {
		return nil, err
	}
	s.Seconds = time.Since(t0).Seconds()
	s.SyncSeconds = syncd.Seconds()
	// A consistent copy by cp or rsync needs the application frozen for the whole copy.
	s.FreezeSeconds = copyTime.Seconds()
	if err := b.verify(ds, dst, tool); err != nil {
		return nil, err
	}
	return s, nil
}

// emptyPhase measures the orchestration overhead: replication of an empty dataset end to
// end, with warm agents (the first run, which creates the repository, is reported apart).
func (b *bench) emptyPhase(ctx context.Context) error {
	job := b.job("bench-empty")
	if err := b.h.wipeTarget(ctx, job); err != nil {
		return err
	}
	if err := b.h.restartAgents(ctx, false); err != nil {
		return err
	}
	empty := &Dataset{Spec: Spec{Name: "empty"}, Dir: filepath.Join(b.h.srcRoot, "empty")}
	if err := b.digestSource(empty); err != nil {
		return err
	}
	for r := 0; r <= b.o.emptyRuns; r++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		mode := "empty"
		if r == 0 {
			mode = "empty-first"
		}
		// No cache drop: this measures orchestration, not I/O.
		s := &Sample{Dataset: "empty", Mode: mode, Tool: "replctl", Round: r, Load1: load1()}
		if err := b.h.resetPeaks(ctx); err != nil {
			return err
		}
		t0 := time.Now()
		rr, err := b.h.run(ctx, job.Name, 5*time.Minute)
		if err != nil {
			return err
		}
		syncd, err := finalSync(ctx)
		if err != nil {
			return err
		}
		s.Seconds = (rr.Exited.Sub(t0) + syncd).Seconds()
		s.SyncSeconds = syncd.Seconds()
		s.PeakRSS = b.h.peaks()
		if err := fillReplctl(s, rr); err != nil {
			return err
		}
		if err := b.verify(empty, filepath.Join(b.h.targetRoot(job), job.Dataset), "replctl"); err != nil {
			return err
		}
		b.record(s)
	}
	return nil
}

func orNone(v []string) string {
	if len(v) == 0 {
		return "none"
	}
	return strings.Join(v, ", ")
}

func fmtSteps(m map[string]float64) string {
	var parts []string
	for _, k := range []activities.Step{activities.StepPlan, activities.StepPreflight, activities.StepPrecopy, activities.StepQuiesce, activities.StepPush, activities.StepResume, activities.StepPull, activities.StepTakeover} {
		if v, ok := m[string(k)]; ok {
			parts = append(parts, fmt.Sprintf("%s %.2fs", k, v))
		}
	}
	return strings.Join(parts, " ")
}

func fmtRSS(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %s", k, mib(m[k])))
	}
	return strings.Join(parts, " ")
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
