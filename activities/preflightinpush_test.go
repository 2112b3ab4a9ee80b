package activities

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// A push that carries the preflight and no quiesce (a job without a quiesce script) is
// refused before anything runs unless the preflight is of the push's own job, run, agent
// and dataset, with no precopy and no failback; the checks on disk come before the push's
// authority. Its errors are the push step's own: not marked as a quiesce's.
func TestPreflightInPlainPushRefusedFirst(t *testing.T) {
	a, p, push := billingPush(t)
	foreign := t.TempDir()
	good := func() PushInput {
		in := push
		in.Before = &BeforeQuiesce{Preflight: PreflightInput{Job: "billing", RunID: "r1", Agent: "east-db1", Storage: p.Source.Storage,
			Datasets: []string{p.Source.Dataset}, SourceDirs: []string{push.SourceDir}}}
		return in
	}
	for name, c := range map[string]struct {
		mutate func(*PushInput)
		want   string
		typ    string
	}{
		"with a precopy":          {func(in *PushInput) { in.Before.Precopy = true }, "with a precopy", ErrTypeBadInput},
		"in a failback":           {func(in *PushInput) { in.FollowLink = true }, "in a failback", ErrTypeBadInput},
		"another job's preflight": {func(in *PushInput) { in.Before.Preflight.Job = "payroll" }, `preflight of job "payroll"`, ErrTypeBadInput},
		"another agent's":         {func(in *PushInput) { in.Before.Preflight.Agent = "east-db2" }, `agent "east-db2"`, ErrTypeBadInput},
		"a foreign dir for both": {func(in *PushInput) { in.SourceDir, in.Before.Preflight.SourceDirs = foreign, []string{foreign} },
			"SourceDirs", ErrTypeRefused},
		"sent to another agent": {func(in *PushInput) { in.Agent, in.Before.Preflight.Agent = "east-db2", "east-db2" }, `reached agent "east-db1"`, ErrTypeMisrouted},
		// The storage is not on this machine: the preflight's check on disk refuses.
		"as the workflow sends it": {func(*PushInput) {}, "storage check on agent east-db1", ErrTypeBadInput},
	} {
		t.Run(name, func(t *testing.T) {
			in := good()
			c.mutate(&in)
			err := requirePushRefused(t, a, in, c.typ, c.want)
			_, ok := NotQuiescedPart(err)
			assert.False(t, ok, "nothing to mark: it quiesces nothing")
			_, ok = QuiescePart(err)
			assert.False(t, ok)
		})
	}
}
