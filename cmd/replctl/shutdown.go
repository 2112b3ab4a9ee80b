package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/replctl/replctl/workers"
)

// addShutdownGraceFlag adds --shutdown-grace to an agent-running command.
func addShutdownGraceFlag(fs *pflag.FlagSet, grace *time.Duration) {
	fs.DurationVar(grace, "shutdown-grace", workers.DefaultShutdownGrace,
		"on SIGINT/SIGTERM while an agent holds an application quiesced: how long to hand over its steps and wait for the run to resume it before running the resume script itself (a second signal: at once)")
}

// checkShutdownGrace refuses a negative --shutdown-grace.
func checkShutdownGrace(grace time.Duration) error {
	if grace < 0 {
		return usageError("--shutdown-grace %s: want a duration of 0 or more, e.g. 60s", grace)
	}
	return nil
}

// stopAgents stops agents once the command's context ended (the first SIGINT or SIGTERM):
// see workers.Shutdown. A second signal ends the wait for the runs to resume.
func stopAgents(f *Factory, agents []*workers.Agent, grace time.Duration) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	force, done := make(chan struct{}), make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-sig:
			close(force)
		case <-done:
		}
	}()
	workers.Shutdown(agents, workers.ShutdownOptions{Grace: grace, Force: force, Logf: func(format string, args ...any) {
		fmt.Fprintf(f.ErrOut, "replctl: "+format+"\n", args...)
	}})
}
