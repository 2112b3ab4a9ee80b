package hostexec

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

const (
	// killGrace is how long we wait for the exit status after asking sshd to
	// KILL the script, before closing the connection anyway.
	killGrace = 2 * time.Second
	// keepaliveInterval is how often an idle connection is probed while the
	// script runs, so a host that dies silently is noticed even without a
	// Request.Timeout.
	keepaliveInterval = 5 * time.Second
	// drainDelay bounds reading output after the exit status arrived.
	drainDelay = time.Second
)

// Exit codes of the remote pre-check command (see checkCommand).
const (
	checkNoDir      = 3
	checkNoFile     = 4
	checkNotExec    = 5
	checkNotRegular = 6
)

// runSSH runs the script on r.SSH. ctx is the caller's context; runCtx is ctx
// plus Request.Timeout.
func runSSH(ctx, runCtx context.Context, r *Request, tail *tailBuffer, res *Result) error {
	t := r.SSH
	addr := withDefaultPort(t.Address)
	where := fmt.Sprintf("hostexec: host %s: ssh %s@%s", r.label(), t.User, addr)

	signer, err := loadSigner(t.KeyFile)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	checkKey, algos, err := hostKeyChecker(t.KnownHostsFile, addr)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}

	client, err := dial(runCtx, addr, t, signer, checkKey, algos)
	if err != nil {
		return classifyDialError(ctx, runCtx, where, err, res)
	}
	defer client.Close()
	stopKeepalive := keepalive(client, connectTimeout(t))
	defer stopKeepalive()

	// Pre-check in its own session, so a missing script is a clear
	// ErrNoScript instead of an ambiguous exit code 126/127 of the real run.
	checkOut := newTailBuffer(512)
	checkErr, killed := runSession(runCtx, client, checkCommand(r), checkOut)
	if killed {
		return interruptedBeforeStart(ctx, where, res)
	}
	switch code, known := exitStatus(checkErr); {
	case !known:
		return fmt.Errorf("%s: checking script: %w: %w", where, ErrUnreachable, checkErr)
	case code == 0:
	case code == checkNoDir:
		return fmt.Errorf("%s: scripts dir %s does not exist: %w", where, r.ScriptsDir, ErrNoScript)
	case code == checkNoFile:
		return fmt.Errorf("%s: script %s/%s does not exist: %w", where, r.ScriptsDir, r.Script, ErrNoScript)
	case code == checkNotRegular:
		return fmt.Errorf("%s: script %s/%s is not a regular file: %w", where, r.ScriptsDir, r.Script, ErrNoScript)
	case code == checkNotExec:
		return fmt.Errorf("%s: script %s/%s is not executable: %w", where, r.ScriptsDir, r.Script, ErrNoScript)
	default:
		return fmt.Errorf("%s: checking script %s/%s: unexpected exit %d (is the login shell POSIX?): %q",
			where, r.ScriptsDir, r.Script, code, checkOut.String())
	}

	waitErr, killed := runSession(runCtx, client, runCommand(r), tail)
	code, known := exitStatus(waitErr)
	if known {
		res.ExitCode = code
	}
	if killed && (!known || code == -1) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: script %s killed: %w", where, r.Script, err)
		}
		res.TimedOut = true
		return nil
	}
	if !known {
		return fmt.Errorf("%s: connection lost while %s ran, outcome unknown: %w: %w", where, r.Script, ErrUnreachable, waitErr)
	}
	return nil
}

// runSession runs cmd in a new session and waits for its exit status. If
// runCtx ends first it asks for the command to be killed (a KILL signal
// request, which OpenSSH delivers to the session's process group, and EOF on
// stdin, see runCommand) and waits up to killGrace for the exit status;
// killed reports that. Like the local WaitDelay, output is read for at most
// drainDelay after the exit status, so a daemon the script left holding its
// stdout cannot block the run.
func runSession(runCtx context.Context, client *ssh.Client, cmd string, out io.Writer) (waitErr error, killed bool) {
	sess, err := client.NewSession()
	if err != nil {
		return err, false
	}
	defer sess.Close()
	// Held open for the run: closing it is the kill request runCommand's
	// watcher acts on.
	stdin, err := sess.StdinPipe()
	if err != nil {
		return err, false
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return err, false
	}
	stderr, err := sess.StderrPipe()
	if err != nil {
		return err, false
	}
	var copying sync.WaitGroup
	for _, pipe := range []io.Reader{stdout, stderr} {
		copying.Go(func() { _, _ = io.Copy(out, pipe) })
	}
	defer func() {
		drained := make(chan struct{})
		go func() { copying.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(drainDelay):
		}
	}()

	if err := sess.Start(cmd); err != nil {
		return err, false
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case err := <-done:
		return err, false
	case <-runCtx.Done():
	}
	_ = sess.Signal(ssh.SIGKILL) // works for non-root (privilege separated) sessions
	_ = stdin.Close()            // works everywhere with runCommand's watcher
	select {
	case err := <-done:
		return err, true
	case <-time.After(killGrace):
		// No answer: tear the connection down, which unblocks Wait.
		client.Close()
		return <-done, true
	}
}

