package workers

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.HTTPHandler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

func TestMetricsServeCountersGaugesTimers(t *testing.T) {
	m := NewMetrics()
	h := m.Handler().WithTags(map[string]string{"job": "orders"})
	h.Counter("replctl_push_bytes_total").Inc(100)
	h.Counter("replctl_push_bytes_total").Inc(23)
	h.Gauge("replctl_last_replica_timestamp_seconds").Update(1.7e9)
	h.WithTags(map[string]string{"step": "pull"}).Timer("replctl_step_duration_seconds").Record(1500 * time.Millisecond)
	out := scrape(t, m)
	assert.Contains(t, out, `replctl_push_bytes_total{job="orders"} 123`)
	assert.Contains(t, out, `replctl_last_replica_timestamp_seconds{job="orders"} 1.7e+09`)
	assert.Contains(t, out, `replctl_step_duration_seconds_bucket{job="orders",step="pull",le="2.5"} 1`)
	assert.Contains(t, out, `replctl_step_duration_seconds_bucket{job="orders",step="pull",le="1"} 0`)
	assert.Contains(t, out, `replctl_step_duration_seconds_sum{job="orders",step="pull"} 1.5`)
	assert.Contains(t, out, "go_goroutines", "runtime metrics too")
}

// The SDK emits one name with different tag sets; a scrape must still be consistent.
func TestMetricsPadInconsistentLabelSets(t *testing.T) {
	m := NewMetrics()
	m.Handler().WithTags(map[string]string{"namespace": "default"}).Counter("temporal_request").Inc(1)
	m.Handler().WithTags(map[string]string{"namespace": "default", "operation": "Poll"}).Counter("temporal_request").Inc(2)
	m.Handler().Counter("bad-name.with dots").Inc(1)
	out := scrape(t, m)
	assert.Contains(t, out, `temporal_request{namespace="default",operation=""} 1`)
	assert.Contains(t, out, `temporal_request{namespace="default",operation="Poll"} 2`)
	assert.Contains(t, out, "bad_name_with_dots 1")
	assert.False(t, strings.Contains(out, "error"), out)
}
