package main

import (
	"math"
	"runtime/debug"
	"strings"

	"github.com/dustin/go-humanize"
)

// DefaultAgentMemoryLimit is the agent's default soft memory limit (`--memory-limit`).
//
// An agent's resident set is the binary's mapped pages (about 85 MiB: it links the Temporal
// server and UI) plus the Go runtime's memory. Go's default collector lets the heap grow to
// twice what is live, so a pull of 200,000 small files peaked near 290 MiB; with this limit
// the collector runs earlier instead, and the agent stays near 85 MiB + this limit while
// what is live fits well under it. It is a soft limit: when more is live (much larger
// datasets), the collector works harder (at most about half the CPU) and the heap grows
// past it rather than failing.
const DefaultAgentMemoryLimit = "128MiB"

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