// exitStatus maps a session's Wait error to an exit code: -1 for a signal.
// known is false when no exit status arrived (connection or channel lost).
func exitStatus(err error) (code int, known bool) {
	if err == nil {
		return 0, true
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		if ee.Signal() != "" {
			return -1, true
		}
		return ee.ExitStatus(), true
	}
	return -1, false
}

// interruptedBeforeStart reports that ctx or the timeout ended before the
// script started.
func interruptedBeforeStart(ctx context.Context, where string, res *Result) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: script not started: %w", where, err)
	}
	res.TimedOut = true
	return fmt.Errorf("%s: timeout expired before the script started: %w: %w", where, ErrUnreachable, context.DeadlineExceeded)
}

// dial connects and authenticates, bounded by the connect timeout and runCtx.
func dial(runCtx context.Context, addr string, t *SSHTarget, signer ssh.Signer, checkKey ssh.HostKeyCallback, algos []string) (*ssh.Client, error) {
	timeout := connectTimeout(t)
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(runCtx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// The handshake has no context: bound it by a deadline, and close the
	// socket if runCtx ends first.
	_ = conn.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(runCtx, func() { conn.Close() })
	cfg := &ssh.ClientConfig{
		User:              t.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   checkKey,
		HostKeyAlgorithms: algos,
		Timeout:           timeout,
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if !stop() && err == nil {
		c.Close()
		return nil, runCtx.Err()
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// hostKeyError is returned by the host key callback so the dial error can be
// classified as ErrHostKey regardless of how ssh wraps it.
type hostKeyError struct{ err error }

func (e *hostKeyError) Error() string { return e.err.Error() }
func (e *hostKeyError) Unwrap() error { return e.err }

// classifyDialError turns a dial/handshake failure into ErrHostKey,
// ErrUnreachable or the caller's context error.
func classifyDialError(ctx, runCtx context.Context, where string, err error, res *Result) error {
	var hk *hostKeyError
	if errors.As(err, &hk) {
		return fmt.Errorf("%s: %w: %w", where, ErrHostKey, describeKeyError(hk.err))
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: connect interrupted: %w", where, ctx.Err())
	}
	if runCtx.Err() != nil {
		res.TimedOut = true
		return fmt.Errorf("%s: timeout expired while connecting: %w: %w", where, ErrUnreachable, err)
	}
	return fmt.Errorf("%s: %w: %w", where, ErrUnreachable, err)
}

// describeKeyError adds which known_hosts lines were expected.
func describeKeyError(err error) error {
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) && len(ke.Want) > 0 {
		want := make([]string, len(ke.Want))
		for i, k := range ke.Want {
			want[i] = fmt.Sprintf("%s:%d (%s)", k.Filename, k.Line, k.Key.Type())
		}
		return fmt.Errorf("%w; host presented a different key than %s", err, strings.Join(want, ", "))
	}
	return err
}

// hostKeyChecker loads the known_hosts file and returns the verifying
// callback plus the host key algorithms to offer. Offering only the
// algorithms of the keys known for addr matters: otherwise the server may
// pick e.g. its ECDSA key while known_hosts holds its ed25519 key, and a
// healthy host would look like a key mismatch.
func hostKeyChecker(file, addr string) (ssh.HostKeyCallback, []string, error) {
	cb, err := knownhosts.New(file)
	if err != nil {
		return nil, nil, fmt.Errorf("reading known_hosts file: %w", err)
	}
	algos, err := knownAlgorithms(cb, addr)
	if err != nil {
		return nil, nil, err
	}
	check := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		if err := cb(hostname, remote, key); err != nil {
			return &hostKeyError{err: err}
		}
		return nil
	}
	return check, algos, nil
}

// probeKey is a key no host has (derived from an all-zero seed): checking it
// makes knownhosts list the keys it does know for an address.
var probeKey, _ = ssh.NewPublicKey(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public())

// knownAlgorithms lists host key algorithms for the keys known for addr, or
// returns ErrHostKey if addr has no entry.
func knownAlgorithms(cb ssh.HostKeyCallback, addr string) ([]string, error) {
	_, port, _ := net.SplitHostPort(addr)
	remote, _ := net.ResolveTCPAddr("tcp", net.JoinHostPort("0.0.0.0", port))
	err := cb(addr, remote, probeKey)
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) {
		if err == nil {
			return nil, nil // the probe key is trusted (!): let ssh choose
		}
		return nil, fmt.Errorf("checking known_hosts: %w", err)
	}
	if len(ke.Want) == 0 {
		return nil, fmt.Errorf("%w: no known_hosts entry for %s", ErrHostKey, knownhosts.Normalize(addr))
	}
	var algos []string
	seen := map[string]bool{}
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			algos = append(algos, a)
		}
	}
	for _, k := range ke.Want {
		switch k.Key.Type() {
		case ssh.KeyAlgoRSA:
			// An RSA key is used with SHA-2 signatures; SHA-1 is refused.
			add(ssh.KeyAlgoRSASHA512)
			add(ssh.KeyAlgoRSASHA256)
		default:
			add(k.Key.Type())
		}
	}
	return algos, nil
}

