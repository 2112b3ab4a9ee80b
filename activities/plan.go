package activities

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"time"

	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/activities/hostexec"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/ids"
)

// PlanName is the registered name of Plan: stable, because recorded histories refer to it.
const PlanName = "Plan"

// PlanInput is the input of Plan.
type PlanInput struct {
	Job string
}

// PlanResult is the plan of one run.
type PlanResult struct {
	Plan Plan
	// Agent is the agent that read the config.
	Agent string
}

// Plan reads the config file and resolves a job. A missing job or an invalid config is bad
// input: no other agent would do better.
func (a *Agent) Plan(ctx context.Context, in PlanInput) (PlanResult, error) {
	if in.Job == "" {
		return PlanResult{}, badInput(errors.New(`workflow input needs a job name: {"job": "NAME"}`))
	}
	cfg, err := a.loadConfig()
	if err != nil {
		return PlanResult{}, badInput(fmt.Errorf("agent %s: %w", a.Host, err))
	}
	p, err := NewPlan(cfg, in.Job)
	if err != nil {
		return PlanResult{}, badInput(err)
	}
	return PlanResult{Plan: p, Agent: a.Host}, nil
}

// Plan is a job resolved against the configuration at the moment a run starts. It is the
// Plan activity's result, so it is recorded in the run's history: editing the config file
// never changes a run that is already going.
type Plan struct {
	Job               string
	ConfigFile        string
	Source            Endpoint
	Target            Endpoint
	Application       Application
	Order             Order
	Hosts             []HostPlan
	Timeouts          Timeouts
	OnUnreachableHost string
	// Verify is config.Job.Verify: dataplane.VerifyChanged or VerifyFull.
	Verify dataplane.VerifyMode
	// Precopy is "auto", "always" or "never": see config.Job.Precopy.
	Precopy string `json:",omitempty"`
	// ReadAhead is config.Job.ReadAhead (absent from plans recorded before it: false).
	ReadAhead bool `json:",omitempty"`
	// OnUnsupported is "fail" or "skip": see config.Job.OnUnsupported ("" in plans recorded
	// before it existed: fail).
	OnUnsupported string `json:",omitempty"`
	Retention     Retention
	Repository    Repository
	// Targets are the targets of a fan-out job (nil for one target: Target and
	// Order.Target). Target and Order.Target then describe the first one.
	Targets []TargetPlan `json:",omitempty"`
	// Failback is the target side's application, if the job names one.
	Failback *Application `json:",omitempty"`
	// FailbackGuard is the job's failback opt-in (nil: the job has no failback section, so a
	// failback is refused).
	FailbackGuard *FailbackGuard `json:",omitempty"`
}

// FailbackGuard is what the job's config says about failing back.
type FailbackGuard struct {
	// Allow is config failback.allow: without it a failback is refused.
	Allow bool
	// PrimaryStopped is config failback.primary_stopped: "check" (Application.Check runs on
	// the primary application host and must say stopped) or "operator" (no check script).
	PrimaryStopped string
}

// Endpoint is a dataset on a storage system, or a consistency group of datasets.
type Endpoint struct {
	Storage string
	// Dataset is the single dataset, or the first of a group.
	Dataset string
	// Datasets are a consistency group's datasets (nil for a single dataset).
	Datasets []string `json:",omitempty"`
}

// List returns the endpoint's datasets.
func (e Endpoint) List() []string {
	if len(e.Datasets) > 0 {
		return e.Datasets
	}
	return []string{e.Dataset}
}

// Group reports whether the endpoint is a consistency group (published all or none).
func (e Endpoint) Group() bool { return len(e.Datasets) > 0 }

// TargetPlan is one target of a job with the hosts that write it.
type TargetPlan struct {
	Endpoint
	Order []string
}

// AllTargets returns every target of the plan: Targets, or the single Target.
func (p Plan) AllTargets() []TargetPlan {
	if len(p.Targets) > 0 {
		return p.Targets
	}
	return []TargetPlan{{Endpoint: p.Target, Order: p.Order.Target}}
}

// FindTarget returns the target on storage ("" = the first one).
func (p Plan) FindTarget(storage string) (TargetPlan, error) {
	var names []string
	for _, t := range p.AllTargets() {
		if storage == "" || t.Storage == storage {
			return t, nil
		}
		names = append(names, t.Storage)
	}
	return TargetPlan{}, fmt.Errorf("job %q has no target on storage %q (targets: %v)", p.Job, storage, names)
}

// Application names the application host and its script names.
type Application struct {
	Host     string
	Quiesce  string
	Resume   string
	Takeover string
	// Check (config application.check) tells a failback whether the application is stopped.
	Check   string `json:",omitempty"`
	Timeout time.Duration
}

// Order is the takeover order of each role: primary first.
type Order struct {
	Application []string
	Source      []string
	Target      []string
}

// Timeouts of one step attempt.
type Timeouts struct {
	Heartbeat       time.Duration
	ScheduleToStart time.Duration
	StartToClose    time.Duration
	// StorageRetry: how long a step the storage refused is retried on the same agent.
	StorageRetry time.Duration `json:",omitempty"`
}

