package hostexec

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/replctl/replctl/activities/hostexec/sshtest"
)

func target(s *sshtest.Server) *Target {
	return &Target{Address: s.Addr, User: s.User, KeyFile: s.KeyFile, KnownHostsFile: s.KnownHostsFile, ConnectTimeout: 5 * time.Second}
}

func TestSSHRun(t *testing.T) {
	srv := sshtest.Start(t)
	// sshd runs on this machine, so the "remote" scripts dir is local too;
	// a space in the path exercises the quoting of `cd`.
	dir := filepath.Join(t.TempDir(), "scripts dir")
	require.NoError(t, os.Mkdir(dir, 0o755))

	t.Run("env, dir and exit code", func(t *testing.T) {
		writeScript(t, dir, "takeover", `printf 'A=[%s]\n' "$A"
printf 'B=[%s]\n' "$B"
printf 'PWD=%s\n' "$(pwd)"
echo err-line >&2
exit 7
`)
		tricky := "it's \"x\" $HOME `id` \\ \nsecond line"
		res, err := Run(context.Background(), Request{
			Host: "h2", ScriptsDir: dir, Script: "takeover", SSH: target(srv),
			Env: []string{"A=plain", "B=" + tricky}, Timeout: 10 * time.Second,
		})
		require.NoError(t, err)
		require.True(t, res.Remote)
		require.Equal(t, "h2", res.Host)
		require.Equal(t, 7, res.ExitCode)
		require.False(t, res.TimedOut)
		// Exactly the script's output (stderr is a separate stream, so its
		// position relative to stdout is not fixed).
		require.ElementsMatch(t,
			[]string{"A=[plain]", "B=[" + strings.ReplaceAll(tricky, "\n", "\x00") + "]", "PWD=" + dir, "err-line", ""},
			strings.Split(strings.ReplaceAll(res.OutputTail, tricky, strings.ReplaceAll(tricky, "\n", "\x00")), "\n"))
	})

	t.Run("no wrapper noise in output", func(t *testing.T) {
		// The remote wrapper kills its stdin watcher after every run; the
		// shell's report of that must never reach the output.
		writeScript(t, dir, "hello", "echo hello\n")
		for i := 0; i < 5; i++ {
			res, err := Run(context.Background(), Request{Host: "h2", ScriptsDir: dir, Script: "hello", SSH: target(srv)})
			require.NoError(t, err)
			require.Equal(t, "hello\n", res.OutputTail, "run %d", i)
		}
	})

	t.Run("output tail", func(t *testing.T) {
		writeScript(t, dir, "chatty", `i=0
while [ $i -lt 2000 ]; do printf 'line %04d\n' $i; i=$((i+1)); done
echo END
`)
		res, err := Run(context.Background(), Request{Host: "h2", ScriptsDir: dir, Script: "chatty", SSH: target(srv), OutputTail: 64})
		require.NoError(t, err)
		require.Equal(t, 0, res.ExitCode)
		require.True(t, strings.HasPrefix(res.OutputTail, truncationMark), res.OutputTail)
		require.Equal(t, 64, len(res.OutputTail)-len(truncationMark))
		// stdout and stderr are separate SSH streams whose relative order is
		// not kept, so the tail is checked on stdout alone.
		require.True(t, strings.HasSuffix(res.OutputTail, "line 1999\nEND\n"), res.OutputTail)
	})

	t.Run("missing or not executable", func(t *testing.T) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "noexec"), []byte("#!/bin/sh\n"), 0o644))
		require.NoError(t, os.Mkdir(filepath.Join(dir, "adir"), 0o755))
		for _, c := range []struct{ dir, script, want string }{
			{dir, "absent", "does not exist"},
			{dir, "noexec", "not executable"},
			{dir, "adir", "not a regular file"},
			{filepath.Join(dir, "nope"), "quiesce", "scripts dir"},
		} {
			_, err := Run(context.Background(), Request{Host: "h2", ScriptsDir: c.dir, Script: c.script, SSH: target(srv)})
			require.ErrorIs(t, err, ErrNoScript, c.script)
			require.NotErrorIs(t, err, ErrUnreachable)
			require.ErrorContains(t, err, c.want)
		}
	})

	t.Run("timeout kills the remote script and its children", func(t *testing.T) {
		writeScript(t, dir, "hang", `trap '' TERM HUP
echo $$ > self.pid
sleep 30 &
echo $! > child.pid
echo started
wait
`)
		// The timeout must leave room for the SSH handshake and login shell on a loaded
		// machine (seen: >1 s at load 10), so that the script gets to start.
		const timeout = 5 * time.Second
		start := time.Now()
		res, err := Run(context.Background(), Request{Host: "h2", ScriptsDir: dir, Script: "hang", SSH: target(srv), Timeout: timeout})
		require.NoError(t, err)
		require.True(t, res.TimedOut)
		require.Equal(t, -1, res.ExitCode)
		require.Contains(t, res.OutputTail, "started")
		require.Less(t, time.Since(start), timeout+killGrace+20*time.Second, "the 30 s script was cut short")
		requireGone(t, readPid(t, filepath.Join(dir, "self.pid")), "remote script")
		requireGone(t, readPid(t, filepath.Join(dir, "child.pid")), "remote script's sleep child")
	})

	t.Run("context cancel is an error", func(t *testing.T) {
		writeScript(t, dir, "hang2", "echo $$ > self2.pid\nsleep 30\n")
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			// Cancel once the script runs, however long the login took.
			readPid(t, filepath.Join(dir, "self2.pid"))
			cancel()
		}()
		res, err := Run(ctx, Request{Host: "h2", ScriptsDir: dir, Script: "hang2", SSH: target(srv), Timeout: time.Minute})
		require.ErrorIs(t, err, context.Canceled)
		require.NotErrorIs(t, err, ErrUnreachable)
		require.False(t, res.TimedOut)
		requireGone(t, readPid(t, filepath.Join(dir, "self2.pid")), "remote script")
	})

	t.Run("connection lost mid-run", func(t *testing.T) {
		writeScript(t, dir, "long", `echo $$ > long.pid
sleep 30 &
echo $! > longchild.pid
wait
`)
		type outcome struct {
			res Result
			err error
		}
		done := make(chan outcome, 1)
		go func() {
			res, err := Run(context.Background(), Request{Host: "h2", ScriptsDir: dir, Script: "long", SSH: target(srv), Timeout: 20 * time.Second})
			done <- outcome{res, err}
		}()
		script := readPid(t, filepath.Join(dir, "long.pid"))
		child := readPid(t, filepath.Join(dir, "longchild.pid"))
		// Kill sshd's per-connection processes: the host side of the
		// connection disappears while the script runs.
		for _, pid := range childrenOf(t, srv.Pid()) {
			require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		}
		o := <-done
		require.ErrorIs(t, o.err, ErrUnreachable)
		require.ErrorContains(t, o.err, "outcome unknown")
		require.False(t, o.res.TimedOut)
		require.Equal(t, -1, o.res.ExitCode)
		// The stdin watcher saw the channel close and killed the script.
		requireGone(t, script, "remote script")
		requireGone(t, child, "remote script's sleep child")
	})

	t.Run("background child does not block", func(t *testing.T) {
		writeScript(t, dir, "resume", "sleep 30 &\necho $! > daemon.pid\necho resumed\n")
		start := time.Now()
		res, err := Run(context.Background(), Request{Host: "h2", ScriptsDir: dir, Script: "resume", SSH: target(srv), Timeout: 20 * time.Second})
		require.NoError(t, err)
		require.Equal(t, 0, res.ExitCode)
		require.Equal(t, "resumed\n", res.OutputTail)
		require.Less(t, time.Since(start), drainDelay+15*time.Second, "did not wait for the 30 s daemon")
		daemon := readPid(t, filepath.Join(dir, "daemon.pid"))
		time.Sleep(200 * time.Millisecond) // the watcher must not kill it late either
		require.False(t, processGone(daemon), "a daemon started by a script that exited normally must keep running")
		require.NoError(t, syscall.Kill(daemon, syscall.SIGKILL))
	})

	t.Run("loopback latency", func(t *testing.T) {
		writeScript(t, dir, "noop", "exit 0\n")
		var ds []time.Duration
		for i := 0; i < 10; i++ {
			res, err := Run(context.Background(), Request{Host: "h2", ScriptsDir: dir, Script: "noop", SSH: target(srv)})
			require.NoError(t, err)
			require.Equal(t, 0, res.ExitCode)
			ds = append(ds, res.Duration)
		}
		slices.Sort(ds)
		t.Logf("remote run of a no-op script over loopback (dial+auth+check+exec), 10 runs: min %s median %s max %s",
			ds[0].Round(time.Millisecond), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
	})
}