// loadSigner reads an unencrypted private key.
func loadSigner(file string) (ssh.Signer, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading private key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	var pm *ssh.PassphraseMissingError
	if errors.As(err, &pm) {
		return nil, fmt.Errorf("private key %s is passphrase-protected; an unencrypted key is required", file)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing private key %s: %w", file, err)
	}
	return signer, nil
}

// keepalive probes the connection while a script runs and closes it if the
// host stops answering, which makes the session's Wait fail (ErrUnreachable).
func keepalive(client *ssh.Client, replyTimeout time.Duration) (stop func()) {
	quit := make(chan struct{})
	go func() {
		tick := time.NewTicker(keepaliveInterval)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			reply := make(chan error, 1)
			go func() {
				_, _, err := client.SendRequest("keepalive@openssh.com", true, nil)
				reply <- err
			}()
			select {
			case <-quit:
				return
			case err := <-reply:
				if err != nil {
					client.Close()
					return
				}
			case <-time.After(replyTimeout):
				client.Close()
				return
			}
		}
	}()
	return func() { close(quit) }
}

func connectTimeout(t *SSHTarget) time.Duration {
	if t.ConnectTimeout > 0 {
		return t.ConnectTimeout
	}
	return DefaultConnectTimeout
}

// withDefaultPort adds :22 to an address without a port.
func withDefaultPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(strings.Trim(addr, "[]"), "22")
}

// checkCommand tests the script remotely; its exit code says what is wrong.
func checkCommand(r *Request) string {
	dir := shellQuote(r.ScriptsDir)
	file := shellQuote(r.ScriptsDir + "/" + r.Script)
	return fmt.Sprintf("test -d %s || exit %d; test -e %s || exit %d; test -f %s || exit %d; test -x %s || exit %d; exit 0",
		dir, checkNoDir, file, checkNoFile, file, checkNotRegular, file, checkNotExec)
}

// runCommand is the remote shell program that runs the script. It does not
// exec the script: OpenSSH refuses "signal" requests for sessions it runs
// without privilege separation (all root logins), so the shell instead
// keeps a watcher on the channel's stdin. When the client closes stdin (on
// timeout or cancellation) or the connection drops, the watcher KILLs the
// session's process group (sshd made the shell a session and group leader):
// the shell, the script and its children. Over SSH a script killed by a
// signal therefore reports 128+n, as shells do.
func runCommand(r *Request) string {
	var b strings.Builder
	fmt.Fprintf(&b, "cd %s || exit 126\n", shellQuote(r.ScriptsDir))
	// fd 3 keeps the channel's stdin for the watcher; the script gets /dev/null.
	b.WriteString("exec 3<&0 </dev/null\n")
	if len(r.Env) > 0 {
		b.WriteString("env")
		for _, kv := range r.Env {
			b.WriteByte(' ')
			b.WriteString(shellQuote(kv))
		}
		b.WriteByte(' ')
	}
	fmt.Fprintf(&b, "./%s 3<&- &\n", shellQuote(r.Script))
	// After the script starts, the shell's own stderr is silenced: bash
	// reports the killed watcher ("Killed ...") there, which must not mix
	// with the script's output.
	b.WriteString(`s=$!
exec 2>/dev/null
{ while read -r _ <&3; do :; done; kill -s KILL 0; } &
w=$!
wait "$s"
rc=$?
kill -s KILL "$w" 2>/dev/null
exit "$rc"
`)
	return b.String()
}

// shellQuote quotes s for a POSIX shell: unchanged if it only has safe
// characters, otherwise in single quotes with each ' written as '\”.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("_-./:=@%+,", c)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
