package dataplane

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSelectRetained(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return t0.Add(-d) }
	// Hourly items r0 (newest) … r5 (5 h old).
	hourly := func() []retentionItem {
		var out []retentionItem
		for i := range 6 {
			out = append(out, retentionItem{Name: "r" + string(rune('0'+i)), Time: ago(time.Duration(i) * time.Hour)})
		}
		return out
	}
	pin := func(items []retentionItem, name string) []retentionItem {
		for i := range items {
			items[i].Pinned = items[i].Name == name
		}
		return items
	}
	for _, tc := range []struct {
		name  string
		items []retentionItem
		pol   Retention
		want  []string
	}{
		{"nothing to select", nil, Retention{Last: 3, Within: time.Hour}, nil},
		{"keep-last only", hourly(), Retention{Last: 2}, []string{"r0", "r1"}},
		{"keep-last above the count keeps all", hourly(), Retention{Last: 10}, []string{"r0", "r1", "r2", "r3", "r4", "r5"}},
		{"keep-last 0 still keeps the newest", hourly(), Retention{Last: 0}, []string{"r0"}},
		{"within adds younger items", hourly(), Retention{Last: 1, Within: 3 * time.Hour}, []string{"r0", "r1", "r2", "r3"}},
		{"within boundary is inclusive", hourly(), Retention{Last: 1, Within: 2*time.Hour + time.Nanosecond}, []string{"r0", "r1", "r2"}},
		{"keep-last beyond the window", hourly(), Retention{Last: 4, Within: time.Hour}, []string{"r0", "r1", "r2", "r3"}},
		{"window measured from the newest item, not the clock", []retentionItem{
			{Name: "old1", Time: ago(30 * 24 * time.Hour)},
			{Name: "old2", Time: ago(30*24*time.Hour + 23*time.Hour)},
			{Name: "old3", Time: ago(32 * 24 * time.Hour)},
		}, Retention{Last: 1, Within: 24 * time.Hour}, []string{"old1", "old2"}},
		{"pinned current counts towards last", pin(hourly(), "r4"), Retention{Last: 2}, []string{"r0", "r4"}},
		{"pinned current is kept outside the window", pin(hourly(), "r5"), Retention{Last: 1, Within: time.Hour}, []string{"r0", "r1", "r5"}},
		{"input order does not matter", func() []retentionItem { h := hourly(); slices.Reverse(h); return h }(), Retention{Last: 2}, []string{"r0", "r1"}},
		{"equal times rank by name", []retentionItem{
			{Name: "a", Time: t0}, {Name: "c", Time: t0}, {Name: "b", Time: t0},
		}, Retention{Last: 2}, []string{"b", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := selectRetained(tc.items, tc.pol)
			var names []string
			for n := range got {
				names = append(names, n)
			}
			slices.Sort(names)
			require.Equal(t, tc.want, names)
		})
	}
}
