package activities

// The agent is the authority over its own host. Temporal is only a transport: whoever can
// reach the frontend can schedule an activity on any host's queue with any input. So every
// activity that touches this host (runs a script, reads a dataset, writes a target, opens a
// repository, dials a host) resolves the job against THIS agent's own config file and
//
//   - refuses a job the config lacks, an agent that is not in the job's order for the
//     step's role, a failed host it may not act for, a dataset that is not the job's;
//   - compares every path, script name, SSH target and retention value of the input with
//     its own value, and refuses any difference, naming the field and both values;
//   - then runs with its OWN values (equal by then), never with the input's.
//
// A refusal is a non-retryable error of type Refused (another agent would be asked the same
// thing), counted in replctl_refused_total{activity,field} and logged at WARN.
//
// Configs that differ between hosts: each agent checks only what touches its own host, with
// its own config read at the start of the activity. A difference that matters to this host
// (another scripts dir, mount path, repository, order) refuses the step with both values named;
// a difference elsewhere does not. A config edited during a run is read by the next activity:
// a changed value refuses it the same way, so a run never mixes old and new paths on a host.

import (
	"context"
	"errors"
	"fmt"
	"path"
	"reflect"
	"slices"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/config"
)

// ErrTypeRefused is the error type of an activity the agent's own config does not allow.
const ErrTypeRefused = "Refused"

// grant is one activity's check against the agent's own config.
type grant struct {
	ctx      context.Context
	agent    string
	activity string
	job      string
	plan     Plan
}

// authorize resolves job against the agent's own config file. It refuses a job the config
// does not have, or a config that does not load.
func (a *Agent) authorize(ctx context.Context, activityName, job string) (*grant, error) {
	g := &grant{ctx: ctx, agent: a.Host, activity: activityName, job: job}
	cfg, err := a.loadConfig()
	if err != nil {
		return nil, g.refuse("Job", job, "", fmt.Sprintf("its config %s does not load: %v", a.ConfigFile, err))
	}
	p, err := NewPlan(cfg, job)
	if err != nil {
		return nil, g.refuse("Job", job, "", fmt.Sprintf("its config %s has no such job: %v", a.ConfigFile, err))
	}
	g.plan = p
	return g, nil
}

// refuse returns (and counts, and logs) the refusal of field.
func (g *grant) refuse(field string, got, own any, why string) error {
	msg := fmt.Sprintf("agent %s refused %s of job %q: %s: %s", g.agent, g.activity, g.job, field, why)
	if why == "" {
		msg = fmt.Sprintf("agent %s refused %s of job %q: %s is %s in the activity input, but agent %s's own config gives %s",
			g.agent, g.activity, g.job, field, show(got), g.agent, show(own))
	}
	if activity.IsActivity(g.ctx) {
		activity.GetLogger(g.ctx).Warn("refused activity input", "activity", g.activity, "job", g.job, "field", field, "input", show(got), "own", show(own), "why", why)
		activity.GetMetricsHandler(g.ctx).WithTags(map[string]string{"activity": g.activity, "field": field}).Counter("replctl_refused_total").Inc(1)
	}
	return temporal.NewNonRetryableApplicationError(msg, ErrTypeRefused, nil)
}

// show renders a value for a refusal message.
func show(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case Step:
		return fmt.Sprintf("%q", string(v))
	case nil:
		return "nothing"
	case *SSH:
		if v == nil {
			return "no SSH (local)"
		}
		return fmt.Sprintf("ssh %s@%s (key %s, known_hosts %s)", v.User, v.Address, v.KeyFile, v.KnownHostsFile)
	}
	return fmt.Sprintf("%+v", v)
}

// same refuses field unless got equals own.
func (g *grant) same(field string, got, own any) error {
	if reflect.DeepEqual(got, own) {
		return nil
	}
	return g.refuse(field, got, own, "")
}

// inOrder refuses unless this agent is in order (the takeover order of role).
func (g *grant) inOrder(role string, order []string) error {
	if slices.Contains(order, g.agent) {
		return nil
	}
	return g.refuse("Agent", g.agent, order, fmt.Sprintf("%q is not in the job's %s order %v in its own config", g.agent, role, order))
}

// dataset returns the index of ds in the endpoint's datasets, or refuses it.
func (g *grant) dataset(field, ds string, e Endpoint) (int, error) {
	i := slices.Index(e.List(), ds)
	if i < 0 {
		return 0, g.refuse(field, ds, e.List(), fmt.Sprintf("%q is not a dataset of the job on storage %s (its own config has %v)", ds, e.Storage, e.List()))
	}
	return i, nil
}

