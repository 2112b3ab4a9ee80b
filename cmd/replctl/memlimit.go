package main

import (
	"math"
	"runtime/debug"
	"strings"

	"github.com/dustin/go-humanize"
)

// DefaultAgentMemoryLimit is the agent's default soft memory limit (`--memory-limit`).
//
// An agent's resident set is the binary's mapped pages plus the Go runtime's memory. Go's
// default collector lets the heap grow to twice what is live; with this limit the collector
// runs earlier instead once the heap nears it, and the agent stays near the binary's pages
// plus this limit while what is live fits under it. It is a soft limit: when more is live,
// the collector runs back to back (up to about half the CPU) and the heap grows past it
// rather than failing. 128MiB did that in the pulls of dataset C (1,000,000 files: about
// 130 MiB live, 52 MiB of it kopia's index of the repository's contents): about 40 % of
// a profiled pull's CPU went to the collector and to returning memory to the OS (design.md).
const DefaultAgentMemoryLimit = "256MiB"

// memoryLimit interprets `--memory-limit` (value, and whether the flag was given) and the
// GOMEMLIMIT environment variable. It returns the limit to set in bytes (math.MaxInt64: no
// limit), or set == false to leave the runtime's limit alone: GOMEMLIMIT, which the Go
// runtime has applied already, wins over the default but not over an explicit flag.
func memoryLimit(value string, given bool, env string) (limit int64, set bool, err error) {
	if !given && env != "" {
		return 0, false, nil
	}

	switch strings.ToLower(strings.TrimSpace(value)) {
	case "0", "off", "none":
		return math.MaxInt64, true, nil
	}

	n, err := humanize.ParseBytes(value)
	if err != nil {
		return 0, false, usageError("--memory-limit %q: want a size such as 128MiB or 1GiB, or 0 for none", value)
	}

	if n > math.MaxInt64 {
		n = math.MaxInt64
	}

	return int64(n), true, nil
}

// applyMemoryLimit sets the runtime's soft memory limit (see memoryLimit).
func applyMemoryLimit(limit int64, set bool) {
	if set {
		debug.SetMemoryLimit(limit)
	}
}
