package main

import (
	"context"
	"errors"
	"fmt"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/internal/runwait"
)

// runEndError is the error of a workflow that did not complete, as an exit code 3
// (ExitRunFailed, which covers failed and cancelled runs): what names the run, e.g.
// "maintenance of array-b:.replctl/repository". A cancelled run says so instead of
// "failed", so an operator's own cancel is not mistaken for a fault. An error of the wait
// itself (lostRun) is exit 1: the run's outcome is not known.
func runEndError(what string, err error) error {
	if lostRun(err) {
		return fmt.Errorf("waiting for the %s: %w", what, err)
	}
	var canceled *temporal.CanceledError
	if errors.As(err, &canceled) {
		return &ExitError{Code: ExitRunFailed, Err: fmt.Errorf("%s was canceled: %w", what, err)}
	}
	return &ExitError{Code: ExitRunFailed, Err: fmt.Errorf("%s failed: %w", what, err)}
}

// lostRun tells an error of waiting for a run (the server did not answer, refused the ask,
// or the wait's own deadline passed) from the run's outcome.
func lostRun(err error) bool {
	var se serviceerror.ServiceError
	return errors.Is(err, runwait.ErrNoAnswer) || errors.As(err, &se) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// waitRun waits for run to close and decodes its result into valuePtr (runwait.GetRun: a
// server that is away for a while, e.g. while its database restarts, is waited out, and
// said so on ErrOut once).
func (f *Factory) waitRun(ctx context.Context, c client.Client, run client.WorkflowRun, valuePtr any) error {
	told := false
	return runwait.GetRun(ctx, c, run, valuePtr, runwait.Options{OnRetry: func(err error) {
		if !told {
			fmt.Fprintf(f.ErrOut, "the server does not answer (%v); still waiting for workflow %s\n", err, run.GetID())
			told = true
		}
	}})
}
