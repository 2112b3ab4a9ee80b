// Package activities holds the steps of a replication as Temporal activities. One Agent value
// per host is registered on that host's task queue (RunScript, Push, Pull) and on the shared
// queue (Plan). The I/O lives in the subpackages dataplane (images and replicas) and hostexec
// (a host's scripts, locally or over SSH).
//
// Each activity sits in a file of its own (or of its small family: push.go holds Push and
// Precopy) with its input, its result and its registered name (PushName, ...). Those names
// are stable, because recorded histories refer to them. This file holds the Agent and what
// every activity shares.
package activities

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities/dataplane"
)

// Error types of the non-retryable application errors activities return. The workflow never
// hands these to another agent: another agent would fail the same way.
const (
	ErrTypeBadInput        = "BadInput"
	ErrTypeFenced          = "Fenced"
	ErrTypeVerify          = "VerifyFailed"
	ErrTypeScriptFailed    = "ScriptFailed"
	ErrTypeHostUnreachable = "HostUnreachable"
	ErrTypeHostKey         = "HostKeyMismatch"
	ErrTypeMisrouted       = "Misrouted"
	// ErrTypeStorageFault: the storage refused (full, over quota, read-only, failing); every
	// agent of that storage would meet it, so the step is not taken over (faults.go).
	ErrTypeStorageFault = "StorageFault"
	// ErrTypeUnsupported: the source holds entries the data plane cannot replicate and the
	// job's on_unsupported is fail; the details are the dataplane.Unsupported summary.
	ErrTypeUnsupported = "Unsupported"
)

// Agent is the activities of one host, with what they keep between calls.
type Agent struct {
	// Host is the name of the host this agent runs on: it must match the queue it polls.
	Host string
	// ConfigFile is read by Plan at the start of every run.
	ConfigFile string
	// StateDir is the agent's private directory (repository client state and caches).
	StateDir string
	// ChangeJournal is what a change journal of the source is followed by (journal.go:
	// `replctl agent --change-journal`); off, every preflight scan and push walks the whole
	// tree.
	ChangeJournal JournalUse
	// JournalRescan is how often a push that follows the journal lists the whole tree all
	// the same (0: DefaultJournalRescan).
	JournalRescan time.Duration
	// Logger receives the data plane's own lines (what it skipped, retired, tidied or could
	// not do), which happen outside any one activity's logger; nil drops them.
	Logger log.Logger

	reposOnce sync.Once
	repos     *dataplane.Repos
	// quiesced holds what this agent quiesced until a resume thaws it (quiesced.go).
	quiesced Quiesced
	// limits are the agent's data step slots and host bandwidth (limits.go).
	limits limits
	// configCache holds the last parse of ConfigFile (configcache.go).
	configCache configCache
	// changes is the change journal the preflight's scans follow (journal.go).
	changes changeJournal
	// housekeep runs what a pull leaves behind after its result (housekeeping.go).
	housekeep housekeeping
	// beforeRetention, in tests, runs as a pull's image retention begins.
	beforeRetention func()
}

// NewAgent returns the activities of host. stateDir "" picks a directory under the user's
// cache dir.
func NewAgent(host, configFile, stateDir string) (*Agent, error) {
	if stateDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("agent %s: no state dir configured and no user cache dir: %w", host, err)
		}
		stateDir = filepath.Join(base, "replctl", host)
	}
	return &Agent{Host: host, ConfigFile: configFile, StateDir: stateDir}, nil
}

// Close lets housekeeping under way finish (housekeepGrace at most), then releases the
// repositories the agent keeps open and its change journal.
func (a *Agent) Close() error {
	a.housekeep.close(housekeepGrace)
	a.changes.once.Do(func() {}) // a journal opened later would never be closed
	a.changes.close()
	if a.repos != nil {
		return a.repos.Close()
	}
	return nil
}

func (a *Agent) dataplane() *dataplane.Repos {
	a.reposOnce.Do(func() { a.repos = dataplane.NewRepos(dataplaneLog(a.Logger, a.Host)) })
	return a.repos
}

