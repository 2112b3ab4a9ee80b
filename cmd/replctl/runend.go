package main

import (
	"errors"
	"fmt"

	"go.temporal.io/sdk/temporal"
)

// runEndError is the error of a workflow that did not complete, as an exit code 3
// (ExitRunFailed, which covers failed and cancelled runs): what names the run, e.g.
// "maintenance of array-b:.replctl/repository". A cancelled run says so instead of
// "failed", so an operator's own cancel is not mistaken for a fault.
func runEndError(what string, err error) error {
	var canceled *temporal.CanceledError
	if errors.As(err, &canceled) {
		return &ExitError{Code: ExitRunFailed, Err: fmt.Errorf("%s was canceled: %w", what, err)}
	}
	return &ExitError{Code: ExitRunFailed, Err: fmt.Errorf("%s failed: %w", what, err)}
}
