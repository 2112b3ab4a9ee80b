package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/workflows"
)

// run sets the world up, runs the load (one window, or the ramp), the kill, and reports.
func run(ctx context.Context, o options, out io.Writer) (err error) {
	shape := o.shape
	shape.address = "127.0.0.1:7233" // the config's address is not used by anyone
	cfg, err := shape.config()
	if err != nil {
		return err
	}
	dir := o.logs
	if dir == "" {
		// A directory of its own, removed after a run that succeeded (logs and the SQLite
		// database of a failed one are kept).
		dir = filepath.Join(os.TempDir(), "replctl-fleet-"+time.Now().Format("20060102-150405"))
		defer func() {
			if err == nil {
				_ = os.RemoveAll(dir)
			} else {
				fmt.Fprintf(out, "fleet: logs kept in %s\n", dir)
			}
		}()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rep := &report{o: o, start: time.Now(), logs: dir}
	fmt.Fprintf(out, "fleet: %d hosts, %d of %d jobs scheduled every %s (%.2f runs/s), step %s, scripts %s, heartbeat %s; logs in %s\n",
		o.shape.hosts, o.shape.jobs(), o.shape.total(), o.interval, float64(o.shape.jobs())/o.interval.Seconds(), o.stepTime, o.scriptTime, o.shape.heartbeat, dir)
	w, err := newWorld(ctx, o, dir)
	defer w.teardown()
	if err != nil {
		return fmt.Errorf("setting up: %w", err)
	}
	rep.server = "embedded `replctl server` (SQLite, 1 history shard, all services in one process) at " + w.address
	if o.address != "" {
		rep.server = "existing cluster at " + o.address
	}
	if o.postgres {
		rep.server = fmt.Sprintf("a Temporal cluster on PostgreSQL (Debian's package, %d history shards; frontend, history, matching, worker in four processes) at %s", o.shards, w.address)
	}
	rep.ready = time.Since(rep.start)
	db, err := openProbe(w.o.pgDSN, w.sqlite)
	if err != nil {
		return err
	}
	defer db.close()
	rep.dbKind = db.kind()
	s := &schedules{c: w.c, cfg: cfg, interval: o.interval}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if derr := s.deleteAll(dctx); derr != nil {
			fmt.Fprintln(out, "fleet: deleting schedules:", derr)
		}
	}()

	// The pollers alone.
	fmt.Fprintf(out, "fleet: %d worker processes ready in %s; idle for %s\n", len(w.watched), rep.ready.Round(time.Second), o.idle)
	if rep.idle, _, _, err = w.measured(ctx, db, o.idle); err != nil {
		return err
	}
	rep.goroutines = w.col.goroutineCounts()

	if len(o.ramp) > 0 {
		err = rampUp(ctx, o, w, s, db, rep, out)
	} else {
		err = oneWindow(ctx, o, w, s, db, rep, out)
	}
	if err != nil {
		return err
	}
	rep.load = loadAvg()
	text := rep.String()
	fmt.Fprint(out, text)
	if o.out != "" {
		if werr := os.WriteFile(o.out, []byte(text), 0o644); werr != nil {
			return werr
		}
	}
	if o.ci {
		return rep.assert()
	}
	return nil
}

// oneWindow creates every schedule, waits the warm-up, measures one window, kills the
// victims, drains and analyses.
func oneWindow(ctx context.Context, o options, w *world, s *schedules, db *dbProbe, rep *report, out io.Writer) error {
	t := time.Now()
	if err := s.create(ctx, 0, o.shape.jobs()); err != nil {
		return err
	}
	rep.createTime = time.Since(t)
	fmt.Fprintf(out, "fleet: %d schedules created in %s; warm-up %s, window %s\n", o.shape.jobs(), rep.createTime.Round(time.Millisecond), o.warmup, o.window)
	if err := sleep(ctx, o.warmup); err != nil {
		return err
	}
	w0 := time.Now()
	use, db0, db1, err := w.measured(ctx, db, o.window)
	if err != nil {
		return err
	}
	w1 := time.Now()
	rep.use, rep.db0, rep.db1, rep.window, rep.beatsPS = use, db0, db1, w1.Sub(w0), w.beatsPS

	if w.victim != nil {
		// Kill while the victims have steps in flight (up to one interval's wait).
		lost := w.col.inFlight(w.victims)
		for end := time.Now().Add(o.interval); len(lost) == 0 && time.Now().Before(end); lost = w.col.inFlight(w.victims) {
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return err
			}
		}
		kill := time.Now()
		w.victim.Kill()
		// Every line the victims wrote has been read once kill returns: take what was open.
		lost = w.col.inFlight(w.victims)
		wait := o.shape.heartbeat + o.shape.s2s + 2*o.scriptTime + 10*time.Second
		fmt.Fprintf(out, "fleet: killed %d hosts (SIGKILL) with %d steps in flight; waiting %s for takeovers\n", len(w.victims), len(lost), wait)
		if err := sleep(ctx, wait); err != nil {
			return err
		}
		rep.killed, rep.lost, rep.killAt = len(w.victims), len(lost), kill
		rep.takeover, rep.takeoverMissing = w.col.takeovers(w.victims, lost, kill)
	}
	// Stop the load and let the window's runs finish.
	if err := s.deleteAll(ctx); err != nil {
		return err
	}
	runs, at, err := drain(ctx, w, w0.Add(-o.interval), w1, 2*o.stepTime+4*o.scriptTime+o.shape.s2s+30*time.Second)
	if err != nil {
		return err
	}
	var expected []time.Time
	for i := 0; i < o.shape.jobs(); i++ {
		expected = append(expected, fires(i, o.interval, w0, w1)...)
	}
	rep.stats = analyse(runs, w.col, expected, w0, w1, at, rep.killAt, tookOver(w.col))
	return nil
}

