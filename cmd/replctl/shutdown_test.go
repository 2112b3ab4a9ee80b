package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestShutdownGraceFlag(t *testing.T) {
	var agent *AgentOptions
	_, err := run(t, NewCmdAgent(NewFactory(&bytes.Buffer{}, &bytes.Buffer{}), func(o *AgentOptions) error { agent = o; return nil }), "--host", "a1")
	require.NoError(t, err)
	assert.Equal(t, 60*time.Second, agent.ShutdownGrace, "documented default")
	_, err = run(t, NewCmdAgent(NewFactory(&bytes.Buffer{}, &bytes.Buffer{}), func(o *AgentOptions) error { agent = o; return nil }), "--host", "a1", "--shutdown-grace", "5s")
	require.NoError(t, err)
	assert.Equal(t, 5*time.Second, agent.ShutdownGrace)

	for name, cmd := range map[string]func() error{
		"agent": func() error {
			_, err := run(t, NewCmdAgent(NewFactory(&bytes.Buffer{}, &bytes.Buffer{}), func(*AgentOptions) error { t.Fatal("must not run"); return nil }), "--host", "a1", "--shutdown-grace", "-1s")
			return err
		},
		"dev": func() error {
			_, err := run(t, NewCmdDev(NewFactory(&bytes.Buffer{}, &bytes.Buffer{}), func(*DevOptions) error { t.Fatal("must not run"); return nil }), "--shutdown-grace", "-1s")
			return err
		},
	} {
		err := cmd()
		assert.Equal(t, ExitUsage, exitCode(err), name)
		assert.ErrorContains(t, err, "--shutdown-grace -1s: want a duration of 0 or more", name)
	}
}
