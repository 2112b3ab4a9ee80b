package test

import (
	"context"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/runhistory"
	"github.com/replctl/replctl/workflows"
)

// limitsConfig: two jobs on the same source host a1 and target host b1, whose data steps
// take about 2 s each (4 MiB at the jobs' bandwidth of 2MiB/s). steps is
// max_concurrent_steps of a1 and b1.
func limitsConfig(steps int, bandwidth string) func(c *config.Config) {
	return func(c *config.Config) {
		c.Hosts = []config.Host{c.Hosts[0], c.Hosts[2]}
		for i := range c.Hosts {
			c.Hosts[i].MaxConcurrentSteps = steps
		}
		j := &c.Jobs[0]
		plainJob(j)
		j.Order = config.Order{Source: []string{"a1"}, Target: []string{"b1"}}
		j.Precopy = config.PrecopyNever
		j.Bandwidth = bandwidth
		invoices := *j
		invoices.Name = "invoices"
		invoices.Source.Dataset, invoices.Target.Dataset = "invoices", "invoices"
		c.Jobs = append(c.Jobs, invoices)
	}
}

// dataStep is one push or pull of a run as its history tells it: the time it held its
// slot (from the start plus the wait for a slot, to its close).
type dataStep struct {
	job, step, host string
	from, to        time.Time
	waited          time.Duration
	bytes           int64
}

// TestMaxConcurrentStepsAndBandwidth runs two jobs at once whose pushes share host a1 and
// pulls share host b1. With max_concurrent_steps 1 no two data steps on a host overlap (one
// waits, started and heartbeating, without a takeover although the wait exceeds
// schedule_to_start); with 2 they run side by side. Each step moves its bytes no faster than
// the job's bandwidth.
func TestMaxConcurrentStepsAndBandwidth(t *testing.T) {
	e := newEnvWith(t, envOptions{edit: limitsConfig(1, "2MiB/s")})
	const rate, burst = 2 << 20, 256 << 10 // the jobs' bandwidth and its bucket (activities.burst)
	writeDataset(t, filepath.Join(e.dir, "storage/array-a/orders"), 8, 512<<10, 1)
	writeDataset(t, filepath.Join(e.dir, "storage/array-a/invoices"), 8, 512<<10, 2)
	e.startAgents("a1", "b1")

	// A limit of 1 step per host.
	steps := runBoth(t, e)
	overlap := maxOverlap(steps)
	for h, d := range overlap {
		t.Logf("max_concurrent_steps 1: longest overlap of data steps on %s: %s", h, d.Round(time.Millisecond))
		// Server times of a start and of the other's close differ by the RPC latency.
		require.Less(t, d, 300*time.Millisecond, "data steps on %s overlapped with max_concurrent_steps 1", h)
	}
	waited := false
	for _, s := range steps {
		waited = waited || s.waited > time.Second
		work := s.to.Sub(s.from)
		floor := time.Duration(float64(s.bytes-burst) / rate * float64(time.Second))
		t.Logf("%s %s on %s: waited %s for a slot, moved %d bytes in %s: %.2f MiB/s (bandwidth 2MiB/s)", s.job, s.step, s.host, s.waited.Round(time.Millisecond), s.bytes, work.Round(time.Millisecond), float64(s.bytes)/(1<<20)/work.Seconds())
		require.GreaterOrEqual(t, work, floor, "%s %s moved its bytes faster than the job's bandwidth", s.job, s.step)
	}
	require.True(t, waited, "with one slot per host one job's data step waits for the other's")

	// The agents read the limit from the config at each step: raise it to 2. New files, so
	// that the second runs have as much to move as the first.
	e.writeConfigAs(e.cfgFile, func(c *config.Config) {
		for i := range c.Hosts {
			c.Hosts[i].MaxConcurrentSteps = 2
		}
	})
	writeDataset(t, filepath.Join(e.dir, "storage/array-a/orders/new"), 8, 512<<10, 3)
	writeDataset(t, filepath.Join(e.dir, "storage/array-a/invoices/new"), 8, 512<<10, 4)
	steps = runBoth(t, e)
	overlap = maxOverlap(steps)
	var most time.Duration
	for h, d := range overlap {
		t.Logf("max_concurrent_steps 2: longest overlap of data steps on %s: %s", h, d.Round(time.Millisecond))
		most = max(most, d)
	}
	for _, s := range steps {
		require.Less(t, s.waited, time.Second, "%s %s waited for a slot with two slots for two jobs", s.job, s.step)
	}
	require.Greater(t, most, 500*time.Millisecond, "with two slots the two jobs' data steps run side by side")
}

// runBoth starts both jobs at once, waits for them and returns their data steps.
func runBoth(t *testing.T, e *env) []dataStep {
	t.Helper()
	runs := map[string]client.WorkflowRun{"orders": e.start("orders"), "invoices": e.start("invoices")}
	var out []dataStep
	for job, run := range runs {
		st, err := e.wait(run)
		require.NoError(t, err, "job %s", job)
		require.Empty(t, st.Takeovers, "job %s: waiting for a slot is no lost agent", job)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		h, err := runhistory.Load(ctx, e.c, run.GetID(), run.GetRunID())
		cancel()
		require.NoError(t, err)
		for _, a := range h.Attempts {
			if a.Outcome != runhistory.Completed || (a.Type != activities.PushName && a.Type != activities.PullName) {
				continue
			}
			s := dataStep{job: job, step: string(a.Step), to: a.Closed}
			s.host, _ = workflows.HostOfQueue(a.Queue)
			if a.Type == activities.PushName {
				var r activities.PushResult
				require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(a.Result, &r))
				s.waited, s.bytes = r.SlotWait, r.Bytes
			} else {
				var r activities.PullResult
				require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(a.Result, &r))
				s.waited, s.bytes = r.SlotWait, r.Bytes
			}
			s.from = a.Started.Add(s.waited)
			out = append(out, s)
		}
	}
	require.Len(t, out, 4, "a push and a pull per job")
	return out
}

// maxOverlap is, per host, the longest time two of its data steps ran at once.
func maxOverlap(steps []dataStep) map[string]time.Duration {
	sort.Slice(steps, func(i, j int) bool { return steps[i].from.Before(steps[j].from) })
	out := map[string]time.Duration{}
	for i, a := range steps {
		if _, ok := out[a.host]; !ok {
			out[a.host] = 0
		}
		for _, b := range steps[i+1:] {
			if b.host == a.host {
				end := a.to
				if b.to.Before(end) {
					end = b.to
				}
				out[a.host] = max(out[a.host], end.Sub(b.from))
			}
		}
	}
	return out
}
