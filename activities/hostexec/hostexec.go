// Package hostexec runs a host's application scripts (quiesce, resume,
// takeover, ...) either on this machine or over SSH on another host.
//
// The package takes plain values only; mapping replctl's configuration to a
// Request is the caller's job.
//
// Errors versus results: Run returns a non-nil error only when the script
// could not be run (bad request, script missing, host unreachable, host key
// rejected, context cancelled). A script that runs and exits non-zero, is
// killed by a signal, or is killed because Request.Timeout expired, is
// reported in Result with a nil error.
//
// Error classes (test with errors.Is):
//   - ErrUnreachable: TCP dial, SSH handshake or authentication failed, or the
//     connection was lost while the script ran. The caller applies its
//     on_unreachable_host policy to it.
//   - ErrHostKey: the host's key is not the one in the known_hosts file, the
//     host has no entry there, or the key is revoked. It deliberately does NOT
//     wrap ErrUnreachable: a key mismatch may be an attack or a rebuilt host and
//     must stop the operation, never be skipped like an unreachable host.
//   - ErrNoScript: the scripts directory or the script file is missing, is not
//     a regular file, or is not executable on that host.
//
// Anything else (invalid request, unreadable private key or known_hosts file)
// is a plain error: a local configuration problem.
//
// Local runs exec the script directly (it needs a #! line) with /dev/null as
// stdin, ScriptsDir as working directory, PATH and HOME plus Request.Env as
// environment, in its own process group.
//
// SSH runs open one connection per Run with two sessions: a check (`test`
// commands, giving ErrNoScript) and the run itself. The remote login shell
// must be POSIX (sh, bash, dash, ksh, zsh). The script gets /dev/null as
// stdin; a small shell wrapper watches the session's stdin and KILLs the
// session's process group when it closes, so the script and its children
// die on timeout, on cancellation and also when the agent's connection
// drops. In both modes a background process the script leaves behind (a
// daemon started by a resume script) survives a normal exit, and Run waits
// at most about a second for it to release the output pipes.
package hostexec

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
)

// Defaults applied when the corresponding field is zero.
const (
	// DefaultConnectTimeout bounds the TCP dial plus SSH handshake.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultOutputTail is the number of output bytes kept in Result.OutputTail.
	DefaultOutputTail = 4096
)

// Target says how to reach a remote host over SSH. It is the one SSH target
// type of the module: activities.SSH (recorded in run histories as part of the
// Plan) and dataplane.RemoteHost (embedded) use this type; config.SSH converts to it
// (activities.sshTarget). Its field names are JSON keys in recorded histories:
// do not rename them or add json tags.
type Target struct {
	// Address is host:port; a missing port means 22.
	Address string
	// User is the remote login name.
	User string
	// KeyFile is an unencrypted private key in OpenSSH (or PEM) format:
	// ed25519, rsa or ecdsa.
	KeyFile string
	// KnownHostsFile is an OpenSSH known_hosts file. It is always enforced;
	// a host without an entry is rejected with ErrHostKey. Host certificates
	// (@cert-authority lines) are not supported.
	KnownHostsFile string
	// ConnectTimeout bounds dial plus handshake; 0 means DefaultConnectTimeout.
	ConnectTimeout time.Duration
}

// Request describes one script run.
type Request struct {
	// Host is the host the script belongs to; used in messages and Result.
	Host string
	// ScriptsDir is the absolute scripts directory on that host.
	ScriptsDir string
	// Script is a plain file name inside ScriptsDir: no '/', not "." or "..",
	// no leading '-' or '.'.
	Script string
	// Env holds "KEY=VALUE" entries passed to the script. KEY must match
	// [A-Za-z_][A-Za-z0-9_]*. Locally they are added to a minimal PATH/HOME
	// environment (and may override those); over SSH they are passed as
	// `env KEY=VALUE ...` with POSIX shell quoting, because sshd usually
	// refuses Setenv.
	Env []string
	// Timeout bounds the whole run (including dial for SSH runs); 0 means no
	// limit other than ctx. On expiry the script is killed with its children
	// (locally: KILL to its process group; over SSH: the remote session's
	// process group is KILLed, see runCommand) and Result.TimedOut is set.
	Timeout time.Duration
	// SSH selects a remote run; nil runs the script on this machine.
	SSH *Target
	// OutputTail is how many bytes of the combined stdout+stderr tail are
	// kept; 0 means DefaultOutputTail.
	OutputTail int
}

// Result describes a finished (or killed) script run.
type Result struct {
	// Host is Request.Host.
	Host string
	// Remote is true for SSH runs.
	Remote bool
	// ExitCode is the script's exit status, or -1 if it was killed by a
	// signal or its status is unknown. Over SSH a script killed by a signal
	// other than our timeout kill reports 128+signal, as a shell does.
	ExitCode int
	// TimedOut is true when Request.Timeout expired and the script was killed
	// (error nil). Over SSH it is also set, with an ErrUnreachable error,
	// when the timeout expired before the script could start.
	TimedOut bool
	// OutputTail holds the last Request.OutputTail bytes of combined output
	// as valid UTF-8 (invalid bytes become U+FFFD). When output was dropped
	// it starts with "…" (not counted in the limit).
	OutputTail string
	// Duration is the wall time of Run, including dial and checks.
	Duration time.Duration
}

