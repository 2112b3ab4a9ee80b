package activities

import (
	"context"

	"github.com/replctl/replctl/activities/dataplane"
)

// TestCopyName is the registered name of TestCopy: stable, because recorded histories refer
// to it.
const TestCopyName = "TestCopy"

// TestCopyInput is the input of TestCopy.
type TestCopyInput struct {
	Job        string
	Agent      string
	TargetRoot string
	Dataset    string
	// Replica to copy ("" = the current one); Name of the copy.
	Replica string
	Name    string
	// Cleanup removes the copy instead of opening it.
	Cleanup bool
}

// TestCopyResult is where the writable test copy is.
type TestCopyResult struct {
	Agent   string
	Name    string
	Path    string
	Replica string
	Files   int64
	Bytes   int64
	Cloned  int64
	Removed bool
}

// TestCopy opens (or, with Cleanup, removes) a writable copy of a replica on the target for
// a failover test; published replicas are never touched.
func (a *Agent) TestCopy(ctx context.Context, in TestCopyInput) (TestCopyResult, error) {
	ctx, l, err := a.begin(ctx, in.Agent, Progress{Step: StepTestCopy, Phase: "copy"})
	if err != nil {
		return TestCopyResult{}, err
	}
	defer l.stop()
	if err := a.authorizeTestCopy(ctx, in); err != nil {
		return TestCopyResult{}, err
	}
	if in.Cleanup {
		if err := dataplane.RemoveTestCopy(in.TargetRoot, in.Dataset, in.Name); err != nil {
			return TestCopyResult{}, a.fault(ctx, in.Job, StepTestCopy, err, l.progress())
		}
		return TestCopyResult{Agent: a.Host, Name: in.Name, Removed: true}, nil
	}
	tc, err := dataplane.OpenTestCopy(ctx, in.TargetRoot, in.Dataset, in.Replica, in.Name)
	if err != nil {
		return TestCopyResult{}, a.fault(ctx, in.Job, StepTestCopy, err, l.progress())
	}
	return TestCopyResult{Agent: a.Host, Name: tc.Name, Path: tc.Path, Replica: tc.Replica, Files: tc.Files, Bytes: tc.Bytes, Cloned: tc.Cloned}, nil
}
