// Command replctl replicates datasets between storage systems with Temporal workflows and
// agents that take over for each other. `replctl dev` runs everything on one machine.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f := NewFactory(os.Stdout, os.Stderr)
	cmd := NewCmdRoot(f)
	err := cmd.ExecuteContext(ctx)
	stop()
	if err != nil {
		var ee *ExitError
		if errors.As(err, &ee) {
			if ee.Err != nil {
				fmt.Fprintln(os.Stderr, "replctl:", ee.Err)
			}
			os.Exit(ee.Code)
		}
		fmt.Fprintln(os.Stderr, "replctl:", err)
		os.Exit(ExitFailure)
	}
}
