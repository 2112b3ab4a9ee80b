package workflows

// A run's input comes from the CLI, a schedule, the Temporal Web UI's start form or any API
// client. The SDK's JSON decoding is lenient (keys match case-insensitively, unknown keys are
// ignored, a non-object fails with a raw decode error), so Replication takes the raw payload
// and decodes it here, strictly, with an error that shows the expected shape.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// inputShape is what a Replication input looks like, for error messages.
const inputShape = `{"job": "NAME"} (a failback: {"job": "NAME", "direction": "failback", "confirm": "NAME"}, optionally "from": "STORAGE" and "primary_down": true)`

// inputKeys are the JSON keys of ReplicationInput, exactly as spelt.
var inputKeys = func() []string {
	var keys []string
	t := reflect.TypeFor[ReplicationInput]()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return keys
}()

// decodeReplicationInput decodes a run's input strictly: one JSON object whose keys are
// exactly those of ReplicationInput, each of its type. It also returns the lenient decoding
// (what the SDK would have made of it) for runs recorded before strict decoding.
func decodeReplicationInput(raw converter.RawValue) (strict, lenient ReplicationInput, err error) {
	p := raw.Payload()
	if p == nil || len(p.GetData()) == 0 {
		return strict, lenient, badWorkflowInput("no input: want " + inputShape)
	}
	if enc := string(p.GetMetadata()[converter.MetadataEncoding]); enc != converter.MetadataEncodingJSON {
		return strict, lenient, badWorkflowInput(fmt.Sprintf("input encoded as %q, not JSON: want %s", enc, inputShape))
	}
	data := p.GetData()
	_ = json.Unmarshal(data, &lenient)
	if !json.Valid(data) {
		return strict, lenient, badWorkflowInput(fmt.Sprintf("input is not JSON (%s): want %s", clip(data), inputShape))
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return strict, lenient, badWorkflowInput(fmt.Sprintf("input %s is not a JSON object: want %s", clip(data), inputShape))
	}
	// Sorted: workflow code never ranges over a map in map order.
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if slices.Contains(inputKeys, k) {
			continue
		}
		for _, want := range inputKeys {
			if strings.EqualFold(k, want) {
				return strict, lenient, badWorkflowInput(fmt.Sprintf("input key %q: keys are case-sensitive, did you mean %q? want %s", k, want, inputShape))
			}
		}
		return strict, lenient, badWorkflowInput(fmt.Sprintf("unknown input key %q (known: %s): want %s", k, strings.Join(inputKeys, ", "), inputShape))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&strict); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return strict, lenient, badWorkflowInput(fmt.Sprintf("input key %q is a JSON %s, want a %s: want %s", typeErr.Field, typeErr.Value, typeErr.Type, inputShape))
		}
		return strict, lenient, badWorkflowInput(fmt.Sprintf("input: %v: want %s", err, inputShape))
	}
	return strict, lenient, nil
}

func clip(b []byte) string {
	if len(b) > 60 {
		return fmt.Sprintf("%q…", b[:60])
	}
	return fmt.Sprintf("%q", b)
}

// badWorkflowInput refuses a run's input: final, another agent would read it the same way.
func badWorkflowInput(msg string) error {
	return temporal.NewNonRetryableApplicationError("bad workflow input: "+msg, activities.ErrTypeBadInput, nil)
}

// holdsJob refuses a run whose workflow ID is not its job's: Temporal runs one execution per
// workflow ID at a time, so the ID is what keeps two runs of a job (their freezes, thaws and
// pushes) from interleaving, whoever starts them.
func holdsJob(ctx workflow.Context, job string) error {
	id := workflow.GetInfo(ctx).WorkflowExecution.ID
	if id == WorkflowID(job) {
		return nil
	}
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
		"this run's workflow ID is %q, but a run of job %q must have workflow ID %q: that ID is what lets only one run of a job go at a time. Start it with `replctl start %s`, or from the Web UI or API with workflow ID %q",
		id, job, WorkflowID(job), job, WorkflowID(job)), ErrTypeNotJobsID, nil)
}

// ErrTypeNotJobsID is the error type of a run started under another workflow ID than its job's.
const ErrTypeNotJobsID = "NotTheJobsWorkflowID"
