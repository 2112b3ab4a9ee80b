// Package config defines the schema of replctl's YAML configuration and loads it
// strictly: unknown or duplicate keys, missing references and unsafe names are
// errors, and every error names the file, the line and the field path.
//
// A config describes the storage systems, the hosts that run agents (and which
// storage each host has mounted where), and the replication jobs. See
// REFERENCE.md in this directory for every key, its default and its rules.
package config

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaults applied by Parse when a key is absent (or null).
const (
	DefaultTemporalAddress   = "127.0.0.1:7233"
	DefaultTemporalNamespace = "default"
	DefaultTaskQueue         = "replctl"
	DefaultSSHPort           = "22"
	DefaultSSHTimeout        = 10 * time.Second
	DefaultScriptTimeout     = 5 * time.Minute
	DefaultHeartbeat         = 5 * time.Second
	DefaultScheduleToStart   = 10 * time.Second
	DefaultStartToClose      = time.Hour
	// MaxStorageRetry bounds timeouts.storage_retry: a run that waits longer for its
	// storage holds the job (and, for a push, its schedule) for nothing.
	MaxStorageRetry        = 24 * time.Hour
	DefaultReplicas        = 3
	DefaultImages          = 10
	DefaultRepositoryPath  = ".replctl/repository"
	DefaultMaintenanceCron = "@daily"
	DefaultTimeZone        = "UTC"
	DefaultOverlap         = "skip"

	// MinHeartbeat and MinScheduleToStart are the smallest accepted timeouts:
	// shorter ones make agents flap between hosts on ordinary scheduling jitter.
	MinHeartbeat       = time.Second
	MinScheduleToStart = time.Second
)

// Values of Job.Verify.
const (
	VerifyChanged = "changed"
	VerifyFull    = "full"
)

// Values of Job.Precopy.
const (
	PrecopyAuto   = "auto"
	PrecopyAlways = "always"
	PrecopyNever  = "never"
)

// Values of Job.OnUnsupported.
const (
	OnUnsupportedFail = "fail"
	OnUnsupportedSkip = "skip"
)

// Values of Job.OnUnreachableHost.
const (
	OnUnreachableFail     = "fail"
	OnUnreachableContinue = "continue"
)

// OverlapPolicies are the accepted values of Schedule.Overlap, named after
// Temporal's schedule overlap policies.
var OverlapPolicies = []string{"skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"}

// Config is a whole replctl configuration file.
type Config struct {
	File     string   `yaml:"-"` // absolute path it was loaded from
	Temporal Temporal `yaml:"temporal"`
	// SecretsDir is the directory on each host that holds the repository password files
	// not given by repository.password_file; default: "secrets" beside the config file.
	// It must not be on storage that other hosts' users can read (never beside the
	// repository).
	SecretsDir string    `yaml:"secrets_dir"`
	Storage    []Storage `yaml:"storage"`
	Hosts      []Host    `yaml:"hosts"`
	Jobs       []Job     `yaml:"jobs"`
}

// Temporal says how agents and the CLI reach the Temporal frontend.
type Temporal struct {
	Address    string `yaml:"address"`      // host:port, default 127.0.0.1:7233
	Namespace  string `yaml:"namespace"`    // default "default"
	TaskQueue  string `yaml:"task_queue"`   // shared workflow queue, default "replctl"
	TLS        *TLS   `yaml:"tls"`          // optional; nil = plain gRPC
	APIKeyFile string `yaml:"api_key_file"` // optional file holding an API key
	// Plaintext says plain gRPC (no TLS) is intended even to an address that is not
	// loopback; without it (or --tls=false) such a connection is refused.
	Plaintext bool `yaml:"plaintext"`
	// CodecKeyFile turns the payload codec on: a file (mode 0600) holding the AES-256
	// key that encrypts every payload the agents and the CLI put into Temporal.
	CodecKeyFile string `yaml:"codec_key_file"`
}

