//go:build !noserver

package main

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/replctl/replctl/cmd/replctl/internal/devserver"
	"github.com/replctl/replctl/workers"
	"github.com/replctl/replctl/workflows"
)

// ServerOptions are the flags of `replctl server` (also used by `dev`).
type ServerOptions struct {
	DBFile    string
	IP        string
	Port      int
	UIPort    int
	Namespace string
	LogLevel  string
	// TLS of the frontend; only `replctl server` has these flags (tls.go).
	TLS ServerTLSFlags
	// TaskQueue is the agents' shared workflow queue: with mutual TLS, hosts may poll it and
	// operators start workflows on it (`dev` takes it from the config).
	TaskQueue string
	// InsecureListen allows a non-loopback --ip without mutual TLS, or --ui-ip without the
	// UI's login and HTTPS.
	InsecureListen bool
	UIIP           string
	UIWriteActions bool
	UITLSCert      string
	UITLSKey       string
	OIDC           OIDCFlags
}

// OIDCFlags are the Web UI's OpenID Connect login flags.
type OIDCFlags struct {
	Issuer, ClientID, ClientSecretFile, CallbackURL string
	Scopes                                          []string
}

// options converts the flags; nil when no OIDC flag is given.
func (o OIDCFlags) options() (*devserver.OIDCOptions, error) {
	if o.Issuer == "" && o.ClientID == "" && o.ClientSecretFile == "" && o.CallbackURL == "" {
		return nil, nil
	}
	secret := ""
	if o.ClientSecretFile != "" {
		var err error
		if secret, err = readSecretString(o.ClientSecretFile, "--ui-oidc-client-secret-file", ""); err != nil {
			return nil, err
		}
	}
	return &devserver.OIDCOptions{IssuerURL: o.Issuer, ClientID: o.ClientID, ClientSecret: secret, CallbackURL: o.CallbackURL, Scopes: o.Scopes}, nil
}

// AddFlags registers the options' flags on fs.
func (o *ServerOptions) AddFlags(fs *pflag.FlagSet, defaultDB string) {
	fs.StringVar(&o.DBFile, "db", defaultDB, "SQLite file of the embedded Temporal server (\"\" = in memory)")
	fs.StringVar(&o.IP, "ip", "127.0.0.1", "IP the server and UI listen on")
	fs.IntVar(&o.Port, "port", 7233, "Temporal frontend (gRPC) port")
	fs.IntVar(&o.UIPort, "ui-port", 8233, "Temporal Web UI port (-1 = no UI)")
	fs.StringVar(&o.Namespace, "server-namespace", "default", "namespace the server creates")
	fs.StringVar(&o.LogLevel, "server-log-level", "warn", "log level of the embedded server")
	fs.StringVar(&o.TaskQueue, "task-queue", workflows.DefaultTaskQueue, "the agents' shared workflow task queue (config temporal.task_queue): with mutual TLS, what hosts may poll and operators start workflows on")
	fs.BoolVar(&o.InsecureListen, "insecure-listen", false, "allow a non-loopback --ip without mutual TLS, or --ui-ip without the UI's login and HTTPS: anyone who reaches it gets full access")
	fs.StringVar(&o.UIIP, "ui-ip", "127.0.0.1", "IP the Web UI listens on")
	fs.BoolVar(&o.UIWriteActions, "ui-write-actions", false, "let the Web UI start, signal, cancel and terminate workflows (default: read-only)")
	fs.StringVar(&o.UITLSCert, "ui-tls-cert", "", "certificate (PEM) to serve the Web UI over HTTPS, with --ui-tls-key")
	fs.StringVar(&o.UITLSKey, "ui-tls-key", "", "private key (PEM) of --ui-tls-cert")
	fs.StringVar(&o.OIDC.Issuer, "ui-oidc-issuer", "", "Web UI login: OpenID Connect provider URL (needed for the UI with --tls-require-client-cert)")
	fs.StringVar(&o.OIDC.ClientID, "ui-oidc-client-id", "", "Web UI login: the UI's client ID at the provider")
	fs.StringVar(&o.OIDC.ClientSecretFile, "ui-oidc-client-secret-file", "", "Web UI login: file holding the client secret (mode 0600)")
	fs.StringVar(&o.OIDC.CallbackURL, "ui-oidc-callback-url", "", "Web UI login: the UI's URL + /auth/sso/callback, as registered at the provider")
	fs.StringSliceVar(&o.OIDC.Scopes, "ui-oidc-scopes", nil, "Web UI login: scopes (default openid,profile,email)")
}

