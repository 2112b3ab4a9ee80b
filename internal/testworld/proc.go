package testworld

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Proc is a long-running child process of a test world (the Temporal server or an agent).
// Its output is appended to LogPath, each start after a line "=== <time> start <command>",
// so a restarted process keeps one log. Start it again after it exited to restart it.
type Proc struct {
	Name    string // for messages: "server", "agent a1"
	Bin     string
	Args    []string
	LogPath string
	// Lines, when set, receives the process's standard output line by line instead of the
	// log (standard error still goes to the log): a harness that reads its workers' reports.
	Lines func(string)

	cmd     *exec.Cmd
	done    chan struct{}
	started time.Time
	err     error
	// logFrom is where the last start's output begins in the log (its header line).
	logFrom int64
}

// StartProc starts bin with args as a Proc named name, logging to logPath.
func StartProc(name, logPath, bin string, args ...string) (*Proc, error) {
	p := &Proc{Name: name, Bin: bin, Args: args, LogPath: logPath}
	return p, p.Start()
}

// Start starts the process, in its own process group: a Ctrl-C of the harness does not hit
// it half-way (the harness tears it down), and a script it runs can be stopped with it
// (KillGroup). It is killed with the harness if the harness dies without tearing down.
func (p *Proc) Start() error {
	if p.Alive() {
		return fmt.Errorf("%s is running already", p.Name)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: opening log %s: %w", p.Name, p.LogPath, err)
	}
	var logFrom int64
	if st, err := logf.Stat(); err == nil {
		logFrom = st.Size()
	}
	fmt.Fprintf(logf, "=== %s start %s %s\n", time.Now().Format(time.RFC3339Nano), p.Bin, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Stderr = logf
	var stdout io.ReadCloser
	if p.Lines == nil {
		cmd.Stdout = logf
	} else {
		if stdout, err = cmd.StdoutPipe(); err != nil {
			logf.Close()
			return fmt.Errorf("%s: %w", p.Name, err)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("%s: starting %s: %w", p.Name, p.Bin, err)
	}
	p.cmd, p.done, p.started, p.err, p.logFrom = cmd, make(chan struct{}), time.Now(), nil, logFrom
	go func(done chan struct{}, lines func(string)) {
		if stdout != nil {
			// Wait closes the pipe: read it to the end first.
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				lines(sc.Text())
			}
		}
		p.err = cmd.Wait()
		logf.Close()
		close(done)
	}(p.done, p.Lines)
	return nil
}

// Log is what the process wrote to its log since its last start.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	if p.logFrom > int64(len(b)) {
		return ""
	}
	return string(b[p.logFrom:])
}

// WaitLog waits until the process, since its last start, wrote substr to its log: how a
// harness knows a server or an agent is ready (`replctl server` prints "Temporal server on"
// once the frontend answers and the namespace and search attributes exist).
func (p *Proc) WaitLog(ctx context.Context, substr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		log := p.Log()
		if strings.Contains(log, substr) {
			return nil
		}
		if !p.Alive() {
			if len(log) > 2000 {
				log = "…" + log[len(log)-2000:]
			}
			return fmt.Errorf("%s exited before it was ready (%v); log %s:\n%s", p.Name, p.Err(), p.LogPath, log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready within %s (no %q in %s)", p.Name, timeout, substr, p.LogPath)
}

// Pid is the process ID of the last start.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Started is when the process was last started.
func (p *Proc) Started() time.Time { return p.started }

// Alive tells whether the process is running (possibly stopped).
func (p *Proc) Alive() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Exited is closed when the process of the last start has exited and was reaped.
func (p *Proc) Exited() <-chan struct{} { return p.done }

// Err is how the process exited (nil while it runs).
func (p *Proc) Err() error {
	if p.Alive() {
		return nil
	}
	return p.err
}

// Signal sends sig to the process (not its group: scripts it started run on, like on a
// real host whose agent crashed).
func (p *Proc) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return fmt.Errorf("%s is not running", p.Name)
	}
	return syscall.Kill(p.Pid(), sig)
}

// Kill kills the process with SIGKILL, as a crash would (its scripts run on), and waits
// for it to be reaped.
func (p *Proc) Kill() { p.kill(p.Pid) }

// KillGroup kills the process and everything in its process group with SIGKILL, and waits
// for the process to be reaped.
func (p *Proc) KillGroup() { p.kill(func() int { return -p.Pid() }) }

func (p *Proc) kill(target func() int) {
	if !p.Alive() {
		return
	}
	_ = syscall.Kill(target(), syscall.SIGCONT) // harmless; a stopped process dies either way
	_ = syscall.Kill(target(), syscall.SIGKILL)
	p.wait(10 * time.Second)
}

// Stop asks the process to exit (SIGTERM, after a SIGCONT in case it is stopped), and
// after grace kills its group; what is left of the group (a script it ran) goes too.
func (p *Proc) Stop(grace time.Duration) {
	if p.cmd == nil {
		return
	}
	if p.Alive() {
		_ = syscall.Kill(p.Pid(), syscall.SIGCONT)
		_ = syscall.Kill(p.Pid(), syscall.SIGTERM)
		p.wait(grace)
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	p.wait(10 * time.Second)
}

// wait waits until the process was reaped or d passed.
func (p *Proc) wait(d time.Duration) {
	select {
	case <-p.done:
	case <-time.After(d):
	}
}

// Tail is the last n bytes of s, marked with "…" when cut (a log's end for a failed test).
func Tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
