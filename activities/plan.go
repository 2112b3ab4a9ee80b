package activities

import (
	"fmt"
	"path"
	"path/filepath"
	"time"

	"github.com/replctl/replctl/config"
)

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
	// Verify is "changed" or "full": see config.Job.Verify.
	Verify     string
	Retention  Retention
	Repository Repository
}

// Endpoint is a dataset on a storage system.
type Endpoint struct {
	Storage string
	Dataset string
}

// Application names the application host and its script names.
type Application struct {
	Host     string
	Quiesce  string
	Resume   string
	Takeover string
	Timeout  time.Duration
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
}

// Retention says which replicas and images a job keeps: the newest Replicas/Images plus
// those younger than ReplicasWithin/ImagesWithin (0 = off), see config.Retention.
type Retention struct {
	Replicas       int
	Images         int
	ReplicasWithin time.Duration
	ImagesWithin   time.Duration
}

// Repository is where a job's images live: a directory inside a storage system.
type Repository struct {
	Storage      string
	Path         string
	PasswordFile string
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

// SSH says how to reach a host's shell; nil means its scripts run as local processes.
type SSH struct {
	Address        string
	User           string
	KeyFile        string
	KnownHostsFile string
	ConnectTimeout time.Duration
}

// HostQueue is the task queue an agent polls for the activities of its host.
func HostQueue(host string) string { return "replctl-host-" + host }

// NewPlan resolves job against cfg. It is pure: the Plan activity calls it on an agent.
func NewPlan(cfg *config.Config, job string) (Plan, error) {
	j, err := cfg.Job(job)
	if err != nil {
		return Plan{}, err
	}
	p := Plan{
		Job:               j.Name,
		ConfigFile:        cfg.File,
		Source:            Endpoint{Storage: j.Source.Storage, Dataset: j.Source.Dataset},
		Target:            Endpoint{Storage: j.Target.Storage, Dataset: j.Target.Dataset},
		Application:       Application{Host: j.Application.Host, Quiesce: j.Application.Quiesce, Resume: j.Application.Resume, Takeover: j.Application.Takeover, Timeout: j.Application.Timeout},
		Order:             Order{Application: clone(j.Order.Application), Source: clone(j.Order.Source), Target: clone(j.Order.Target)},
		Timeouts:          Timeouts{Heartbeat: j.Timeouts.Heartbeat, ScheduleToStart: j.Timeouts.ScheduleToStart, StartToClose: j.Timeouts.StartToClose},
		OnUnreachableHost: j.OnUnreachableHost,
		Verify:            j.Verify,
		Retention:         Retention{Replicas: j.Retention.Replicas, Images: j.Retention.Images, ReplicasWithin: j.Retention.ReplicasWithin, ImagesWithin: j.Retention.ImagesWithin},
		Repository:        Repository{Storage: j.Repository.Storage, Path: j.Repository.Path, PasswordFile: j.Repository.PasswordFile},
	}
	seen := map[string]bool{}
	for _, list := range [][]string{p.Order.Application, p.Order.Source, p.Order.Target} {
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
	return p, nil
}

func hostPlan(h *config.Host) HostPlan {
	hp := HostPlan{Name: h.Name, Queue: HostQueue(h.Name), Scripts: h.Scripts, State: h.State}
	// Sorted so that the plan (and so the history) is the same for the same config.
	for _, s := range sortedKeys(h.Attach) {
		hp.Mounts = append(hp.Mounts, Mount{Storage: s, Path: h.Attach[s]})
	}
	if ssh := h.Connect.SSH; ssh != nil {
		hp.SSH = &SSH{Address: ssh.Address, User: ssh.User, KeyFile: ssh.Key, KnownHostsFile: ssh.KnownHosts, ConnectTimeout: ssh.Timeout}
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

func (p Plan) datasetDir(host string, e Endpoint) (string, error) {
	h, err := p.Host(host)
	if err != nil {
		return "", err
	}
	root, err := h.Mount(e.Storage)
	if err != nil {
		return "", err
	}
	return filepath.Join(root, filepath.FromSlash(path.Clean(e.Dataset))), nil
}

func clone(s []string) []string { return append([]string(nil), s...) }