// TLS configures TLS to the Temporal frontend. All file fields are resolved paths.
type TLS struct {
	CA         string `yaml:"ca"`          // CA bundle; empty = system roots
	Cert       string `yaml:"cert"`        // client certificate (mTLS), together with Key
	Key        string `yaml:"key"`         // client private key
	ServerName string `yaml:"server_name"` // overrides the name checked in the server certificate
}

// Storage is one storage system (an array, a file system) that holds datasets.
type Storage struct {
	Name string `yaml:"name"`
	Path string `yaml:"path"` // where the storage lives (for validation/tools); optional
}

// Host is a machine that runs a replctl agent.
type Host struct {
	Name    string            `yaml:"name"`
	Attach  map[string]string `yaml:"attach"`  // storage name -> mount path on this host
	Scripts string            `yaml:"scripts"` // scripts dir on this host
	State   string            `yaml:"state"`   // agent's private state dir (kopia client config/cache); optional
	Connect Connect           `yaml:"connect"`
	// MaxConcurrentSteps is how many data steps (push, precopy, pull, verify, restore) the
	// host's agent runs at once; the others wait for a slot. 0 (default): no limit. Scripts
	// never wait for a slot.
	MaxConcurrentSteps int `yaml:"max_concurrent_steps"`
	// Bandwidth bounds the bytes per second all data steps of the agent together read from
	// sources (push) and write to targets (pull), e.g. "100MiB/s"; "" (default): no limit.
	Bandwidth string `yaml:"bandwidth"`
}

// BandwidthBytes is Bandwidth in bytes per second, 0 for none (Validate checked it).
func (h Host) BandwidthBytes() int64 {
	n, _ := ParseBandwidth(h.Bandwidth)
	return n
}

// Mount returns where storage is mounted on h, and whether it is attached at all.
func (h Host) Mount(storage string) (string, bool) {
	p, ok := h.Attach[storage]
	return p, ok
}

// Connect is how other agents reach this host to run its scripts. In YAML it
// is the string `local` (scripts run as local processes: same machine) or a
// mapping {ssh: {...}}. Absent means local.
type Connect struct {
	SSH *SSH
}

// Local reports whether the host's scripts run as local processes.
func (c Connect) Local() bool { return c.SSH == nil }

// SSH describes an SSH connection to a host.
type SSH struct {
	Address    string        `yaml:"address"`     // host:port (port default 22)
	User       string        `yaml:"user"`        // login name
	Key        string        `yaml:"key"`         // private key file
	KnownHosts string        `yaml:"known_hosts"` // required, always enforced
	Timeout    time.Duration `yaml:"timeout"`     // connect timeout, default 10s
}

// UnmarshalYAML accepts `local`, null, or a mapping with the single key `ssh`.
// yaml.v3 does not pass KnownFields into custom unmarshalers, so the keys of
// the ssh mapping are checked here.
func (c *Connect) UnmarshalYAML(n *yaml.Node) error {
	n = deref(n)
	switch {
	case isNull(n):
		c.SSH = nil
		return nil
	case n.Kind == yaml.ScalarNode:
		if n.Value != "local" {
			return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, connectScalarMsg(n.Value))}}
		}
		c.SSH = nil
		return nil
	case n.Kind != yaml.MappingNode:
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, connectKindMsg)}}
	}
	var errs []string
	var sshNode *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value != "ssh" {
			errs = append(errs, fmt.Sprintf("line %d: unknown key %q in connect (want `local` or {ssh: {...}})", k.Line, k.Value))
			continue
		}
		sshNode = v
	}
	if sshNode == nil && len(errs) == 0 {
		errs = append(errs, fmt.Sprintf("line %d: connect mapping needs the key ssh", n.Line))
	}
	if sshNode != nil {
		sshNode = deref(sshNode)
		if sshNode.Kind != yaml.MappingNode {
			errs = append(errs, fmt.Sprintf("line %d: ssh must be a mapping", sshNode.Line))
		} else {
			known := yamlFieldNames(sshType)
			for i := 0; i < len(sshNode.Content); i += 2 {
				k := sshNode.Content[i]
				if !slices.Contains(known, k.Value) {
					errs = append(errs, fmt.Sprintf("line %d: unknown key %q in ssh (known: %s)", k.Line, k.Value, strings.Join(known, ", ")))
				}
			}
		}
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	var s SSH
	if err := sshNode.Decode(&s); err != nil {
		return err
	}
	c.SSH = &s
	return nil
}

