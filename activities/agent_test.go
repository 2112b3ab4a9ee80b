package activities

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"

	"github.com/replctl/replctl/activities/dataplane"
	"github.com/stretchr/testify/assert"
	"go.temporal.io/sdk/log"
)

// The data plane's lines reach the agent's logger, tagged with the agent; one that carries
// an error, or the data plane's warning marker, is a warning.
func TestDataplaneLog(t *testing.T) {
	var buf bytes.Buffer
	l := log.NewStructuredLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))

	dataplaneLog(l, "b1")("pulled replica", "dataset", "orders", "recycled", "r1")
	assert.Contains(t, buf.String(), `level=INFO msg="pulled replica" agent=b1 dataset=orders recycled=r1`)

	buf.Reset()
	dataplaneLog(l, "b1")("index epochs: compaction failed", "repo", "/mnt/b/repo", "err", errors.New("disk full"))
	assert.Contains(t, buf.String(), `level=WARN msg="index epochs: compaction failed" agent=b1 repo=/mnt/b/repo err="disk full"`)

	buf.Reset()
	dataplaneLog(l, "b1")("resumed", "err", nil)
	assert.Contains(t, buf.String(), "level=INFO")

	// A replica changed on the target: a warning, its marker not a field.
	buf.Reset()
	dataplaneLog(l, "b1")("pulled replica", "distrusted", 3, dataplane.LogWarn, true)
	assert.Contains(t, buf.String(), `level=WARN msg="pulled replica" agent=b1 distrusted=3`+"\n")
	buf.Reset()
	dataplaneLog(l, "b1")("pulled replica", "distrusted", 0, dataplane.LogWarn, false)
	assert.Contains(t, buf.String(), `level=INFO msg="pulled replica" agent=b1 distrusted=0`+"\n")

	dataplaneLog(nil, "b1")("dropped", "err", errors.New("x")) // no logger: no panic, nothing
}
