package activities

import (
	"context"
	"time"
)

// MaintainName is the registered name of Maintain: stable, because recorded histories refer
// to it.
const MaintainName = "Maintain"

// MaintainInput is the input of Maintain.
type MaintainInput struct {
	Job   string
	Agent string
	Repo  RepoLocation
	// Full also collects contents no image refers to (after pruning, killed pushes).
	Full bool
}

// MaintainResult says who maintained the repository and how long it took.
type MaintainResult struct {
	Agent    string
	Full     bool
	Duration time.Duration
}

// Maintain runs repository maintenance. Only one agent may do it at a time for a
// repository: the RepositoryMaintenance workflow (one workflow ID per repository) is the
// single owner.
func (a *Agent) Maintain(ctx context.Context, in MaintainInput) (MaintainResult, error) {
	start := time.Now()
	ctx, l, err := a.begin(ctx, in.Agent, Progress{Step: StepMaintain, Phase: "maintain"})
	if err != nil {
		return MaintainResult{}, err
	}
	defer l.stop()
	if in.Repo, err = a.authorizeMaintain(ctx, in); err != nil {
		return MaintainResult{}, err
	}
	err = a.dataplane().Maintain(ctx, a.repoConfig(in.Repo), in.Full)
	observe(ctx, in.Job, string(StepMaintain), start, err, 0, 0)
	if err != nil {
		return MaintainResult{}, a.fault(ctx, in.Job, StepMaintain, err, l.progress())
	}
	return MaintainResult{Agent: a.Host, Full: in.Full, Duration: time.Since(start)}, nil
}
