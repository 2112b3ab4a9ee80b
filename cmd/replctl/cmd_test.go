package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func run(t *testing.T, cmd *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestStartParsesArgsAndFlags(t *testing.T) {
	f := NewFactory(&bytes.Buffer{}, &bytes.Buffer{})
	var got *StartOptions
	cmd := NewCmdStart(f, func(o *StartOptions) error { got = o; return nil })
	_, err := run(t, cmd, "orders", "--wait", "-o", "json")
	require.NoError(t, err)
	assert.Equal(t, &StartOptions{Job: "orders", Wait: true, Output: "json"}, got)
}

func TestStartRejectsBadUsage(t *testing.T) {
	f := NewFactory(&bytes.Buffer{}, &bytes.Buffer{})
	for _, args := range [][]string{{}, {"a", "b"}, {"orders", "-o", "yaml"}} {
		cmd := NewCmdStart(f, func(*StartOptions) error { t.Fatal("must not run"); return nil })
		_, err := run(t, cmd, args...)
		assert.Equal(t, ExitUsage, exitCode(err), "args %v: %v", args, err)
	}
}

func TestStatusParsesArgs(t *testing.T) {
	f := NewFactory(&bytes.Buffer{}, &bytes.Buffer{})
	var got *StatusOptions
	cmd := NewCmdStatus(f, func(o *StatusOptions) error { got = o; return nil })
	_, err := run(t, cmd, "orders", "--run", "abc")
	require.NoError(t, err)
	assert.Equal(t, &StatusOptions{Job: "orders", RunID: "abc", Output: "table"}, got)
}

func TestAgentNeedsHost(t *testing.T) {
	f := NewFactory(&bytes.Buffer{}, &bytes.Buffer{})
	cmd := NewCmdAgent(f, func(*AgentOptions) error { t.Fatal("must not run"); return nil })
	_, err := run(t, cmd)
	assert.Equal(t, ExitUsage, exitCode(err))
	assert.Contains(t, err.Error(), "--host")
}

func TestConfigValidate(t *testing.T) {
	t.Setenv("REPLCTL_STATE", t.TempDir())
	var out bytes.Buffer
	f := NewFactory(&out, &out)
	root := NewCmdRoot(f)
	root.SetOut(&out)
	root.SetArgs([]string{"config", "validate", "../../config/examples/dev.yaml"})
	require.NoError(t, root.Execute())
	assert.Contains(t, out.String(), "dev.yaml: ok")

	invalid, err := filepath.Glob("../../config/samples/invalid/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, invalid)
	for _, file := range invalid {
		f := NewFactory(&bytes.Buffer{}, &bytes.Buffer{})
		root := NewCmdRoot(f)
		root.SetArgs([]string{"config", "validate", file})
		err := root.Execute()
		assert.Equal(t, ExitUsage, exitCode(err), "%s: %v", file, err)
		if err != nil {
			assert.Contains(t, err.Error(), filepath.Base(file), "error names the file")
		}
	}
}

func TestWriteSampleIsComplete(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ds")
	n, size, err := writeSample(dir, "orders")
	require.NoError(t, err)
	assert.Greater(t, n, 100)
	assert.Greater(t, size, int64(1<<20))
	_, err = os.Stat(dir + ".creating")
	assert.True(t, os.IsNotExist(err), "temp dir renamed away")
	target, err := os.Readlink(filepath.Join(dir, "latest"))
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(dir, target))
	assert.NoError(t, err)
}

func TestMaintainParsesArgs(t *testing.T) {
	f := NewFactory(&bytes.Buffer{}, &bytes.Buffer{})
	var got *MaintainOptions
	cmd := NewCmdMaintain(f, func(o *MaintainOptions) error { got = o; return nil })
	_, err := run(t, cmd, "orders", "--full", "--wait")
	require.NoError(t, err)
	assert.Equal(t, &MaintainOptions{Job: "orders", Full: true, Wait: true}, got)
	_, err = run(t, NewCmdMaintain(f, nil))
	assert.Equal(t, ExitUsage, exitCode(err))
}

func TestFailbackParsesArgsAndFlags(t *testing.T) {
	f := NewFactory(&bytes.Buffer{}, &bytes.Buffer{})
	var got *FailbackOptions
	cmd := NewCmdFailback(f, func(o *FailbackOptions) error { got = o; return nil })
	_, err := run(t, cmd, "orders", "--from", "array-b", "--wait", "-o", "json", "--yes", "--primary-down")
	require.NoError(t, err)
	assert.Equal(t, &FailbackOptions{Job: "orders", From: "array-b", Wait: true, Output: "json", Yes: true, PrimaryDown: true}, got)
	for _, args := range [][]string{{}, {"a", "b"}, {"orders", "-o", "yaml"}} {
		cmd := NewCmdFailback(f, func(*FailbackOptions) error { t.Fatal("must not run"); return nil })
		_, err := run(t, cmd, args...)
		assert.Equal(t, ExitUsage, exitCode(err), "args %v: %v", args, err)
	}
}

func TestServeStagingParsesFlags(t *testing.T) {
	t.Setenv("SSH_ORIGINAL_COMMAND", `replctl-staging {"job":"orders","storage":"b","dataset":"orders"}`)
	f := NewFactory(&bytes.Buffer{}, &bytes.Buffer{})
	var got *ServeStagingOptions
	cmd := NewCmdServeStaging(f, func(o *ServeStagingOptions) error { got = o; return nil })
	_, err := run(t, cmd, "--host", "b1", "--from", "a1")
	require.NoError(t, err)
	assert.Equal(t, "b1", got.Host)
	assert.Equal(t, "a1", got.From)
	assert.Equal(t, `replctl-staging {"job":"orders","storage":"b","dataset":"orders"}`, got.Command)
	for _, args := range [][]string{{}, {"--host", "b1"}, {"--from", "a1"}, {"--host", "b1", "--from", "a1", "extra"}} {
		cmd := NewCmdServeStaging(f, func(*ServeStagingOptions) error { t.Fatal("must not run"); return nil })
		_, err := run(t, cmd, args...)
		assert.Equal(t, ExitUsage, exitCode(err), "args %v: %v", args, err)
	}
}
