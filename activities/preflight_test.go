package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/config"
)

// preflightWorld is a config with host h1 attached to storage a (%[1]s/A) and b (%[1]s/B),
// and job orders of dataset app/orders on a. It returns the agent and the good input.
func preflightWorld(t *testing.T, bAttach string) (*Agent, PreflightInput, string) {
	t.Helper()
	base := t.TempDir()
	for _, d := range []string{"A/app/orders", "B"} {
		require.NoError(t, os.MkdirAll(filepath.Join(base, d), 0o755))
	}
	if bAttach == "" {
		bAttach = base + "/B"
	}
	cfgFile := filepath.Join(base, "replctl.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
storage: [{name: a}, {name: b}]
hosts:
  - {name: h1, attach: {a: %[1]s/A, b: %[2]s}}
jobs:
  - {name: orders, source: {storage: a, dataset: app/orders}, target: {storage: b, dataset: orders}, application: {host: h1}, order: {source: [h1], target: [h1]}}
`, base, bAttach)), 0o600))
	cfg, err := config.Load(cfgFile)
	require.NoError(t, err)
	p, err := NewPlan(cfg, "orders")
	require.NoError(t, err)
	src, err := p.SourceDir("h1")
	require.NoError(t, err)
	in := PreflightInput{Job: "orders", Agent: "h1", Storage: "a", Datasets: []string{"app/orders"}, SourceDirs: []string{src}}
	return &Agent{Host: "h1", ConfigFile: cfgFile}, in, base
}

// requireBadInput asserts err is a non-retryable BadInput error holding each want.
func requireBadInput(t *testing.T, err error, want ...string) {
	t.Helper()
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "want a BadInput application error, got %v", err)
	assert.Equal(t, ErrTypeBadInput, appErr.Type())
	assert.True(t, appErr.NonRetryable())
	for _, w := range want {
		assert.Contains(t, appErr.Error(), w)
	}
}

func TestPreflightGood(t *testing.T) {
	a, in, base := preflightWorld(t, "")
	res, err := a.Preflight(context.Background(), in)
	require.NoError(t, err)
	assert.Equal(t, []string{filepath.Join(base, "A/app/orders")}, res.SourceDirs)
	assert.Equal(t, []string{"a at " + base + "/A", "b at " + base + "/B"}, res.Roots)
}

// The source dataset, or a directory on its way, is a symlink; the dataset is missing or a
// file: each refused as bad input naming the dataset's path.
func TestPreflightRefusesBadSourceDataset(t *testing.T) {
	for name, c := range map[string]struct {
		breakIt func(base string) error
		want    []string
	}{
		"dataset is a symlink": {func(base string) error {
			if err := os.Rename(filepath.Join(base, "A/app/orders"), filepath.Join(base, "real")); err != nil {
				return err
			}
			return os.Symlink(filepath.Join(base, "real"), filepath.Join(base, "A/app/orders"))
		}, []string{"is a symlink to", "/real"}},
		"parent is a symlink": {func(base string) error {
			if err := os.Rename(filepath.Join(base, "A/app"), filepath.Join(base, "app")); err != nil {
				return err
			}
			return os.Symlink(filepath.Join(base, "app"), filepath.Join(base, "A/app"))
		}, []string{"/A/app is a symlink to"}},
		"dataset missing": {func(base string) error { return os.Remove(filepath.Join(base, "A/app/orders")) }, []string{"does not exist", "storage root "}},
		"dataset is a file": {func(base string) error {
			p := filepath.Join(base, "A/app/orders")
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.WriteFile(p, nil, 0o644)
		}, []string{"is not a directory"}},
	} {
		t.Run(name, func(t *testing.T) {
			a, in, base := preflightWorld(t, "")
			require.NoError(t, c.breakIt(base))
			_, err := a.Preflight(context.Background(), in)
			requireBadInput(t, err, append(c.want, "source dataset app/orders at "+filepath.Join(base, "A/app/orders"), "before quiesce")...)
		})
	}
}

// A storage root of the host that is the same directory as another is refused before the
// datasets are looked at, naming both storages and paths.
func TestPreflightRefusesBadStorageRoot(t *testing.T) {
	dir := t.TempDir()
	a, in, base := preflightWorld(t, dir+"/B-alias")
	require.NoError(t, os.Symlink(filepath.Join(base, "A"), dir+"/B-alias"))
	_, err := a.Preflight(context.Background(), in)
	requireBadInput(t, err, "storage b at "+dir+"/B-alias is the same directory as storage a at "+base+"/A", "is a symlink to")
}

// Entries the data plane cannot replicate fail the run before quiesce under the default
// on_unsupported (fail), naming them; with skip the preflight lets the push report them.
func TestPreflightRefusesUnsupportedEntries(t *testing.T) {
	a, in, base := preflightWorld(t, "")
	require.NoError(t, syscall.Mkfifo(filepath.Join(base, "A/app/orders/pipe"), 0o600)) // kept: not named
	require.NoError(t, os.WriteFile(filepath.Join(base, "A/app/orders/bad-\xff"), nil, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(base, "A/app/orders/bad-\uf7ff"), nil, 0o600)) // its image name
	_, err := a.Preflight(context.Background(), in)
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "want an Unsupported application error, got %v", err)
	assert.Equal(t, ErrTypeUnsupported, appErr.Type())
	assert.True(t, appErr.NonRetryable())
	assert.Contains(t, appErr.Error(), "job orders: source check on agent h1 before quiesce (nothing was run): "+
		`1 entry cannot be replicated (name 1): "app/orders/bad-\xff" (name not valid UTF-8, and its image name is a sibling's); set on_unsupported: skip on job orders`)
	var sum dataplane.Unsupported
	require.NoError(t, appErr.Details(&sum))
	assert.Equal(t, map[string]int{"name": 1}, sum.ByKind)

	b, err := os.ReadFile(a.ConfigFile)
	require.NoError(t, err)
	skip := strings.Replace(string(b), "target: [h1]}}", "target: [h1]}, on_unsupported: skip}", 1)
	require.NotEqual(t, string(b), skip)
	require.NoError(t, os.WriteFile(a.ConfigFile, []byte(skip), 0o600))
	_, err = a.Preflight(context.Background(), in)
	require.NoError(t, err)
}

// A precopy carrying the preflight does the preflight's checks first and copies nothing
// when they refuse; a preflight of another job, run or agent is refused outright.
func TestPrecopyCarriesThePreflight(t *testing.T) {
	a, in, base := preflightWorld(t, "")
	in.RunID = "run-1"
	pc := PrecopyInput{Job: "orders", RunID: "run-1", Agent: "h1", SourceDir: in.SourceDirs[0], Dataset: "app/orders", Preflight: &in}
	cfg, err := config.Load(a.ConfigFile)
	require.NoError(t, err)
	p, err := NewPlan(cfg, "orders")
	require.NoError(t, err)
	pc.Repo, err = p.Repo("h1")
	require.NoError(t, err)
	a.StateDir = filepath.Join(base, "state")
	for name, edit := range map[string]func(*PreflightInput){
		"other job":   func(p *PreflightInput) { p.Job = "payroll" },
		"other run":   func(p *PreflightInput) { p.RunID = "run-0" },
		"other agent": func(p *PreflightInput) { p.Agent = "h2" },
	} {
		pf := in
		edit(&pf)
		bad := pc
		bad.Preflight = &pf
		_, err := a.Precopy(context.Background(), bad)
		requireBadInput(t, err, "carries the preflight of job")
		assert.Contains(t, err.Error(), "precopy of job orders", name)
	}

	foreign := in
	foreign.SourceDirs = []string{filepath.Join(base, "B")}
	bad := pc
	bad.Preflight = &foreign
	_, err = a.Precopy(context.Background(), bad)
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "got %v", err)
	assert.Equal(t, ErrTypeRefused, appErr.Type(), "a source dir the agent's config does not give it: %v", err)

	require.NoError(t, os.WriteFile(filepath.Join(base, "A/app/orders/bad-\xff"), nil, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(base, "A/app/orders/bad-\uf7ff"), nil, 0o600))
	_, err = a.Precopy(context.Background(), pc)
	require.True(t, errors.As(err, &appErr), "got %v", err)
	assert.Equal(t, ErrTypeUnsupported, appErr.Type(), "%v", err)
	// The job has no image: that precopy was skipped and the preflight scanned on its own.
	// One that copies (precopy: always) finds it in its own listing, with the same refusal.
	first := pc
	first.First = true
	_, err2 := a.Precopy(context.Background(), first)
	require.True(t, errors.As(err2, &appErr), "got %v", err2)
	assert.Equal(t, ErrTypeUnsupported, appErr.Type(), "%v", err2)
	assert.Equal(t, err.Error(), err2.Error())
	assert.Contains(t, err2.Error(), "before quiesce (nothing was run)")

	require.NoError(t, os.RemoveAll(filepath.Join(base, "A/app/orders")))
	require.NoError(t, os.Symlink(filepath.Join(base, "B"), filepath.Join(base, "A/app/orders")))
	_, err = a.Precopy(context.Background(), pc)
	requireBadInput(t, err, "is a symlink to", "before quiesce")
}
