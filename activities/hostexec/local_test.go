package hostexec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// writeScript creates an executable shell script in dir.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755))
	return p
}

// readPid reads a pid a script wrote, waiting for the file to appear.
func readPid(t *testing.T, file string) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(file)
		if err != nil || !strings.HasSuffix(string(b), "\n") {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	}, 30*time.Second, 10*time.Millisecond, "pid file %s", file)
	return pid
}

// processGone reports whether pid no longer runs (a zombie counts as gone:
// it has exited and only waits to be reaped).
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// Format: "pid (comm) S ..."; comm may contain spaces, so cut at ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && s[i+2] == 'Z'
}

func requireGone(t *testing.T, pid int, what string) {
	t.Helper()
	require.Eventually(t, func() bool { return processGone(pid) }, 3*time.Second, 20*time.Millisecond,
		"%s (pid %d) still runs", what, pid)
}

func TestLocalExitCodeEnvAndDir(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("HOSTEXEC_AGENT_SECRET", "must-not-leak")
	writeScript(t, dir, "quiesce", `printf 'A=%s\n' "$A"
printf 'B=%s\n' "$B"
printf 'PWD=%s\n' "$(pwd)"
printf 'PATH=%s\n' "$PATH"
printf 'SECRET=%s\n' "$HOSTEXEC_AGENT_SECRET"
echo to-stderr >&2
exit 3
`)
	res, err := Run(context.Background(), Request{
		Host: "h1", ScriptsDir: dir, Script: "quiesce",
		Env: []string{"A=hello world", "B=it's \"quoted\" $HOME"},
	})
	require.NoError(t, err, "a non-zero exit is a result, not an error")
	require.Equal(t, 3, res.ExitCode)
	require.Equal(t, "h1", res.Host)
	require.False(t, res.Remote)
	require.False(t, res.TimedOut)
	require.Contains(t, res.OutputTail, "A=hello world\n")
	require.Contains(t, res.OutputTail, "B=it's \"quoted\" $HOME\n")
	require.Contains(t, res.OutputTail, "PWD="+dir+"\n")
	require.Contains(t, res.OutputTail, "PATH="+localPath+"\n")
	require.Contains(t, res.OutputTail, "SECRET=\n", "the agent's environment must not reach scripts")
	require.Contains(t, res.OutputTail, "to-stderr\n")
	require.Greater(t, res.Duration, time.Duration(0))

	writeScript(t, dir, "ok", "exit 0\n")
	res, err = Run(context.Background(), Request{Host: "h1", ScriptsDir: dir, Script: "ok"})
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode)
	require.Equal(t, "", res.OutputTail)
}

func TestLocalTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	// The script ignores TERM and has a child: only a KILL of the whole
	// group stops both.
	writeScript(t, dir, "hang", `trap '' TERM
echo $$ > self.pid
sleep 30 &
echo $! > child.pid
echo started
wait
`)
	start := time.Now()
	res, err := Run(context.Background(), Request{Host: "h1", ScriptsDir: dir, Script: "hang", Timeout: 2 * time.Second})
	require.NoError(t, err)
	require.True(t, res.TimedOut)
	require.Equal(t, -1, res.ExitCode)
	require.Contains(t, res.OutputTail, "started")
	// Far below the 30 s the script would sleep: generous for a loaded machine.
	require.Less(t, time.Since(start), 15*time.Second)
	requireGone(t, readPid(t, filepath.Join(dir, "self.pid")), "script")
	requireGone(t, readPid(t, filepath.Join(dir, "child.pid")), "script's sleep child")
}

func TestLocalContextCancelIsAnError(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "hang", "echo $$ > self.pid\nsleep 30\n")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	res, err := Run(ctx, Request{Host: "h1", ScriptsDir: dir, Script: "hang", Timeout: time.Minute})
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, res.TimedOut, "cancellation is not the request's timeout")
	require.Equal(t, -1, res.ExitCode)
	requireGone(t, readPid(t, filepath.Join(dir, "self.pid")), "script")
}

func TestLocalBackgroundChildDoesNotBlock(t *testing.T) {
	dir := t.TempDir()
	// A resume script that starts a daemon without redirecting its output:
	// the run must end soon after the script exits, and leave the daemon.
	writeScript(t, dir, "resume", "sleep 30 &\necho $! > daemon.pid\necho resumed\n")
	start := time.Now()
	res, err := Run(context.Background(), Request{Host: "h1", ScriptsDir: dir, Script: "resume", Timeout: 20 * time.Second})
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode)
	require.False(t, res.TimedOut)
	require.Contains(t, res.OutputTail, "resumed")
	require.Less(t, time.Since(start), localWaitDelay+15*time.Second, "did not wait for the 30 s daemon")
	daemon := readPid(t, filepath.Join(dir, "daemon.pid"))
	require.False(t, processGone(daemon), "a daemon started by a script that exited normally must keep running")
	require.NoError(t, syscall.Kill(daemon, syscall.SIGKILL))
}

