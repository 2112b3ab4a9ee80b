package main

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/spf13/cobra"
)

// Kinds of failure in the JSON error object: stable words for scripts, one per exit code
// except not_found, which refines exit 1 (documented in the README).
const (
	KindFailure      = "failure"
	KindUsage        = "usage"
	KindRunFailed    = "run_failed"
	KindLeftQuiesced = "left_quiesced"
	KindRunning      = "running"
	KindNotFound     = "not_found"
	KindDamaged      = "damaged"
	KindCheckFailed  = "check_failed"
)

// failureKind is the kind of failure an exit code stands for.
func failureKind(code int) string {
	switch code {
	case ExitUsage:
		return KindUsage
	case ExitRunFailed:
		return KindRunFailed
	case ExitLeftQuiesce:
		return KindLeftQuiesced
	case ExitRunning:
		return KindRunning
	case ExitDamaged:
		return KindDamaged
	case ExitCheckFailed:
		return KindCheckFailed
	}
	return KindFailure
}

// exitCode is the process exit code err stands for: an ExitError's code, else
// ExitFailure (ExitOK for nil).
func exitCode(err error) int {
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	if err != nil {
		return ExitFailure
	}
	return ExitOK
}

// runRef names a run in the JSON error object; what is not known stays out.
type runRef struct {
	Job        string    `json:"job,omitempty"`
	WorkflowID string    `json:"workflow_id,omitempty"`
	RunID      string    `json:"run_id,omitempty"`
	Phase      string    `json:"phase,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
}

// jsonError is the "error" member of the JSON error object.
type jsonError struct {
	Code    int    `json:"code"`
	Kind    string `json:"kind"`
	Message string `json:"message"`
	*runRef
}

// jsonFailure is what a failed command prints with -o json: the error and, when the
// command had a result (e.g. the status of a run that ended failed), that result.
type jsonFailure struct {
	Error  jsonError `json:"error"`
	Result any       `json:"result,omitempty"`
}

// errorObject is the JSON form of a command's error.
func errorObject(err error) jsonError {
	e := jsonError{Code: exitCode(err), Message: err.Error()}
	e.Kind = failureKind(e.Code)
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Kind != "" {
			e.Kind = ee.Kind
		}
		e.runRef = ee.Run
	}
	return e
}

// PrintJSON prints a command's result for -o json. Under execute the result is held until
// the command ends: printed alone on success, under "result" beside the error on failure,
// so stdout carries one JSON object either way. A command prints one result.
func (f *Factory) PrintJSON(v any) error {
	if !f.holdJSON {
		return writeJSON(f.Out, v)
	}
	f.jsonResult, f.hasJSON = v, true
	return nil
}

// Render prints a command's result: v as JSON under -o json (PrintJSON), else table writes
// the human view to f.Out. One place decides between the two for every command.
func (f *Factory) Render(output string, v any, table func(w io.Writer)) error {
	if output == "json" {
		return f.PrintJSON(v)
	}
	table(f.Out)
	return nil
}

// execute runs root as the program does and returns the command's error. When the
// command that ran was given -o json, stdout gets its result on success and the error
// object (jsonFailure) on failure; the caller still reports the error on stderr and
// exits with exitCode(err).
func execute(ctx context.Context, f *Factory, root *cobra.Command) error {
	f.holdJSON = true
	defer func() { f.holdJSON, f.hasJSON, f.jsonResult = false, false, nil }()
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil && wantsJSON(cmd) {
		return printFailure(f.Out, err, f.jsonResult)
	}
	if f.hasJSON {
		if werr := writeJSON(f.Out, f.jsonResult); werr != nil && err == nil {
			return werr
		}
	}
	return err
}

// printFailure prints the JSON error object of err (with result, if any) and returns err.
func printFailure(w io.Writer, err error, result any) error {
	if werr := writeJSON(w, jsonFailure{Error: errorObject(err), Result: result}); werr != nil {
		return errors.Join(err, werr)
	}
	return err
}

// addOutputFlag adds -o/--output, which execute reads (wantsJSON) to print a failure as
// the JSON error object.
func addOutputFlag(cmd *cobra.Command, output *string) {
	cmd.Flags().StringVarP(output, "output", "o", "table",
		`output: table or json; with json a failure prints {"error": {"code", "kind", "message"}} and exits with that code`)
}

// wantsJSON tells whether cmd was given --output json.
func wantsJSON(cmd *cobra.Command) bool {
	if cmd == nil {
		return false
	}
	o := cmd.Flags().Lookup("output")
	return o != nil && o.Value.String() == "json"
}
