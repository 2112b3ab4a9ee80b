package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/sys/unix"
)

// preflightNames runs a's preflight and returns the unsupported entries it names ("" when
// it passes).
func preflightNames(t *testing.T, a *Agent, in PreflightInput) string {
	t.Helper()
	_, err := a.Preflight(context.Background(), in)
	if err == nil {
		return ""
	}
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "want an Unsupported application error, got %v", err)
	require.Equal(t, ErrTypeUnsupported, appErr.Type(), err.Error())
	return appErr.Error()
}

// scans is how a's preflight scans have looked so far: whole trees, changed directories.
func scans(a *Agent) [2]int {
	a.changes.mu.Lock()
	defer a.changes.mu.Unlock()
	return [2]int{a.changes.whole, a.changes.changed}
}

// The preflight looks only at the directories changed since its last clean scan, and still
// finds what was made there; a new agent (what a restart leaves) looks at the whole tree,
// so what changed while no agent watched is found too.
func TestPreflightScanFollowsTheJournal(t *testing.T) {
	a, in, base := preflightWorld(t, "")
	a.ChangeJournal = true
	t.Cleanup(func() { a.Close() }) //nolint:errcheck
	src := filepath.Join(base, "A/app/orders")
	for d := range 10 {
		for f := range 20 {
			p := filepath.Join(src, fmt.Sprintf("d%d/e/f%d", d, f))
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
			require.NoError(t, os.WriteFile(p, nil, 0o644))
		}
	}
	require.Empty(t, preflightNames(t, a, in))
	if a.changes.j == nil {
		t.Skip("no change journal here (fanotify needs CAP_SYS_ADMIN)")
	}
	require.Equal(t, [2]int{1, 0}, scans(a), "the first scan is whole")
	require.Empty(t, preflightNames(t, a, in))
	require.Equal(t, [2]int{1, 1}, scans(a), "then only what changed")

	// A new tree, deep down.
	require.NoError(t, os.MkdirAll(filepath.Join(src, "d3/e/new/deeper"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "d3/e/new/deeper/bad-\xff"), nil, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(src, "d3/e/new/deeper/bad-\uf7ff"), nil, 0o644))
	require.Contains(t, preflightNames(t, a, in), `"app/orders/d3/e/new/deeper/bad-\xff"`)
	require.Equal(t, [2]int{1, 2}, scans(a))
	// Fixed: the failed scan left no point, so the next is whole.
	require.NoError(t, os.RemoveAll(filepath.Join(src, "d3/e/new")))
	require.Empty(t, preflightNames(t, a, in))
	require.Equal(t, [2]int{2, 2}, scans(a))

	// An attribute name on an existing file, and a clash made by a rename into a directory.
	require.NoError(t, unix.Setxattr(filepath.Join(src, "d7/e/f3"), "user.\xff", []byte("v"), 0))
	require.NoError(t, os.WriteFile(filepath.Join(src, "d9/e/f1-\uf7ff"), nil, 0o644))
	require.NoError(t, os.Rename(filepath.Join(src, "d9/e/f1"), filepath.Join(src, "d9/e/f1-\xff")))
	names := preflightNames(t, a, in)
	require.Contains(t, names, `app/orders/d7/e/f3 (xattr name "user.\xff")`)
	require.Contains(t, names, `"app/orders/d9/e/f1-\xff"`)
	require.Equal(t, [2]int{2, 3}, scans(a))
	require.NoError(t, unix.Removexattr(filepath.Join(src, "d7/e/f3"), "user.\xff"))
	require.NoError(t, os.Remove(filepath.Join(src, "d9/e/f1-\xff")))
	require.Empty(t, preflightNames(t, a, in))
	require.Empty(t, preflightNames(t, a, in))
	require.Equal(t, [2]int{3, 4}, scans(a))

	// The agent stops; a clash is made while none watches; a new agent finds it.
	require.NoError(t, a.Close())
	require.NoError(t, os.WriteFile(filepath.Join(src, "d5/e/x-\xff"), nil, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(src, "d5/e/x-\uf7ff"), nil, 0o644))
	b := &Agent{Host: a.Host, ConfigFile: a.ConfigFile, ChangeJournal: true}
	t.Cleanup(func() { b.Close() }) //nolint:errcheck
	require.Contains(t, preflightNames(t, b, in), `"app/orders/d5/e/x-\xff"`)
	require.Equal(t, [2]int{1, 0}, scans(b), "a new agent scans whole")
}

// Without --change-journal (the default) every scan is whole.
func TestPreflightWithoutJournal(t *testing.T) {
	a, in, _ := preflightWorld(t, "")
	require.Empty(t, preflightNames(t, a, in))
	require.Empty(t, preflightNames(t, a, in))
	require.Equal(t, [2]int{2, 0}, scans(a))
	require.Nil(t, a.changes.j)
}
