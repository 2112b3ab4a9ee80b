package workflows

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// CheckWorkflowName is `replctl check`: a preflight on every agent of the config.
const CheckWorkflowName = "Check"

// DefaultCheckWait is how long the check waits for an agent to take its host's check before
// it reports the agent as not reachable.
const DefaultCheckWait = 10 * time.Second

// checkStartToClose bounds one agent's check (its SSH probes are bounded far below).
const checkStartToClose = 2 * time.Minute

// CheckInput names the hosts to check (the CLI's config: every host, or a job's) and the job
// they are checked for ("" = every job). Each agent checks from its own config; the hosts here
// only say whose queues get a check.
type CheckInput struct {
	Job   string   `json:"job,omitempty"`
	Hosts []string `json:"hosts"`
	// Wait is the schedule-to-start timeout of each host's check (0 = DefaultCheckWait).
	Wait time.Duration `json:"wait,omitempty"`
}

// CheckResult is every host's checks.
type CheckResult struct {
	Job       string      `json:"job,omitempty"`
	CheckedAt time.Time   `json:"checked_at"`
	Hosts     []HostCheck `json:"hosts"`
	// Failed and Warned count the checks of those results over all hosts.
	Failed int `json:"failed"`
	Warned int `json:"warned"`
}

// HostCheck is one host's checks: what its agent found, or why it found nothing.
type HostCheck struct {
	Host string `json:"host"`
	// Reached: the host's agent ran the check.
	Reached     bool                   `json:"reached"`
	ConfigFile  string                 `json:"config_file,omitempty"`
	Fingerprint string                 `json:"fingerprint,omitempty"`
	Skew        time.Duration          `json:"skew,omitempty"`
	Checks      []activities.CheckItem `json:"checks"`
}

// Check runs CheckHost on every host's own queue at once, waits for all of them and compares
// the agents' config fingerprints. An agent that does not take its check within the wait is
// reported as not reachable; a check is tried at most twice. The checks' failures are in the
// result: the workflow itself fails only when it cannot run.
func Check(ctx workflow.Context, in CheckInput) (CheckResult, error) {
	wait := in.Wait
	if wait <= 0 {
		wait = DefaultCheckWait
	}
	futures := make([]workflow.Future, len(in.Hosts))
	for i, h := range in.Hosts {
		actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			TaskQueue:              HostQueue(h),
			ScheduleToStartTimeout: wait,
			StartToCloseTimeout:    checkStartToClose,
			RetryPolicy:            &temporal.RetryPolicy{MaximumAttempts: 2},
		})
		futures[i] = workflow.ExecuteActivity(actx, activities.CheckHostName, activities.CheckHostInput{Agent: h, Job: in.Job})
	}
	res := CheckResult{Job: in.Job, CheckedAt: workflow.Now(ctx)}
	for i, f := range futures {
		hc := HostCheck{Host: in.Hosts[i]}
		var r activities.CheckHostResult
		if err := f.Get(ctx, &r); err != nil {
			hc.Checks = []activities.CheckItem{agentFailure(in.Hosts[i], wait, err)}
		} else {
			hc.Reached, hc.ConfigFile, hc.Fingerprint, hc.Skew, hc.Checks = true, r.ConfigFile, r.Fingerprint, r.Skew, r.Items
		}
		res.Hosts = append(res.Hosts, hc)
	}
	compareFingerprints(res.Hosts)
	for _, h := range res.Hosts {
		for _, c := range h.Checks {
			switch c.Result {
			case activities.CheckFail:
				res.Failed++
			case activities.CheckWarn:
				res.Warned++
			}
		}
	}
	return res, nil
}

// agentFailure is the check item of a host whose agent did not check it.
func agentFailure(host string, wait time.Duration, err error) activities.CheckItem {
	it := activities.CheckItem{Check: "agent", Result: activities.CheckFail, Detail: rootMessage(err)}
	var te *temporal.TimeoutError
	var appErr *temporal.ApplicationError
	switch {
	case errors.As(err, &te) && te.TimeoutType() == enums.TIMEOUT_TYPE_SCHEDULE_TO_START:
		it.Detail = "agent not reachable: no agent polled queue " + HostQueue(host) + " within " + wait.String()
		it.Fix = "start the agent of " + host + " (systemctl start replctl-agent, or replctl agent --host " + host + ")"
	case errors.As(err, &te):
		it.Detail = "the agent took the check but did not finish it: " + te.Error()
		it.Fix = "see the agent's log on " + host
	case errors.As(err, &appErr) && appErr.Type() == activities.ErrTypeRefused:
		it.Fix = "give every host the same config file (replctl config validate on " + host + ")"
	case errors.As(err, &appErr) && appErr.Type() == activities.ErrTypeMisrouted:
		it.Fix = "start the agent of " + host + " with --host " + host + " and no other agent with that name"
	case strings.Contains(err.Error(), "not registered"):
		it.Fix = "upgrade the agent of " + host + ": it does not have the " + activities.CheckHostName + " activity"
	}
	return it
}

// compareFingerprints adds to each reached host a check of its config fingerprint against the
// other agents': the fingerprint most agents have (the first host's among equals) is the
// reference, and every other one fails.
func compareFingerprints(hosts []HostCheck) {
	var fps []string
	var counts []int
	for _, h := range hosts {
		if h.Fingerprint == "" {
			continue
		}
		found := false
		for i, fp := range fps {
			if fp == h.Fingerprint {
				counts[i]++
				found = true
			}
		}
		if !found {
			fps, counts = append(fps, h.Fingerprint), append(counts, 1)
		}
	}
	if len(fps) == 0 {
		return
	}
	ref := 0
	for i := range counts {
		if counts[i] > counts[ref] {
			ref = i
		}
	}
	n := 0
	for _, c := range counts {
		n += c
	}
	for i := range hosts {
		h := &hosts[i]
		if h.Fingerprint == "" {
			continue
		}
		it := activities.CheckItem{Check: "config fingerprint", Result: activities.CheckOK,
			Detail: short(h.Fingerprint) + ", same as " + strconv.Itoa(counts[ref]-1) + " other agent(s)"}
		if len(fps) == 1 {
			it.Detail = short(h.Fingerprint) + ", same on all " + strconv.Itoa(n) + " agent(s) checked"
		}
		if h.Fingerprint != fps[ref] {
			it.Result = activities.CheckFail
			it.Detail = short(h.Fingerprint) + " differs from " + short(fps[ref]) + " of " + strconv.Itoa(counts[ref]) + " other agent(s) (" + h.ConfigFile + ")"
			it.Fix = "give every host the same config file (agents read it at every step: no restart needed)"
		}
		h.Checks = append(h.Checks, it)
	}
}

// short is the first 12 hex digits of a fingerprint.
func short(fp string) string {
	if len(fp) > 12 {
		return fp[:12]
	}
	return fp
}
