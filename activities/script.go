package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities/hostexec"
)

// RunScriptName is the registered name of RunScript: stable, because recorded histories
// refer to it.
const RunScriptName = "RunScript"

// ScriptInput is the input of RunScript.
type ScriptInput struct {
	Job   string
	RunID string
	// Step is StepQuiesce, StepResume, StepTakeover or StepCheck.
	Step Step
	// Agent is the agent whose queue this was sent to.
	Agent string
	// Host is the host the script belongs to and runs on.
	Host   HostPlan
	Script string
	// FailedHost is the host being taken over (takeover scripts).
	FailedHost string
	// SourcePath is the source dataset as Host sees it ("" if not attached).
	SourcePath string
	Timeout    time.Duration
}

// ScriptResult is what a script run did. It is recorded in history, so the output is a tail.
type ScriptResult struct {
	Step       Step
	Host       string
	Agent      string
	Script     string
	Remote     bool
	ExitCode   int
	TimedOut   bool
	OutputTail string
	Duration   time.Duration
}

// RunScript runs a host's script on that host: as a local process when the host is this
// machine (or is configured `connect: local`), over SSH otherwise. A non-zero exit fails the
// activity with ErrTypeScriptFailed and the result as details.
func (a *Agent) RunScript(ctx context.Context, in ScriptInput) (ScriptResult, error) {
	ctx, l, err := a.begin(ctx, in.Agent, Progress{Step: in.Step, Phase: "script " + in.Script})
	if err != nil {
		return ScriptResult{}, err
	}
	// From here on, the host, its scripts dir, SSH target and source path are this agent's
	// own values: the input's were only compared with them.
	in.Host, in.SourcePath, err = a.authorizeScript(ctx, in)
	if err != nil {
		l.stop()
		return ScriptResult{}, err
	}
	return a.runScript(ctx, in, l.stop)
}

// runScript runs in's script, already checked against this agent's config, and maps its
// outcome to the activity's result and error; leaseDone is called as soon as the script
// ended (RunScript's lease ends there, a fused quiesce's goes on into its push).
func (a *Agent) runScript(ctx context.Context, in ScriptInput, leaseDone func()) (_ ScriptResult, rerr error) {
	req := a.scriptRequest(in)
	settled := a.trackScript(ctx, in)
	began := time.Now()
	res, err := hostexec.Run(ctx, req)
	leaseDone()
	settled(err == nil && res.ExitCode == 0 && !res.TimedOut)
	defer func() { observe(ctx, in.Job, "script_"+string(in.Step), began, rerr, 0, 0) }()
	out := ScriptResult{Step: in.Step, Host: in.Host.Name, Agent: a.Host, Script: in.Script, Remote: res.Remote, ExitCode: res.ExitCode, TimedOut: res.TimedOut, OutputTail: res.OutputTail, Duration: res.Duration}
	switch {
	case errors.Is(err, hostexec.ErrHostKey):
		return out, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeHostKey, err)
	case errors.Is(err, hostexec.ErrUnreachable):
		return out, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeHostUnreachable, err)
	case errors.Is(err, hostexec.ErrNoScript):
		return out, badInput(err)
	case err != nil:
		if c := leaseCause(ctx); c != nil {
			return out, c
		}
		return out, err
	}
	if res.ExitCode != 0 || res.TimedOut {
		why := fmt.Sprintf("exited %d", res.ExitCode)
		if res.TimedOut {
			why = fmt.Sprintf("timed out after %s", in.Timeout)
		}
		msg := fmt.Sprintf("%s script %s on host %s (run by agent %s) %s: %s", in.Step, in.Script, in.Host.Name, a.Host, why, strings.ToValidUTF8(lastLine(res.OutputTail), "\uFFFD"))
		return out, temporal.NewNonRetryableApplicationError(msg, ErrTypeScriptFailed, nil, out)
	}
	return out, nil
}

func lastLine(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			return s[i+1:]
		}
	}
	return s
}
