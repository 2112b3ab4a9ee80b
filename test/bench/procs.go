package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/replctl/replctl/internal/testworld"
)

// procs tracks every long-running child (server or agent) so that they are all stopped on
// exit, even on a failure or a signal.
var procs struct {
	sync.Mutex
	live map[*testworld.Proc]bool
}

// startProc starts a long-running child in its own process group (testworld.Proc), so it
// and whatever it spawned can be stopped together, and tracks it for stopAll.
func startProc(name, logPath string, bin string, args ...string) (*testworld.Proc, error) {
	p, err := testworld.StartProc(name, logPath, bin, args...)
	if err != nil {
		return nil, err
	}
	procs.Lock()
	if procs.live == nil {
		procs.live = map[*testworld.Proc]bool{}
	}
	procs.live[p] = true
	procs.Unlock()
	return p, nil
}

// stopAll stops every tracked child that still runs; used on exit and on signals.
func stopAll() {
	procs.Lock()
	var all []*testworld.Proc
	for p := range procs.live {
		if p.Alive() {
			all = append(all, p)
		}
		delete(procs.live, p)
	}
	procs.Unlock()
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Add(1)
		go func() { defer wg.Done(); p.Stop(5 * time.Second) }()
	}
	wg.Wait()
}

// procStatusKB reads a "Key:   N kB" field of /proc/PID/status.
func procStatusKB(pid int, key string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, key+":") {
			fields := strings.Fields(line[len(key)+1:])
			if len(fields) == 0 {
				break
			}
			return strconv.ParseInt(fields[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, key)
}

// resetPeakRSS resets the process's VmHWM to its current RSS (clear_refs value 5).
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// peakRSS is the process's VmHWM in bytes.
func peakRSS(pid int) (int64, error) {
	kb, err := procStatusKB(pid, "VmHWM")
	return kb * 1024, err
}

// treePeak follows a process tree while it runs and records each process's peak RSS
// (VmHWM). wait4's ru_maxrss is no use for children of a Go program: they are started
// with vfork, so the exec'ing child inherits the parent's high-water mark.
type treePeak struct {
	root  int
	mu    sync.Mutex
	peaks map[int]int64 // pid → VmHWM bytes
	stop  chan struct{}
	done  chan struct{}
}

func watchTree(pid int, every time.Duration) *treePeak {
	t := &treePeak{root: pid, peaks: map[int]int64{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(t.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			t.sample()
			select {
			case <-t.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return t
}

// sample reads VmHWM of the root and its descendants (via /proc/PID/task/TID/children).
func (t *treePeak) sample() {
	queue := []int{t.root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if v, err := procStatusKB(pid, "VmHWM"); err == nil {
			t.mu.Lock()
			t.peaks[pid] = max(t.peaks[pid], v*1024)
			t.mu.Unlock()
		}
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					queue = append(queue, c)
				}
			}
		}
	}
}

// finish stops watching and returns the sum of the peaks of every process seen (the
// tree's processes run at the same time, e.g. rsync's sender, generator and receiver).
func (t *treePeak) finish() int64 {
	close(t.stop)
	<-t.done
	t.mu.Lock()
	defer t.mu.Unlock()
	var sum int64
	for _, v := range t.peaks {
		sum += v
	}
	return sum
}

// runCmd runs a short command with a timeout and returns its combined output.
func runCmd(ctx context.Context, timeout time.Duration, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if ctx.Err() == context.DeadlineExceeded {
		return string(out), fmt.Errorf("%s %s: timed out after %s", bin, strings.Join(args, " "), timeout)
	}
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, testworld.Tail(string(out), 2000))
	}
	return string(out), nil
}

// syncFS flushes every filesystem (the `sync` every timed run ends with).
func syncFS() error {
	syscall.Sync()
	return nil
}

// dropCaches empties the page cache, dentries and inodes so the next run reads from disk.
// It reports false when the machine does not allow it (not root, read-only /proc/sys).
func dropCaches() bool {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0) == nil
}

// lockDir takes an exclusive lock (flock) on file for the life of the process; a second
// bench of the same mode on the same directory is refused instead of wiping the first
// one's targets.
func lockDir(file string) (unlock func(), err error) {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(file)
		f.Close()
		return nil, fmt.Errorf("another bench of this mode is running on %s (lock %s held by pid %s): wait for it or set BENCH_DIR to another directory",
			filepath.Dir(file), file, strings.TrimSpace(string(b)))
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, nil
}

// removeAll removes a tree, making read-only directories writable first when needed.
func removeAll(ctx context.Context, dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	if _, err := runCmd(ctx, 10*time.Minute, "chmod", "-R", "u+w", dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}
