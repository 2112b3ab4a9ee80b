package devserver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// callTimeout bounds one admin call; the surrounding loops retry until the
// readiness context ends.
const callTimeout = 5 * time.Second

func dialFrontend(addr string, transport grpc.DialOption) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(addr, transport)
	if err != nil {
		return nil, fmt.Errorf("connect to frontend %s: %w", addr, err)
	}
	return conn, nil
}

// retry calls f until it succeeds, returns a permanent error, or ctx ends.
// Unavailable and deadline errors are retried: the frontend may accept
// connections before every service behind it is ready.
func retry(ctx context.Context, what string, f func(ctx context.Context) error) error {
	var last error
	for {
		callCtx, cancel := context.WithTimeout(ctx, callTimeout)
		err := f(callCtx)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		if !isTransient(err) && ctx.Err() == nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// apiError turns a gRPC status error into the matching serviceerror type, so
// that errors.As works on it.
func apiError(err error) error {
	if st, ok := status.FromError(err); ok && err != nil {
		return serviceerror.FromStatus(st)
	}
	return err
}

func isTransient(err error) bool {
	switch serviceerror.ToStatus(err).Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// waitFrontend waits until the frontend answers API calls.
func waitFrontend(ctx context.Context, conn *grpc.ClientConn, addr string) error {
	wf := workflowservice.NewWorkflowServiceClient(conn)
	return retry(ctx, "wait for Temporal frontend at "+addr, func(ctx context.Context) error {
		_, err := wf.GetSystemInfo(ctx, &workflowservice.GetSystemInfoRequest{})
		return err
	})
}

// ensureNamespace makes sure ns exists. Start pre-creates it in the database,
// so normally this only confirms that the frontend sees it; registering is
// the fallback if it is somehow missing.
func ensureNamespace(ctx context.Context, conn *grpc.ClientConn, ns string) error {
	wf := workflowservice.NewWorkflowServiceClient(conn)
	return retry(ctx, fmt.Sprintf("ensure namespace %q", ns), func(ctx context.Context) error {
		_, err := wf.DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: ns})
		err = apiError(err)
		var notFound *serviceerror.NamespaceNotFound
		if !errors.As(err, &notFound) {
			return err
		}
		_, err = wf.RegisterNamespace(ctx, &workflowservice.RegisterNamespaceRequest{
			Namespace:                        ns,
			WorkflowExecutionRetentionPeriod: durationpb.New(NamespaceRetention),
		})
		err = apiError(err)
		var exists *serviceerror.NamespaceAlreadyExists
		if err != nil && !errors.As(err, &exists) {
			return err
		}
		// Retried until the describe above succeeds.
		return serviceerror.NewUnavailable("namespace registered, waiting until it is visible")
	})
}

// ensureSearchAttributes adds the custom search attributes of want that ns
// lacks. An attribute that exists with another type is an error: the type of
// a search attribute cannot be changed in place.
func ensureSearchAttributes(ctx context.Context, conn *grpc.ClientConn, ns string, want map[string]enums.IndexedValueType) error {
	if len(want) == 0 {
		return nil
	}
	op := operatorservice.NewOperatorServiceClient(conn)
	var list *operatorservice.ListSearchAttributesResponse
	err := retry(ctx, fmt.Sprintf("list search attributes of namespace %q", ns), func(ctx context.Context) error {
		var err error
		list, err = op.ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: ns})
		var notFound *serviceerror.NamespaceNotFound
		if errors.As(apiError(err), &notFound) {
			// A namespace registered a moment ago (PostgreSQL: ensureNamespace) reaches the
			// services' namespace caches within namespaceRefreshInterval.
			return serviceerror.NewUnavailable(err.Error())
		}
		return err
	})
	if err != nil {
		return err
	}

	missing := map[string]enums.IndexedValueType{}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		typ := want[name]
		if have, ok := list.GetCustomAttributes()[name]; ok {
			if have != typ {
				return fmt.Errorf("search attribute %q in namespace %q has type %s, want %s (remove it or use another name)",
					name, ns, have, typ)
			}
			continue
		}
		if _, ok := list.GetSystemAttributes()[name]; ok {
			return fmt.Errorf("search attribute %q is a Temporal system attribute; pick another name", name)
		}
		missing[name] = typ
	}
	if len(missing) == 0 {
		return nil
	}

	_, err = op.AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace:        ns,
		SearchAttributes: missing,
	})
	if err != nil {
		return fmt.Errorf("add search attributes %v to namespace %q: %w", slices.Sorted(maps.Keys(missing)), ns, err)
	}
	if err := waitAliases(ctx, conn, ns, missing); err != nil {
		return err
	}
	// The frontend's namespace cache has them now; history, matching and the
	// worker service reload on the same interval.
	select {
	case <-ctx.Done():
		return fmt.Errorf("wait for search attributes of namespace %q: %w", ns, ctx.Err())
	case <-time.After(namespaceRefreshInterval + 200*time.Millisecond):
	}
	return nil
}

// waitAliases waits until the frontend's namespace cache (a weakly consistent
// describe) knows every attribute in names; until then workflow starts that
// use them would be rejected.
func waitAliases(ctx context.Context, conn *grpc.ClientConn, ns string, names map[string]enums.IndexedValueType) error {
	wf := workflowservice.NewWorkflowServiceClient(conn)
	return retry(ctx, fmt.Sprintf("wait for new search attributes of namespace %q", ns), func(ctx context.Context) error {
		resp, err := wf.DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: ns, WeakConsistency: true})
		if err != nil {
			return err
		}
		known := map[string]bool{}
		for _, alias := range resp.GetConfig().GetCustomSearchAttributeAliases() {
			known[alias] = true
		}
		for name := range names {
			if !known[name] {
				return serviceerror.NewUnavailable(fmt.Sprintf("search attribute %q not yet in namespace cache", name))
			}
		}
		return nil
	})
}
