package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// watched is a process whose CPU and memory the report shows: a server service (started
// here, named by --server-pids or matched by --server-match) or one of the simulator's.
type watched struct {
	name   string
	pid    int
	server bool
}

// procSample is what /proc says of a process at one moment.
type procSample struct {
	cpu        time.Duration // utime + stime
	rss        int64         // bytes
	writeBytes int64         // /proc/PID/io write_bytes (-1: unreadable)
	ok         bool
}

// clockTick is USER_HZ: 100 on every Linux this runs on.
const clockTick = 100

// readProc samples pid.
func readProc(pid int) procSample {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procSample{}
	}
	// Fields after the command (which may hold spaces) in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procSample{}
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 22 {
		return procSample{}
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	rssPages, _ := strconv.ParseInt(f[21], 10, 64)
	ps := procSample{cpu: time.Duration(ut+st) * time.Second / clockTick, rss: rssPages * int64(os.Getpagesize()), writeBytes: -1, ok: true}
	if io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, l := range strings.Split(string(io), "\n") {
			if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
				ps.writeBytes, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return ps
}

// matchProcs finds the processes whose command line matches re. A process is named by the
// first capture group when re has one, else by its executable's base name and PID.
func matchProcs(re *regexp.Regexp) []watched {
	ents, _ := os.ReadDir("/proc")
	var out []watched
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		cmd := strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
		m := re.FindStringSubmatch(cmd)
		if m == nil {
			continue
		}
		name := filepath.Base(strings.Fields(cmd)[0]) + "/" + e.Name()
		if len(m) > 1 && m[1] != "" {
			name = m[1]
		}
		out = append(out, watched{name: name, pid: pid, server: true})
	}
	return out
}

// parsePIDs reads "frontend=123,history=456" (a bare PID is named by itself).
func parsePIDs(s string) ([]watched, error) {
	var out []watched
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		name, pidS, ok := strings.Cut(part, "=")
		if !ok {
			name, pidS = part, part
		}
		pid, err := strconv.Atoi(pidS)
		if err != nil {
			return nil, fmt.Errorf("server PID %q: %w", part, err)
		}
		out = append(out, watched{name: name, pid: pid, server: true})
	}
	return out, nil
}

// usage is one watched process over a window.
type usage struct {
	watched
	cores   float64 // CPU seconds per second of the window
	cpu     time.Duration
	rssMax  int64
	written int64 // bytes written to storage (/proc/PID/io), -1 unknown
}

// meter samples the watched processes: start, every few seconds (RSS), stop.
type meter struct {
	procs  []watched
	first  map[int]procSample
	rssMax map[int]int64
	t0     time.Time
}

func newMeter(procs []watched) *meter {
	m := &meter{procs: procs, first: map[int]procSample{}, rssMax: map[int]int64{}, t0: time.Now()}
	for _, p := range procs {
		m.first[p.pid] = readProc(p.pid)
		m.rssMax[p.pid] = m.first[p.pid].rss
	}
	return m
}

// sample records the RSS peaks.
func (m *meter) sample() {
	for _, p := range m.procs {
		if s := readProc(p.pid); s.ok && s.rss > m.rssMax[p.pid] {
			m.rssMax[p.pid] = s.rss
		}
	}
}

// stop returns each process's usage since newMeter.
func (m *meter) stop() []usage {
	m.sample()
	secs := time.Since(m.t0).Seconds()
	var out []usage
	for _, p := range m.procs {
		a, b := m.first[p.pid], readProc(p.pid)
		u := usage{watched: p, rssMax: m.rssMax[p.pid], written: -1}
		if a.ok && b.ok {
			u.cpu = b.cpu - a.cpu
			u.cores = u.cpu.Seconds() / secs
			if a.writeBytes >= 0 && b.writeBytes >= 0 {
				u.written = b.writeBytes - a.writeBytes
			}
		}
		out = append(out, u)
	}
	return out
}
