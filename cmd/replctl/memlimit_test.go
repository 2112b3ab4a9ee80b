package main

import (
	"bytes"
	"math"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAgentMemoryLimitFlag(t *testing.T) {
	parse := func(env string, args ...string) (*AgentOptions, error) {
		t.Helper()
		t.Setenv("GOMEMLIMIT", env)
		var got *AgentOptions
		cmd := NewCmdAgent(NewFactory(&bytes.Buffer{}, &bytes.Buffer{}), func(o *AgentOptions) error { got = o; return nil })
		_, err := run(t, cmd, append([]string{"--host", "b1"}, args...)...)
		return got, err
	}

	o, err := parse("")
	require.NoError(t, err)
	assert.True(t, o.SetMemoryLimit, "the default applies without GOMEMLIMIT")
	assert.EqualValues(t, 256<<20, o.MemoryLimitBytes)

	o, err = parse("", "--memory-limit", "1.5GiB")
	require.NoError(t, err)
	assert.EqualValues(t, 3<<29, o.MemoryLimitBytes)

	o, err = parse("", "--memory-limit", "0")
	require.NoError(t, err)
	assert.True(t, o.SetMemoryLimit)
	assert.EqualValues(t, int64(math.MaxInt64), o.MemoryLimitBytes, "0 removes the limit")

	o, err = parse("300MiB")
	require.NoError(t, err)
	assert.False(t, o.SetMemoryLimit, "GOMEMLIMIT wins over the default")

	o, err = parse("300MiB", "--memory-limit", "200MiB")
	require.NoError(t, err)
	assert.True(t, o.SetMemoryLimit, "an explicit flag wins over GOMEMLIMIT")
	assert.EqualValues(t, 200<<20, o.MemoryLimitBytes)

	_, err = parse("", "--memory-limit", "lots")
	assert.Equal(t, ExitUsage, exitCode(err))
	assert.Contains(t, err.Error(), "--memory-limit")
}

func TestApplyMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })

	applyMemoryLimit(96<<20, true)
	assert.EqualValues(t, 96<<20, debug.SetMemoryLimit(-1))
	applyMemoryLimit(1<<20, false)
	assert.EqualValues(t, 96<<20, debug.SetMemoryLimit(-1), "not set: left alone")
}
