package testworld

import (
	"os"
	"path/filepath"
	"strings"
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
