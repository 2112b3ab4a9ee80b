package main

import (
	"testing"
	"time"

	"github.com/replctl/replctl/activities"
)

func TestPercentile(t *testing.T) {
	var xs []time.Duration
	for i := 1; i <= 100; i++ {
		xs = append(xs, time.Duration(101-i)*time.Second)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Second}, {99, 99 * time.Second}, {100, 100 * time.Second}, {1, time.Second}} {
		if got := percentile(xs, c.p); got != c.want {
			t.Errorf("p%v = %s, want %s", c.p, got, c.want)
		}
	}
	if percentile(nil, 99) != 0 {
		t.Error("percentile of nothing is not 0")
	}
	if xs[0] != 100*time.Second {
		t.Error("percentile sorted its input in place")
	}
}

func TestRampPasses(t *testing.T) {
	lag := func(p99 time.Duration) dist { return dist{n: 100, p99: p99} }
	for _, c := range []struct {
		name string
		w    windowStats
		want bool
	}{
		{"within the limit", windowStats{expected: 100, lagPlan: lag(4 * time.Second)}, true},
		{"lag too high", windowStats{expected: 100, lagPlan: lag(6 * time.Second)}, false},
		{"one fire missing is noise", windowStats{expected: 10, lagPlan: lag(time.Second), missing: []time.Duration{time.Second}}, true},
		{"fires missing", windowStats{expected: 100, lagPlan: lag(time.Second), missing: make([]time.Duration, 2)}, false},
		{"a failed run", windowStats{expected: 100, lagPlan: lag(time.Second), failed: 1}, false},
		{"nothing fired", windowStats{}, false},
	} {
		if got, why := rampPasses(c.w, 5*time.Second); got != c.want {
			t.Errorf("%s: passes = %v (%s), want %v", c.name, got, why, c.want)
		}
	}
}

func TestAnalyseCountsMissingFiresAsLag(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	col := newCollector()
	col.line("hosts-0", "S 1767225601000000000 plan run1 plan -") // t0 + 1s
	runs := []runRec{{typ: "Replication", runID: "run1", nominal: t0, start: t0.Add(500 * time.Millisecond), close: t0.Add(10 * time.Second), status: 2, events: 60}}
	// Fires compared by instant, not by location.
	expected := []time.Time{t0.Local(), t0.Add(2 * time.Second).Local()}
	w := analyse(runs, col, expected, t0, t0.Add(time.Minute), t0.Add(12*time.Second), time.Time{}, nil)
	if w.started != 1 || len(w.missing) != 1 || w.missing[0] != 10*time.Second {
		t.Fatalf("started %d, missing %v; want 1 and [10s]", w.started, w.missing)
	}
	if w.lagPlan.n != 2 || w.lagPlan.p50 != time.Second || w.lagPlan.max != 10*time.Second {
		t.Errorf("lag to the first activity %+v, want 1s and the missing fire's 10s", w.lagPlan)
	}
	if w.completed != 1 || w.eventsRun != 60 {
		t.Errorf("completed %d, events %v", w.completed, w.eventsRun)
	}
}

func TestOffsetsSpreadAndFires(t *testing.T) {
	interval := time.Minute
	seen := map[time.Duration]int{}
	for i := 0; i < 60; i++ {
		off := offsetOf(i, interval)
		if off < 0 || off >= interval || off%time.Second != 0 {
			t.Fatalf("offset %d = %s", i, off)
		}
		seen[off/(10*time.Second)]++
	}
	for b, n := range seen {
		if n < 7 || n > 13 {
			t.Errorf("%d of 60 offsets in the 10 s bucket %d: not spread", n, b)
		}
	}
	from := time.Unix(1_000_000_000, 0)
	if got := fires(3, interval, from, from.Add(5*time.Minute)); len(got) != 5 {
		t.Errorf("5 minutes of a 1-minute schedule fire %d times", len(got))
	}
}

func TestFleetConfig(t *testing.T) {
	s := fleetShape{hosts: 8, jobsPerHost: 3, heartbeat: 2 * time.Second, s2s: 3 * time.Second, address: "127.0.0.1:7233"}
	cfg, err := s.config()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Jobs) != 24 || cfg.Jobs[9].Name != s.jobName(9) || s.jobName(9) != "h00001-j001" {
		t.Fatalf("jobs: %d, job 9 %s", len(cfg.Jobs), cfg.Jobs[9].Name)
	}
	p, err := activities.NewPlan(cfg, s.jobName(6))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Order; got.Source[0] != "h00006" || got.Source[1] != "h00007" || got.Target[0] != "h00004" || got.Target[1] != "h00005" {
		t.Errorf("orders of a job of h00006: %+v", got)
	}
	if _, err := (fleetShape{hosts: 6, jobsPerHost: 1}).config(); err == nil {
		t.Error("6 hosts (not whole cells) accepted")
	}
}

func TestVictimsAndSplit(t *testing.T) {
	v := victimHosts(40, 4)
	cells := map[int]bool{}
	for _, h := range v {
		if cells[h/cellSize] {
			t.Errorf("two victims in cell %d: %v", h/cellSize, v)
		}
		cells[h/cellSize] = true
	}
	parts := splitHosts(40, v, 3)
	n := 0
	for _, p := range parts {
		n += len(p)
		for _, h := range p {
			for _, x := range v {
				if h == x {
					t.Errorf("victim %d in a survivors' process", h)
				}
			}
		}
	}
	if n != 36 {
		t.Errorf("survivors %d, want 36", n)
	}
	if got, _ := parseHostList(formatHostList([]int{1, 2, 3, 7, 9, 10})); len(got) != 6 || got[3] != 7 || got[5] != 10 {
		t.Errorf("host list round trip: %v (%s)", got, formatHostList([]int{1, 2, 3, 7, 9, 10}))
	}
}

// A run's fake work is the time some step of it was working: steps side by side (resume and
// pull) count once, steps one after another add up, a step inside another adds nothing.
func TestCoveredCountsOverlapOnce(t *testing.T) {
	for _, c := range []struct {
		spans []span
		want  time.Duration
	}{
		{nil, 0},
		{[]span{{0, 10}, {20, 40}}, 30},
		{[]span{{20, 40}, {0, 10}, {25, 35}, {5, 15}, {35, 45}}, 40},
	} {
		if got := covered(c.spans); got != c.want {
			t.Errorf("covered(%v) = %v, want %v", c.spans, got, c.want)
		}
	}
	col := newCollector()
	col.line("hosts-0", "E 1000 h1 run1 resume 600 1 0")
	col.line("hosts-0", "E 1100 h2 run1 pull 900 1 0")
	col.line("hosts-0", "E 1200 h2 run1 push 50 0 0") // failed: not work
	if _, work := col.runInfo("run1"); work != 900 {
		t.Errorf("work of run1 = %v, want 900ns (resume inside pull, the failed push left out)", work)
	}
}