func TestLocalOutputTailTruncation(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "chatty", `i=0
while [ $i -lt 2000 ]; do printf 'line %04d\n' $i; i=$((i+1)); done
printf 'END\n'
`)
	res, err := Run(context.Background(), Request{Host: "h1", ScriptsDir: dir, Script: "chatty", OutputTail: 100})
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode)
	require.True(t, strings.HasPrefix(res.OutputTail, truncationMark))
	require.Equal(t, 100, len(res.OutputTail)-len(truncationMark))
	require.True(t, strings.HasSuffix(res.OutputTail, "line 1999\nEND\n"))

	// Default limit and a multi-byte character cut by the truncation.
	writeScript(t, dir, "utf8", `i=0
while [ $i -lt 3000 ]; do printf 'é'; i=$((i+1)); done
`)
	res, err = Run(context.Background(), Request{Host: "h1", ScriptsDir: dir, Script: "utf8", OutputTail: 101})
	require.NoError(t, err)
	require.True(t, utf8.ValidString(res.OutputTail))
	require.Equal(t, truncationMark+strings.Repeat("é", 50), res.OutputTail)

	res, err = Run(context.Background(), Request{Host: "h1", ScriptsDir: dir, Script: "chatty"})
	require.NoError(t, err)
	require.Equal(t, DefaultOutputTail, len(res.OutputTail)-len(truncationMark))
}

func TestLocalMissingOrNotExecutable(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "noexec"), []byte("#!/bin/sh\nexit 0\n"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "adir"), 0o755))
	cases := map[string]Request{
		"missing script": {ScriptsDir: dir, Script: "absent"},
		"not executable": {ScriptsDir: dir, Script: "noexec"},
		"directory":      {ScriptsDir: dir, Script: "adir"},
		"missing dir":    {ScriptsDir: filepath.Join(dir, "nope"), Script: "quiesce"},
	}
	for name, req := range cases {
		t.Run(name, func(t *testing.T) {
			req.Host = "h1"
			res, err := Run(context.Background(), req)
			require.ErrorIs(t, err, ErrNoScript)
			require.NotErrorIs(t, err, ErrUnreachable)
			require.Contains(t, err.Error(), `"h1"`)
			require.Equal(t, -1, res.ExitCode)
		})
	}
}

func TestBadRequestsRejected(t *testing.T) {
	dir := t.TempDir()
	// A file that would run if a bad name slipped through.
	marker := filepath.Join(dir, "ran")
	for _, name := range []string{"-x", ".hidden", "a"} {
		writeScript(t, dir, name, "touch "+marker+"\n")
	}
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	writeScript(t, filepath.Join(dir, "sub"), "s", "touch "+marker+"\n")

	for _, name := range []string{"", ".", "..", "sub/s", "../a", "-x", ".hidden", "a\x00b", "/a"} {
		_, err := Run(context.Background(), Request{Host: "h1", ScriptsDir: dir, Script: name})
		require.Error(t, err, "script name %q", name)
		require.False(t, errors.Is(err, ErrNoScript), "script name %q: a bad name is not a missing script", name)
	}
	bad := []Request{
		{ScriptsDir: "relative/dir", Script: "a"},
		{ScriptsDir: "", Script: "a"},
		{ScriptsDir: dir, Script: "a", Env: []string{"NOEQUALS"}},
		{ScriptsDir: dir, Script: "a", Env: []string{"BAD-KEY=x"}},
		{ScriptsDir: dir, Script: "a", Env: []string{"1X=x"}},
		{ScriptsDir: dir, Script: "a", Env: []string{"X=a\x00b"}},
		{ScriptsDir: dir, Script: "a", Timeout: -time.Second},
		{ScriptsDir: dir, Script: "a", OutputTail: -1},
		{ScriptsDir: dir, Script: "a", SSH: &Target{Address: "127.0.0.1:22", User: "u", KeyFile: "/k"}},
	}
	for i, req := range bad {
		_, err := Run(context.Background(), req)
		require.Error(t, err, "request %d", i)
	}
	require.NoFileExists(t, marker)
}