func TestSSHHostKeyMismatch(t *testing.T) {
	srv := sshtest.Start(t)
	dir := t.TempDir()
	writeScript(t, dir, "quiesce", "touch ran\n")
	tmp := t.TempDir()

	// known_hosts names the right address but another key.
	otherPub := sshtest.GenerateKey(t, "", filepath.Join(tmp, "other"))
	wrong := filepath.Join(tmp, "known_hosts_wrong")
	require.NoError(t, os.WriteFile(wrong, []byte(knownhosts.Line([]string{srv.Addr}, parsePub(t, otherPub))+"\n"), 0o600))
	tg := target(srv)
	tg.KnownHostsFile = wrong
	_, err := Run(context.Background(), Request{Host: "h2", ScriptsDir: dir, Script: "quiesce", SSH: tg})
	require.ErrorIs(t, err, ErrHostKey)
	require.False(t, errors.Is(err, ErrUnreachable), "a key mismatch must not look like an unreachable host: %v", err)
	require.ErrorContains(t, err, "known_hosts_wrong:1")

	// known_hosts without any entry for the host.
	empty := filepath.Join(tmp, "known_hosts_other_host")
	require.NoError(t, os.WriteFile(empty, []byte(knownhosts.Line([]string{"192.0.2.1:22"}, parsePub(t, srv.HostKeyLine))+"\n"), 0o600))
	tg.KnownHostsFile = empty
	_, err = Run(context.Background(), Request{Host: "h2", ScriptsDir: dir, Script: "quiesce", SSH: tg})
	require.ErrorIs(t, err, ErrHostKey)
	require.NotErrorIs(t, err, ErrUnreachable)

	// A missing known_hosts file is a configuration error, not a reason to skip checks.
	tg.KnownHostsFile = filepath.Join(tmp, "absent")
	_, err = Run(context.Background(), Request{Host: "h2", ScriptsDir: dir, Script: "quiesce", SSH: tg})
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrUnreachable)
	require.NotErrorIs(t, err, ErrHostKey)

	require.NoFileExists(t, filepath.Join(dir, "ran"))
}

