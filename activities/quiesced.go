package activities

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/replctl/replctl/activities/hostexec"
)

// ErrTypeShuttingDown is the retryable error of a data step its agent cut short or refused
// because it is stopping: the workflow retries it and then hands it to the next agent.
const ErrTypeShuttingDown = "AgentShuttingDown"

// QuiescedApp is an application this agent quiesced that no resume has thawed yet: what an
// agent asked to stop must see thawed (by the run, or by itself) before it exits.
type QuiescedApp struct {
	Job   string
	RunID string
	// WorkflowID is the run's workflow, whose status tells whether it has thawed the host.
	WorkflowID string
	// Host is the application host, as this agent's own config gives it.
	Host       HostPlan
	SourcePath string
	// Resume is the job's resume script in this agent's config ("" = none) and Timeout
	// bounds it.
	Resume  string
	Timeout time.Duration
	Since   time.Time
}

func (q QuiescedApp) String() string {
	return fmt.Sprintf("host %s (job %s, run %s)", q.Host.Name, q.Job, q.RunID)
}

// Quiesced is the set of applications an agent holds quiesced. The zero value is empty and
// ready; it is safe for concurrent use.
type Quiesced struct {
	mu      sync.Mutex
	held    map[string]QuiescedApp
	changed chan struct{}
}

func quiescedKey(job, runID string) string { return job + "\x00" + runID }

// List returns the held applications, oldest first.
func (s *Quiesced) List() []QuiescedApp {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]QuiescedApp, 0, len(s.held))
	for _, q := range s.held {
		out = append(out, q)
	}
	slices.SortFunc(out, func(a, b QuiescedApp) int { return a.Since.Compare(b.Since) })
	return out
}

// Changed returns a channel closed at the next change of the set.
func (s *Quiesced) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

// notify wakes the waiters of Changed; s.mu is held.
func (s *Quiesced) notify() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

func (s *Quiesced) add(q QuiescedApp) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held == nil {
		s.held = map[string]QuiescedApp{}
	}
	s.held[quiescedKey(q.Job, q.RunID)] = q
	s.notify()
}

// Forget drops the application quiesced for job's run runID; it reports whether it was held.
func (s *Quiesced) Forget(job, runID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := quiescedKey(job, runID)
	if _, ok := s.held[k]; !ok {
		return false
	}
	delete(s.held, k)
	s.notify()
	return true
}

// thawedBy drops what a successful resume of a run undid. A takeover script does not count:
// the run still resumes the host after it.
func (s *Quiesced) thawedBy(in ScriptInput) {
	if in.Step == StepResume {
		s.Forget(in.Job, in.RunID)
	}
}

// Quiesced is the set of applications this agent quiesced and no resume has thawed yet.
func (a *Agent) Quiesced() *Quiesced { return &a.quiesced }

// trackScript keeps the quiesced set up to date around a script run: a quiesce is held from
// the moment the script starts (a failed or killed quiesce may have frozen part of the
// application; the run resumes it either way), a successful resume lets go.
// It returns the function to call with the script's outcome.
func (a *Agent) trackScript(ctx context.Context, in ScriptInput) func(ok bool) {
	if in.Step != StepQuiesce {
		return func(ok bool) {
			if ok {
				a.quiesced.thawedBy(in)
			}
		}
	}
	q := QuiescedApp{Job: in.Job, RunID: in.RunID, Host: in.Host, SourcePath: in.SourcePath, Timeout: in.Timeout, Since: time.Now()}
	if activity.IsActivity(ctx) {
		q.WorkflowID = activity.GetInfo(ctx).WorkflowExecution.ID
	}
	var err error
	if q.Resume, err = a.resumeScript(in.Job, in.Host.Name); err != nil && activity.IsActivity(ctx) {
		activity.GetLogger(ctx).Warn("no resume script known for the quiesced host: a shutdown cannot thaw it itself", "job", in.Job, "host", in.Host.Name, "error", err)
	}
	a.quiesced.add(q)
	return func(bool) {}
}

// resumeScript is the resume script this agent's config gives job's application on host
// (the failback host's own when host is that).
func (a *Agent) resumeScript(job, host string) (string, error) {
	cfg, err := a.loadConfig()
	if err != nil {
		return "", err
	}
	p, err := NewPlan(cfg, job)
	if err != nil {
		return "", err
	}
	if host != p.Application.Host && p.Failback != nil && host == p.Failback.Host {
		return p.Failback.Resume, nil
	}
	return p.Application.Resume, nil
}

// scriptRequest is how this agent runs in's script: locally for its own host or a host
// without SSH, over SSH otherwise.
func (a *Agent) scriptRequest(in ScriptInput) hostexec.Request {
	req := hostexec.Request{
		Host:       in.Host.Name,
		ScriptsDir: in.Host.Scripts,
		Script:     in.Script,
		Timeout:    in.Timeout,
		Env: []string{
			"REPLCTL_JOB=" + in.Job,
			"REPLCTL_STEP=" + string(in.Step),
			"REPLCTL_HOST=" + in.Host.Name,
			"REPLCTL_AGENT=" + a.Host,
			"REPLCTL_FAILED_HOST=" + in.FailedHost,
			"REPLCTL_RUN_ID=" + in.RunID,
			"REPLCTL_SOURCE_PATH=" + in.SourcePath,
			"REPLCTL_STATE_DIR=" + in.Host.State,
		},
	}
	// Our own host's scripts always run locally, even if others reach us over SSH.
	if in.Host.SSH != nil && in.Host.Name != a.Host {
		t := *in.Host.SSH
		req.SSH = &t
	}
	return req
}

// ResumeLocally runs q's resume script itself, outside any workflow, through the same runner
// as RunScript: the last resort of an agent that stops while it holds an application
// quiesced. Resume scripts must be idempotent: the run may resume the host too. On success
// q is no longer held.
func (a *Agent) ResumeLocally(ctx context.Context, q QuiescedApp) (hostexec.Result, error) {
	if q.Resume == "" {
		return hostexec.Result{}, fmt.Errorf("job %s has no resume script in agent %s's config: host %s stays quiesced", q.Job, a.Host, q.Host.Name)
	}
	in := ScriptInput{Job: q.Job, RunID: q.RunID, Step: StepResume, Agent: a.Host, Host: q.Host, Script: q.Resume, SourcePath: q.SourcePath, Timeout: q.Timeout}
	res, err := hostexec.Run(ctx, a.scriptRequest(in))
	switch {
	case err != nil:
		return res, fmt.Errorf("resume script %s on host %s: %w", q.Resume, q.Host.Name, err)
	case res.TimedOut:
		return res, fmt.Errorf("resume script %s on host %s timed out after %s", q.Resume, q.Host.Name, q.Timeout)
	case res.ExitCode != 0:
		return res, fmt.Errorf("resume script %s on host %s exited %d: %s", q.Resume, q.Host.Name, res.ExitCode, strings.TrimSpace(lastLine(res.OutputTail)))
	}
	a.quiesced.Forget(q.Job, q.RunID)
	return res, nil
}
