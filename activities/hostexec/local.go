package hostexec

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"syscall"
	"time"
)

// localPath is the PATH given to local scripts; they do not inherit the
// agent's environment.
const localPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// localWaitDelay bounds how long we keep reading output after the script
// exited while a background child it left behind still holds the pipes
// (e.g. a resume script that starts a daemon without redirecting output).
const localWaitDelay = time.Second

// runLocal runs the script on this machine. ctx is the caller's context;
// runCtx is ctx plus Request.Timeout.
func runLocal(ctx, runCtx context.Context, r *Request, tail *TailBuffer, res *Result) error {
	script, err := checkLocalScript(r)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hostexec: host %s: script %s not started: %w", r.label(), script, err)
	}

	cmd := exec.CommandContext(runCtx, script)
	cmd.Dir = r.ScriptsDir
	cmd.Env = append([]string{"PATH=" + localPath, "HOME=" + homeDir()}, r.Env...)
	cmd.Stdout = tail
	cmd.Stderr = tail
	// Own process group, so a timeout kills the script's children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Negative pid = the whole process group (pgid == script's pid).
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	cmd.WaitDelay = localWaitDelay

	if err := cmd.Start(); err != nil {
		return fmt.Errorf("hostexec: host %s: starting %s: %w", r.label(), script, err)
	}
	_ = cmd.Wait() // outcome is read from ProcessState below

	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	exited := ok && ws.Exited()
	if exited {
		res.ExitCode = ws.ExitStatus()
	}
	if runCtx.Err() != nil && !exited {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("hostexec: host %s: script %s killed: %w", r.label(), script, err)
		}
		res.TimedOut = true
	}
	return nil
}

// checkLocalScript returns the script's path if it is an executable regular
// file, or an error wrapping ErrNoScript that says what is wrong.
func checkLocalScript(r *Request) (string, error) {
	if fi, err := os.Stat(r.ScriptsDir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("hostexec: host %s: scripts dir %s does not exist: %w", r.label(), r.ScriptsDir, ErrNoScript)
		}
		return "", fmt.Errorf("hostexec: host %s: scripts dir: %w", r.label(), err)
	} else if !fi.IsDir() {
		return "", fmt.Errorf("hostexec: host %s: scripts dir %s is not a directory: %w", r.label(), r.ScriptsDir, ErrNoScript)
	}
	script := filepath.Join(r.ScriptsDir, r.Script)
	fi, err := os.Stat(script)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("hostexec: host %s: script %s does not exist: %w", r.label(), script, ErrNoScript)
	case err != nil:
		return "", fmt.Errorf("hostexec: host %s: script: %w", r.label(), err)
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("hostexec: host %s: script %s is not a regular file: %w", r.label(), script, ErrNoScript)
	}
	// access(2) answers for the agent's real uid, which is who runs it.
	if err := syscall.Access(script, 1 /* X_OK */); err != nil {
		return "", fmt.Errorf("hostexec: host %s: script %s is not executable (%v): %w", r.label(), script, err, ErrNoScript)
	}
	return script, nil
}

// homeDir is the agent user's home directory, for the script's HOME.
func homeDir() string {
	if u, err := user.Current(); err == nil && u.HomeDir != "" {
		return u.HomeDir
	}
	if h, err := os.UserHomeDir(); err == nil {
		return h
	}
	return "/"
}