// MarshalYAML writes `local` or {ssh: {...}}, the forms UnmarshalYAML reads.
func (c Connect) MarshalYAML() (any, error) {
	if c.Local() {
		return "local", nil
	}
	return map[string]*SSH{"ssh": c.SSH}, nil
}

const connectKindMsg = "connect must be `local` or a mapping {ssh: {...}}"

func connectScalarMsg(v string) string {
	return fmt.Sprintf("connect %q is not valid: want `local` or a mapping {ssh: {...}}", v)
}

// Job is one replication job: a dataset on a source storage copied to a
// dataset on a target storage, with the application quiesced around it.
type Job struct {
	Name              string      `yaml:"name"`
	Source            Endpoint    `yaml:"source"`
	Target            Endpoint    `yaml:"target"`
	Application       Application `yaml:"application"`
	Order             Order       `yaml:"order"`
	Timeouts          Timeouts    `yaml:"timeouts"`
	OnUnreachableHost string      `yaml:"on_unreachable_host"` // "fail" (default) | "continue"
	// Verify is how much of each replica's content is re-checked against the image before
	// publish: "changed" (default: every file written for this replica; files hard-linked
	// from the verified current replica keep their checked metadata) or "full" (all).
	Verify string `yaml:"verify"`
	// Precopy is when the source is copied into the repository once while the application
	// still runs, before quiesce, so the quiesced push only re-reads what changed meanwhile:
	// "auto" (default: when the job has a quiesce script and a previous image of at least
	// 10,000 files or 256 MiB), "always" (every run, also the first) or "never".
	Precopy string `yaml:"precopy"`
	// ReadAhead makes the first agent of each target's order read the metadata of its
	// replicas while the source pushes, so the pull finds it cached (default false). It
	// pays where the target's disks are not the source's: on shared disks its reads
	// compete with the push's (design.md, Issue 16, "Targets read ahead of the pull").
	ReadAhead bool `yaml:"read_ahead"`
	// WriteOnce grants the job's source agents the right to write each of its targets'
	// incoming staging on the target hosts (`replctl serve-staging`, reached over SSH with a
	// forced command, or the source host's own mount of the target storage). Default false:
	// a target host's serve-staging refuses every job that does not set it in its own config.
	WriteOnce bool `yaml:"write_once"`
	// OnUnsupported is what a push does with source entries the data plane cannot replicate
	// (names that are not valid UTF-8): "fail" (default: the run fails naming them) or
	// "skip" (the replica is made without them and marked incomplete).
	OnUnsupported string     `yaml:"on_unsupported"`
	Schedule      *Schedule  `yaml:"schedule"` // optional
	Retention     Retention  `yaml:"retention"`
	Repository    Repository `yaml:"repository"`
	// Targets fans one source out to several targets, each with its own takeover order.
	// It replaces target + order.target (the single-target form stays valid).
	Targets []Target `yaml:"targets"`
	// Failback allows `replctl failback` (allow) and says how it knows the primary
	// application is stopped and which application on the target side it quiesces while it
	// copies the target's replica back to the source. Absent: failback is refused.
	Failback *Failback `yaml:"failback"`
	// Bandwidth bounds the bytes per second each data step of the job reads from the
	// source (push) or writes to a target (pull), e.g. "50MiB/s"; "" (default): no limit.
	// The host's bandwidth applies as well: the stricter wins.
	Bandwidth string `yaml:"bandwidth"`
}

