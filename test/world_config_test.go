package test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/activities/hostexec/sshtest"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/testworld"
)

// plainJob drops from c's job what only the base world uses: the takeover script, the
// application order, retention and precopy (the variants below run with the defaults).
func plainJob(j *config.Job) {
	j.Application.Takeover = ""
	j.Order = config.Order{}
	j.Retention = config.Retention{}
	j.Precopy = ""
}

// attachOnly makes host h attach only the given storage (at its place in the test dir).
func attachOnly(c *config.Config, h *config.Host, storage ...string) {
	h.Attach = map[string]string{}
	for _, name := range storage {
		s, err := c.StorageByName(name)
		if err != nil {
			panic(err)
		}
		h.Attach[name] = s.Path
	}
}

// sshConnectTo is how other agents reach a host through the test sshd s.
func sshConnectTo(s *sshtest.Server) config.Connect {
	return config.Connect{SSH: &config.SSH{Address: s.Addr, User: s.User, Key: s.KeyFile, KnownHosts: s.KnownHostsFile}}
}

// writeConfig writes cfg to path (testworld.WriteConfig: YAML without zero values).
func writeConfig(t testing.TB, path string, cfg config.Config) {
	t.Helper()
	require.NoError(t, testworld.WriteConfig(path, cfg))
}

// writeConfigAs writes the world's config, changed by edit, to path (e.cfgFile to change the
// shared one). e.cfg itself stays as it is unless path is e.cfgFile.
func (e *env) writeConfigAs(path string, edit func(c *config.Config)) {
	e.t.Helper()
	c, err := testworld.CopyConfig(e.cfg) // edit must not change e.cfg's maps and slices
	require.NoError(e.t, err)
	edit(&c)
	writeConfig(e.t, path, c)
	if path == e.cfgFile {
		e.cfg = c
	}
}