// Retention is config.Retention as recorded in a plan (its field names are JSON keys in run
// histories): the newest Replicas/Images plus those younger than ReplicasWithin/ImagesWithin
// (0 = off). Pull inputs carry it field by field, and the data plane applies it as one
// dataplane.Retention per kind (PullInput.replicaRetention, imageRetention).
type Retention struct {
	Replicas       int
	Images         int
	ReplicasWithin time.Duration
	ImagesWithin   time.Duration
	// Retire is config.Retention.Retire (absent from plans recorded before it existed:
	// those recycled, as "" does).
	Retire string `json:",omitempty"`
}

// retention converts the config's retention (KeepWithin is already spread over the two kinds
// by config.Validate).
func retention(r config.Retention) Retention {
	return Retention{Replicas: r.Replicas, Images: r.Images, ReplicasWithin: r.ReplicasWithin, ImagesWithin: r.ImagesWithin, Retire: r.Retire}
}

// Repository is where a job's images live: a directory inside a storage system.
type Repository struct {
	Storage      string
	Path         string
	PasswordFile string
	// Via lists, in takeover order, the hosts attached to the repository storage that
	// have an SSH connection: agents not attached to it reach the repository through
	// them over SFTP. Empty when every order host is attached.
	Via []RepoHost `json:",omitempty"`
}

// RepoHost is a host the repository can be reached through over SSH.
type RepoHost struct {
	Name string
	// Dir is the repository directory as this host sees it.
	Dir string
	SSH SSH
}

// HostPlan is what a run needs to know about one host.
type HostPlan struct {
	Name    string
	Queue   string
	Scripts string
	State   string
	Mounts  []Mount
	SSH     *SSH
}

// Mount is where a host sees a storage system.
type Mount struct {
	Storage string
	Path    string
}

// SSH says how to reach a host's shell; nil means its scripts run as local processes. It is
// hostexec.Target itself (an alias, so its JSON in recorded plans is unchanged).
type SSH = hostexec.Target

// sshTarget converts the config file's SSH section into the target activities dial: the one
// conversion from config.SSH.
func sshTarget(s *config.SSH) SSH {
	return SSH{Address: s.Address, User: s.User, KeyFile: s.Key, KnownHostsFile: s.KnownHosts, ConnectTimeout: s.Timeout}
}

// NewPlan resolves job against cfg. It is pure: the Plan activity calls it on an agent.
func NewPlan(cfg *config.Config, job string) (Plan, error) {
	j, err := cfg.Job(job)
	if err != nil {
		return Plan{}, err
	}
	targets := j.AllTargets()
	p := Plan{
		Job:               j.Name,
		ConfigFile:        cfg.File,
		Source:            endpoint(j.Source),
		Target:            endpoint(targets[0].Endpoint()),
		Application:       Application{Host: j.Application.Host, Quiesce: j.Application.Quiesce, Resume: j.Application.Resume, Takeover: j.Application.Takeover, Check: j.Application.Check, Timeout: j.Application.Timeout},
		Order:             Order{Application: clone(j.Order.Application), Source: clone(j.Order.Source), Target: clone(targets[0].Order)},
		Timeouts:          Timeouts{Heartbeat: j.Timeouts.Heartbeat, ScheduleToStart: j.Timeouts.ScheduleToStart, StartToClose: j.Timeouts.StartToClose, StorageRetry: j.Timeouts.StorageRetry},
		OnUnreachableHost: j.OnUnreachableHost,
		Verify:            dataplane.VerifyMode(j.Verify),
		Precopy:           j.Precopy,
		ReadAhead:         j.ReadAhead,
		OnUnsupported:     j.OnUnsupported,
		Retention:         retention(j.Retention),
		Repository:        Repository{Storage: j.Repository.Storage, Path: j.Repository.Path, PasswordFile: j.Repository.PasswordFile},
	}
	lists := [][]string{p.Order.Application, p.Order.Source, p.Order.Target}
	if len(j.Targets) > 0 {
		for _, t := range targets {
			p.Targets = append(p.Targets, TargetPlan{Endpoint: endpoint(t.Endpoint()), Order: clone(t.Order)})
			lists = append(lists, t.Order)
		}
	}
	if f := j.Failback; f != nil {
		p.FailbackGuard = &FailbackGuard{Allow: f.Allow, PrimaryStopped: f.PrimaryStopped}
		if a := f.Application; a != nil {
			p.Failback = &Application{Host: a.Host, Quiesce: a.Quiesce, Resume: a.Resume, Timeout: a.Timeout}
			lists = append(lists, []string{a.Host})
		}
	}
	seen := map[string]bool{}
	for _, list := range lists {
		for _, name := range list {
			if seen[name] {
				continue
			}
			seen[name] = true
			h, err := cfg.Host(name)
			if err != nil {
				return Plan{}, err
			}
			p.Hosts = append(p.Hosts, hostPlan(h))
		}
	}
	p.Repository.Via = repoVia(cfg, p)
	return p, nil
}

