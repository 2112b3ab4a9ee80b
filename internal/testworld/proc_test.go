package testworld

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A Proc logs each start to the one log, can be stopped and restarted, and Stop takes its
// process group with it.
func TestProcLifecycle(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "p.log")
	// The child leaves a grandchild in its group: Stop must end it too.
	p, err := StartProc("sleeper", log, "sh", "-c", "echo up; sleep 60 & echo $! > "+filepath.Join(dir, "grandchild")+"; wait")
	require.NoError(t, err)
	require.True(t, p.Alive())
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "grandchild"))
		return strings.HasSuffix(string(b), "\n")
	}, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, p.Signal(syscall.SIGSTOP))
	require.True(t, p.Alive(), "a stopped process is alive")
	p.Stop(time.Second)
	require.False(t, p.Alive())
	b, err := os.ReadFile(filepath.Join(dir, "grandchild"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := os.Stat("/proc/" + strings.TrimSpace(string(b)))
		return err != nil
	}, 5*time.Second, 10*time.Millisecond, "the grandchild went with the group")
	require.Error(t, p.Signal(syscall.SIGTERM))

	require.NoError(t, p.Start())
	require.NoError(t, p.WaitLog(context.Background(), "up", 5*time.Second), "this start's output")
	require.Equal(t, 1, strings.Count(p.Log(), "=== "), "Log is the last start's output only:\n%s", p.Log())
	first := p.Started()
	p.Kill()
	require.False(t, p.Alive())
	require.Error(t, p.Err(), "killed")
	require.NoError(t, p.Start())
	require.True(t, p.Started().After(first))
	p.KillGroup()
	require.False(t, p.Alive())

	out, err := os.ReadFile(log)
	require.NoError(t, err)
	require.Equal(t, 3, strings.Count(string(out), "=== "), "one header per start:\n%s", out)
}

// WaitLog sees a process exit instead of waiting out its timeout.
func TestProcWaitLogSeesExit(t *testing.T) {
	p, err := StartProc("quitter", filepath.Join(t.TempDir(), "q.log"), "sh", "-c", "echo bye; exit 3")
	require.NoError(t, err)
	began := time.Now()
	err = p.WaitLog(context.Background(), "ready", 30*time.Second)
	require.ErrorContains(t, err, "quitter exited before it was ready (exit status 3)")
	require.ErrorContains(t, err, "bye")
	require.Less(t, time.Since(began), 10*time.Second)
}

// With Lines set, standard output goes to it line by line and standard error to the log.
func TestProcLines(t *testing.T) {
	var mu sync.Mutex
	var got []string
	p := &Proc{Name: "lines", Bin: "/bin/sh", Args: []string{"-c", "echo one; echo two; echo oops >&2"},
		LogPath: filepath.Join(t.TempDir(), "log"), Lines: func(l string) { mu.Lock(); got = append(got, l); mu.Unlock() }}
	require.NoError(t, p.Start())
	<-p.Exited()
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"one", "two"}, got)
	require.Contains(t, p.Log(), "oops")
	require.NotContains(t, p.Log(), "\none\n", "standard output went to Lines, not the log")
}
