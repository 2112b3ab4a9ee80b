package main

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/replctl/replctl/cmd/replctl/internal/devserver"
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
}

// AddFlags registers the options' flags on fs.
func (o *ServerOptions) AddFlags(fs *pflag.FlagSet, defaultDB string) {
	fs.StringVar(&o.DBFile, "db", defaultDB, "SQLite file of the embedded Temporal server (\"\" = in memory)")
	fs.StringVar(&o.IP, "ip", "127.0.0.1", "IP the server and UI listen on")
	fs.IntVar(&o.Port, "port", 7233, "Temporal frontend (gRPC) port")
	fs.IntVar(&o.UIPort, "ui-port", 8233, "Temporal Web UI port (-1 = no UI)")
	fs.StringVar(&o.Namespace, "server-namespace", "default", "namespace the server creates")
	fs.StringVar(&o.LogLevel, "server-log-level", "warn", "log level of the embedded server")
}

func (o *ServerOptions) start(ctx context.Context, f *Factory) (*devserver.Server, error) {
	tlsOpts, err := o.TLS.options()
	if err != nil {
		return nil, err
	}
	s, err := devserver.Start(ctx, devserver.Options{
		DBFile: o.DBFile, IP: o.IP, Port: o.Port, UIPort: o.UIPort, Namespace: o.Namespace,
		SearchAttributes: workflows.SearchAttributes(), Logger: f.Logger().Named("temporal"), LogLevel: o.LogLevel,
		TLS: tlsOpts,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded Temporal server: %w", err)
	}
	fmt.Fprintf(f.ErrOut, "Temporal server on %s (namespace %s, db %s%s)\n", s.FrontendAddress(), o.Namespace, dbLabel(o.DBFile), tlsLabel(tlsOpts, s))
	if ui := s.UIAddress(); ui != "" {
		fmt.Fprintf(f.ErrOut, "Temporal Web UI on %s\n", ui)
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