// dataplaneLog hands the data plane's lines to l, tagged with the agent: a line that
// carries an error ("err") or dataplane.LogWarn at WARN, the rest at INFO.
func dataplaneLog(l log.Logger, host string) func(string, ...any) {
	if l == nil {
		return func(string, ...any) {}
	}
	l = log.With(l, "agent", host)
	return func(msg string, kv ...any) {
		warn := false
		out := kv[:0:0]
		for i := 0; i+1 < len(kv); i += 2 {
			switch {
			case kv[i] == dataplane.LogWarn:
				warn = warn || kv[i+1] == true
				continue // a level, not a field
			case kv[i] == "err" && kv[i+1] != nil:
				warn = true
			}
			out = append(out, kv[i], kv[i+1])
		}
		if warn {
			l.Warn(msg, out...)
			return
		}
		l.Info(msg, out...)
	}
}

// RepoLocation is a repository as the executing host sees it.
type RepoLocation struct {
	Dir          string
	PasswordFile string
	// Via, when set, says this host is not attached to the repository storage: the
	// repository is reached over SFTP through the first of these hosts that answers,
	// and Dir is Via[0]'s view of it.
	Via []RepoHost `json:",omitempty"`
}

// Progress is the heartbeat detail of a step: a resume cursor for the agent that takes over.
type Progress struct {
	Step       Step
	Phase      string
	BytesDone  int64
	BytesTotal int64
	FilesDone  int64
	FilesTotal int64
	// Staging is the pull's staging directory, relative to the target root: a taker links
	// what is already there.
	Staging string
	Agent   string
	Epoch   int64
	// Dataset is the dataset a pull of a consistency group was working on.
	Dataset string `json:",omitempty"`
	// Pushed is the push's result once a push carrying the resume script is running it
	// (thawinpush.go): an agent lost there had made the image.
	Pushed *PushResult `json:",omitempty"`
}

// Unsupported summarises the source entries an image cannot hold (dataplane.Unsupported).
type Unsupported = dataplane.Unsupported

func (a *Agent) repoConfig(r RepoLocation) dataplane.RepoConfig {
	cfg := dataplane.RepoConfig{Dir: r.Dir, PasswordFile: r.PasswordFile, ClientDir: filepath.Join(a.StateDir, "repositories")}
	for _, h := range r.Via {
		cfg.Remote = append(cfg.Remote, dataplane.RemoteHost{Name: h.Name, Target: h.SSH, Dir: h.Dir})
	}
	return cfg
}

// begin starts an attempt on this agent: it refuses work sent to another agent's queue and
// starts the write lease with p as the first heartbeat.
func (a *Agent) begin(ctx context.Context, agent string, p Progress) (context.Context, *lease, error) {
	if err := a.checkRoute(agent); err != nil {
		return ctx, nil, err
	}
	p.Agent = a.Host
	return startLease(ctx, p)
}

// checkRoute refuses work sent to the wrong agent: two agents configured with the same host
// name would otherwise both take a host's steps.
func (a *Agent) checkRoute(agent string) error {
	if agent != a.Host {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("step for agent %q reached agent %q: two agents poll the same host queue; check --host", agent, a.Host), ErrTypeMisrouted, nil)
	}
	return nil
}

func fromDataplane(step Step, agent string, p dataplane.Progress, staging string, epoch int64) Progress {
	return Progress{Step: step, Phase: p.Phase, BytesDone: p.BytesDone, BytesTotal: p.BytesTotal, FilesDone: p.FilesDone, FilesTotal: p.FilesTotal, Staging: staging, Agent: agent, Epoch: epoch}
}

// observe records a step's duration and outcome (and data volume) in the agent's metrics.
func observe(ctx context.Context, job, step string, start time.Time, err error, bytes, files int64) {
	if !activity.IsActivity(ctx) {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	mh := activity.GetMetricsHandler(ctx).WithTags(map[string]string{"job": job, "step": step})
	mh.WithTags(map[string]string{"result": result}).Timer("replctl_step_duration_seconds").Record(time.Since(start))
	if err == nil && bytes > 0 {
		mh.Counter("replctl_" + step + "_bytes_total").Inc(bytes)
		mh.Counter("replctl_" + step + "_files_total").Inc(files)
	}
}

// observeUnsupported counts the entries a push found it cannot replicate, by kind.
func observeUnsupported(ctx context.Context, job string, u *dataplane.Unsupported) {
	if u.Empty() || !activity.IsActivity(ctx) {
		return
	}
	mh := activity.GetMetricsHandler(ctx)
	for kind, n := range u.ByKind {
		mh.WithTags(map[string]string{"job": job, "kind": kind}).Counter("replctl_unsupported_entries_total").Inc(int64(n))
	}
}