func TestSSHUnreachable(t *testing.T) {
	srv := sshtest.Start(t)
	dir := t.TempDir()
	writeScript(t, dir, "quiesce", "exit 0\n")

	t.Run("nothing listening", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close())
		tg := target(srv)
		tg.Address = addr
		tg.KnownHostsFile = knownHostsFor(t, addr, srv.HostKeyLine)
		res, err := Run(context.Background(), Request{Host: "h3", ScriptsDir: dir, Script: "quiesce", SSH: tg})
		require.ErrorIs(t, err, ErrUnreachable)
		require.NotErrorIs(t, err, ErrHostKey)
		require.ErrorContains(t, err, `host "h3"`)
		require.Equal(t, -1, res.ExitCode)
	})

	t.Run("wrong user key", func(t *testing.T) {
		tg := target(srv)
		tg.KeyFile = filepath.Join(t.TempDir(), "stranger")
		sshtest.GenerateKey(t, "", tg.KeyFile)
		_, err := Run(context.Background(), Request{Host: "h3", ScriptsDir: dir, Script: "quiesce", SSH: tg})
		require.ErrorIs(t, err, ErrUnreachable)
		require.NotErrorIs(t, err, ErrHostKey)
		require.ErrorContains(t, err, "unable to authenticate")
	})

	t.Run("key readable by others", func(t *testing.T) {
		tg := target(srv)
		tg.KeyFile = filepath.Join(t.TempDir(), "loose")
		sshtest.GenerateKey(t, "", tg.KeyFile)
		require.NoError(t, os.Chmod(tg.KeyFile, 0o644))
		res, err := Run(context.Background(), Request{Host: "h3", ScriptsDir: dir, Script: "quiesce", SSH: tg})
		require.ErrorContains(t, err, "SSH private key "+tg.KeyFile+" has mode 0644")
		require.ErrorContains(t, err, "chmod 600 "+tg.KeyFile)
		require.Equal(t, -1, res.ExitCode, "nothing ran")
	})

	t.Run("silent listener times out", func(t *testing.T) {
		// Accepts TCP but never speaks SSH: the handshake deadline applies.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		tg := target(srv)
		tg.Address = l.Addr().String()
		tg.ConnectTimeout = 300 * time.Millisecond
		tg.KnownHostsFile = knownHostsFor(t, tg.Address, srv.HostKeyLine)
		start := time.Now()
		_, err = Run(context.Background(), Request{Host: "h3", ScriptsDir: dir, Script: "quiesce", SSH: tg})
		require.ErrorIs(t, err, ErrUnreachable)
		require.Less(t, time.Since(start), 15*time.Second, "the connect timeout applies to a listener that never answers")
	})
}

