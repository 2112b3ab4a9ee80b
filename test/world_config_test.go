package test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/replctl/replctl/activities/hostexec/sshtest"
	"github.com/replctl/replctl/config"
)

// worldConfig is the config of the test world in dir as a value: what envConfig parses
// to before defaults (TestWorldConfigEqualsEnvConfig keeps the two equal). Variants edit
// the value (envOptions.edit) instead of the YAML text.
func worldConfig(dir string, heartbeat, scheduleToStart time.Duration) config.Config {
	storage := func(name string) string { return filepath.Join(dir, "storage", name) }
	host := func(name string, attach ...string) config.Host {
		h := config.Host{Name: name, Attach: map[string]string{}, Scripts: filepath.Join(dir, "scripts"), State: filepath.Join(dir, "hosts", name)}
		for _, s := range attach {
			h.Attach[s] = storage(s)
		}
		return h
	}
	return config.Config{
		Temporal: config.Temporal{Address: "127.0.0.1:7233", Namespace: "default"},
		Storage:  []config.Storage{{Name: "array-a", Path: storage("array-a")}, {Name: "array-b", Path: storage("array-b")}},
		Hosts: []config.Host{
			host("a1", "array-a", "array-b"), host("a2", "array-a", "array-b"),
			host("b1", "array-a", "array-b"), host("b2", "array-a", "array-b"),
		},
		Jobs: []config.Job{{
			Name:   "orders",
			Source: config.Endpoint{Storage: "array-a", Dataset: "orders"},
			Target: config.Endpoint{Storage: "array-b", Dataset: "orders"},
			Application: config.Application{Host: "a1", Quiesce: "freeze.sh", Resume: "thaw.sh", Takeover: "takeover.sh",
				Timeout: 30 * time.Second},
			Order: config.Order{
				Application: []string{"a1", "a2"},
				Source:      []string{"a1", "a2", "b2"},
				Target:      []string{"b1", "b2", "a2"},
			},
			Timeouts:   config.Timeouts{Heartbeat: heartbeat, ScheduleToStart: scheduleToStart, StartToClose: 5 * time.Minute},
			Retention:  config.Retention{Replicas: 3, Images: 10},
			Repository: config.Repository{Storage: "array-b"},
			// Every run copies ahead of quiesce, so every test exercises the precopy.
			Precopy: config.PrecopyAlways,
		}},
	}
}

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

// writeConfig writes cfg as YAML to path. Keys whose value is the zero value (null, "",
// 0, false, 0s, empty lists and mappings) are left out: config.Load reads an absent key
// as the zero value, and the file stays as short as a hand-written one.
func writeConfig(t testing.TB, path string, cfg config.Config) {
	t.Helper()
	b, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal(b, &doc))
	pruneZero(&doc)
	b, err = yaml.Marshal(&doc)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

// writeConfigAs writes the world's config, changed by edit, to path (e.cfgFile to change the
// shared one). e.cfg itself stays as it is unless path is e.cfgFile.
func (e *env) writeConfigAs(path string, edit func(c *config.Config)) {
	e.t.Helper()
	b, err := yaml.Marshal(e.cfg)
	require.NoError(e.t, err)
	var c config.Config // a deep copy: edit must not change e.cfg's maps and slices
	require.NoError(e.t, yaml.Unmarshal(b, &c))
	edit(&c)
	writeConfig(e.t, path, c)
	if path == e.cfgFile {
		e.cfg = c
	}
}

// pruneZero removes mapping entries with zero values from n, and reports whether n itself
// is now empty or zero.
func pruneZero(n *yaml.Node) bool {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			pruneZero(c)
		}
		return false
	case yaml.MappingNode:
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			if !pruneZero(n.Content[i+1]) {
				kept = append(kept, n.Content[i], n.Content[i+1])
			}
		}
		n.Content = kept
		return len(n.Content) == 0
	case yaml.SequenceNode:
		for _, c := range n.Content {
			pruneZero(c)
		}
		return len(n.Content) == 0
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return true
		case "!!str":
			return n.Value == "" || n.Value == "0s"
		case "!!int":
			return n.Value == "0"
		case "!!bool":
			return n.Value == "false"
		}
	}
	return false
}

// The builder's world config, written and loaded, is the config envConfig loads to: the
// tests converted from envConfig text to worldConfig run the same world.
func TestWorldConfigEqualsEnvConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "replctl.yaml")
	load := func() *config.Config {
		t.Helper()
		cfg, err := config.Load(path)
		require.NoError(t, err)
		return cfg
	}
	sshd := &sshtest.Server{Addr: "127.0.0.1:2222", User: "tester", KeyFile: filepath.Join(dir, "key"), KnownHostsFile: filepath.Join(dir, "known_hosts")}
	for _, tc := range []struct {
		heartbeat, scheduleToStart string
		a1SSH                      *sshtest.Server
	}{{"1s", "2s", nil}, {"2s", "20s", nil}, {"1s", "2s", sshd}} {
		require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(envConfig, dir, tc.heartbeat, tc.scheduleToStart, a1ConnectText(tc.a1SSH))), 0o644))
		want := load()
		hb, err := time.ParseDuration(tc.heartbeat)
		require.NoError(t, err)
		sts, err := time.ParseDuration(tc.scheduleToStart)
		require.NoError(t, err)
		cfg := worldConfig(dir, hb, sts)
		if tc.a1SSH != nil {
			cfg.Hosts[0].Connect = sshConnectTo(tc.a1SSH)
		}
		writeConfig(t, path, cfg)
		require.Equal(t, want, load())
	}
}
