package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.uber.org/zap"

	"github.com/replctl/replctl/config"
)

// Exit codes of replctl (documented in the README).
const (
	ExitOK          = 0
	ExitFailure     = 1 // anything else: unreachable server, I/O
	ExitUsage       = 2 // bad flags, arguments or config
	ExitRunFailed   = 3 // the run ended failed or cancelled
	ExitLeftQuiesce = 4 // the run ended failed AND left an application host quiesced
	ExitRunning     = 5 // a run of the job is already going (start, failback)
	ExitDamaged     = 6 // verify found a replica that differs from its image
	ExitCheckFailed = 7 // check found a failure on an agent (or no agent to ask)
)

// ExitError carries the process exit code of a command.
type ExitError struct {
	Code int
	Err  error
	// Kind names the failure in the JSON error object; empty means the kind of Code
	// (failureKind). It refines Code, e.g. KindNotFound for an exit 1.
	Kind string
	// Run names the run the failure is about (the running run of a refused start), for
	// the JSON error object.
	Run *runRef
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

func usageError(format string, a ...any) error {
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf(format, a...)}
}

// notFoundError is an exit 1 of kind not_found: a run, job or schedule the server does
// not have.
func notFoundError(format string, a ...any) error {
	return &ExitError{Code: ExitFailure, Kind: KindNotFound, Err: fmt.Errorf(format, a...)}
}

// DefaultConfig is the config used when neither --config nor REPLCTL_CONFIG is given: the
// sample of `replctl dev`, relative to the working directory (a clone of the repository).
const DefaultConfig = "config/examples/dev.yaml"

// Factory hands commands what they share: output streams, global flags, the config, a
// Temporal client. Commands get it in their constructor so tests can swap parts.
type Factory struct {
	Out, ErrOut io.Writer
	ConfigFile  string
	Address     string
	Namespace   string
	LogLevel    string
	// StateDir is where REPLCTL_STATE points when it is not set (the dev sample uses it).
	StateDir string
	// Conn holds the TLS and API key flags of the Temporal connection (tls.go).
	Conn ConnectionFlags

	// holdJSON makes PrintJSON keep the result for execute, which prints it once the
	// command has ended (jsonResult, set when hasJSON).
	holdJSON   bool
	hasJSON    bool
	jsonResult any

	logger        *zap.Logger
	cfg           *config.Config
	dataConverter converter.DataConverter // set by ClientOptions
	// Dial connects to Temporal; tests may replace it.
	Dial func(ctx context.Context, o client.Options) (client.Client, error)
	// Now is the clock of what commands print (ages, durations, RPO); nil means
	// time.Now. Tests set a fixed time.
	Now func() time.Time
}

// now is the time by f's clock.
func (f *Factory) now() time.Time {
	if f.Now == nil {
		return time.Now()
	}
	return f.Now()
}

// NewFactory returns the factory of the real program.
func NewFactory(out, errOut io.Writer) *Factory {
	return &Factory{Out: out, ErrOut: errOut, Dial: func(ctx context.Context, o client.Options) (client.Client, error) {
		return client.DialContext(ctx, o)
	}}
}

// Logger is the process logger (zap), built once from --log-level.
func (f *Factory) Logger() *zap.Logger {
	if f.logger == nil {
		f.logger = newLogger(f.ErrOut, f.LogLevel)
	}
	return f.logger
}

// Config loads the config file once.
func (f *Factory) Config() (*config.Config, error) {
	if f.cfg != nil {
		return f.cfg, nil
	}
	if err := f.ensureStateEnv(); err != nil {
		return nil, err
	}
	cfg, err := config.Load(f.ConfigFile)
	if err != nil {
		return nil, &ExitError{Code: ExitUsage, Err: err}
	}
	f.cfg = cfg
	return cfg, nil
}

// Job loads the config and looks job up in it; an unknown job is a usage error that lists
// the jobs there are.
func (f *Factory) Job(name string) (*config.Config, *config.Job, error) {
	cfg, err := f.Config()
	if err != nil {
		return nil, nil, err
	}
	j, err := cfg.Job(name)
	if err != nil {
		return nil, nil, &ExitError{Code: ExitUsage, Err: err}
	}
	return cfg, j, nil
}

// ensureStateEnv points REPLCTL_STATE (used by the dev sample config) at --state-dir when
// the environment does not set it.
func (f *Factory) ensureStateEnv() error {
	if os.Getenv("REPLCTL_STATE") != "" || f.StateDir == "" {
		return nil
	}
	abs, err := filepath.Abs(f.StateDir)
	if err != nil {
		return err
	}
	return os.Setenv("REPLCTL_STATE", abs)
}