// repo checks the repository location of the input and returns the agent's own.
func (g *grant) repo(in RepoLocation) (RepoLocation, error) {
	own, err := g.plan.Repo(g.agent)
	if err != nil {
		return RepoLocation{}, g.refuse("Repo", in.Dir, "", fmt.Sprintf("cannot be resolved from its own config: %v", err))
	}
	if err := g.same("Repo.Dir", in.Dir, own.Dir); err != nil {
		return RepoLocation{}, err
	}
	if err := g.same("Repo.PasswordFile", in.PasswordFile, own.PasswordFile); err != nil {
		return RepoLocation{}, err
	}
	if len(in.Via) == 0 && len(own.Via) == 0 {
		return own, nil
	}
	return own, g.same("Repo.Via", in.Via, own.Via)
}

// target finds the target of the job whose order holds this agent and whose datasets hold
// ds; it refuses when there is none.
func (g *grant) target(ds string) (TargetPlan, int, error) {
	var orders [][]string
	for _, t := range g.plan.AllTargets() {
		orders = append(orders, t.Order)
		if !slices.Contains(t.Order, g.agent) {
			continue
		}
		if i := slices.Index(t.List(), ds); i >= 0 {
			return t, i, nil
		}
	}
	return TargetPlan{}, 0, g.refuse("Dataset", ds, nil, fmt.Sprintf("%q is not a dataset of a target whose order holds agent %s in its own config (target orders %v)", ds, g.agent, orders))
}

// root checks a storage root of the input against the agent's own mount of storage.
func (g *grant) root(field, in, storage string) error {
	own, err := g.plan.RootOf(g.agent, storage)
	if err != nil {
		return g.refuse(field, in, "", fmt.Sprintf("cannot be resolved from its own config: %v", err))
	}
	return g.same(field, in, own)
}

// retention checks the replica retention of the input against the job's.
func (g *grant) retention(keep int, within time.Duration) error {
	if err := g.same("Keep", keep, g.plan.Retention.Replicas); err != nil {
		return err
	}
	return g.same("KeepWithin", within, g.plan.Retention.ReplicasWithin)
}

// authorizeScript checks a script run and returns the host (with its scripts dir, state dir
// and SSH target) and source path from the agent's own config.
func (a *Agent) authorizeScript(ctx context.Context, in ScriptInput) (HostPlan, string, error) {
	g, err := a.authorize(ctx, RunScriptName, in.Job)
	if err != nil {
		return HostPlan{}, "", err
	}
	p := g.plan
	own, err := p.Host(in.Host.Name)
	if err != nil {
		return HostPlan{}, "", g.refuse("Host", in.Host.Name, nil, fmt.Sprintf("%q is not a host of the job in its own config", in.Host.Name))
	}
	switch in.Step {
	case StepQuiesce, StepResume:
		app, order := p.Application, p.Order.Application
		if in.Host.Name != app.Host && p.Failback != nil && in.Host.Name == p.Failback.Host {
			app, order = *p.Failback, []string{p.Failback.Host}
		}
		if err := g.same("Host", in.Host.Name, app.Host); err != nil {
			return HostPlan{}, "", err
		}
		if err := g.inOrder(RoleApplication, order); err != nil {
			return HostPlan{}, "", err
		}
		script := app.Quiesce
		if in.Step == StepResume {
			script = app.Resume
		}
		if err := g.same("Script", in.Script, script); err != nil {
			return HostPlan{}, "", err
		}
	case StepCheck:
		// A failback asks the primary application host whether the application is stopped.
		if err := g.failbackAllowed(); err != nil {
			return HostPlan{}, "", err
		}
		if err := g.same("Host", in.Host.Name, p.Application.Host); err != nil {
			return HostPlan{}, "", err
		}
		if err := g.inOrder(RoleApplication, p.Order.Application); err != nil {
			return HostPlan{}, "", err
		}
		if err := g.same("Script", in.Script, p.Application.Check); err != nil {
			return HostPlan{}, "", err
		}
	case StepTakeover:
		if err := g.same("Script", in.Script, p.Application.Takeover); err != nil {
			return HostPlan{}, "", err
		}
		if err := g.same("FailedHost", in.FailedHost, in.Host.Name); err != nil {
			return HostPlan{}, "", err
		}
		if !p.mayTakeOver(a.Host, in.FailedHost) {
			return HostPlan{}, "", g.refuse("FailedHost", in.FailedHost, nil, fmt.Sprintf("%q does not come before agent %s in any takeover order of the job in its own config", in.FailedHost, a.Host))
		}
	default:
		return HostPlan{}, "", g.refuse("Step", in.Step, nil, fmt.Sprintf("%q is not a script step (quiesce, resume, takeover, check)", in.Step))
	}
	for _, f := range []struct {
		field    string
		got, own any
	}{
		{"Host.Scripts", in.Host.Scripts, own.Scripts},
		{"Host.State", in.Host.State, own.State},
		{"Host.SSH", in.Host.SSH, own.SSH},
	} {
		if err := g.same(f.field, f.got, f.own); err != nil {
			return HostPlan{}, "", err
		}
	}
	src, _ := p.SourceDir(own.Name) // "" when the host does not see the source
	if err := g.same("SourcePath", in.SourcePath, src); err != nil {
		return HostPlan{}, "", err
	}
	return own, src, nil
}

