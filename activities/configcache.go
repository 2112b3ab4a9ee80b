package activities

import (
	"bytes"
	"fmt"
	"os"
	"sync"

	"github.com/replctl/replctl/config"
)

// configCache keeps the last parse of the agent's config. Every activity reads the file
// again (an edit takes effect at the next activity, and authority always comes from what is
// on disk now), but parses it only when its bytes changed: parsing and validating a config
// of a few jobs took ~4 ms of CPU per activity, a fifth of an empty run's agent time.
// Parse depends only on the bytes, the file's path, the process environment and working
// directory, and the last two do not change under a running agent. Callers must not modify
// the returned Config.
type configCache struct {
	mu   sync.Mutex
	data []byte
	cfg  *config.Config
}

// loadConfig returns the agent's config as the file holds it now. A file that fails to
// parse fails every time (errors are not cached).
func (a *Agent) loadConfig() (*config.Config, error) {
	data, err := os.ReadFile(a.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c := &a.configCache
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg != nil && bytes.Equal(c.data, data) {
		return c.cfg, nil
	}
	cfg, err := config.Parse(data, a.ConfigFile)
	if err != nil {
		return nil, err
	}
	c.data, c.cfg = data, cfg
	return cfg, nil
}