// BandwidthBytes is Bandwidth in bytes per second, 0 for none (Validate checked it).
func (j Job) BandwidthBytes() int64 {
	n, _ := ParseBandwidth(j.Bandwidth)
	return n
}

// Target is one target of a fan-out job: an endpoint plus the hosts that write it.
type Target struct {
	Storage  string   `yaml:"storage"`
	Dataset  string   `yaml:"dataset"`
	Datasets []string `yaml:"datasets"`
	Order    []string `yaml:"order"`
}

// Endpoint returns the target's datasets as an Endpoint.
func (t Target) Endpoint() Endpoint {
	return Endpoint{Storage: t.Storage, Dataset: t.Dataset, Datasets: t.Datasets}
}

// Failback is what `replctl failback` needs beyond the job's endpoints and orders.
type Failback struct {
	// Allow must be true for a failback of the job to run at all: a failback replaces the
	// source dataset with the target's replica.
	Allow bool `yaml:"allow"`
	// PrimaryStopped is how a failback knows that the application on the primary is stopped:
	// "check" (default: the job's application.check script says so) or "operator" (no check
	// script; the operator's confirmation, `--yes` or the input's "confirm", stands for it).
	PrimaryStopped string `yaml:"primary_stopped"`
	// Application runs on the target side while the job is failed over; its quiesce and
	// resume scripts run around the failback push. The takeover script is not used.
	// Optional: without it nothing is quiesced on the target side.
	Application *Application `yaml:"application"`
}

// Values of Failback.PrimaryStopped.
const (
	PrimaryStoppedCheck    = "check"
	PrimaryStoppedOperator = "operator"
)

// Check script exit codes (application.check): the contract between replctl and the script.
const (
	CheckExitStopped = 0 // the application is stopped on the host
	CheckExitRunning = 3 // the application is running; any other exit means unknown
)

// AllTargets returns the job's targets: the targets list, or the single target with
// order.target.
func (j *Job) AllTargets() []Target {
	if len(j.Targets) > 0 {
		return j.Targets
	}
	return []Target{{Storage: j.Target.Storage, Dataset: j.Target.Dataset, Datasets: j.Target.Datasets, Order: j.Order.Target}}
}

// Hosts returns every host named in the job's orders, each once, in the order
// application, source, target.
func (j *Job) Hosts() []string {
	var out []string
	lists := [][]string{j.Order.Application, j.Order.Source}
	for _, t := range j.AllTargets() {
		lists = append(lists, t.Order)
	}
	for _, list := range lists {
		for _, h := range list {
			if !slices.Contains(out, h) {
				out = append(out, h)
			}
		}
	}
	return out
}

// Endpoint is a dataset (a directory, relative to the storage root) on a storage system,
// or a consistency group of datasets (Datasets) copied at one point in time and published
// together. Exactly one of Dataset and Datasets is given.
type Endpoint struct {
	Storage  string   `yaml:"storage"`
	Dataset  string   `yaml:"dataset"`
	Datasets []string `yaml:"datasets"`
}

// List returns the endpoint's datasets: Datasets, or the single Dataset.
func (e Endpoint) List() []string {
	if len(e.Datasets) > 0 {
		return e.Datasets
	}
	if e.Dataset == "" {
		return nil
	}
	return []string{e.Dataset}
}

// String renders the endpoint as storage:dataset (storage:[a, b] for a group) for messages.
func (e Endpoint) String() string {
	if len(e.Datasets) > 0 {
		return e.Storage + ":[" + strings.Join(e.Datasets, ", ") + "]"
	}
	return e.Storage + ":" + e.Dataset
}

