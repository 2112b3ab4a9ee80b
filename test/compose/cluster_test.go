package compose_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The compose set-up on a Temporal cluster (docker-compose.postgres.yml: PostgreSQL and the
// frontend, history, matching and worker services in four containers, mutual TLS between
// them). Run 1: the frontend container is killed together with the pushing agent; when it
// is back, a2 takes over and the replica is the quiesced source. Run 2: the history
// container restarts while the source pushes, then PostgreSQL restarts while the target
// pulls; the run completes and its replica is the quiesced source.
func TestPostgresClusterSurvivesServiceAndDatabaseFaults(t *testing.T) {
	d := upPostgres(t)
	d.seed("orders")
	d.seed("ledger")

	run := d.start("orders")
	require.Equal(t, "a1", d.waitPushing(run))
	d.killAgent("a1")
	d.docker("kill", d.ids["temporal"])
	killed := time.Now()
	time.Sleep(2 * time.Second)
	d.docker("start", d.ids["temporal"])
	st, err := d.wait(run)
	require.NoError(t, err, "the run goes on once the frontend is back")
	t.Logf("run 1: frontend and a1's agent killed; run done %s later, takeovers %v", time.Since(killed).Round(time.Millisecond), st.Takeovers)
	require.NotEmpty(t, st.Takeovers)
	assert.Equal(t, "a1", st.Takeovers[0].From)
	assert.Equal(t, "a2", st.Agents.Source)
	assert.Equal(t, d.freezeDigest("a1", "orders", st.RunID), d.digest("b1", "/srv/array-b/orders"))

	d.docker("restart", "-t", "1", d.ids["a1"]) // a1's agent back for the next run
	d.waitPolling(t.Context(), "a1")
	run = d.start("ledger")
	d.waitPushing(run)
	d.docker("restart", "-t", "0", d.ids["temporal-history"])
	t.Logf("run 2: history restarted during the push")
	d.waitStarted(run, "Pull")
	d.docker("restart", "-t", "1", d.ids["postgres"])
	restarted := time.Now()
	st, err = d.wait(run)
	require.NoError(t, err, "the run goes on once history and the database are back")
	t.Logf("run 2: PostgreSQL restarted during the pull; run done %s later", time.Since(restarted).Round(time.Millisecond))
	assert.Equal(t, d.freezeDigest("a1", "ledger", st.RunID), d.digest("b1", "/srv/array-b/ledger"))
}
