package main

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/replctl/replctl/activities"
)

// actStart is one fake activity start as its worker process reported it.
type actStart struct {
	t      time.Time
	host   string // "plan" for the Plan fake
	run    string // the Replication run's run ID
	step   activities.Step
	failed string // a takeover script's failed host
}

// collector gathers the worker processes' event lines (agent.go writes them).
type collector struct {
	mu sync.Mutex
	// planStart is each run's first Plan start: its first activity.
	planStart map[string]time.Time
	// work is the fake work (sleeps) of each run's completed activities, as intervals: a
	// run's resume and pull work side by side, so their sum would exceed the run's time.
	work map[string][]span
	// starts are every host activity start, in arrival order.
	starts []actStart
	// open are the host activities started and not ended: host → run+step → start.
	open map[string]map[string]actStart
	// beats are the heartbeats of every ended fake step.
	beats int64
	// goroutines is the last count each worker process reported.
	goroutines map[string]int
	ready      map[string]chan struct{}
}

func newCollector() *collector {
	return &collector{planStart: map[string]time.Time{}, work: map[string][]span{},
		open: map[string]map[string]actStart{}, goroutines: map[string]int{}, ready: map[string]chan struct{}{}}
}

// readyChan is closed when proc's worker process says READY.
func (c *collector) readyChan(proc string) chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.ready[proc]
	if !ok {
		ch = make(chan struct{})
		c.ready[proc] = ch
	}
	return ch
}

// line handles one line of proc's stdout.
func (c *collector) line(proc, l string) {
	f := strings.Fields(l)
	if len(f) == 0 {
		return
	}
	switch f[0] {
	case "READY":
		if len(f) == 3 {
			n, _ := strconv.Atoi(f[2])
			c.mu.Lock()
			c.goroutines[proc] = n
			c.mu.Unlock()
		}
		close(c.readyChan(proc))
	case "STAT":
		if len(f) == 2 {
			n, _ := strconv.Atoi(f[1])
			c.mu.Lock()
			c.goroutines[proc] = n
			c.mu.Unlock()
		}
	case "S":
		if len(f) != 6 {
			return
		}
		ns, _ := strconv.ParseInt(f[1], 10, 64)
		s := actStart{t: time.Unix(0, ns), host: f[2], run: f[3], step: activities.Step(f[4])}
		if f[5] != "-" {
			s.failed = f[5]
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if s.step == activities.StepPlan {
			if _, ok := c.planStart[s.run]; !ok {
				c.planStart[s.run] = s.t
			}
			return
		}
		c.starts = append(c.starts, s)
		if c.open[s.host] == nil {
			c.open[s.host] = map[string]actStart{}
		}
		c.open[s.host][s.run+" "+string(s.step)] = s
	case "E":
		if len(f) != 8 {
			return
		}
		end, _ := strconv.ParseInt(f[1], 10, 64)
		d, _ := strconv.ParseInt(f[5], 10, 64)
		n, _ := strconv.ParseInt(f[7], 10, 64)
		c.mu.Lock()
		defer c.mu.Unlock()
		c.beats += n
		delete(c.open[f[2]], f[3]+" "+f[4])
		if f[6] == "1" {
			c.work[f[3]] = append(c.work[f[3]], span{from: end - d, to: end})
		}
	}
}

// inFlight returns the activities open on hosts now (the moment of a kill).
func (c *collector) inFlight(hosts map[string]bool) []actStart {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []actStart
	for h := range hosts {
		for _, s := range c.open[h] {
			out = append(out, s)
		}
	}
	return out
}

// takeovers measures, for each run that had an activity open on a killed host at kill, the
// time from the kill to the first activity of that run started on another host (the next
// host's takeover script, or its step). Runs with no such start yet are counted as missing.
func (c *collector) takeovers(killed map[string]bool, lost []actStart, kill time.Time) (lat []time.Duration, missing int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]bool{}
	for _, l := range lost {
		if seen[l.run] {
			continue
		}
		seen[l.run] = true
		found := false
		for _, s := range c.starts {
			if s.run == l.run && !killed[s.host] && s.t.After(kill) {
				lat = append(lat, s.t.Sub(kill))
				found = true
				break
			}
		}
		if !found {
			missing++
		}
	}
	return lat, missing
}

// runInfo is what the fakes saw of one run.
func (c *collector) runInfo(run string) (plan time.Time, work time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.planStart[run], covered(c.work[run])
}

// span is an interval of fake work, in Unix nanoseconds.
type span struct{ from, to int64 }

// covered is how long at least one of spans was under way (their union's length).
func covered(spans []span) time.Duration {
	s := slices.Clone(spans)
	slices.SortFunc(s, func(a, b span) int { return cmp.Compare(a.from, b.from) })
	var total, end int64
	for i, x := range s {
		if i == 0 || x.from > end {
			total += x.to - x.from
			end = x.to
		} else if x.to > end {
			total += x.to - end
			end = x.to
		}
	}
	return time.Duration(total)
}

// goroutineCounts returns the last goroutine count of each worker process.
func (c *collector) goroutineCounts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.goroutines {
		out[k] = v
	}
	return out
}

// heartbeats is the number of heartbeats the ended fake steps sent so far.
func (c *collector) heartbeats() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.beats
}
