package schedsync

import (
	"context"
	"errors"
	"fmt"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
)

// Client is the part of Temporal's schedule client that sync needs. Temporal adapts the
// SDK's; tests give a fake. A schedule that is not there is a *serviceerror.NotFound.
type Client interface {
	Describe(ctx context.Context, id string) (*client.ScheduleDescription, error)
	// List returns the IDs of all schedules; on an error, those read before it.
	List(ctx context.Context) ([]string, error)
	Create(ctx context.Context, o client.ScheduleOptions) error
	// Update replaces schedule id with what do returns for its current description.
	Update(ctx context.Context, id string, do func(client.ScheduleUpdateInput) (*client.ScheduleUpdate, error)) error
	Delete(ctx context.Context, id string) error
}

// Temporal is sc as a Client.
func Temporal(sc client.ScheduleClient) Client { return temporalClient{sc} }

type temporalClient struct{ sc client.ScheduleClient }

func (t temporalClient) Describe(ctx context.Context, id string) (*client.ScheduleDescription, error) {
	return t.sc.GetHandle(ctx, id).Describe(ctx)
}

func (t temporalClient) List(ctx context.Context) ([]string, error) {
	it, err := t.sc.List(ctx, client.ScheduleListOptions{})
	if err != nil {
		return nil, err
	}
	var ids []string
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return ids, err
		}
		ids = append(ids, e.ID)
	}
	return ids, nil
}

func (t temporalClient) Create(ctx context.Context, o client.ScheduleOptions) error {
	_, err := t.sc.Create(ctx, o)
	return err
}

func (t temporalClient) Update(ctx context.Context, id string, do func(client.ScheduleUpdateInput) (*client.ScheduleUpdate, error)) error {
	return t.sc.GetHandle(ctx, id).Update(ctx, client.ScheduleUpdateOptions{DoUpdate: do})
}

func (t temporalClient) Delete(ctx context.Context, id string) error {
	return t.sc.GetHandle(ctx, id).Delete(ctx)
}

func isNotFound(err error) bool {
	var nf *serviceerror.NotFound
	return errors.As(err, &nf)
}

// Sync makes the server's schedules match cfg: create the missing ones, update those that
// differ, delete replctl schedules the config does not ask for. It goes on after a failing
// schedule and returns all errors joined. With dryRun it only reports what it would do.
func Sync(ctx context.Context, c Client, cfg *config.Config, dryRun bool) ([]Change, error) {
	d := FromConfig(cfg)
	return Apply(ctx, c, Diff(d, Observe(ctx, c, d)), dryRun)
}

// Observe reads what the server has of d's schedules, and the server's list.
func Observe(ctx context.Context, c Client, d Desired) Observed {
	o := Observed{Schedules: map[string]*client.ScheduleDescription{}, Errs: map[string]error{}}
	for _, w := range d.Wants {
		desc, err := c.Describe(ctx, w.ID)
		switch {
		case err == nil:
			o.Schedules[w.ID] = desc
		case !isNotFound(err):
			o.Errs[w.ID] = err
		}
	}
	o.Listed, o.ListErr = c.List(ctx)
	return o
}

// Apply carries out p (with dryRun, only reports it) and returns the report. A failing step
// does not stop the others: the error names each schedule that failed and the step.
func Apply(ctx context.Context, c Client, p Plan, dryRun bool) ([]Change, error) {
	var changes []Change
	var errs []error
	for _, op := range p.Ops {
		ch, err := op.Report, op.Err
		if !dryRun {
			switch op.Kind {
			case Create:
				err = c.Create(ctx, *op.Options)
			case Update:
				err = c.Update(ctx, ch.ScheduleID, keepState(*op.Options))
			case Delete:
				err = c.Delete(ctx, ch.ScheduleID)
				if err != nil && op.Listed && isNotFound(err) {
					continue // deleted already: the list lags behind
				}
			}
		}
		if err != nil {
			ch.Error = err.Error()
			errs = append(errs, fmt.Errorf("schedule %s: %s: %w", ch.ScheduleID, ch.Change, err))
		}
		changes = append(changes, ch)
	}
	if p.ListErr != nil {
		errs = append(errs, fmt.Errorf("list schedules: %w", p.ListErr))
	}
	if len(errs) > 0 {
		return changes, fmt.Errorf("schedule sync incomplete (the other schedules were synced): %w", errors.Join(errs...))
	}
	return changes, nil
}

// keepState updates a schedule to want but keeps its state: an operator's pause (and its
// note) survives a sync.
func keepState(want client.ScheduleOptions) func(client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
	return func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
		s := in.Description.Schedule
		spec := want.Spec
		s.Spec = &spec
		s.Action = want.Action
		s.Policy = &client.SchedulePolicies{Overlap: want.Overlap, CatchupWindow: want.CatchupWindow, PauseOnFailure: want.PauseOnFailure}
		return &client.ScheduleUpdate{Schedule: &s}, nil
	}
}
