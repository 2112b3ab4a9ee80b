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
	err := execute(ctx, f, NewCmdRoot(f))
	stop()
	if err != nil {
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Err != nil {
			fmt.Fprintln(os.Stderr, "replctl:", err)
		}
		os.Exit(exitCode(err))
	}
}