// Application is the application whose data a job replicates.
type Application struct {
	Host     string        `yaml:"host"`     // where the application runs; must be order.application[0]
	Quiesce  string        `yaml:"quiesce"`  // script names in the host's scripts dir; each optional
	Resume   string        `yaml:"resume"`   //
	Takeover string        `yaml:"takeover"` //
	Check    string        `yaml:"check"`    // failback: exit 0 = application stopped, 3 = running
	Timeout  time.Duration `yaml:"timeout"`  // per script run, default 5m
}

// HasScripts reports whether the job names any script.
func (a Application) HasScripts() bool {
	return a.Quiesce != "" || a.Resume != "" || a.Takeover != "" || a.Check != ""
}

// Order lists, per role, the hosts that may do the work, in order of preference:
// the first reachable one does it and the next takes over when it fails.
type Order struct {
	Application []string `yaml:"application"` // default [application.host]
	Source      []string `yaml:"source"`
	Target      []string `yaml:"target"`
}

// Timeouts are the Temporal activity timeouts of a job's agent work.
type Timeouts struct {
	Heartbeat       time.Duration `yaml:"heartbeat"`         // default 5s, min 1s
	ScheduleToStart time.Duration `yaml:"schedule_to_start"` // default 10s, min 1s
	StartToClose    time.Duration `yaml:"start_to_close"`    // default 1h, > heartbeat
	// StorageRetry is how long a step the storage refused (full, read-only, failing) waits
	// and retries on the same agent before the run fails; 0 (default): fail at once.
	StorageRetry time.Duration `yaml:"storage_retry"`
}

// Schedule runs a job periodically with a Temporal schedule.
type Schedule struct {
	Cron           string        `yaml:"cron"`
	TimeZone       string        `yaml:"time_zone"` // IANA name, default UTC
	Overlap        string        `yaml:"overlap"`   // one of OverlapPolicies, default skip
	CatchupWindow  time.Duration `yaml:"catchup_window"`
	Jitter         time.Duration `yaml:"jitter"`
	PauseOnFailure bool          `yaml:"pause_on_failure"`
}

// Retention says which replicas (target copies) and images (repository
// snapshots) a job keeps: the newest Replicas/Images of each, plus every one
// younger than the kind's keep-within duration (measured from the newest of
// that kind, like restic's --keep-within). This is the config-file shape: a run's plan
// records it (activities.Retention) and the data plane applies it per kind
// (dataplane.Retention).
type Retention struct {
	Replicas int `yaml:"replicas"` // default 3, >= 1
	Images   int `yaml:"images"`   // default 10, >= 1
	// KeepWithin is the keep-within duration of both kinds; 0 = off.
	KeepWithin time.Duration `yaml:"keep_within"`
	// ReplicasWithin and ImagesWithin override KeepWithin per kind; Validate
	// fills them from KeepWithin when not given.
	ReplicasWithin time.Duration `yaml:"replicas_within"`
	ImagesWithin   time.Duration `yaml:"images_within"`
	// Retire is when a replica that retention no longer keeps leaves the target:
	// RetireRecycle (default) or RetireAfterPublish.
	Retire string `yaml:"retire"`
}

// Values of Retention.Retire.
const (
	// RetireRecycle: a pull that will retire a replica brings that replica's tree up to
	// date as the new one (unchanged files stay in place), so the target holds one replica
	// fewer while the pull runs.
	RetireRecycle = "recycle"
	// RetireAfterPublish: a pull builds the new replica beside every kept one and removes a
	// retired replica only after the new one is published.
	RetireAfterPublish = "after_publish"
)

// Repository is where a job keeps its images (a kopia repository).
type Repository struct {
	Storage string `yaml:"storage"` // default: the target storage
	Path    string `yaml:"path"`    // dir inside that storage, default .replctl/repository
	// PasswordFile holds the repository password on each host that uses the repository
	// (mode 0600, the same password everywhere). Default: secrets_dir/PasswordFileName.
	PasswordFile string `yaml:"password_file"`
	// Maintenance is the repository's maintenance schedule (one per repository: jobs sharing
	// a repository must agree on it).
	Maintenance Maintenance `yaml:"maintenance"`
}