// replctlAccess is what the role authorizer lets hosts and operators use: replctl's
// registered workflow and activity types on its queues.
func replctlAccess(taskQueue string) devserver.Access {
	return devserver.Access{
		WorkflowTaskQueue: taskQueue,
		HostQueuePrefix:   workflows.HostQueue(""),
		// The registration tables: every workflow and activity an agent registers, no more.
		WorkflowTypes: workers.WorkflowNames(),
		ActivityTypes: workers.ActivityNames(),
		HostSignals:   []string{workflows.HostResumedSignal},
	}
}

func (o *ServerOptions) start(ctx context.Context, f *Factory) (*devserver.Server, error) {
	tlsOpts, err := o.TLS.options()
	if err != nil {
		return nil, err
	}
	oidc, err := o.OIDC.options()
	if err != nil {
		return nil, err
	}
	s, err := devserver.Start(ctx, devserver.Options{
		DBFile: o.DBFile, IP: o.IP, Port: o.Port, UIPort: o.UIPort, Namespace: o.Namespace,
		SearchAttributes: workflows.SearchAttributes(), Logger: f.Logger().Named("temporal"), LogLevel: o.LogLevel,
		TLS: tlsOpts, Access: replctlAccess(o.TaskQueue), InsecureListen: o.InsecureListen,
		UI: devserver.UIOptions{IP: o.UIIP, WriteActions: o.UIWriteActions, OIDC: oidc, TLSCertFile: o.UITLSCert, TLSKeyFile: o.UITLSKey},
	})
	if err != nil {
		return nil, fmt.Errorf("embedded Temporal server: %w", err)
	}
	roles := ""
	if s.RolesEnforced() {
		roles = "; roles from the client certificate's CN: host:<name>, operator, reader"
	}
	fmt.Fprintf(f.ErrOut, "Temporal server on %s (namespace %s, db %s%s%s)\n", s.FrontendAddress(), o.Namespace, dbLabel(o.DBFile), tlsLabel(tlsOpts, s), roles)
	if ui := s.UIAddress(); ui != "" {
		mode := "read-only; --ui-write-actions to start and cancel runs from it"
		if o.UIWriteActions {
			mode = "write actions on"
		}
		fmt.Fprintf(f.ErrOut, "Temporal Web UI on %s (%s)\n", ui, mode)
	}
	return s, nil
}

func dbLabel(db string) string {
	if db == "" {
		return "in memory"
	}
	return db
}

// NewCmdServer is `replctl server`: an embedded Temporal server with its Web UI.
func NewCmdServer(f *Factory, runF func(*ServerOptions) error) *cobra.Command {
	o := &ServerOptions{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run an embedded Temporal server (SQLite file) with the Web UI",
		Long: "Run a real Temporal server inside replctl, persisting to a SQLite file, with the Temporal Web UI.\n" +
			"The namespace and replctl's search attributes are ensured on every start.",
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(o)
			}
			s, err := o.start(cmd.Context(), f)
			if err != nil {
				return err
			}
			<-cmd.Context().Done()
			fmt.Fprintln(f.ErrOut, "stopping Temporal server")
			return s.Stop()
		},
	}
	o.AddFlags(cmd.Flags(), "replctl-temporal.db")
	o.TLS.AddFlags(cmd.Flags())
	return cmd
}

// portOf returns the port of a host:port address, or def.
func portOf(addr string, def int) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return def
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return def
	}
	return n
}
