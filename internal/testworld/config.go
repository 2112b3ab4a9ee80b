package testworld

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/replctl/replctl/config"
)

// Hosts are the four hosts of the test world, a1 and a2 on the application's side, b1 and
// b2 on the target's, in a fixed order (config, logs, restarts).
var Hosts = []string{"a1", "a2", "b1", "b2"}

// ScriptNames are the application scripts of the world's jobs: quiesce, resume, takeover.
var ScriptNames = []string{"freeze.sh", "thaw.sh", "takeover.sh"}

// StoragePath is where the world in dir keeps the storage system name.
func StoragePath(dir, name string) string { return filepath.Join(dir, "storage", name) }

// WorldHosts returns the four hosts of the world in dir, each attaching every storage at
// its path, with the shared scripts dir and its own state dir.
func WorldHosts(dir string, storage []config.Storage) []config.Host {
	var hosts []config.Host
	for _, name := range Hosts {
		h := config.Host{Name: name, Attach: map[string]string{}, Scripts: filepath.Join(dir, "scripts"), State: filepath.Join(dir, "hosts", name)}
		for _, s := range storage {
			h.Attach[s.Name] = s.Path
		}
		hosts = append(hosts, h)
	}
	return hosts
}

// Config is the config of the test world in dir as a value: storage array-a and array-b,
// the four Hosts attaching both, and the job orders from array-a to array-b with all three
// scripts, takeover orders on both sides, retention, precopy always and read_ahead. Worlds
// that differ edit the value rather than a YAML text, so every world is checked by the
// compiler.
func Config(dir string, heartbeat, scheduleToStart time.Duration) config.Config {
	storage := []config.Storage{{Name: "array-a", Path: StoragePath(dir, "array-a")}, {Name: "array-b", Path: StoragePath(dir, "array-b")}}
	return config.Config{
		Temporal: config.Temporal{Address: "127.0.0.1:7233", Namespace: "default"},
		Storage:  storage,
		Hosts:    WorldHosts(dir, storage),
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
			// Every run copies ahead of quiesce (small datasets: auto would skip it), so
			// every run exercises the precopy and faults can hit it.
			Precopy: config.PrecopyAlways,
			// Every run reads the target ahead of the pull (Issue 16), so that every test
			// and fault trial runs beside it.
			ReadAhead: true,
		}},
	}
}

// WriteConfig writes cfg as YAML to path. Keys whose value is the zero value (null, "",
// 0, false, 0s, empty lists and mappings) are left out: config.Load reads an absent key
// as the zero value, and the file stays as short as a hand-written one.
func WriteConfig(path string, cfg config.Config) error {
	doc, err := prunedYAML(cfg)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// CopyConfig returns a deep copy of cfg, so that editing the copy's maps and slices leaves
// cfg as it is. Empty lists and maps come back nil, as Load reads them.
func CopyConfig(cfg config.Config) (config.Config, error) {
	var c config.Config
	doc, err := prunedYAML(cfg)
	if err == nil {
		err = doc.Decode(&c)
	}
	c.File = cfg.File // not in the YAML
	return c, err
}

// prunedYAML is cfg as a YAML document without zero values.
func prunedYAML(cfg config.Config) (*yaml.Node, error) {
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	pruneZero(&doc)
	return &doc, nil
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

// Layout creates the directories of the world in dir: storage/<name> for each of storage,
// and scripts/ with every one of ScriptNames holding script (each world's scripts differ
// only by the step the agent passes them).
func Layout(dir, script string, storage ...string) error {
	for _, s := range storage {
		if err := os.MkdirAll(StoragePath(dir, s), 0o755); err != nil {
			return err
		}
	}
	scripts := map[string]string{}
	for _, s := range ScriptNames {
		scripts[s] = script
	}
	return WriteScripts(dir, scripts)
}

// WriteScripts writes each script (name → body, executable) into dir/scripts, for worlds
// whose scripts differ by name.
func WriteScripts(dir string, scripts map[string]string) error {
	sd := filepath.Join(dir, "scripts")
	if err := os.MkdirAll(sd, 0o755); err != nil {
		return err
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(sd, name), []byte(body), 0o755); err != nil {
			return err
		}
	}
	return nil
}