var (
	// ErrUnreachable means the host could not be reached or logged into
	// (dial, handshake or authentication failure, or connection lost during
	// the run). Returned errors wrap it with details.
	ErrUnreachable = errors.New("host unreachable")
	// ErrHostKey means the host's SSH key did not verify against the
	// known_hosts file (mismatch, unknown host or revoked key). It is distinct
	// from ErrUnreachable on purpose; see the package documentation.
	ErrHostKey = errors.New("host key mismatch")
	// ErrNoScript means the script (or its directory) is missing, not a
	// regular file, or not executable on that host.
	ErrNoScript = errors.New("script not found")
)

// Run runs r.Script from r.ScriptsDir locally or, if r.SSH is set, over SSH.
// See the package documentation for how errors and results are split.
func Run(ctx context.Context, r Request) (Result, error) {
	start := time.Now()
	res := Result{Host: r.Host, Remote: r.SSH != nil, ExitCode: -1}
	if err := validate(&r); err != nil {
		return res, err
	}
	tail := NewTailBuffer(r.OutputTail)

	runCtx := ctx
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, r.Timeout)
		defer cancel()
	}

	var err error
	if r.SSH == nil {
		err = runLocal(ctx, runCtx, &r, tail, &res)
	} else {
		err = runSSH(ctx, runCtx, &r, tail, &res)
	}
	res.OutputTail = tail.String()
	res.Duration = time.Since(start)
	return res, err
}

// validate checks r and fills in defaults.
func validate(r *Request) error {
	label := r.label()
	if err := ValidateScriptName(r.Script); err != nil {
		return fmt.Errorf("hostexec: host %s: %w", label, err)
	}
	if r.ScriptsDir == "" || !path.IsAbs(r.ScriptsDir) || strings.ContainsRune(r.ScriptsDir, 0) {
		return fmt.Errorf("hostexec: host %s: scripts dir %q must be an absolute path", label, r.ScriptsDir)
	}
	r.ScriptsDir = path.Clean(r.ScriptsDir)
	for _, kv := range r.Env {
		if err := validateEnv(kv); err != nil {
			return fmt.Errorf("hostexec: host %s: %w", label, err)
		}
	}
	if r.Timeout < 0 {
		return fmt.Errorf("hostexec: host %s: negative timeout %s", label, r.Timeout)
	}
	if r.OutputTail < 0 {
		return fmt.Errorf("hostexec: host %s: negative output tail %d", label, r.OutputTail)
	}
	if r.OutputTail == 0 {
		r.OutputTail = DefaultOutputTail
	}
	if s := r.SSH; s != nil {
		switch {
		case s.Address == "":
			return fmt.Errorf("hostexec: host %s: ssh address is empty", label)
		case s.User == "":
			return fmt.Errorf("hostexec: host %s: ssh user is empty", label)
		case s.KeyFile == "":
			return fmt.Errorf("hostexec: host %s: ssh key file is empty", label)
		case s.KnownHostsFile == "":
			return fmt.Errorf("hostexec: host %s: ssh known_hosts file is empty (host keys are always checked)", label)
		case s.ConnectTimeout < 0:
			return fmt.Errorf("hostexec: host %s: negative ssh connect timeout %s", label, s.ConnectTimeout)
		}
	}
	return nil
}

// label names the host in messages even when Request.Host is empty.
func (r *Request) label() string {
	switch {
	case r.Host != "":
		return fmt.Sprintf("%q", r.Host)
	case r.SSH != nil:
		return fmt.Sprintf("%q", r.SSH.Address)
	default:
		return "(local)"
	}
}

// ValidateScriptName reports whether name is acceptable as Request.Script:
// a plain, non-hidden file name that cannot be mistaken for an option.
func ValidateScriptName(name string) error {
	switch {
	case name == "":
		return errors.New("script name is empty")
	case name == "." || name == "..":
		return fmt.Errorf("script name %q is not a file name", name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("script name %q must be a plain file name (no '/' or NUL)", name)
	case name[0] == '-' || name[0] == '.':
		return fmt.Errorf("script name %q must not start with '-' or '.'", name)
	}
	return nil
}

// validateEnv checks one KEY=VALUE entry. Keys are restricted to shell
// identifiers so that `env KEY=VALUE` cannot be misparsed remotely.
func validateEnv(kv string) error {
	key, val, ok := strings.Cut(kv, "=")
	if !ok {
		return fmt.Errorf("env entry %q is not KEY=VALUE", kv)
	}
	if !isIdentifier(key) {
		return fmt.Errorf("env key %q must match [A-Za-z_][A-Za-z0-9_]*", key)
	}
	if strings.ContainsRune(val, 0) {
		return fmt.Errorf("env value of %s contains NUL", key)
	}
	return nil
}

func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
