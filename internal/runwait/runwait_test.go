package runwait

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/mocks"
	"go.temporal.io/sdk/temporal"
)

// run is a WorkflowRun whose Get returns err, or sets the result to v when err is nil.
func run(t *testing.T, v string, err error) *mocks.WorkflowRun {
	r := mocks.NewWorkflowRun(t)
	r.On("GetID").Return("wf").Maybe()
	r.On("GetRunID").Return("r1").Maybe()
	r.On("Get", mock.Anything, mock.Anything).Run(func(a mock.Arguments) {
		if err == nil {
			*a.Get(1).(*string) = v
		}
	}).Return(err).Once()
	return r
}

func TestGetRidesOutAServerThatIsAway(t *testing.T) {
	c := mocks.NewClient(t)
	away := []error{
		serviceerror.NewNamespaceNotFound("default"),
		serviceerror.NewUnavailable("history is restarting"),
		serviceerror.NewDeadlineExceeded("context deadline exceeded"),
	}
	for _, err := range away {
		c.On("GetWorkflow", mock.Anything, "wf", "r1").Return(run(t, "", err)).Once()
	}
	c.On("GetWorkflow", mock.Anything, "wf", "r1").Return(run(t, "done", nil)).Once()

	var seen []error
	var got string
	require.NoError(t, Get(context.Background(), c, "wf", "r1", &got, Options{OnRetry: func(err error) { seen = append(seen, err) }}))
	assert.Equal(t, "done", got)
	assert.Equal(t, away, seen, "each error of a server that is away is waited out, and told")
}

func TestGetReturnsAnswersAtOnce(t *testing.T) {
	for name, err := range map[string]error{
		"the run failed":         temporal.NewApplicationError("push failed", "Push"),
		"the run was canceled":   temporal.NewCanceledError(),
		"no such workflow":       serviceerror.NewNotFound("workflow wf not found"),
		"refused by the server":  serviceerror.NewPermissionDenied("role reader may not", ""),
		"bad request":            serviceerror.NewInvalidArgument("bad run ID"),
		"an error of no service": errors.New("boom"),
	} {
		t.Run(name, func(t *testing.T) {
			c := mocks.NewClient(t)
			c.On("GetWorkflow", mock.Anything, "wf", "r1").Return(run(t, "", err)).Once()
			var got string
			assert.ErrorIs(t, Get(context.Background(), c, "wf", "r1", &got, Options{}), err)
		})
	}
}

func TestGetGivesUpAfterItsPatience(t *testing.T) {
	c := mocks.NewClient(t)
	c.On("GetWorkflow", mock.Anything, "wf", "r1").Return(func(context.Context, string, string) client.WorkflowRun {
		return run(t, "", serviceerror.NewUnavailable("connection refused"))
	})
	var got string
	err := Get(context.Background(), c, "wf", "r1", &got, Options{Patience: time.Second})
	require.ErrorIs(t, err, ErrNoAnswer)
	assert.ErrorContains(t, err, "the server did not answer for 1s while waiting for workflow wf (run r1), which may still be going: connection refused")
}

func TestGetStopsWithItsContext(t *testing.T) {
	c := mocks.NewClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	c.On("GetWorkflow", mock.Anything, "wf", "r1").Return(func(context.Context, string, string) client.WorkflowRun {
		cancel()
		return run(t, "", serviceerror.NewUnavailable("connection refused"))
	}).Once()
	var got string
	err := Get(ctx, c, "wf", "r1", &got, Options{})
	require.Error(t, err)
	assert.NotErrorIs(t, err, ErrNoAnswer)
}

func TestGetRunAsksAgainByTheRunsIDs(t *testing.T) {
	c := mocks.NewClient(t)
	c.On("GetWorkflow", mock.Anything, "wf", "r1").Return(run(t, "done", nil)).Once()
	var got string
	require.NoError(t, GetRun(context.Background(), c, run(t, "", serviceerror.NewUnavailable("frontend restarting")), &got, Options{}))
	assert.Equal(t, "done", got)
}
