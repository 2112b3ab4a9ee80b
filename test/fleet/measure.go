package main

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/workflows"
)

// runRec is one workflow of the fleet as visibility lists it.
type runRec struct {
	typ     string
	id      string
	runID   string
	nominal time.Time // the schedule's nominal fire time (zero if unknown)
	start   time.Time
	close   time.Time // zero while open
	status  enums.WorkflowExecutionStatus
	events  int64
}

// nominalOf reads the nominal time a schedule appends to its runs' IDs ("-2006-01-02T15:04:05Z").
func nominalOf(id string) time.Time {
	const n = len("2006-01-02T15:04:05Z")
	if len(id) <= n {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, id[len(id)-n:])
	if err != nil {
		return time.Time{}
	}
	return t
}

// listRuns lists the Replication runs and their ScheduledReplication triggers started since
// since. A Replication run's nominal time is its parent trigger's.
func listRuns(ctx context.Context, c client.Client, since time.Time) ([]runRec, error) {
	q := fmt.Sprintf("StartTime >= '%s' AND (WorkflowType = '%s' OR WorkflowType = '%s')", since.UTC().Format(time.RFC3339Nano),
		workflows.ReplicationWorkflowName, workflows.ScheduledWorkflowName)
	var out []runRec
	var token []byte
	for {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: q, PageSize: 1000, NextPageToken: token})
		if err != nil {
			return out, fmt.Errorf("listing runs: %w", err)
		}
		for _, e := range resp.GetExecutions() {
			r := runRec{typ: e.GetType().GetName(), id: e.GetExecution().GetWorkflowId(), runID: e.GetExecution().GetRunId(),
				start: e.GetStartTime().AsTime(), status: e.GetStatus(), events: e.GetHistoryLength()}
			if e.GetCloseTime() != nil {
				r.close = e.GetCloseTime().AsTime()
			}
			if r.typ == workflows.ScheduledWorkflowName {
				r.nominal = nominalOf(r.id)
			} else if p := e.GetParentExecution(); p != nil {
				r.nominal = nominalOf(p.GetWorkflowId())
			}
			out = append(out, r)
		}
		token = resp.GetNextPageToken()
		if len(token) == 0 {
			return out, nil
		}
	}
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of xs; 0 for none.
func percentile(xs []time.Duration, p float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(k, 0), len(s)-1)]
}

// dist is a distribution's summary for the table.
type dist struct {
	n             int
	p50, p99, max time.Duration
}

func distOf(xs []time.Duration) dist {
	return dist{n: len(xs), p50: percentile(xs, 50), p99: percentile(xs, 99), max: percentile(xs, 100)}
}

func (d dist) String() string {
	if d.n == 0 {
		return "n=0"
	}
	return fmt.Sprintf("p50 %s  p99 %s  max %s  (n=%d)", secs(d.p50), secs(d.p99), secs(d.max), d.n)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// windowStats is what the runs of one window say.
type windowStats struct {
	expected  int // schedule fires in the window
	triggers  int // ScheduledReplication started for them
	started   int // Replication runs started for them
	completed int
	failed    int // closed otherwise than completed
	open      int
	lagStart  dist // nominal → Replication run started
	lagPlan   dist // nominal → its first activity (Plan) started
	lagTrig   dist // nominal → the trigger workflow started
	overhead  dist // run duration − the fakes' work, runs without takeover
	eventsRun float64
	eventsTrg float64
	missing   []time.Duration // lag lower bounds of fires with no run yet (at evaluation)
}

// analyse summarises the runs whose nominal time is in [from, to); fires gives the expected
// fire times (one per schedule fire) and at is when the listing was taken. The overhead
// counts only runs without a takeover that closed before kill (if not zero).
func analyse(runs []runRec, col *collector, expected []time.Time, from, to, at, kill time.Time, tookOver map[string]bool) windowStats {
	var w windowStats
	w.expected = len(expected)
	var lagS, lagP, lagT, over, missing []time.Duration
	var evRun, evTrg, nRun, nTrg float64
	started := map[int64]int{} // by nominal UnixNano (time.Time keys would compare locations)
	for _, r := range runs {
		if r.nominal.IsZero() || r.nominal.Before(from) || !r.nominal.Before(to) {
			continue
		}
		if r.typ == workflows.ScheduledWorkflowName {
			w.triggers++
			lagT = append(lagT, r.start.Sub(r.nominal))
			if !r.close.IsZero() {
				evTrg += float64(r.events)
				nTrg++
			}
			continue
		}
		w.started++
		started[r.nominal.UnixNano()]++
		lagS = append(lagS, r.start.Sub(r.nominal))
		plan, work := col.runInfo(r.runID)
		if !plan.IsZero() {
			lagP = append(lagP, plan.Sub(r.nominal))
		}
		switch {
		case r.close.IsZero():
			w.open++
		case r.status == enums.WORKFLOW_EXECUTION_STATUS_COMPLETED:
			w.completed++
			evRun += float64(r.events)
			nRun++
			if !tookOver[r.runID] && (kill.IsZero() || r.close.Before(kill)) {
				over = append(over, r.close.Sub(r.start)-work)
			}
		default:
			w.failed++
		}
	}
	// Fires without a run: their lag is at least the time until the listing.
	for _, t := range expected {
		if started[t.UnixNano()] > 0 {
			started[t.UnixNano()]--
			continue
		}
		missing = append(missing, at.Sub(t))
	}
	w.missing = missing
	w.lagStart, w.lagPlan, w.lagTrig, w.overhead = distOf(lagS), distOf(append(lagP, missing...)), distOf(lagT), distOf(over)
	if nRun > 0 {
		w.eventsRun = evRun / nRun
	}
	if nTrg > 0 {
		w.eventsTrg = evTrg / nTrg
	}
	return w
}

// rampPasses is the ramp's rule for one step: the lag p99 (schedule → first activity, fires
// without a run counted with their lag so far) is within the limit and almost every fire
// started a run (at most 1 % or 1 run missing).
func rampPasses(w windowStats, limit time.Duration) (bool, string) {
	if w.expected == 0 {
		return false, "no schedule fired in the step"
	}
	if w.lagPlan.p99 > limit {
		return false, fmt.Sprintf("lag p99 %s > %s", secs(w.lagPlan.p99), secs(limit))
	}
	if m := len(w.missing); m > 1 && float64(m) > 0.01*float64(w.expected) {
		return false, fmt.Sprintf("%d of %d fires started no run", m, w.expected)
	}
	if w.failed > 0 {
		return false, fmt.Sprintf("%d runs failed", w.failed)
	}
	return true, "ok"
}

// table formats rows of cells as aligned columns.
func table(rows [][]string) string {
	width := map[int]int{}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		for i, c := range r {
			if i > 0 {
				b.WriteString("  ")
			}
			fmt.Fprintf(&b, "%-*s", width[i], c)
		}
		b.WriteString("\n")
	}
	return b.String()
}
