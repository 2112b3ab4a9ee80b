package activities

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStagingCommandRoundTrips(t *testing.T) {
	req := StagingRequest{Job: "orders", Storage: "array b", Dataset: "apps/\"q\" x"}
	got, err := ParseStagingCommand(req.Command())
	require.NoError(t, err)
	assert.Equal(t, req, got)
}

func TestParseStagingCommandRefusesAnythingElse(t *testing.T) {
	for cmd, want := range map[string]string{
		"":                    "not a staging request",
		"internal-sftp":       "not a staging request",
		"replctl-staging":     "not a staging request",
		"replctl-staging {}":  "has no",
		"replctl-staging [1]": "does not parse",
		`replctl-staging {"job":"a","storage":"b","dataset":"c"} {"job":"x"}`:           "more than one",
		`replctl-staging {"job":"a","storage":"b","dataset":"c","dir":"/"}`:             "unknown field",
		`replctl-staging {"job":"a","storage":"b"}`:                                     "has no dataset",
		"replctl-staging " + `{"job":"` + strings.Repeat("a", maxStagingCommand) + `"}`: "at most",
	} {
		_, err := ParseStagingCommand(cmd)
		if assert.Error(t, err, "%q", clip(cmd)) {
			assert.Contains(t, err.Error(), want, "%q", clip(cmd))
		}
	}
}
