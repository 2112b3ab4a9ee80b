package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/workflows"
)

// Entries the data plane cannot replicate (a name that is not valid UTF-8 whose image name is
// a sibling's real name; a FIFO and a hard link beside it are kept) fail a run under the default on_unsupported: at the preflight
// when they are there before quiesce (nothing runs), else at the push, after which the
// application is resumed. Nothing is dropped silently.
func TestUnsupportedEntriesFailTheRun(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 20, 4<<10, 7)
	require.NoError(t, unix.Mkfifo(filepath.Join(e.sourceDir(), "pipe"), 0o644))
	require.NoError(t, os.Link(filepath.Join(e.sourceDir(), "d00/s0/f00000.bin"), filepath.Join(e.sourceDir(), "twin.bin")))
	require.NoError(t, os.WriteFile(filepath.Join(e.sourceDir(), "bad-\xff"), []byte("n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(e.sourceDir(), "bad-\uf7ff"), []byte("its image name"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(e.sourceDir(), "late-\uf7fe"), []byte("the image name of late-\\xfe"), 0o644))
	e.startAgentConfig("a1", e.cfgFile, "--change-journal") // its later preflights follow the journal
	e.startAgent("b1")

	run := e.start("orders")
	_, err := e.wait(run)
	st := e.status(run)
	t.Logf("run with a name that is not UTF-8: phase %s, error %v, replica %+v", st.Phase, err, st.Replica)
	require.Error(t, err, "a name that would come back changed must not be replicated silently")
	assert.Contains(t, err.Error(), "source check on agent a1 before quiesce (nothing was run): 1 entry cannot be replicated (name 1): "+
		`"orders/bad-\xff" (name not valid UTF-8, and its image name is a sibling's); set on_unsupported: skip on job orders`)
	assert.Nil(t, st.Replica)
	assert.Empty(t, e.markers("a1"), "the preflight refused before any script ran")

	// An entry that appears after the preflight (here: made by the quiesce script) is met by
	// the push while the application is quiesced: the run fails and the resume still runs.
	require.NoError(t, os.Remove(filepath.Join(e.sourceDir(), "bad-\xff")))
	freeze := testScript + "touch '" + e.sourceDir() + "/late-'\"$(printf '\\376')\"\n"
	require.NoError(t, os.WriteFile(filepath.Join(e.dir, "scripts", "freeze.sh"), []byte(freeze), 0o755))

	run = e.start("orders")
	_, err = e.wait(run)
	st = e.status(run)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `push: 1 entry cannot be replicated (name 1): "orders/late-\xfe" (name not valid UTF-8, and its image name is a sibling's); set on_unsupported: skip on job orders to replicate without them`)
	assert.Equal(t, workflows.PhaseFailed, st.Phase)
	assert.Nil(t, st.Replica)
	assert.Empty(t, st.QuiescedHost)
	assert.Empty(t, st.Takeovers, "a refusal is final: no other agent is asked")
	m := e.markers("a1")
	require.Len(t, m, 2, "markers: %v", m)
	assert.True(t, strings.HasPrefix(m[0], "quiesce host=a1"), m[0])
	assert.True(t, strings.HasPrefix(m[1], "resume host=a1"), m[1])
	_, err = os.Lstat(e.targetLink())
	assert.ErrorIs(t, err, os.ErrNotExist, "nothing was published")

	// a1's later preflights look only where the source changed (--change-journal; a run
	// without a precopy): a clash made deep in a directory that was clean is still refused
	// before quiesce, and once it is gone the run completes.
	require.NoError(t, os.Remove(filepath.Join(e.sourceDir(), "late-\xfe")))
	require.NoError(t, os.WriteFile(filepath.Join(e.dir, "scripts", "freeze.sh"), []byte(testScript), 0o755))
	_, err = e.wait(e.start("orders"))
	require.NoError(t, err)
	deep := filepath.Join(e.sourceDir(), "d00", "s0")
	require.NoError(t, os.WriteFile(filepath.Join(deep, "x-\xff"), []byte("n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(deep, "x-\uf7ff"), []byte("its image name"), 0o644))
	_, err = e.wait(e.start("orders"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `before quiesce (nothing was run): 1 entry cannot be replicated (name 1): "orders/d00/s0/x-\xff"`)
	require.NoError(t, os.Remove(filepath.Join(deep, "x-\xff")))
	_, err = e.wait(e.start("orders"))
	require.NoError(t, err)
	if os.Geteuid() == 0 {
		assert.NotContains(t, e.agentLog("a1"), "no change journal on this agent", "a1 runs as root: its journal opens")
	}
}

// With on_unsupported: skip the run completes without them; the status, the replica's meta
// record and `replctl replicas` say the replica is incomplete and what it lacks. The FIFO
// and the xattr beside them are kept.
func TestUnsupportedSkipMakesIncompleteReplica(t *testing.T) {
	e := newEnvWith(t, envOptions{edit: func(c *config.Config) { c.Jobs[0].OnUnsupported = config.OnUnsupportedSkip }})
	writeDataset(t, e.sourceDir(), 20, 4<<10, 8)
	require.NoError(t, unix.Mkfifo(filepath.Join(e.sourceDir(), "pipe"), 0o644))
	require.NoError(t, unix.Lsetxattr(filepath.Join(e.sourceDir(), "d00/s0/f00000.bin"), "user.note", []byte("v"), 0))
	require.NoError(t, os.WriteFile(filepath.Join(e.sourceDir(), "bad-\xff"), []byte("n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(e.sourceDir(), "bad-\xfe"), []byte("n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(e.sourceDir(), "bad-\uf7ff"), []byte("n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(e.sourceDir(), "bad-\uf7fe"), []byte("n"), 0o644))
	e.startAgents("a1", "b1")

	st, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	assert.Equal(t, workflows.PhaseCompleted, st.Phase)
	require.NotNil(t, st.Unsupported)
	assert.Equal(t, 2, st.Unsupported.Count)
	assert.Equal(t, map[string]int{"name": 2}, st.Unsupported.ByKind)
	why := " (name not valid UTF-8, and its image name is a sibling's)"
	assert.Equal(t, []string{`"orders/bad-\xfe"` + why, `"orders/bad-\xff"` + why}, st.Unsupported.First)
	require.NotNil(t, st.Replica)
	assert.True(t, st.Replica.Verified, "verified against its image")
	assert.True(t, st.Replica.Incomplete)
	fi, err := os.Lstat(filepath.Join(e.targetLink(), "pipe"))
	require.NoError(t, err)
	assert.Equal(t, os.ModeNamedPipe, fi.Mode().Type())
	note, err := getxattr(filepath.Join(e.targetLink(), "d00/s0/f00000.bin"), "user.note")
	require.NoError(t, err)
	assert.Equal(t, "v", note)

	out, err := e.cli("replicas", "orders", "-o", "json", "--no-size")
	require.NoError(t, err, out)
	var v struct {
		Replicas []struct {
			Name        string `json:"name"`
			Verified    *bool  `json:"verified"`
			Incomplete  bool   `json:"incomplete"`
			Unsupported *struct {
				Count  int            `json:"count"`
				ByKind map[string]int `json:"by_kind"`
			} `json:"unsupported"`
		} `json:"replicas"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &v), out)
	require.Len(t, v.Replicas, 1)
	assert.True(t, v.Replicas[0].Incomplete, out)
	require.NotNil(t, v.Replicas[0].Unsupported, out)
	assert.Equal(t, 2, v.Replicas[0].Unsupported.Count)

	out, err = e.cli("replicas", "orders", "--no-size")
	require.NoError(t, err, out)
	assert.Contains(t, out, "yes, INCOMPLETE")
	out, err = e.cli("status", "orders")
	require.NoError(t, err, out)
	assert.Contains(t, out, "INCOMPLETE")
	assert.Contains(t, out, "2 entries cannot be replicated (name 2)")
	t.Logf("replctl status orders:\n%s", out)
}

func getxattr(p, name string) (string, error) {
	b := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, b)
	if err != nil {
		return "", err
	}
	return string(b[:n]), nil
}
