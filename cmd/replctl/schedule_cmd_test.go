package main

import (
	"bytes"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/internal/schedsync"
)

// Each schedule subcommand parses its own flags into ScheduleOptions and hands them to runF.
func TestScheduleSubcommandsParseArgs(t *testing.T) {
	f := NewFactory(&bytes.Buffer{}, &bytes.Buffer{})
	for _, tc := range []struct {
		cmd  func(*Factory, func(*ScheduleOptions) error) *cobra.Command
		args []string
		want ScheduleOptions
	}{
		{NewCmdScheduleSync, []string{"--dry-run", "-o", "json"}, ScheduleOptions{Action: "sync", DryRun: true, Output: "json"}},
		{NewCmdScheduleList, nil, ScheduleOptions{Action: "list", Output: "table"}},
		{NewCmdScheduleDescribe, []string{"orders", "--maintenance"}, ScheduleOptions{Action: "describe", Job: "orders", Maintenance: true, Output: "table"}},
		{NewCmdSchedulePause, []string{"orders", "--note", "why"}, ScheduleOptions{Action: "pause", Job: "orders", Note: "why", Output: "table"}},
		{NewCmdScheduleUnpause, []string{"orders", "--maintenance"}, ScheduleOptions{Action: "unpause", Job: "orders", Maintenance: true, Output: "table"}},
		{NewCmdScheduleTrigger, []string{"orders", "-w", "--overlap", "allow_all"}, ScheduleOptions{Action: "trigger", Job: "orders", Wait: true, Overlap: "allow_all", Output: "table"}},
		{NewCmdScheduleBackfill, []string{"orders", "--start", "-6h"}, ScheduleOptions{Action: "backfill", Job: "orders", Start: "-6h", End: "now", Output: "table"}},
		{NewCmdScheduleDelete, []string{"orders", "-o", "json"}, ScheduleOptions{Action: "delete", Job: "orders", Output: "json"}},
	} {
		var got *ScheduleOptions
		_, err := run(t, tc.cmd(f, func(o *ScheduleOptions) error { got = o; return nil }), tc.args...)
		require.NoError(t, err, "%s %v", tc.want.Action, tc.args)
		assert.Equal(t, &tc.want, got)
	}
	// backfill is of a job's runs: it has no --maintenance.
	_, err := run(t, NewCmdScheduleBackfill(f, func(*ScheduleOptions) error { t.Fatal("must not run"); return nil }), "orders", "--start", "-6h", "--maintenance")
	assert.ErrorContains(t, err, "unknown flag: --maintenance")
}

func TestPrintScheduleChanges(t *testing.T) {
	var out bytes.Buffer
	printScheduleChanges(&out, nil, false)
	assert.Equal(t, "no schedules in the config and none on the server: nothing to do\n", out.String())

	out.Reset()
	printScheduleChanges(&out, []schedsync.Change{
		{Job: "orders", ScheduleID: "replctl-schedule-orders", Change: "updated", Detail: `cron "a" -> "b"`, Paused: true},
		{Job: "logs", ScheduleID: "replctl-schedule-logs", Change: "created", Error: "boom"},
		{ScheduleID: "replctl-maintenance-schedule-x", Repository: "b:r", Change: "unchanged", Detail: "d", Paused: true},
	}, true)
	assert.Equal(t, "would be updated  orders  replctl-schedule-orders         cron \"a\" -> \"b\" (paused: `replctl schedule unpause orders`)\n"+
		"FAILED to create  logs    replctl-schedule-logs           boom\n"+
		"unchanged         -       replctl-maintenance-schedule-x  d (paused on the server)\n", out.String())
}
