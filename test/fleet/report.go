package main

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// report is everything the run measured.
type report struct {
	o          options
	start      time.Time
	logs       string
	server     string
	dbKind     string
	ready      time.Duration
	createTime time.Duration
	idle       []usage
	goroutines map[string]int
	use        []usage
	db0, db1   dbSample
	window     time.Duration
	beatsPS    float64
	stats      windowStats
	killed     int
	killAt     time.Time
	lost       int
	takeover   []time.Duration
	// takeoverMissing are lost steps no other host started before the wait ended.
	takeoverMissing int
	ramp            []rampStep
	rampNote        string
	load            string
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// usageTable is one row per watched process: cores, CPU per 1,000 runs, RSS, writes.
func usageTable(use []usage, runs int) string {
	rows := [][]string{{"process", "kind", "cores", "cpu-s/1000 runs", "rss max", "disk writes/1000 runs"}}
	sort.SliceStable(use, func(i, j int) bool { return use[i].server && !use[j].server })
	for _, u := range use {
		kind := "simulator"
		if u.server {
			kind = "server"
		}
		per, wr := "-", "-"
		if runs > 0 {
			per = fmt.Sprintf("%.1f", u.cpu.Seconds()*1000/float64(runs))
			if u.written >= 0 && u.server {
				wr = mib(u.written * 1000 / int64(runs))
			}
		}
		rows = append(rows, []string{u.name, kind, fmt.Sprintf("%.2f", u.cores), per, mib(u.rssMax), wr})
	}
	return table(rows)
}

func (r *report) String() string {
	var b strings.Builder
	o := r.o
	fmt.Fprintf(&b, "\n== replctl fleet simulation, %s\n", r.start.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "server:      %s\n", r.server)
	fmt.Fprintf(&b, "fleet:       %d simulated hosts (%d pollers each) in %d+%d processes, %d workflow process(es) x %d pollers; %d jobs scheduled of %d\n",
		o.shape.hosts, o.pollers, o.procs, min(1, o.victims), o.wfProcs, o.wfPollers, o.shape.jobs(), o.shape.total())
	fmt.Fprintf(&b, "schedules:   every %s (%.2f runs/s offered), fake push/pull %s, scripts %s, heartbeat timeout %s, schedule-to-start %s\n",
		o.interval, float64(o.shape.jobs())/o.interval.Seconds(), o.stepTime, o.scriptTime, o.shape.heartbeat, o.shape.s2s)
	fmt.Fprintf(&b, "set-up:      workers ready %s after start; load average at the end %s\n", r.ready.Round(time.Second), r.load)
	var gs []string
	for k, v := range r.goroutines {
		gs = append(gs, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(gs)
	fmt.Fprintf(&b, "goroutines:  %s\n", strings.Join(gs, " "))
	fmt.Fprintf(&b, "\nidle (pollers only, %s):\n%s", o.idle, usageTable(r.idle, 0))
	if len(r.ramp) > 0 {
		b.WriteString(r.rampString())
		return b.String()
	}
	s := r.stats
	fmt.Fprintf(&b, "\nwindow %s (schedules created in %s, warm-up %s):\n", r.window.Round(time.Second), r.createTime.Round(time.Millisecond), o.warmup)
	runsPS := float64(s.started) / r.window.Seconds()
	fmt.Fprintf(&b, "runs:        %d fires expected, %d triggers, %d runs started (%.2f/s), %d completed, %d failed, %d still open, %d fires without a run\n",
		s.expected, s.triggers, s.started, runsPS, s.completed, s.failed, s.open, len(s.missing))
	fmt.Fprintf(&b, "lag fire -> trigger workflow started:   %s\n", s.lagTrig)
	fmt.Fprintf(&b, "lag fire -> Replication run started:    %s\n", s.lagStart)
	fmt.Fprintf(&b, "lag fire -> first activity (Plan):      %s\n", s.lagPlan)
	fmt.Fprintf(&b, "overhead per run (duration - fake work, runs without takeover): %s\n", s.overhead)
	fmt.Fprintf(&b, "history events: %.1f per Replication run, %.1f per ScheduledReplication trigger; heartbeats %.1f/s\n", s.eventsRun, s.eventsTrg, r.beatsPS)
	b.WriteString("\n" + usageTable(r.use, s.started))
	if r.dbKind != "" {
		d := r.db1.size - r.db0.size
		fmt.Fprintf(&b, "database (%s): %s at the end, +%s in the window", r.dbKind, mib(r.db1.size), mib(d))
		if s.started > 0 {
			fmt.Fprintf(&b, " = %s per 1,000 runs", mib(d*1000/int64(s.started)))
		}
		if r.db1.commits > 0 && s.started > 0 {
			k := float64(s.started) / 1000
			fmt.Fprintf(&b, "; per 1,000 runs: %.0f commits, %.0f rows inserted, %.0f updated, %.0f deleted; %.0f commits/s",
				float64(r.db1.commits-r.db0.commits)/k, float64(r.db1.inserts-r.db0.inserts)/k, float64(r.db1.updates-r.db0.updates)/k,
				float64(r.db1.deletes-r.db0.deletes)/k, float64(r.db1.commits-r.db0.commits)/r.window.Seconds())
		}
		b.WriteString("\n")
	}
	if r.killed > 0 {
		fmt.Fprintf(&b, "\nkill: %d hosts' process SIGKILLed after the window with %d steps in flight; kill -> next host's first activity: %s; %d not taken over in time (heartbeat timeout %s: goal p99 <= %s)\n",
			r.killed, r.lost, distOf(r.takeover), r.takeoverMissing, o.shape.heartbeat, o.shape.heartbeat+time.Second)
	}
	return b.String()
}

func (r *report) rampString() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nramp (each step %s, the last %s measured; lag = fire -> first activity; pass: lag p99 <= %s, fires without a run <= 1 %%, no failed run):\n", r.o.rampStep, r.o.interval, r.o.lagLimit)
	rows := [][]string{{"offered/s", "jobs", "started/s", "heartbeats/s", "trigger p99", "run start p99", "lag p50", "lag p99", "lag max", "overhead p50", "overhead p99", "events/run", "server cores", "server cpu-s/run", "server rss", "verdict"}}
	best := 0.0
	for _, s := range r.ramp {
		cores, rss := 0.0, int64(0)
		for _, u := range s.use {
			if u.server {
				cores += u.cores
				rss += u.rssMax
			}
		}
		perRun := "-"
		if s.runsPS > 0 {
			perRun = fmt.Sprintf("%.3f", cores/s.runsPS)
		}
		st := s.stats
		rows = append(rows, []string{fmt.Sprintf("%.2f", s.rate), fmt.Sprint(s.jobs), fmt.Sprintf("%.2f", s.runsPS), fmt.Sprintf("%.1f", s.beats),
			secs(st.lagTrig.p99), secs(st.lagStart.p99), secs(st.lagPlan.p50), secs(st.lagPlan.p99), secs(st.lagPlan.max), secs(st.overhead.p50), secs(st.overhead.p99),
			fmt.Sprintf("%.1f", st.eventsRun), fmt.Sprintf("%.2f", cores), perRun, mib(rss), s.why})
		if s.pass {
			best = s.runsPS
		}
	}
	b.WriteString(table(rows))
	last := r.ramp[len(r.ramp)-1]
	fmt.Fprintf(&b, "\nper process at the last step (%.2f runs/s offered):\n%s", last.rate, usageTable(last.use, int(last.runsPS*r.o.interval.Seconds())))
	if r.rampNote != "" {
		fmt.Fprintf(&b, "%s\n", r.rampNote)
	}
	fmt.Fprintf(&b, "sustained limit: %.2f runs/s (the highest step that passed)\n", best)
	return b.String()
}

// assert is -ci's check: the runs of the window completed, lag was measured, and with
// victims every step lost to the kill was taken over within heartbeat + schedule-to-start
// + 5 s.
func (r *report) assert() error {
	var errs []error
	s := r.stats
	if len(r.ramp) > 0 {
		s = r.ramp[len(r.ramp)-1].stats
	}
	if s.completed == 0 {
		errs = append(errs, errors.New("no run completed in the window"))
	}
	if s.failed > 0 || s.open > 0 {
		errs = append(errs, fmt.Errorf("%d runs failed and %d did not finish", s.failed, s.open))
	}
	if s.lagStart.n == 0 || s.lagPlan.n == 0 {
		errs = append(errs, errors.New("no lag measured"))
	}
	if r.o.victims > 0 && len(r.ramp) == 0 {
		limit := r.o.shape.heartbeat + r.o.shape.s2s + 5*time.Second
		switch {
		case r.lost == 0:
			errs = append(errs, errors.New("the killed hosts had no step in flight: nothing to take over (raise -step-time or -jobs)"))
		case r.takeoverMissing > 0:
			errs = append(errs, fmt.Errorf("%d of %d lost steps were not taken over", r.takeoverMissing, r.lost))
		case distOf(r.takeover).max > limit:
			errs = append(errs, fmt.Errorf("takeover max %s > %s", secs(distOf(r.takeover).max), secs(limit)))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("fleet -ci: %w", errors.Join(errs...))
	}
	return nil
}