// drain waits until no Replication run of the window is open, or timeout, and lists runs.
func drain(ctx context.Context, w *world, since, until time.Time, timeout time.Duration) ([]runRec, time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		// Visibility is updated asynchronously: give it a moment.
		if err := sleep(ctx, 2*time.Second); err != nil {
			return nil, time.Time{}, err
		}
		at := time.Now()
		runs, err := listRuns(ctx, w.c, since)
		if err != nil {
			return nil, at, err
		}
		open := 0
		for _, r := range runs {
			if r.typ == workflows.ReplicationWorkflowName && r.close.IsZero() && r.nominal.Before(until) {
				open++
			}
		}
		if open == 0 || time.Now().After(deadline) {
			return runs, at, nil
		}
	}
}

// tookOver are the runs in which some host ran a takeover script.
func tookOver(c *collector) map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]bool{}
	for _, s := range c.starts {
		if s.step == activities.StepTakeover {
			out[s.run] = true
		}
	}
	return out
}

// rampStep is one rate of the ramp.
type rampStep struct {
	rate   float64
	jobs   int
	runsPS float64 // Replication runs started per second in the measured interval
	beats  float64 // heartbeats per second
	stats  windowStats
	use    []usage
	db0    dbSample
	db1    dbSample
	pass   bool
	why    string
}

// rampUp raises the rate step by step (adding schedules) and measures the second half of
// each step, until a step fails rampPasses.
func rampUp(ctx context.Context, o options, w *world, s *schedules, db *dbProbe, rep *report, out io.Writer) error {
	have := 0
	for _, rate := range o.ramp {
		n := int(math.Ceil(rate * o.interval.Seconds()))
		if n > o.shape.jobs() {
			rep.rampNote = fmt.Sprintf("stopped before %.2f runs/s: it needs %d jobs, the fleet has %d (raise -jobs-per-host or -interval)", rate, n, o.shape.jobs())
			break
		}
		if err := s.create(ctx, have, n); err != nil {
			return err
		}
		have = n
		settle := o.rampStep - o.interval
		if err := sleep(ctx, settle); err != nil {
			return err
		}
		w0 := time.Now()
		use, db0, db1, err := w.measured(ctx, db, o.interval)
		if err != nil {
			return err
		}
		w1 := time.Now()
		if err := sleep(ctx, o.lagLimit+2*time.Second); err != nil {
			return err
		}
		at := time.Now()
		runs, err := listRuns(ctx, w.c, w0.Add(-o.interval))
		if err != nil {
			return err
		}
		var expected []time.Time
		for i := 0; i < n; i++ {
			expected = append(expected, fires(i, o.interval, w0, w1)...)
		}
		st := analyse(runs, w.col, expected, w0, w1, at, time.Time{}, tookOver(w.col))
		step := rampStep{rate: rate, jobs: n, stats: st, use: use, db0: db0, db1: db1, runsPS: float64(st.started) / w1.Sub(w0).Seconds(), beats: w.beatsPS}
		step.pass, step.why = rampPasses(st, o.lagLimit)
		rep.ramp = append(rep.ramp, step)
		fmt.Fprintf(out, "fleet: ramp %.2f runs/s (%d jobs): started %.2f/s, lag %s: %s\n", rate, n, step.runsPS, st.lagPlan, step.why)
		if !step.pass {
			break
		}
	}
	if len(rep.ramp) == 0 {
		return errors.New("the ramp ran no step")
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// loadAvg is /proc/loadavg's first three fields.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
