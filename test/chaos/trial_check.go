package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/internal/runhistory"
	"github.com/replctl/replctl/workflows"
)

// replicaMeta is the target's record of a published replica (T/.replctl/meta/<D>/<r>.json).
type replicaMeta struct {
	Image     string    `json:"image"`
	Epoch     int64     `json:"epoch"`
	Agent     string    `json:"agent"`
	Published time.Time `json:"published"`
}

// check runs the checker on a finished run: corrupt, frozen, stale_accepted, and the
// takeover latency.
func (h *harness) check(ctx context.Context, r *trialResult, run client.WorkflowRun, st workflows.Status, quiesced *generation) {
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	hist, err := loadHistory(hctx, h.w.c, run.GetID(), run.GetRunID())
	cancel()
	if err != nil {
		r.problem("reading the run's history: %v", err)
		hist = &runhistory.History{}
	}
	if r.completed {
		for step, d := range stepDurations(hist) {
			if pb := d.Seconds() / float64(quiesced.Bytes); step.Info().Writes != "" {
				if old := h.perByte[step]; old > 0 {
					pb = (old + pb) / 2
				}
				h.perByte[step] = pb
			} else if old, ok := h.est[step]; ok {
				h.est[step] = (old + d) / 2
			}
		}
	}

	// Takeover latency: fault → the next agent's first activity start.
	if !r.faultAt.IsZero() && r.kind != kindDeadQueue {
		for _, t := range st.Takeovers {
			if t.Time.Before(r.faultAt) || t.To == "" {
				continue
			}
			r.from, r.to = t.From, t.To
			if a := firstStartBy(hist, t.To, r.faultAt); a != nil {
				r.latency, r.hasLat = a.Started.Sub(r.faultAt), true
			}
			if a := lostAttempt(hist, t.From, r.faultAt); a != nil {
				r.detect, r.hasDetect = a.Closed.Sub(r.faultAt), true
			}
			break
		}
	}
	for _, w := range hist.WorkflowTaskTimeouts {
		r.wfTimeouts = append(r.wfTimeouts, w.TimeoutType.String())
		r.note("workflow task on %s scheduled %s timed out (%s) after %s", w.Queue, w.Scheduled.Local().Format("15:04:05.000"), w.TimeoutType, secs(w.TimedOut.Sub(w.Scheduled)))
	}
	if r.missed == "" && !r.faultAt.IsZero() && r.kind != kindDeadQueue && r.kind != kindRestart {
		for _, a := range hist.Attempts {
			if a.Step == r.step && agentOf(a) == r.victim && a.Outcome == runhistory.Completed && a.Closed.Before(r.faultAt) {
				r.late = true
				r.note("step %s had completed on %s %s before the fault: the fault hit what came next", r.step, r.victim, secs(r.faultAt.Sub(a.Closed)))
				break
			}
		}
	}
	for _, t := range st.Takeovers {
		r.note("takeover %s %s->%s at %s: %s", t.Step, t.From, dash(t.To), t.Time.Local().Format("15:04:05.000"), t.Reason)
	}
	// Dead queue: a step scheduled on a queue nobody polls → the next agent's start.
	if r.kind == kindDeadQueue {
		for _, a := range hist.Attempts {
			if a.TimeoutType != enums.TIMEOUT_TYPE_SCHEDULE_TO_START {
				continue
			}
			host, _ := workflows.HostOfQueue(a.Queue)
			for _, t := range st.Takeovers {
				if t.From == host && t.Step == a.Step && t.To != "" {
					if n := firstStartBy(hist, t.To, a.Closed); n != nil {
						r.dead = append(r.dead, n.Started.Sub(a.Scheduled))
						r.from, r.to = t.From, t.To
					}
					break
				}
			}
		}
	}

	// corrupt: the published replica must be the generation at quiesce time.
	dir, err := resolveLink(h.w.targetLink())
	switch {
	case err != nil || dir == "":
		if r.completed {
			r.corrupt = true
			r.problem("corrupt: %s does not resolve to a replica: %v", h.w.targetLink(), err)
		}
	default:
		r.replicaName = filepath.Base(dir)
		if st.Replica != nil && st.Replica.Name != r.replicaName {
			r.corrupt = true
			r.problem("corrupt: %s points to %s, the run reports replica %s", h.w.targetLink(), r.replicaName, st.Replica.Name)
		}
		if r.completed {
			got, err := replicaFiles(dir)
			if err != nil {
				r.corrupt = true
				r.problem("corrupt: reading replica %s: %v", dir, err)
			} else if d := quiesced.Files.Diff(got, 6); d != "" {
				r.corrupt = true
				r.problem("corrupt: replica %s differs from generation %d (digest %s, replica %s): %s",
					r.replicaName, quiesced.N, quiesced.Files.Sum(), got.Sum(), d)
			}
		}
	}

	// frozen: the application's QUIESCED flag, and the markers of this run.
	if _, err := os.Stat(filepath.Join(h.w.hostDir(appHost), "QUIESCED")); err == nil {
		r.frozen = true
		r.problem("frozen: %s still exists", filepath.Join(h.w.hostDir(appHost), "QUIESCED"))
	}
	if q, res, err := lastMarkers(filepath.Join(h.w.hostDir(appHost), "markers.log"), r.runID); err != nil {
		r.problem("reading markers: %v", err)
	} else if q >= 0 && res < q {
		r.frozen = true
		r.problem("frozen: markers of run %s show a quiesce (line %d) without a later resume", r.runID, q+1)
	}
	if st.QuiescedHost != "" {
		r.frozen = true
		r.problem("frozen: the run reports host %s left quiesced", st.QuiescedHost)
	}

	// stale_accepted: no replica may be published after a higher epoch was recorded by
	// the fence; and the current replica should come from the highest epoch issued.
	fences := h.reader.fenceRecords()
	metas, err := readMetas(h.w.metaDir())
	if err != nil {
		r.problem("reading replica metas: %v", err)
	}
	for name, m := range metas {
		if m.Published.Before(r.began) {
			continue // an earlier trial's replica
		}
		for _, f := range fences {
			if f.Epoch > m.Epoch && f.Recorded.Before(m.Published) {
				r.stale = true
				r.problem("stale_accepted: replica %s published by %s at %s with epoch %d, after the fence recorded epoch %d (agent %s) at %s",
					name, m.Agent, m.Published.Format(time.RFC3339Nano), m.Epoch, f.Epoch, f.Agent, f.Recorded.Format(time.RFC3339Nano))
				break
			}
		}
	}
	if ents, err := os.ReadDir(h.w.replicasDir()); err == nil {
		for _, e := range ents {
			if _, ok := metas[e.Name()]; !ok && e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				r.note("replica dir %s has no meta record", e.Name())
			}
		}
	}
	if st.Replica != nil {
		top := maxEpoch(hist)
		m, ok := metas[st.Replica.Name]
		switch {
		case !ok:
			r.problem("stale_accepted: the run's replica %s has no meta record", st.Replica.Name)
			r.stale = true
		case m.Epoch < top:
			// Published by an earlier attempt whose completion was lost; the taker found it
			// published with the same image and accepted it. Stale only if the fence had
			// moved before the publish (checked above).
			r.early = true
			r.note("replica %s has epoch %d (agent %s, published %s); the run issued up to %d; status says epoch %d agent %s",
				st.Replica.Name, m.Epoch, m.Agent, m.Published.Format("15:04:05.000"), top, st.Replica.Epoch, st.Replica.Agent)
		case m.Epoch > top:
			r.stale = true
			r.problem("stale_accepted: replica %s has epoch %d, higher than any this run issued (%d)", st.Replica.Name, m.Epoch, top)
		}
	}
	if !r.completed || (r.kind == kindDeadQueue && len(r.dead) == 0) {
		for _, a := range hist.Attempts {
			if a.Outcome != runhistory.Completed {
				r.note("attempt %s/%s on %s by %q: %s", a.Type, a.Step, a.Queue, agentOf(a), outcome(a))
			}
		}
	}
}

// lastMarkers returns the index of the last quiesce and the last resume marker of run (-1
// when none).
func lastMarkers(path, runID string) (quiesce, resume int, err error) {
	quiesce, resume = -1, -1
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return quiesce, resume, nil
	}
	if err != nil {
		return quiesce, resume, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for i := 0; sc.Scan(); i++ {
		line := sc.Text()
		if !strings.Contains(line, " run="+runID) {
			continue
		}
		switch {
		case strings.Contains(line, " step=quiesce "):
			quiesce = i
		case strings.Contains(line, " step=resume "):
			resume = i
		}
	}
	return quiesce, resume, sc.Err()
}

// readMetas reads every replica meta record of the dataset.
func readMetas(dir string) (map[string]replicaMeta, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]replicaMeta{}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var m replicaMeta
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("parsing %s: %w", e.Name(), err)
		}
		out[strings.TrimSuffix(e.Name(), ".json")] = m
	}
	return out, nil
}