// TestHostKeyAlgorithmPinning shows why runSSH offers only the algorithms of
// known keys: sshtest's sshd has ECDSA and ed25519 host keys and known_hosts
// lists only ed25519; x/crypto's default preference picks ECDSA.
func TestHostKeyAlgorithmPinning(t *testing.T) {
	srv := sshtest.Start(t)
	cb, err := knownhosts.New(srv.KnownHostsFile)
	require.NoError(t, err)
	signer := mustSigner(t, srv.KeyFile)

	cfg := &ssh.ClientConfig{User: srv.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: cb, Timeout: 5 * time.Second}
	_, err = ssh.Dial("tcp", srv.Addr, cfg)
	var ke *knownhosts.KeyError
	require.ErrorAs(t, err, &ke, "without pinning the default algorithms must pick the unknown ECDSA key")
	require.NotEmpty(t, ke.Want)

	_, algos, err := hostKeyChecker(srv.KnownHostsFile, srv.Addr)
	require.NoError(t, err)
	require.Equal(t, []string{ssh.KeyAlgoED25519}, algos)
	cfg.HostKeyAlgorithms = algos
	c, err := ssh.Dial("tcp", srv.Addr, cfg)
	require.NoError(t, err)
	require.NoError(t, c.Close())
}

// knownHostsFor writes a known_hosts file trusting pubLine for addr: a
// missing entry would fail with ErrHostKey before any dial.
func knownHostsFor(t *testing.T, addr, pubLine string) string {
	t.Helper()
	kh := filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(kh, []byte(knownhosts.Line([]string{addr}, parsePub(t, pubLine))+"\n"), 0o600))
	return kh
}

// childrenOf lists the pids whose parent is ppid.
func childrenOf(t *testing.T, ppid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(ppid) {
			pids = append(pids, pid)
		}
	}
	require.NotEmpty(t, pids, "no children of sshd %d", ppid)
	return pids
}

func parsePub(t *testing.T, line string) ssh.PublicKey {
	t.Helper()
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	require.NoError(t, err, fmt.Sprintf("parsing %q", line))
	return k
}

func mustSigner(t *testing.T, file string) ssh.Signer {
	t.Helper()
	s, err := loadSigner(file)
	require.NoError(t, err)
	return s
}
