package dataplane

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRaiseProcs: the Ps rise by the push's readers while any push runs, once however
// many run, and come back to the runtime's default when the last one ends; a GOMAXPROCS
// in the environment is left alone.
func TestRaiseProcs(t *testing.T) {
	t.Setenv("GOMAXPROCS", "") // the test binary may run with one set
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)

	first := raiseProcs()
	require.Equal(t, def+pushReaders(), runtime.GOMAXPROCS(0))
	second := raiseProcs()
	require.Equal(t, def+pushReaders(), runtime.GOMAXPROCS(0), "one raise for two pushes")
	first()
	first() // a second call is a no-op
	require.Equal(t, def+pushReaders(), runtime.GOMAXPROCS(0), "a push still runs")
	second()
	require.Equal(t, def, runtime.GOMAXPROCS(0))

	t.Setenv("GOMAXPROCS", "3")
	runtime.GOMAXPROCS(3)
	release := raiseProcs()
	require.Equal(t, 3, runtime.GOMAXPROCS(0), "the environment's choice")
	release()
	require.Equal(t, 3, runtime.GOMAXPROCS(0))
	runtime.SetDefaultGOMAXPROCS()
}
