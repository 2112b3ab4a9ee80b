// Package runwait waits for a workflow run's result through a control plane that stops
// answering for a while: a database restart or failover, a frontend restart. The SDK's
// WorkflowRun.Get gives up on the first error its own retries do not cover (a namespace
// the frontend briefly cannot find while its database is down is one), and a caller that
// took that error for the run's outcome would report a run as failed while it goes on.
package runwait

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultPatience is how long Get keeps asking a server that does not answer.
const DefaultPatience = 5 * time.Minute

// ErrNoAnswer means the server did not answer for the whole patience: the run's outcome is
// unknown, and it may still be going.
var ErrNoAnswer = errors.New("the server did not answer")

// Options tune Get.
type Options struct {
	// Patience bounds one stretch of unanswered asks (DefaultPatience when 0).
	Patience time.Duration
	// OnRetry, when set, is told each error Get waits out.
	OnRetry func(err error)
}

// Get waits for run runID of workflowID to close and decodes its result into valuePtr, as
// WorkflowRun.Get does (following continued runs), and asks again after an error of the
// server being away (Transient) until one stretch of them lasts opts.Patience; then it
// returns an error wrapping ErrNoAnswer and the last error. The run's own failure, a
// canceled ctx and every other error are returned as they are.
func Get(ctx context.Context, c client.Client, workflowID, runID string, valuePtr any, opts Options) error {
	return GetRun(ctx, c, c.GetWorkflow(ctx, workflowID, runID), valuePtr, opts)
}

// GetRun is Get of a run handle the caller has (ExecuteWorkflow's): the first ask goes
// through it, the asks after an error through c.GetWorkflow of its IDs.
func GetRun(ctx context.Context, c client.Client, run client.WorkflowRun, valuePtr any, opts Options) error {
	patience := opts.Patience
	if patience <= 0 {
		patience = DefaultPatience
	}
	workflowID, runID := run.GetID(), run.GetRunID()
	var since time.Time
	backoff := 250 * time.Millisecond
	for {
		err := run.Get(ctx, valuePtr)
		if err == nil || ctx.Err() != nil || !Transient(err) {
			return err
		}
		if since.IsZero() {
			since = time.Now()
		}
		if time.Since(since) >= patience {
			return fmt.Errorf("%w for %s while waiting for workflow %s (run %s), which may still be going: %w",
				ErrNoAnswer, patience, workflowID, runID, err)
		}
		if opts.OnRetry != nil {
			opts.OnRetry(err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		run = c.GetWorkflow(ctx, workflowID, runID)
	}
}

// Transient tells an error of a server that is away or not ready from an answer: unavailable,
// deadline exceeded, resource exhausted, or a namespace not found (a frontend whose database
// is down cannot load its namespaces). A workflow that is not found is an answer.
func Transient(err error) bool {
	var nsNotFound *serviceerror.NamespaceNotFound
	var unavailable *serviceerror.Unavailable
	var deadline *serviceerror.DeadlineExceeded
	var exhausted *serviceerror.ResourceExhausted
	if errors.As(err, &nsNotFound) || errors.As(err, &unavailable) || errors.As(err, &deadline) || errors.As(err, &exhausted) {
		return true
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
			return true
		}
	}
	return false
}
