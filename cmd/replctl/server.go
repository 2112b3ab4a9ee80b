//go:build !noserver

package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/replctl/replctl/cmd/replctl/internal/devserver"
	"github.com/replctl/replctl/workers"
	"github.com/replctl/replctl/workflows"
)

// ServerOptions are the flags of `replctl server` (also used by `dev`).
type ServerOptions struct {
	// DBFile is a SQLite file, or a postgres:// URL (dbOptions).
	DBFile string
	// DBPasswordFile holds the PostgreSQL password (mode 0600), kept out of the URL.
	DBPasswordFile string
	// DBSetup: create and upgrade the PostgreSQL databases' schema on start.
	DBSetup bool
	// HistoryShards of a new PostgreSQL database (0: devserver.DefaultPostgresShards).
	HistoryShards int
	// Cluster: the services of this process and its place among the others (PostgreSQL;
	// only `replctl server` has these flags).
	Cluster   ClusterFlags
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
	fs.StringVar(&o.DBFile, "db", defaultDB, "SQLite file of the embedded Temporal server (\"\" = in memory), or a PostgreSQL database: postgres://user@host[:port]/name[?sslmode=...] (its visibility in name_visibility)")
	fs.StringVar(&o.DBPasswordFile, "db-password-file", "", "file (mode 0600) holding the PostgreSQL password, instead of one in the URL (which every local user sees in the process list)")
	fs.BoolVar(&o.DBSetup, "db-setup", true, "PostgreSQL: create the databases if missing and set up or upgrade their schema; false: wait for another server process to do it")
	fs.IntVar(&o.HistoryShards, "history-shards", 0, fmt.Sprintf("PostgreSQL: history shards of a new database (default %d; fixed once the database exists; SQLite has 1)", devserver.DefaultPostgresShards))
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
	pg, err := o.postgres()
	if err != nil {
		return nil, err
	}
	dbFile := o.DBFile
	if pg != nil {
		dbFile = ""
	}
	s, err := devserver.Start(ctx, devserver.Options{
		DBFile: dbFile, Postgres: pg, HistoryShards: o.HistoryShards, Cluster: o.Cluster.options(), ClusterCA: o.Cluster.ca(), IP: o.IP, Port: o.Port, UIPort: o.UIPort, Namespace: o.Namespace,
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
	if svc := o.Cluster.Services; len(svc) > 0 && !slices.Contains(svc, "frontend") {
		fmt.Fprintf(f.ErrOut, "Temporal %s of the cluster on %s (frontend at %s)\n", strings.Join(svc, ", "), dbLabel(o.DBFile), s.FrontendAddress())
		return s, nil
	}
	fmt.Fprintf(f.ErrOut, "Temporal server on %s (namespace %s, db %s%s%s%s)\n", s.FrontendAddress(), o.Namespace, dbLabel(o.DBFile), shardsLabel(pg, o.HistoryShards), tlsLabel(tlsOpts, s), roles)
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
	if isPostgresURL(db) {
		if u, err := url.Parse(db); err == nil {
			return u.Redacted()
		}
	}
	return db
}

// shardsLabel says how many history shards a new PostgreSQL database gets.
func shardsLabel(pg *devserver.Postgres, shards int) string {
	if pg == nil {
		return ""
	}
	if shards == 0 {
		shards = devserver.DefaultPostgresShards
	}
	return fmt.Sprintf(", %d history shards if new", shards)
}

// isPostgresURL tells whether --db names a PostgreSQL database rather than a SQLite file.
func isPostgresURL(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// postgres is the PostgreSQL database of --db, or nil for SQLite.
func (o *ServerOptions) postgres() (*devserver.Postgres, error) {
	if !isPostgresURL(o.DBFile) {
		if o.DBPasswordFile != "" {
			return nil, fmt.Errorf("--db-password-file is for a PostgreSQL --db (postgres://...), not the SQLite file %s", o.DBFile)
		}
		return nil, nil
	}
	pg := &devserver.Postgres{URL: o.DBFile, SetupSchema: o.DBSetup}
	if o.DBPasswordFile != "" {
		pw, err := readSecretString(o.DBPasswordFile, "--db-password-file", "")
		if err != nil {
			return nil, err
		}
		pg.Password = pw
	}
	return pg, nil
}

// NewCmdServer is `replctl server`: an embedded Temporal server with its Web UI.
func NewCmdServer(f *Factory, runF func(*ServerOptions) error) *cobra.Command {
	o := &ServerOptions{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run an embedded Temporal server (SQLite file or PostgreSQL) with the Web UI",
		Long: "Run a real Temporal server inside replctl, persisting to a SQLite file, with the Temporal Web UI.\n" +
			"With --db postgres://... it persists to PostgreSQL with --history-shards shards, and may run only some\n" +
			"of the services (--services): processes on one database form one cluster (design.md, \"A Temporal cluster\").\n" +
			"The namespace and replctl's search attributes are ensured on every start of a frontend.",
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
	o.Cluster.AddFlags(cmd.Flags())
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
