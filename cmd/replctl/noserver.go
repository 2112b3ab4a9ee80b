//go:build noserver

package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// A binary built with -tags noserver (the agent and CLI without the embedded Temporal
// server and Web UI: see `make build-agent`) keeps `server` and `dev` as commands that say
// where they went.
func NewCmdServer(f *Factory, _ func(*struct{}) error) *cobra.Command { return withoutServer("server") }

// NewCmdDev: see NewCmdServer.
func NewCmdDev(f *Factory, _ func(*struct{}) error) *cobra.Command { return withoutServer("dev") }

func withoutServer(name string) *cobra.Command {
	return &cobra.Command{
		Use:    name,
		Short:  "Not in this build (built with -tags noserver): use the full replctl binary",
		Hidden: true,
		RunE: func(*cobra.Command, []string) error {
			return fmt.Errorf("replctl %s needs the embedded Temporal server, which this binary was built without (-tags noserver): use the full replctl binary (make build)", name)
		},
	}
}
