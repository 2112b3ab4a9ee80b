package activities

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/config"
)

// The agent parses its config once per content, and authority still follows the file as it
// is now: an edit applies at the next activity, and a broken file refuses every activity.
func TestConfigCacheFollowsTheFile(t *testing.T) {
	ctx := context.Background()
	sample, _ := sampleAgent(t, "a1")
	orig, err := os.ReadFile(sample.ConfigFile)
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "replctl.yaml")
	require.NoError(t, os.WriteFile(file, orig, 0o600))
	a := &Agent{Host: "a1", ConfigFile: file}
	cfg, err := config.Load(file)
	require.NoError(t, err)
	p, err := NewPlan(cfg, "orders")
	require.NoError(t, err)

	src, err := p.DatasetDir("a1", "array-a", "orders/db")
	require.NoError(t, err)
	repo, err := p.Repo("a1")
	require.NoError(t, err)
	in := PushInput{Job: "orders", Agent: "a1", SourceDir: src, Dataset: "orders/db", Repo: repo}
	_, err = a.authorizePush(ctx, "push", in)
	require.NoError(t, err)

	first, err := a.loadConfig()
	require.NoError(t, err)
	again, err := a.loadConfig()
	require.NoError(t, err)
	assert.Same(t, first, again, "unchanged bytes are not parsed again")

	// The source storage moves: the same input is now foreign.
	moved := strings.ReplaceAll(string(orig), "/mnt/a", "/mnt/z")
	require.NotEqual(t, string(orig), moved)
	require.NoError(t, os.WriteFile(file, []byte(moved), 0o600))
	_, err = a.authorizePush(ctx, "push", in)
	requireRefused(t, err, "SourceDir", src, "/mnt/z/orders/db")
	edited, err := a.loadConfig()
	require.NoError(t, err)
	assert.NotSame(t, first, edited)

	// A config that no longer parses refuses, every time, naming the file.
	require.NoError(t, os.WriteFile(file, []byte("jobs: [\n"), 0o600))
	for range 2 {
		_, err = a.authorizePush(ctx, "push", in)
		requireRefused(t, err, "does not load", file)
	}

	// Restored: accepted again.
	require.NoError(t, os.WriteFile(file, orig, 0o600))
	_, err = a.authorizePush(ctx, "push", in)
	require.NoError(t, err)
	require.NoError(t, os.Remove(file))
	_, err = a.loadConfig()
	assert.ErrorContains(t, err, "read config", "a removed config is an error, not the cached one")
}
