package testworld

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/config"
)

// The world's config, written and loaded, is the value it was built from (with the defaults
// Load completes), and valid: WriteConfig leaves out nothing but zero values.
func TestWriteConfigLoadsTheValue(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "replctl.yaml")
	cfg := Config(dir, time.Second, 2*time.Second)
	cfg.Hosts[0].Connect = config.Connect{SSH: &config.SSH{Address: "127.0.0.1:2222", User: "tester", Key: filepath.Join(dir, "key"), KnownHosts: filepath.Join(dir, "known_hosts")}}
	require.NoError(t, WriteConfig(path, cfg))
	got, err := config.Load(path)
	require.NoError(t, err)

	// What Load adds: the file, defaults, resolved paths. Applied to the value, it must give
	// what Load read.
	want, err := CopyConfig(cfg)
	require.NoError(t, err)
	want.File = got.File
	require.NoError(t, want.Validate())
	require.Equal(t, &want, got)

	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NotContains(t, string(b), "null")
	require.NotContains(t, string(b), `""`)
}

// CopyConfig's copy does not share maps and slices with the original.
func TestCopyConfigIsDeep(t *testing.T) {
	cfg := Config("/w", time.Second, 2*time.Second)
	c, err := CopyConfig(cfg)
	require.NoError(t, err)
	c.Hosts[0].Attach["array-c"] = "/w/storage/array-c"
	c.Jobs[0].Order.Source[0] = "b1"
	require.NotContains(t, cfg.Hosts[0].Attach, "array-c")
	require.Equal(t, "a1", cfg.Jobs[0].Order.Source[0])
}

func TestLayout(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, Layout(dir, "#!/bin/sh\n", "array-a", "array-b"))
	for _, s := range []string{"array-a", "array-b"} {
		st, err := os.Stat(StoragePath(dir, s))
		require.NoError(t, err)
		require.True(t, st.IsDir())
	}
	for _, s := range ScriptNames {
		st, err := os.Stat(filepath.Join(dir, "scripts", s))
		require.NoError(t, err)
		require.NotZero(t, st.Mode()&0o100, "%s is executable", s)
	}
}