// failbackAllowed refuses a failback step unless the agent's own config lets the job fail
// back (failback.allow): a failback replaces a live source dataset.
func (g *grant) failbackAllowed() error {
	if fg := g.plan.FailbackGuard; fg != nil && fg.Allow {
		return nil
	}
	return g.refuse("Failback", true, false, "is a failback step, but the job's failback.allow is not true in agent "+g.agent+"'s own config")
}

// roleLists are the takeover orders of every role of the plan.
func (p Plan) roleLists() [][]string {
	lists := [][]string{p.Order.Application, p.Order.Source}
	for _, t := range p.AllTargets() {
		lists = append(lists, t.Order)
	}
	return lists
}

// mayTakeOver tells whether agent may act for failed: failed comes before agent in one of
// the job's takeover orders.
func (p Plan) mayTakeOver(agent, failed string) bool {
	for _, order := range p.roleLists() {
		f, a := slices.Index(order, failed), slices.Index(order, agent)
		if f >= 0 && a > f {
			return true
		}
	}
	return false
}

// authorizePush checks a push or precopy (step) of dataset from sourceDir and returns in
// with the agent's own source dir, repository and on_unsupported policy. A failback push
// (followLink) reads a target's published replica: the agent must be in that target's order.
func (a *Agent) authorizePush(ctx context.Context, step Step, in PushInput) (PushInput, error) {
	name := PushName
	if step == StepPrecopy {
		name = PrecopyName
	}
	g, err := a.authorize(ctx, name, in.Job)
	if err != nil {
		return PushInput{}, err
	}
	p := g.plan
	storage := p.Source.Storage
	if in.FollowLink {
		if err := g.failbackAllowed(); err != nil {
			return PushInput{}, err
		}
		t, _, err := g.target(in.Dataset)
		if err != nil {
			return PushInput{}, err
		}
		storage = t.Storage
	} else {
		if err := g.inOrder(RoleSource, p.Order.Source); err != nil {
			return PushInput{}, err
		}
		if _, err := g.dataset("Dataset", in.Dataset, p.Source); err != nil {
			return PushInput{}, err
		}
	}
	own, err := p.DatasetDir(a.Host, storage, in.Dataset)
	if err != nil {
		return PushInput{}, g.refuse("SourceDir", in.SourceDir, "", fmt.Sprintf("cannot be resolved from its own config: %v", err))
	}
	if err := g.same("SourceDir", in.SourceDir, own); err != nil {
		return PushInput{}, err
	}
	if !in.FollowLink {
		// The dataset is read by path: no component of it beneath the storage root may be a
		// symlink (a missing dataset is left to the push to report).
		root, _ := p.RootOf(a.Host, storage)
		fd, err := dataplane.OpenDirBeneath(root, path.Clean(in.Dataset), false)
		if errors.Is(err, dataplane.ErrUnsafePath) {
			return PushInput{}, g.refuse("SourceDir", in.SourceDir, nil, fmt.Sprintf("cannot be read beneath the storage root %s: %v", root, err))
		}
		if err == nil {
			_ = unix.Close(fd)
		}
	}
	// A workflow from before on_unsupported sends none: the agent's own value applies.
	if in.OnUnsupported != "" {
		if err := g.same("OnUnsupported", in.OnUnsupported, p.OnUnsupported); err != nil {
			return PushInput{}, err
		}
	}
	in.SourceDir, in.OnUnsupported = own, p.OnUnsupported
	in.Repo, err = g.repo(in.Repo)
	return in, err
}

// pullGrant is what authorizePull allows a pull, from the agent's own config.
type pullGrant struct {
	Root          string
	Repo          RepoLocation
	OnUnsupported string
	// Recycle: the pull may bring a replica that its retention retires up to date as the
	// new one (retention.retire).
	Recycle bool
}

