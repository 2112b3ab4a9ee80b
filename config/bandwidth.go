package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// MinBandwidth is the smallest accepted bandwidth: below it a limit is a mistake (a
// missing unit) rather than a plan.
const MinBandwidth = 1 << 10

// bandwidthUnits are the units of a bandwidth, per second.
var bandwidthUnits = []struct {
	name  string
	bytes float64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// ParseBandwidth reads a rate such as "100MiB/s", "1.5GiB/s" or "512KiB/s" (units B, KiB,
// MiB, GiB per second) into bytes per second. "" is 0: no limit.
func ParseBandwidth(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	v := strings.TrimSpace(s)
	num, ok := strings.CutSuffix(v, "/s")
	if !ok {
		return 0, fmt.Errorf("%q is not a rate: want a number, a unit (B, KiB, MiB, GiB) and /s, such as 100MiB/s", s)
	}
	for _, u := range bandwidthUnits {
		n, ok := strings.CutSuffix(num, u.name)
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, fmt.Errorf("%q: %q is not a number (want such as 100MiB/s)", s, strings.TrimSpace(n))
		}
		b := f * u.bytes
		if b < MinBandwidth {
			return 0, fmt.Errorf("%q is below the smallest limit 1KiB/s (remove the key for no limit)", s)
		}
		if b > math.MaxInt64/2 {
			return 0, fmt.Errorf("%q is too large", s)
		}
		return int64(b), nil
	}
	return 0, fmt.Errorf("%q has no unit: want B, KiB, MiB or GiB per second, such as 100MiB/s", s)
}

// FormatBytes renders n bytes with a binary unit ("512 B", "1.5 GiB"), as messages and
// tables show sizes.
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
