package workers

import (
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.temporal.io/sdk/client"
)

// Metrics receives the Temporal SDK's metrics and replctl's own (counters, gauges, timers
// emitted through client.MetricsHandler, activity.GetMetricsHandler and
// workflow.GetMetricsHandler) and serves them to Prometheus.
//
// The SDK emits one metric name with different tag sets depending on where it is called
// from; Prometheus wants one label set per metric family. Metrics therefore keeps every
// series and, at scrape time, gives all series of a family the union of their label
// names (missing ones empty), so a scrape is always consistent.
type Metrics struct {
	mu       sync.Mutex
	families map[string]*family
	reg      *prometheus.Registry
}

type kind int

const (
	counterKind kind = iota
	gaugeKind
	histogramKind
)

type family struct {
	kind   kind
	series map[string]*series
}

type series struct {
	labels  map[string]string
	value   float64
	count   uint64
	buckets []uint64 // cumulative counts are computed at scrape time
}

// buckets of timers, in seconds: from a local activity to an hour-long push.
var buckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}

// NewMetrics returns an empty metrics registry with the Go runtime and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{families: map[string]*family{}, reg: prometheus.NewRegistry()}
	m.reg.MustRegister(m, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler is the SDK metrics handler to put in client.Options.MetricsHandler.
func (m *Metrics) Handler() client.MetricsHandler { return handler{m: m} }

// HTTPHandler serves the metrics in the Prometheus text format.
func (m *Metrics) HTTPHandler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func (m *Metrics) record(k kind, name string, tags map[string]string, f func(*series)) {
	name = sanitize(name)
	key := seriesKey(tags)
	m.mu.Lock()
	defer m.mu.Unlock()
	fam := m.families[name]
	if fam == nil {
		fam = &family{kind: k, series: map[string]*series{}}
		m.families[name] = fam
	}
	if fam.kind != k {
		return // the same name used as two kinds: keep the first
	}
	s := fam.series[key]
	if s == nil {
		s = &series{labels: tags}
		if k == histogramKind {
			s.buckets = make([]uint64, len(buckets))
		}
		fam.series[key] = s
	}
	f(s)
}

// Describe sends nothing: Metrics is an unchecked collector, its families change at run time.
func (m *Metrics) Describe(chan<- *prometheus.Desc) {}

// Collect sends every series, each family with the union of its label names.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, fam := range m.families {
		names := labelUnion(fam)
		desc := prometheus.NewDesc(name, name, names, nil)
		for _, s := range fam.series {
			values := make([]string, len(names))
			for i, n := range names {
				values[i] = s.labels[n]
			}
			var metric prometheus.Metric
			var err error
			switch fam.kind {
			case counterKind:
				metric, err = prometheus.NewConstMetric(desc, prometheus.CounterValue, s.value, values...)
			case gaugeKind:
				metric, err = prometheus.NewConstMetric(desc, prometheus.GaugeValue, s.value, values...)
			case histogramKind:
				cum := map[float64]uint64{}
				var c uint64
				for i, b := range buckets {
					c += s.buckets[i]
					cum[b] = c
				}
				metric, err = prometheus.NewConstHistogram(desc, s.count, s.value, cum, values...)
			}
			if err == nil {
				ch <- metric
			}
		}
	}
}

func labelUnion(f *family) []string {
	set := map[string]bool{}
	for _, s := range f.series {
		for k := range s.labels {
			set[k] = true
		}
	}
	names := make([]string, 0, len(set))
	for k := range set {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

func seriesKey(tags map[string]string) string {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(tags[k])
		b.WriteByte(0)
	}
	return b.String()
}

// sanitize makes a metric or label name valid for Prometheus.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			b[i] = '_'
		}
	}
	return string(b)
}

// handler implements client.MetricsHandler over Metrics.
type handler struct {
	m    *Metrics
	tags map[string]string
}

func (h handler) WithTags(tags map[string]string) client.MetricsHandler {
	merged := make(map[string]string, len(h.tags)+len(tags))
	for k, v := range h.tags {
		merged[k] = v
	}
	for k, v := range tags {
		merged[sanitize(k)] = v
	}
	return handler{m: h.m, tags: merged}
}

func (h handler) Counter(name string) client.MetricsCounter {
	return counterFunc(func(d int64) {
		h.m.record(counterKind, name, h.tags, func(s *series) { s.value += float64(d) })
	})
}

func (h handler) Gauge(name string) client.MetricsGauge {
	return gaugeFunc(func(v float64) {
		h.m.record(gaugeKind, name, h.tags, func(s *series) { s.value = v })
	})
}

func (h handler) Timer(name string) client.MetricsTimer {
	return timerFunc(func(d time.Duration) {
		sec := d.Seconds()
		h.m.record(histogramKind, name, h.tags, func(s *series) {
			s.count++
			s.value += sec
			i := sort.SearchFloat64s(buckets, sec)
			if i < len(buckets) {
				s.buckets[i]++
			}
		})
	})
}

type (
	counterFunc func(int64)
	gaugeFunc   func(float64)
	timerFunc   func(time.Duration)
)

func (f counterFunc) Inc(d int64)          { f(d) }
func (f gaugeFunc) Update(v float64)       { f(v) }
func (f timerFunc) Record(d time.Duration) { f(d) }
