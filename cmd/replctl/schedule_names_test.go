package main

import (
	"go.temporal.io/api/enums/v1"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/schedsync"
)

// The names the CLI tests used before the schedule sync moved to internal/schedsync.

type scheduleChange = schedsync.Change

func fingerprintOf(s *config.Schedule, taskQueue string) schedsync.Fingerprint {
	return schedsync.JobFingerprint(s, taskQueue)
}

func specSummary(fp schedsync.Fingerprint) string { return fp.Summary() }

func overlapName(p enums.ScheduleOverlapPolicy) string { return schedsync.OverlapName(p) }
