package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/internal/runwait"
)

// DefaultWaitForServer is how long an agent waits at start for its Temporal server and
// namespace (--wait-for-server).
const DefaultWaitForServer = 2 * time.Minute

// waitNamespace waits until the frontend of c knows namespace ns, for up to wait. A cluster
// that is coming up opens the frontend's port before its namespace is registered and seen
// by every service, and a worker started then fails for good (the SDK's worker start looks
// the namespace up once). Not found and unavailable are waited out, with a line on errOut
// every 10 s; any other error (permission, TLS, a bad name) ends the wait at once.
func waitNamespace(ctx context.Context, c client.Client, ns string, wait time.Duration, errOut io.Writer) error {
	began := time.Now()
	deadline := began.Add(wait)
	var said time.Time
	for {
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := c.WorkflowService().DescribeNamespace(callCtx, &workflowservice.DescribeNamespaceRequest{Namespace: ns})
		cancel()
		if err == nil {
			if !said.IsZero() {
				fmt.Fprintf(errOut, "namespace %s answered after %s\n", ns, time.Since(began).Round(time.Millisecond))
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !serverComingUp(err) {
			return fmt.Errorf("namespace %s: %w", ns, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s not usable after %s (--wait-for-server): %w", ns, wait, err)
		}
		if said.IsZero() || time.Since(said) >= 10*time.Second {
			fmt.Fprintf(errOut, "waiting for namespace %s (up to %s): %v\n", ns, wait, err)
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// serverComingUp tells the errors of a server or namespace that is not there yet: those of
// a server that is away (runwait.Transient), or a namespace not found in any form (here it
// is the thing waited for, not an answer).
func serverComingUp(err error) bool {
	var notFound *serviceerror.NotFound
	return runwait.Transient(err) || errors.As(err, &notFound) || errors.Is(err, context.DeadlineExceeded)
}
