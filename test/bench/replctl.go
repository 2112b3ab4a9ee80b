package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/runhistory"
	"github.com/replctl/replctl/internal/testworld"
	"github.com/replctl/replctl/workflows"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
)

// Agents the harness runs: a1 is the application and source host, b1 the target host, a2
// the next application/source host (takes over when a1 is killed).
var agentHosts = []string{"a1", "a2", "b1"}

// benchJob is one job of the bench config. Every job has its own target storage holding its
// replicas and its repository, so a fresh target (and repository) is one rm.
type benchJob struct {
	Name    string // job name
	Dataset string // source (and target) dataset name
	Target  string // target storage name
}

// replctlHarness runs replctl's server and agents as processes with a generated config.
type replctlHarness struct {
	bin       string // CLI and agents
	serverBin string // `replctl server`
	work      string // BENCH_DIR/work/<mode>
	srcRoot   string // the source storage (BENCH_DIR/data/<mode>)
	cfgFile   string
	markers   string // where the bench's scripts log their times
	heartbeat time.Duration
	addr      string
	server    *testworld.Proc
	serverDB  string
	c         client.Client
	journal   string // the agents' --change-journal
	agents    map[string]*testworld.Proc
	pprof     map[string]string // host → pprof address
	jobs      []benchJob
	logf      func(string, ...any)
	// restartForRSS: clear_refs is not permitted, so agents are restarted to reset peaks.
	restartForRSS bool
	// precopy is the jobs' precopy setting ("" = the default, auto).
	precopy string
}

func (h *replctlHarness) targetRoot(j benchJob) string {
	return filepath.Join(h.work, "storage", j.Target)
}

// config is the bench config. The source storage is the dataset cache; each job has its own
// target storage with its own repository on it (target side, same disk). The hosts are the
// test world's four, each attaching every storage.
func (h *replctlHarness) config() config.Config {
	storage := []config.Storage{{Name: "src", Path: h.srcRoot}}
	for _, j := range h.jobs {
		storage = append(storage, config.Storage{Name: j.Target, Path: h.targetRoot(j)})
	}
	cfg := config.Config{
		Temporal: config.Temporal{Address: h.addr, Namespace: "default"},
		Storage:  storage,
		Hosts:    testworld.WorldHosts(h.work, storage),
	}
	for _, j := range h.jobs {
		cfg.Jobs = append(cfg.Jobs, config.Job{
			Name:   j.Name,
			Source: config.Endpoint{Storage: "src", Dataset: j.Dataset},
			Target: config.Endpoint{Storage: j.Target, Dataset: j.Dataset},
			Application: config.Application{Host: "a1", Quiesce: "freeze.sh", Resume: "thaw.sh", Takeover: "takeover.sh",
				Timeout: time.Minute},
			Order:      config.Order{Application: []string{"a1", "a2"}, Source: []string{"a1", "a2"}, Target: []string{"b1", "a2"}},
			Timeouts:   config.Timeouts{Heartbeat: h.heartbeat, ScheduleToStart: 10 * time.Second, StartToClose: 2 * time.Hour},
			Retention:  config.Retention{Replicas: 2, Images: 10},
			Repository: config.Repository{Storage: j.Target, Path: ".replctl/repository"},
			Precopy:    h.precopy,
		})
	}
	return cfg
}

// writeConfig writes the bench config to h.cfgFile.
func (h *replctlHarness) writeConfig() error { return testworld.WriteConfig(h.cfgFile, h.config()) }

// writeScripts writes the application scripts. quiesce logs when it ENDS and resume when
// it STARTS (ns since the epoch): the application's freeze window as the scripts see it.
func (h *replctlHarness) writeScripts() error {
	return testworld.WriteScripts(h.work, map[string]string{
		"freeze.sh": "#!/bin/sh\n# bench quiesce hook: nothing to freeze; logs when it finished.\n" +
			"echo \"$REPLCTL_RUN_ID quiesce-end $(date +%s%N)\" >> " + strconv.Quote(h.markers) + "\n",
		"thaw.sh": "#!/bin/sh\n# bench resume hook: logs when it started.\n" +
			"echo \"$REPLCTL_RUN_ID resume-start $(date +%s%N)\" >> " + strconv.Quote(h.markers) + "\n",
		"takeover.sh": "#!/bin/sh\n# bench takeover hook: logs when it ran and for whom.\n" +
			"echo \"$REPLCTL_RUN_ID takeover-start $(date +%s%N) failed=$REPLCTL_FAILED_HOST agent=$REPLCTL_AGENT\" >> " + strconv.Quote(h.markers) + "\n",
	})
}

