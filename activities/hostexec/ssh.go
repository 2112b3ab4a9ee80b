package hostexec

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/replctl/replctl/internal/secret"
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
func runSSH(ctx, runCtx context.Context, r *Request, tail *TailBuffer, res *Result) error {
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
	checkOut := NewTailBuffer(512)
	check, killed := runSession(runCtx, client, checkCommand(r), checkOut)
	if killed {
		return interruptedBeforeStart(ctx, where, res)
	}
	switch {
	case !check.known:
		return fmt.Errorf("%s: checking script: %w: %w", where, ErrUnreachable, check.err)
	case check.code == 0:
	case check.code == checkNoDir:
		return fmt.Errorf("%s: scripts dir %s does not exist: %w", where, r.ScriptsDir, ErrNoScript)
	case check.code == checkNoFile:
		return fmt.Errorf("%s: script %s/%s does not exist: %w", where, r.ScriptsDir, r.Script, ErrNoScript)
	case check.code == checkNotRegular:
		return fmt.Errorf("%s: script %s/%s is not a regular file: %w", where, r.ScriptsDir, r.Script, ErrNoScript)
	case check.code == checkNotExec:
		return fmt.Errorf("%s: script %s/%s is not executable: %w", where, r.ScriptsDir, r.Script, ErrNoScript)
	default:
		return fmt.Errorf("%s: checking script %s/%s: unexpected exit %d signal %q (is the login shell POSIX?): %q",
			where, r.ScriptsDir, r.Script, check.code, check.signal, checkOut.String())
	}

	run, killed := runSession(runCtx, client, runCommand(r), tail)
	if run.known {
		res.ExitCode = run.code
	}
	if killed && (!run.known || run.code == -1) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: script %s killed: %w", where, r.Script, err)
		}
		res.TimedOut = true
		return nil
	}
	if !run.known {
		return fmt.Errorf("%s: connection lost while %s ran, outcome unknown: %w: %w", where, r.Script, ErrUnreachable, run.err)
	}
	return nil
}

// exitInfo is how a remote command ended.
type exitInfo struct {
	known  bool   // an exit-status or exit-signal arrived
	code   int    // exit status; -1 when signal is set
	signal string // e.g. "KILL" when killed by a signal
	err    error  // why the outcome is unknown
}

// runSession runs cmd on a new session channel and waits for its exit
// status. It uses the raw channel rather than ssh.Session because
// Session.Wait returns only when the channel closes, which sshd delays until
// every process holding the script's stdout/stderr exits: a resume script
// starting a daemon would block the run. Here, as with the local WaitDelay,
// output is read for at most drainDelay after the exit status.
//
// If runCtx ends first it asks for the command to be killed (a KILL signal
// request, which OpenSSH delivers to the session's process group when the
// session is privilege separated, and EOF on stdin, see runCommand) and
// waits up to killGrace for the exit status; killed reports that.
func runSession(runCtx context.Context, client *ssh.Client, cmd string, out io.Writer) (info exitInfo, killed bool) {
	ch, reqs, err := client.OpenChannel("session", nil)
	if err != nil {
		return exitInfo{code: -1, err: fmt.Errorf("opening session: %w", err)}, false
	}
	defer ch.Close()

	exited := make(chan exitInfo, 1)
	go func() { exited <- awaitExit(reqs) }()

	var copying sync.WaitGroup
	for _, pipe := range []io.Reader{ch, ch.Stderr()} {
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

	ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{cmd}))
	if err != nil {
		return exitInfo{code: -1, err: fmt.Errorf("starting command: %w", err)}, false
	}
	if !ok {
		return exitInfo{code: -1, err: errors.New("server refused to run the command")}, false
	}
	// stdin stays open for the run: closing it is the kill request that
	// runCommand's watcher acts on.

	select {
	case info := <-exited:
		return info, false
	case <-runCtx.Done():
	}
	_, _ = ch.SendRequest("signal", false, ssh.Marshal(struct{ Signal string }{string(ssh.SIGKILL)}))
	_ = ch.CloseWrite()
	select {
	case info := <-exited:
		return info, true
	case <-time.After(killGrace):
		// No answer: tear the connection down, which ends awaitExit.
		client.Close()
		return <-exited, true
	}
}

// awaitExit reads the session's requests until an exit-status or
// exit-signal arrives or the channel closes, then keeps discarding them so
// the connection never blocks on an unread request.
func awaitExit(reqs <-chan *ssh.Request) exitInfo {
	info := exitInfo{code: -1, err: errors.New("session closed without an exit status")}
	for req := range reqs {
		switch req.Type {
		case "exit-status":
			if len(req.Payload) >= 4 {
				info = exitInfo{known: true, code: int(binary.BigEndian.Uint32(req.Payload))}
			}
		case "exit-signal":
			var sig struct {
				Signal     string
				CoreDumped bool
				Error      string
				Lang       string
			}
			if ssh.Unmarshal(req.Payload, &sig) == nil {
				info = exitInfo{known: true, code: -1, signal: sig.Signal}
			}
		}
		if req.WantReply {
			_ = req.Reply(false, nil)
		}
		if info.known {
			go ssh.DiscardRequests(reqs)
			return info
		}
	}
	return info
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
func dial(runCtx context.Context, addr string, t *Target, signer ssh.Signer, checkKey ssh.HostKeyCallback, algos []string) (*ssh.Client, error) {
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
// makes knownhosts list the keys it does know for an address. Made at first use: at
// package initialisation it cost every replctl command 0.6 ms.
var probeKey = sync.OnceValue(func() ssh.PublicKey {
	k, _ := ssh.NewPublicKey(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public())
	return k
})

// knownAlgorithms lists host key algorithms for the keys known for addr, or
// returns ErrHostKey if addr has no entry.
func knownAlgorithms(cb ssh.HostKeyCallback, addr string) ([]string, error) {
	_, port, _ := net.SplitHostPort(addr)
	remote, _ := net.ResolveTCPAddr("tcp", net.JoinHostPort("0.0.0.0", port))
	err := cb(addr, remote, probeKey())
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

// loadSigner reads an unencrypted private key; one that group or others can read is
// refused (secret.ReadFile).
func loadSigner(file string) (ssh.Signer, error) {
	pem, err := secret.ReadFile(file, "SSH private key")
	if err != nil {
		return nil, err
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

func connectTimeout(t *Target) time.Duration {
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
	// After the script starts, the shell lets go of the channel's output:
	// bash reports the killed watcher ("Killed ...") on its stderr, which must
	// not mix with the script's output.
	b.WriteString(`s=$!
exec >/dev/null 2>&1
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
