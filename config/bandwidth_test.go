package config

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseBandwidth(t *testing.T) {
	good := map[string]int64{
		"":           0,
		"100MiB/s":   100 << 20,
		"1.5GiB/s":   3 << 29,
		"512KiB/s":   512 << 10,
		"2048B/s":    2048,
		" 10 MiB/s ": 10 << 20,
	}
	for in, want := range good {
		got, err := ParseBandwidth(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"100MiB", "100M/s", "100mib/s", "fast/s", "0MiB/s", "-1MiB/s", "512B/s", "MiB/s", "NaNMiB/s", "1e30GiB/s"} {
		_, err := ParseBandwidth(in)
		require.Error(t, err, in)
	}
}