// ClientOptions are the Temporal connection settings: address, namespace, TLS and API key,
// each from its flag, else the TEMPORAL_* environment variable, else the config file.
func (f *Factory) ClientOptions() (client.Options, error) {
	cfg, err := f.Config()
	if err != nil {
		return client.Options{}, err
	}
	conn, err := resolveConnection(f, cfg.Temporal, os.Getenv)
	if err != nil {
		return client.Options{}, err
	}
	o := client.Options{Logger: newSDKLogger(f.Logger())}
	if err := conn.apply(&o); err != nil {
		return client.Options{}, &ExitError{Code: ExitUsage, Err: err}
	}
	f.dataConverter = o.DataConverter
	return o, nil
}

// DataConverter is the data converter of the Temporal connection (with the payload codec
// when one is set up), for commands that decode payloads of history events or memos
// themselves. Valid after ClientOptions (Client) ran; the SDK's default before.
func (f *Factory) DataConverter() converter.DataConverter {
	if f.dataConverter == nil {
		return converter.GetDefaultDataConverter()
	}
	return f.dataConverter
}

// Client dials Temporal, retrying for a few seconds (a server that just started may not
// answer yet).
func (f *Factory) Client(ctx context.Context) (client.Client, error) {
	return f.ClientWithin(ctx, 10*time.Second)
}

// ClientWithin dials Temporal, retrying for up to wait.
func (f *Factory) ClientWithin(ctx context.Context, wait time.Duration) (client.Client, error) {
	o, err := f.ClientOptions()
	if err != nil {
		return nil, err
	}
	var last error
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		c, err := f.Dial(ctx, o)
		if err == nil {
			return c, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	if hint := dialHint(o, last); hint != "" {
		return nil, fmt.Errorf("cannot connect to Temporal at %s (namespace %s): %w%s", o.HostPort, o.Namespace, last, hint)
	}
	return nil, fmt.Errorf("cannot reach Temporal at %s (namespace %s): %w; is `replctl dev` or `replctl server` running?", o.HostPort, o.Namespace, last)
}

// NewCmdRoot is the replctl command with all subcommands.
func NewCmdRoot(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "replctl",
		Short: "Replicate datasets between storage systems, application-consistently, with agents that take over for each other",
		Long: "Replicate datasets between storage systems, application-consistently, with agents that take over for each other.\n" +
			"Exit codes: 0 ok, 1 error, 2 bad usage or config, 3 the run failed or was cancelled, 4 it failed and\n" +
			"left an application host quiesced, 5 a run of the job is already going, 6 verify found a damaged\n" +
			"replica, 7 check found a failure. With -o json a failure prints\n" +
			"{\"error\": {\"code\", \"kind\", \"message\", ...}} on stdout.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	def := os.Getenv("REPLCTL_CONFIG")
	if def == "" {
		def = DefaultConfig
	}
	pf := cmd.PersistentFlags()
	pf.StringVarP(&f.ConfigFile, "config", "c", def, "config file (env REPLCTL_CONFIG)")
	pf.StringVar(&f.Address, "address", "", "Temporal frontend host:port (env "+EnvAddress+"; overrides the config)")
	pf.StringVarP(&f.Namespace, "namespace", "n", "", "Temporal namespace (env "+EnvNamespace+"; overrides the config)")
	f.Conn.AddFlags(pf)
	pf.StringVar(&f.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&f.StateDir, "state-dir", ".replctl-dev", "state dir of the dev sample: sets REPLCTL_STATE when it is unset")
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError("%v (see %s --help)", err, c.CommandPath()) })

	cmd.AddCommand(NewCmdServer(f, nil), NewCmdAgent(f, nil), NewCmdDev(f, nil), withJobCompletion(f, NewCmdStart(f, nil)), NewCmdStatus(f, nil), NewCmdConfig(f),
		NewCmdSchedule(f, nil), NewCmdList(f, nil), NewCmdCancel(f, nil), NewCmdHistory(f, nil), NewCmdReplicas(f, nil), NewCmdMaintain(f, nil), NewCmdTestFailover(f, nil), NewCmdVerify(f, nil), NewCmdCheck(f, nil), NewCmdImages(f, nil), NewCmdRestore(f, nil),
		withJobCompletion(f, NewCmdFailback(f, nil)), NewCmdCodecServer(f, nil), NewCmdServeStaging(f, nil))
	cmd.AddCommand(newCmdMan(cmd))
	return cmd
}

func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError("%s wants %s (got %d argument(s): %s)", cmd.CommandPath(), what, len(args), strings.Join(args, " "))
		}
		return nil
	}
}