// startServer starts `replctl server` on a free port with its SQLite file in a temp dir and
// connects a client.
func (h *replctlHarness) startServer(ctx context.Context) error {
	port, err := testworld.FreePort()
	if err != nil {
		return err
	}
	dbDir, err := os.MkdirTemp("", "replctl-bench-server-")
	if err != nil {
		return err
	}
	h.serverDB = filepath.Join(dbDir, "temporal.db")
	h.addr = fmt.Sprintf("127.0.0.1:%d", port)
	h.server, err = startProc("server", filepath.Join(h.work, "logs", "server.log"), h.serverBin,
		"server", "--db", h.serverDB, "--port", strconv.Itoa(port), "--ui-port", "-1", "--ip", "127.0.0.1")
	if err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := client.DialContext(dctx, client.Options{HostPort: h.addr, Namespace: "default", Logger: quietLogger{}})
		if err == nil {
			_, err = c.CheckHealth(dctx, &client.CheckHealthRequest{})
			if err == nil {
				// The namespace must answer too, not only the frontend.
				_, err = c.DescribeTaskQueue(dctx, "replctl", enums.TASK_QUEUE_TYPE_WORKFLOW)
			}
			if err == nil {
				cancel()
				h.c = c
				return nil
			}
			c.Close()
		}
		cancel()
		if !h.server.Alive() || time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(h.work, "logs", "server.log"))
			return fmt.Errorf("replctl server on %s not ready (%v); log:\n%s", h.addr, err, testworld.Tail(string(b), 3000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (h *replctlHarness) stopServer() {
	if h.c != nil {
		h.c.Close()
	}
	if h.server != nil {
		h.server.Stop(15 * time.Second)
	}
	if h.serverDB != "" {
		os.RemoveAll(filepath.Dir(h.serverDB))
	}
}

// startAgent starts `replctl agent --host host` and waits until it polls.
func (h *replctlHarness) startAgent(ctx context.Context, host string) error {
	args := []string{"agent", "--host", host, "--config", h.cfgFile, "--address", h.addr, "--log-level", "warn", "--change-journal=" + h.journal}
	if a := h.pprof[host]; a != "" {
		args = append(args, "--pprof", a)
	}
	p, err := startProc("agent "+host, filepath.Join(h.work, "logs", "agent-"+host+".log"), h.bin, args...)
	if err != nil {
		return err
	}
	h.agents[host] = p
	return p.WaitLog(ctx, "agent "+host+" polling", 60*time.Second)
}

// restartAgents stops all agents, optionally wipes their state dirs (kopia client config
// and caches, for a fresh repository), and starts them again.
func (h *replctlHarness) restartAgents(ctx context.Context, wipeState bool) error {
	h.stopAgents()
	if wipeState {
		for _, host := range agentHosts {
			if err := removeAll(ctx, filepath.Join(h.work, "hosts", host)); err != nil {
				return err
			}
		}
	}
	for _, host := range agentHosts {
		if err := h.startAgent(ctx, host); err != nil {
			return err
		}
	}
	return nil
}

func (h *replctlHarness) stopAgents() {
	for host, p := range h.agents {
		p.Stop(10 * time.Second)
		delete(h.agents, host)
	}
}

// wipeTarget removes a job's target storage (replicas, repository, fence) and recreates
// it empty.
func (h *replctlHarness) wipeTarget(ctx context.Context, j benchJob) error {
	root := h.targetRoot(j)
	if err := removeAll(ctx, root); err != nil {
		return err
	}
	return os.MkdirAll(root, 0o755)
}

// resetPeaks resets the peak RSS of every running agent: with clear_refs when the machine
// allows it, else by restarting the agents (keeping their state).
func (h *replctlHarness) resetPeaks(ctx context.Context) error {
	if h.restartForRSS {
		return h.restartAgents(ctx, false)
	}
	for host, p := range h.agents {
		if err := resetPeakRSS(p.Pid()); err != nil {
			return fmt.Errorf("reset peak RSS of agent %s (pid %d): %w", host, p.Pid(), err)
		}
	}
	return nil
}

func (h *replctlHarness) peaks() map[string]int64 {
	out := map[string]int64{}
	for host, p := range h.agents {
		if v, err := peakRSS(p.Pid()); err == nil {
			out[host] = v
		}
	}
	return out
}

// cliStatus is the part of `replctl start --wait -o json` the bench reads.
type cliStatus struct {
	WorkflowID string `json:"workflow_id"`
	RunID      string `json:"run_id"`
	Phase      string `json:"phase"`
	Error      string `json:"error"`
	Replica    *struct {
		Path     string `json:"path"`
		Link     string `json:"link"`
		Agent    string `json:"agent"`
		Verified bool   `json:"verified"`
		Linked   int64  `json:"linked_files"`
		Restored int64  `json:"restored_files"`
		Kept     int64  `json:"kept_files"`
		Recycled string `json:"recycled"`
	} `json:"replica"`
	Takeovers []struct {
		Step, From, To, Reason string
	} `json:"takeovers"`
	Scripts []struct {
		Step     string
		Agent    string
		Duration time.Duration
	} `json:"scripts"`
}

// decodeStart reads what `start --wait -o json` printed: the final status, or on failure
// {"error": {...}, "result": status}, whose error message goes into the status.
func decodeStart(out string, st *cliStatus) error {
	var failed struct {
		Error  *struct{ Message string } `json:"error"`
		Result *cliStatus                `json:"result"`
	}
	if json.Unmarshal([]byte(out), &failed) == nil && failed.Error != nil {
		if failed.Result != nil {
			*st = *failed.Result
		}
		st.Error = failed.Error.Message
		return nil
	}
	return json.Unmarshal([]byte(out), st)
}

// replctlRun is one `replctl start JOB --wait` as the bench saw it.
type replctlRun struct {
	Status  cliStatus
	Elapsed time.Duration // the CLI's wall time
	// Exited is when the CLI ended. A timed run ends there (then the sync): reading the
	// history and the markers afterwards is the bench's own work.
	Exited  time.Time
	History *runHistory
	// Markers are the script times of this run (quiesce-end, resume-start, takeover-start).
	Markers map[string]time.Time
}

// startCLI launches `replctl start JOB --wait -o json`; runID receives the run ID as soon as
// the CLI prints it. wait returns the CLI's result.
func (h *replctlHarness) startCLI(ctx context.Context, job string, timeout time.Duration) (runID <-chan string, wait func() (*replctlRun, error), err error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	cmd := exec.CommandContext(cctx, h.bin, "start", job, "--wait", "-o", "json", "--config", h.cfgFile, "--address", h.addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		cancel()
		return nil, nil, err
	}
	ids := make(chan string, 1)
	var errText strings.Builder
	scanned := make(chan struct{})
	began := time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, nil, fmt.Errorf("replctl start %s: %w", job, err)
	}
	go func() {
		defer close(scanned)
		re := regexp.MustCompile(` run (\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			errText.WriteString(line + "\n")
			if m := re.FindStringSubmatch(line); m != nil && strings.HasPrefix(line, "started job") {
				select {
				case ids <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	wait = func() (*replctlRun, error) {
		defer cancel()
		<-scanned
		err := cmd.Wait()
		r := &replctlRun{Exited: time.Now()}
		r.Elapsed = r.Exited.Sub(began)
		if cctx.Err() == context.DeadlineExceeded {
			return r, fmt.Errorf("replctl start %s: no result within %s", job, timeout)
		}
		if jerr := decodeStart(stdout.String(), &r.Status); jerr != nil && err == nil {
			err = fmt.Errorf("replctl start %s -o json: unreadable output: %w: %s", job, jerr, testworld.Tail(stdout.String(), 500))
		}
		if err != nil {
			return r, fmt.Errorf("replctl start %s: %w (phase %q, error %q): %s", job, err, r.Status.Phase, r.Status.Error, testworld.Tail(errText.String(), 2000))
		}
		return r, nil
	}
	return ids, wait, nil
}

// run starts a job, waits for it and reads its history and script markers.
func (h *replctlHarness) run(ctx context.Context, job string, timeout time.Duration) (*replctlRun, error) {
	_, wait, err := h.startCLI(ctx, job, timeout)
	if err != nil {
		return nil, err
	}
	r, err := wait()
	if err != nil {
		return r, err
	}
	return r, h.complete(ctx, r)
}

// complete adds the run's history and markers.
func (h *replctlHarness) complete(ctx context.Context, r *replctlRun) error {
	hist, err := h.history(ctx, r.Status.WorkflowID, r.Status.RunID)
	if err != nil {
		return err
	}
	r.History = hist
	r.Markers, err = h.readMarkers(r.Status.RunID)
	return err
}

func (h *replctlHarness) readMarkers(runID string) (map[string]time.Time, error) {
	b, err := os.ReadFile(h.markers)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	out := map[string]time.Time{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != runID {
			continue
		}
		ns, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			continue
		}
		if _, seen := out[f[1]]; !seen {
			out[f[1]] = time.Unix(0, ns)
		}
	}
	return out, nil
}

// runHistory is what the bench takes from a run's workflow history.
type runHistory struct{ *runhistory.History }

func (h *replctlHarness) history(ctx context.Context, wfID, runID string) (*runHistory, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hist, err := runhistory.Load(ctx, h.c, wfID, runID)
	if err != nil {
		return nil, fmt.Errorf("history of %s run %s: %w", wfID, runID, err)
	}
	return &runHistory{hist}, nil
}

// find returns the first activity attempt matching typ (and step, for RunScript) with
// outcome (any outcome, open ones too, when "").
func (rh *runHistory) find(typ string, step activities.Step, outcome runhistory.Outcome) *runhistory.Attempt {
	for _, a := range rh.Attempts {
		if a.Type == typ && (step == "" || a.Step == step) && (outcome == "" || a.Outcome == outcome) {
			return a
		}
	}
	return nil
}

// freeze is the application's freeze window from the history: the completion of the
// quiesce script's activity to the start of the resume script's activity. When the quiesce
// travelled in the push (one activity for both), it is the push part's time as the agent
// measured it (PushResult.Duration) plus the push's completion to the resume's start; when
// the resume travelled there too, the push part's time alone (the thaw starts after it).
func (rh *runHistory) freeze() (time.Duration, error) {
	if p, res := rh.fusedPush(); p != nil && res.Thawed != nil {
		return res.Duration, nil
	}
	r := rh.find(activities.RunScriptName, activities.StepResume, "")
	if r == nil || r.Started.IsZero() {
		return 0, errors.New("history has no started resume script")
	}
	if q := rh.find(activities.RunScriptName, activities.StepQuiesce, runhistory.Completed); q != nil {
		return r.Started.Sub(q.Closed), nil
	}
	if p, res := rh.fusedPush(); p != nil {
		return res.Duration + r.Started.Sub(p.Closed), nil
	}
	return 0, errors.New("history has no completed quiesce script, alone or in a push")
}

// fusedPush is the completed push that carried the quiesce, and its result (nil if none).
func (rh *runHistory) fusedPush() (*runhistory.Attempt, activities.PushResult) {
	for _, a := range rh.Attempts {
		var res activities.PushResult
		if a.Type == activities.PushName && a.Script != nil && a.Outcome == runhistory.Completed &&
			converter.GetDefaultDataConverter().FromPayloads(a.Result, &res) == nil && res.Quiesce != nil {
			return a, res
		}
	}
	return nil, activities.PushResult{}
}

// stepName names an attempt's step in the report: the script's step for RunScript, else
// the activity type in lower case.
func stepName(a *runhistory.Attempt) string {
	if a.Type == activities.RunScriptName {
		return string(a.Step)
	}
	return strings.ToLower(a.Type)
}

// steps is the duration (start to close) of each completed step activity.
func (rh *runHistory) steps() map[string]float64 {
	out := map[string]float64{}
	for _, a := range rh.Attempts {
		if a.Outcome != runhistory.Completed || a.Started.IsZero() {
			continue
		}
		out[stepName(a)] += a.Closed.Sub(a.Started).Seconds()
	}
	// A push that carried the quiesce: the script's time is the quiesce step's, and the
	// precopy's it did first (with the preflight) the precopy step's.
	if _, res := rh.fusedPush(); res.Quiesce != nil {
		q := res.Quiesce.Duration.Seconds()
		out[string(activities.StepQuiesce)] += q
		out[string(activities.StepPush)] -= q
		if pc := res.Precopy; pc != nil {
			out[string(activities.StepPrecopy)] += pc.Duration.Seconds()
			out[string(activities.StepPush)] -= pc.Duration.Seconds()
		}
		if th := res.Thawed; th != nil {
			out[string(activities.StepResume)] += th.Duration.Seconds()
			out[string(activities.StepPush)] -= th.Duration.Seconds()
		}
	}
	return out
}

// activityName is an attempt's type, with the script's step for RunScript.
func activityName(a *runhistory.Attempt) string {
	if a.Type == activities.RunScriptName && a.Step != "" {
		return a.Type + " " + string(a.Step)
	}
	return a.Type
}

// timeline describes every activity attempt with times relative to t0.
func (rh *runHistory) timeline(t0 time.Time) []string {
	rel := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return fmt.Sprintf("%+.3f", t.Sub(t0).Seconds())
	}
	var out []string
	for _, a := range rh.Attempts {
		q := a.Queue
		if a.Local {
			q = "(local activity)"
		}
		out = append(out, fmt.Sprintf("%-18s on %-19s scheduled %8s started %8s closed %8s %-9s by %s",
			activityName(a), q, rel(a.Scheduled), rel(a.Started), rel(a.Closed), a.Outcome, agentOf(a.Identity)))
	}
	for _, w := range rh.WorkflowTaskTimeouts {
		out = append(out, fmt.Sprintf("workflow task timed out (%s) at %s", runhistory.TimeoutName(w.TimeoutType), rel(w.TimedOut)))
	}
	return out
}

// agentOf is the host of an agent's identity, or the identity itself if it is no agent's.
func agentOf(identity string) string {
	if host, ok := workflows.HostOfIdentity(identity); ok {
		return host
	}
	return identity
}

// firstStartBy is the first activity attempt started by identity after t.
func (rh *runHistory) firstStartBy(identity string, after time.Time) *runhistory.Attempt {
	return rh.FirstStartBy(func(id string) bool { return id == identity }, after)
}

// pushStats reads the completed push's Files/Reused counters.
func (rh *runHistory) pushStats() (files, reused int64) {
	if a := rh.find(activities.PushName, "", runhistory.Completed); a != nil {
		var res activities.PushResult
		if converter.GetDefaultDataConverter().FromPayloads(a.Result, &res) == nil {
			return res.Files, res.Reused
		}
	}
	return 0, 0
}

// pendingStarted reports whether the latest run of wfID has a started activity of type typ.
func (h *replctlHarness) pendingStarted(ctx context.Context, wfID, runID, typ string) (bool, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d, err := h.c.DescribeWorkflowExecution(ctx, wfID, runID)
	if err != nil {
		return false, false, err
	}
	running := d.GetWorkflowExecutionInfo().GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING
	for _, pa := range d.GetPendingActivities() {
		if pa.GetActivityType().GetName() == typ && pa.GetState() == enums.PENDING_ACTIVITY_STATE_STARTED {
			return true, running, nil
		}
	}
	return false, running, nil
}

// quietLogger drops the SDK client's log lines (the bench prints its own).
type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}