// authorizePull checks a pull and returns the agent's own target root and repository, and
// the job's on_unsupported and retention.retire. A failback pull (InPlace) writes the job's
// source storage: the agent must be in the source order.
func (a *Agent) authorizePull(ctx context.Context, in PullInput) (pullGrant, error) {
	g, err := a.authorize(ctx, PullName, in.Job)
	if err != nil {
		return pullGrant{}, err
	}
	p := g.plan
	var storage, source string
	if in.InPlace {
		if err := g.failbackAllowed(); err != nil {
			return pullGrant{}, err
		}
		if err := g.inOrder(RoleSource, p.Order.Source); err != nil {
			return pullGrant{}, err
		}
		i, err := g.dataset("Dataset", in.Dataset, p.Source)
		if err != nil {
			return pullGrant{}, err
		}
		storage = p.Source.Storage
		// The image comes from one of the targets: its dataset at the same index.
		source = in.SourceDataset
		ok := false
		for _, t := range p.AllTargets() {
			ok = ok || (i < len(t.List()) && t.List()[i] == source)
		}
		if !ok {
			return pullGrant{}, g.refuse("SourceDataset", source, nil, fmt.Sprintf("%q is not a target dataset matching source dataset %q in its own config", source, in.Dataset))
		}
		if err := g.same("KeepImages", in.KeepImages, 0); err != nil {
			return pullGrant{}, err
		}
	} else {
		t, i, err := g.target(in.Dataset)
		if err != nil {
			return pullGrant{}, err
		}
		storage, source = t.Storage, p.Source.List()[i]
		if err := g.same("SourceDataset", in.SourceDataset, source); err != nil {
			return pullGrant{}, err
		}
		if err := g.same("Defer", in.Defer, t.Group()); err != nil {
			return pullGrant{}, err
		}
		if err := g.same("KeepImages", in.KeepImages, p.Retention.Images); err != nil {
			return pullGrant{}, err
		}
		if err := g.same("KeepImagesWithin", in.KeepImagesWithin, p.Retention.ImagesWithin); err != nil {
			return pullGrant{}, err
		}
	}
	if err := g.root("TargetRoot", in.TargetRoot, storage); err != nil {
		return pullGrant{}, err
	}
	if err := g.retention(in.Keep, in.KeepWithin); err != nil {
		return pullGrant{}, err
	}
	if err := g.same("Verify", string(in.Verify), string(p.Verify)); err != nil {
		return pullGrant{}, err
	}
	repo, err := g.repo(in.Repo)
	// What the target refuses, and whether a retired replica is recycled, are the job's
	// settings in the agent's own config, not the input's.
	return pullGrant{Root: in.TargetRoot, Repo: repo, OnUnsupported: p.OnUnsupported, Recycle: p.Retention.Retire != config.RetireAfterPublish}, err
}

// authorizePublishGroup checks the publish of a consistency group on a target.
func (a *Agent) authorizePublishGroup(ctx context.Context, in PublishGroupInput) error {
	g, err := a.authorize(ctx, PublishGroupName, in.Job)
	if err != nil {
		return err
	}
	if len(in.Datasets) == 0 {
		return g.refuse("Datasets", in.Datasets, nil, "is empty")
	}
	t, _, err := g.target(in.Datasets[0])
	if err != nil {
		return err
	}
	if err := g.same("Datasets", in.Datasets, t.List()); err != nil {
		return err
	}
	if err := g.root("TargetRoot", in.TargetRoot, t.Storage); err != nil {
		return err
	}
	return g.retention(in.Keep, in.KeepWithin)
}

// authorizeMaintain checks a repository maintenance and returns the agent's own repository.
func (a *Agent) authorizeMaintain(ctx context.Context, in MaintainInput) (RepoLocation, error) {
	g, err := a.authorize(ctx, MaintainName, in.Job)
	if err != nil {
		return RepoLocation{}, err
	}
	// Maintenance runs on the job's (first) target order: those agents see the repository.
	if err := g.inOrder(RoleTarget, g.plan.Order.Target); err != nil {
		return RepoLocation{}, err
	}
	return g.repo(in.Repo)
}

// authorizeTestCopy checks a test-failover copy on a target.
func (a *Agent) authorizeTestCopy(ctx context.Context, in TestCopyInput) error {
	g, err := a.authorize(ctx, TestCopyName, in.Job)
	if err != nil {
		return err
	}
	t, _, err := g.target(in.Dataset)
	if err != nil {
		return err
	}
	return g.root("TargetRoot", in.TargetRoot, t.Storage)
}

// Role names as the orders of a job call them (the workflows package has the same words).
const (
	RoleApplication = "application"
	RoleSource      = "source"
	RoleTarget      = "target"
)
