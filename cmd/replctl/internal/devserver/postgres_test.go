package devserver

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/server/common/log"

	"github.com/replctl/replctl/internal/testworld"
)

// A server that sets up the schema waits for a PostgreSQL that is not up yet (started
// beside it) instead of exiting, and gives up at once on a login the database refuses.
func TestSchemaSetupWaitsForTheDatabase(t *testing.T) {
	pg := testworld.StartPostgresFor(t)
	require.NoError(t, pg.Halt())

	started := make(chan error, 1)
	go func() {
		time.Sleep(2 * time.Second)
		started <- pg.Start()
	}()
	main, visibility, err := preparePostgres(Postgres{URL: pg.URL("temporal"), SetupSchema: true}, log.NewNoopLogger())
	require.NoError(t, <-started)
	require.NoError(t, err, "the schema is set up once the database server is up")
	assert.Equal(t, "temporal", main.DatabaseName)
	assert.Equal(t, "temporal_visibility", visibility.DatabaseName)
	require.NoError(t, waitSchema(main, "0.1"), "the schema has a version")

	// A role that does not exist: refused at once, not waited on for schemaWait.
	done := make(chan error, 1)
	go func() {
		_, _, err := preparePostgres(Postgres{URL: strings.Replace(pg.URL("temporal"), "temporal@", "nobody@", 1), SetupSchema: true}, log.NewNoopLogger())
		done <- err
	}()
	select {
	case err := <-done:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "nobody")
		assert.NotContains(t, err.Error(), "no database server answered")
		t.Logf("refused: %v", err)
	case <-time.After(schemaWait / 2):
		t.Fatalf("a refused login was waited on")
	}
}
