package main

import (
	"cmp"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/log"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/storagecheck"
	"github.com/replctl/replctl/workers"
	"github.com/replctl/replctl/workflows"
)

// AgentOptions are the flags of `replctl agent`.
type AgentOptions struct {
	Host string
	// PprofAddr serves net/http/pprof there when set (profiling the data plane).
	PprofAddr string
	// MetricsAddr serves Prometheus metrics there when set.
	MetricsAddr string
	// MemoryLimit is the --memory-limit flag (a size, or 0 for none).
	MemoryLimit string
	// MemoryLimitBytes is the soft memory limit to set (math.MaxInt64: none) when
	// SetMemoryLimit; otherwise GOMEMLIMIT is in effect and left alone.
	MemoryLimitBytes int64
	SetMemoryLimit   bool
	// ShutdownGrace bounds the wait on SIGINT/SIGTERM for the runs to resume what the agent
	// quiesced (workers.Shutdown).
	ShutdownGrace time.Duration
	// WaitForServer bounds the wait at start for the server to answer and know the
	// namespace (a cluster coming up opens its port before that).
	WaitForServer time.Duration
	// ChangeJournal is what follows a change journal of the source (fanotify): off,
	// preflight or push.
	ChangeJournal string
	// JournalRescan: with a push that follows the journal, list the whole tree this often.
	JournalRescan time.Duration
	journal       agentJournal // ChangeJournal and JournalRescan, checked
}

// NewCmdAgent is `replctl agent --host NAME`: the agent of one host.
func NewCmdAgent(f *Factory, runF func(*AgentOptions) error) *cobra.Command {
	o := &AgentOptions{}
	cmd := &cobra.Command{
		Use:   "agent --host NAME",
		Short: "Run the agent of one host: its own task queue plus the shared workflow worker",
		Args:  exactArgs(0, "no arguments (the host is given with --host)"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Host == "" {
				return usageError("agent needs --host NAME (one of the config's hosts)")
			}
			if err := checkShutdownGrace(o.ShutdownGrace); err != nil {
				return err
			}
			if o.WaitForServer <= 0 {
				return usageError("--wait-for-server %s: must be more than 0", o.WaitForServer)
			}
			use, err := activities.ParseJournalUse(o.ChangeJournal)
			if err != nil {
				return usageError("--change-journal: %v", err)
			}
			if o.JournalRescan <= 0 {
				return usageError("--change-journal-rescan %s: must be more than 0", o.JournalRescan)
			}
			o.journal = agentJournal{use: use, rescan: o.JournalRescan}
			o.MemoryLimitBytes, o.SetMemoryLimit, err = memoryLimit(o.MemoryLimit, cmd.Flags().Changed("memory-limit"), os.Getenv("GOMEMLIMIT"))
			if err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			applyMemoryLimit(o.MemoryLimitBytes, o.SetMemoryLimit)
			cfg, err := f.Config()
			if err != nil {
				return err
			}
			// Before connecting: a bad storage root is the config's fault, whatever the server.
			if err := checkAgentStorage(cfg, o.Host); err != nil {
				return err
			}
			if o.MetricsAddr != "" {
				if err := serveMetrics(f, o.MetricsAddr); err != nil {
					return err
				}
			}
			if o.PprofAddr != "" {
				if err := servePprof(o.PprofAddr); err != nil {
					return err
				}
			}
			c, err := f.ClientWithin(cmd.Context(), o.WaitForServer)
			if err != nil {
				return err
			}
			defer c.Close()
			co, err := f.ClientOptions()
			if err != nil {
				return err
			}
			if err := waitNamespace(cmd.Context(), c, cmp.Or(co.Namespace, client.DefaultNamespace), o.WaitForServer, f.ErrOut); err != nil {
				return fmt.Errorf("agent %s does not start: %w", o.Host, err)
			}
			a, err := startAgent(c, cfg, o.Host, newSDKLogger(f.Logger()), o.journal)
			if err != nil {
				return err
			}
			fmt.Fprintf(f.ErrOut, "agent %s polling %s and %s\n", o.Host, workflows.HostQueue(o.Host), cfg.Temporal.TaskQueue)
			<-cmd.Context().Done()
			stopAgents(f, []*workers.Agent{a}, o.ShutdownGrace)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Host, "host", "", "name of this host in the config")
	cmd.Flags().StringVar(&o.MetricsAddr, "metrics", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464")
	cmd.Flags().StringVar(&o.MemoryLimit, "memory-limit", DefaultAgentMemoryLimit,
		"soft limit of the Go runtime's memory (the collector works harder near it; the binary's own pages come on top), e.g. 256MiB; 0: none. Default: GOMEMLIMIT when set, else "+DefaultAgentMemoryLimit)
	addShutdownGraceFlag(cmd.Flags(), &o.ShutdownGrace)
	cmd.Flags().DurationVar(&o.WaitForServer, "wait-for-server", DefaultWaitForServer,
		"at start, how long to wait for the Temporal server to answer and know the namespace")
	cmd.Flags().StringVar(&o.ChangeJournal, "change-journal", "off",
		"keep a journal of the source's changed directories (fanotify; needs CAP_SYS_ADMIN): `preflight` (the flag alone) scans only what changed since the last preflight; push also lists only what changed since the job's previous image and takes the rest from it, giving up writes through mappings of processes the agent cannot examine and through hard links made outside the dataset; off by default, see design.md")
	cmd.Flags().Lookup("change-journal").NoOptDefVal = string(activities.JournalPreflight)
	cmd.Flags().DurationVar(&o.JournalRescan, "change-journal-rescan", activities.DefaultJournalRescan,
		"with --change-journal=push, list the whole tree at least this often all the same (what the journal cannot see shows then)")
	cmd.Flags().StringVar(&o.PprofAddr, "pprof", "", "serve Go profiles (net/http/pprof) on this address, e.g. 127.0.0.1:6060")
	return cmd
}

// servePprof serves the profiling endpoints on addr in the background.
func servePprof(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--pprof %s: %w", addr, err)
	}
	go func() { _ = http.Serve(ln, nil) }()
	return nil
}

// checkAgentStorage refuses to start the agent of host when a storage it attaches is missing
// (not mounted yet: start the agent after the mount), is not a real directory, or is the
// same directory as another storage or inside it (storagecheck).
func checkAgentStorage(cfg *config.Config, host string) error {
	if err := storagecheck.Host(cfg, host); err != nil {
		return &ExitError{Code: ExitUsage, Err: fmt.Errorf("agent %s does not start: %w", host, err)}
	}
	return nil
}

// startAgent starts the agent of host.
// agentJournal is how an agent follows its change journal (zero: it keeps none).
type agentJournal struct {
	use    activities.JournalUse
	rescan time.Duration
}

func startAgent(c client.Client, cfg *config.Config, host string, logger log.Logger, journal agentJournal) (*workers.Agent, error) {
	h, err := cfg.Host(host)
	if err != nil {
		return nil, &ExitError{Code: ExitUsage, Err: err}
	}
	a, err := workers.NewAgent(workers.Options{Client: c, Host: h.Name, ConfigFile: cfg.File, StateDir: h.State, SharedQueue: cfg.Temporal.TaskQueue, Logger: logger, ChangeJournal: journal.use, JournalRescan: journal.rescan})
	if err != nil {
		return nil, err
	}
	if err := a.Start(); err != nil {
		return nil, err
	}
	return a, nil
}