// repoVia lists the hosts to reach the repository through when an order host is not
// attached to its storage: those of the target order, then of the source order, then
// any other attached host (config order), keeping those with an SSH connection.
func repoVia(cfg *config.Config, p Plan) []RepoHost {
	needed := false
	for _, name := range append(clone(p.Order.Source), p.Order.Target...) {
		if h, err := cfg.Host(name); err == nil {
			if _, ok := h.Mount(p.Repository.Storage); !ok {
				needed = true
			}
		}
	}
	if !needed {
		return nil
	}
	var names []string
	names = append(names, p.Order.Target...)
	names = append(names, p.Order.Source...)
	for _, h := range cfg.Hosts {
		names = append(names, h.Name)
	}
	var via []RepoHost
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		h, err := cfg.Host(name)
		if err != nil || h.Connect.SSH == nil {
			continue
		}
		root, ok := h.Mount(p.Repository.Storage)
		if !ok {
			continue
		}
		via = append(via, RepoHost{
			Name: h.Name,
			Dir:  filepath.Join(root, filepath.FromSlash(p.Repository.Path)),
			SSH:  sshTarget(h.Connect.SSH),
		})
	}
	return via
}

func hostPlan(h *config.Host) HostPlan {
	hp := HostPlan{Name: h.Name, Queue: ids.HostQueue(h.Name), Scripts: h.Scripts, State: h.State}
	// Sorted so that the plan (and so the history) is the same for the same config.
	for _, s := range sortedKeys(h.Attach) {
		hp.Mounts = append(hp.Mounts, Mount{Storage: s, Path: h.Attach[s]})
	}
	if h.Connect.SSH != nil {
		t := sshTarget(h.Connect.SSH)
		hp.SSH = &t
	}
	return hp
}

// Host returns the plan of a host named in one of the orders.
func (p Plan) Host(name string) (HostPlan, error) {
	for _, h := range p.Hosts {
		if h.Name == name {
			return h, nil
		}
	}
	return HostPlan{}, fmt.Errorf("host %q is not part of job %q's plan", name, p.Job)
}

// Mount returns where h sees storage.
func (h HostPlan) Mount(storage string) (string, error) {
	for _, m := range h.Mounts {
		if m.Storage == storage {
			return m.Path, nil
		}
	}
	return "", fmt.Errorf("host %q is not attached to storage %q", h.Name, storage)
}

// SourceDir is the source dataset directory as host sees it.
func (p Plan) SourceDir(host string) (string, error) { return p.datasetDir(host, p.Source) }

// TargetRoot is the target storage's mount path on host.
func (p Plan) TargetRoot(host string) (string, error) {
	h, err := p.Host(host)
	if err != nil {
		return "", err
	}
	return h.Mount(p.Target.Storage)
}

// RootOf is storage's mount path on host.
func (p Plan) RootOf(host, storage string) (string, error) {
	h, err := p.Host(host)
	if err != nil {
		return "", err
	}
	return h.Mount(storage)
}

// TargetLink is the path readers use for the current replica, as host sees it.
func (p Plan) TargetLink(host string) (string, error) { return p.datasetDir(host, p.Target) }

// RepoDir is the repository directory as host sees it.
func (p Plan) RepoDir(host string) (string, error) {
	h, err := p.Host(host)
	if err != nil {
		return "", err
	}
	root, err := h.Mount(p.Repository.Storage)
	if err != nil {
		return "", err
	}
	return filepath.Join(root, filepath.FromSlash(p.Repository.Path)), nil
}

// Repo is the repository as host sees it: its directory when host is attached to the
// repository storage, otherwise the hosts to reach it through over SSH.
func (p Plan) Repo(host string) (RepoLocation, error) {
	dir, err := p.RepoDir(host)
	if err == nil {
		return RepoLocation{Dir: dir, PasswordFile: p.Repository.PasswordFile}, nil
	}
	if _, herr := p.Host(host); herr != nil || len(p.Repository.Via) == 0 {
		return RepoLocation{}, err
	}
	return RepoLocation{Dir: p.Repository.Via[0].Dir, PasswordFile: p.Repository.PasswordFile, Via: append([]RepoHost(nil), p.Repository.Via...)}, nil
}

func (p Plan) datasetDir(host string, e Endpoint) (string, error) {
	return p.DatasetDir(host, e.Storage, e.Dataset)
}

// DatasetDir is dataset on storage as host sees it.
func (p Plan) DatasetDir(host, storage, dataset string) (string, error) {
	root, err := p.RootOf(host, storage)
	if err != nil {
		return "", err
	}
	return filepath.Join(root, filepath.FromSlash(path.Clean(dataset))), nil
}

func clone(s []string) []string { return append([]string(nil), s...) }

// endpoint resolves a config endpoint; Dataset is the first dataset of a group.
func endpoint(e config.Endpoint) Endpoint {
	out := Endpoint{Storage: e.Storage, Dataset: e.Dataset}
	if len(e.Datasets) > 0 {
		out.Dataset, out.Datasets = e.Datasets[0], clone(e.Datasets)
	}
	return out
}