// MaintenanceOff as Maintenance.Cron means the repository gets no maintenance schedule.
const MaintenanceOff = "off"

// Maintenance is when a repository is maintained (kopia maintenance from an agent of the
// owning job's target order), as a Temporal schedule created by `replctl schedule sync`.
type Maintenance struct {
	Cron     string `yaml:"cron"`      // default DefaultMaintenanceCron; "off" = no schedule
	TimeZone string `yaml:"time_zone"` // default UTC
	// Quick runs kopia's quick maintenance instead of the full one; only full maintenance
	// reclaims the space of pruned images and killed pushes.
	Quick bool `yaml:"quick"`
}

// String is a short form for messages: cron "@daily" UTC, full.
func (m Maintenance) String() string {
	if m.Cron == MaintenanceOff {
		return "off"
	}
	kind := "full"
	if m.Quick {
		kind = "quick"
	}
	return fmt.Sprintf("cron %q %s, %s", m.Cron, m.TimeZone, kind)
}

// RepositoryUse is one repository of the config and the jobs keeping images in it.
type RepositoryUse struct {
	Storage string
	Path    string
	// Jobs use the repository, in config order; Jobs[0] owns its maintenance schedule.
	Jobs        []string
	Maintenance Maintenance
}

// Repositories lists the repositories the jobs use, in the order of their first job.
func (c *Config) Repositories() []RepositoryUse {
	var out []RepositoryUse
	for _, j := range c.Jobs {
		i := slices.IndexFunc(out, func(u RepositoryUse) bool { return u.Storage == j.Repository.Storage && u.Path == j.Repository.Path })
		if i < 0 {
			out = append(out, RepositoryUse{Storage: j.Repository.Storage, Path: j.Repository.Path, Maintenance: j.Repository.Maintenance})
			i = len(out) - 1
		}
		out[i].Jobs = append(out[i].Jobs, j.Name)
	}
	return out
}

// Job returns the job called name.
func (c *Config) Job(name string) (*Job, error) {
	for i := range c.Jobs {
		if c.Jobs[i].Name == name {
			return &c.Jobs[i], nil
		}
	}
	names := make([]string, len(c.Jobs))
	for i, j := range c.Jobs {
		names[i] = j.Name
	}
	return nil, fmt.Errorf("%sjob %q is not defined (jobs: %s)", c.filePrefix(), name, listOrNone(names))
}

// Host returns the host called name.
func (c *Config) Host(name string) (*Host, error) {
	for i := range c.Hosts {
		if c.Hosts[i].Name == name {
			return &c.Hosts[i], nil
		}
	}
	return nil, fmt.Errorf("%shost %q is not defined (hosts: %s)", c.filePrefix(), name, listOrNone(c.hostNames()))
}

// StorageByName returns the storage system called name.
func (c *Config) StorageByName(name string) (*Storage, error) {
	for i := range c.Storage {
		if c.Storage[i].Name == name {
			return &c.Storage[i], nil
		}
	}
	return nil, fmt.Errorf("%sstorage %q is not defined (storage: %s)", c.filePrefix(), name, listOrNone(c.storageNames()))
}

func (c *Config) filePrefix() string {
	if c.File == "" {
		return ""
	}
	return c.File + ": "
}

func (c *Config) hostNames() []string {
	out := make([]string, len(c.Hosts))
	for i, h := range c.Hosts {
		out[i] = h.Name
	}
	return out
}

func (c *Config) storageNames() []string {
	out := make([]string, len(c.Storage))
	for i, s := range c.Storage {
		out[i] = s.Name
	}
	return out
}

// listOrNone renders names sorted and comma-separated, or "none".
func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	s := slices.Clone(names)
	sort.Strings(s)
	return strings.Join(s, ", ")
}
