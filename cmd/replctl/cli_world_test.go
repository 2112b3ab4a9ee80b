package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/testworld"
	"github.com/replctl/replctl/workers"
)

// cliConfig is the CLI tests' world (testworld.Config, heartbeat 1s, schedule-to-start 2s)
// with edit applied: the job orders (with scripts that log each call and sleep while the
// file <dir>/slow names a duration) without the precopy and repository settings, and the
// job ticker (no scripts). Neither has a schedule: edit gives them one (ordersSchedule).
func cliConfig(dir string, edit func(c *config.Config)) config.Config {
	c := testworld.Config(dir, time.Second, 2*time.Second)
	orders := &c.Jobs[0]
	orders.Precopy, orders.Repository = "", config.Repository{}
	c.Jobs = append(c.Jobs, config.Job{
		Name:        "ticker",
		Source:      config.Endpoint{Storage: "array-a", Dataset: "ticker"},
		Target:      config.Endpoint{Storage: "array-b", Dataset: "ticker"},
		Application: config.Application{Host: "a1"},
		Order:       config.Order{Application: []string{"a1"}, Source: []string{"a1"}, Target: []string{"b1"}},
		Timeouts:    orders.Timeouts,
	})
	if edit != nil {
		edit(&c)
	}
	return c
}

// writeCLIConfig writes cliConfig(dir, edit) to path.
func writeCLIConfig(t *testing.T, path, dir string, edit func(c *config.Config)) {
	t.Helper()
	require.NoError(t, testworld.WriteConfig(path, cliConfig(dir, edit)))
}

// cliJob is the job name of c (orders or ticker).
func cliJob(c *config.Config, name string) *config.Job {
	j, err := c.Job(name)
	if err != nil {
		panic(err)
	}
	return j
}

// ordersSchedule gives the job orders its daily schedule (an edit of cliConfig).
func ordersSchedule(c *config.Config) {
	cliJob(c, "orders").Schedule = &config.Schedule{Cron: "30 3 * * *", TimeZone: "Europe/Berlin", Overlap: "buffer_one",
		CatchupWindow: time.Minute, Jitter: 10 * time.Second, PauseOnFailure: true}
}

// cliScript is the world's freeze.sh, thaw.sh and takeover.sh; %[1]s is the test dir.
const cliScript = `#!/bin/sh
set -eu
mkdir -p "$REPLCTL_STATE_DIR"
echo "$REPLCTL_STEP host=$REPLCTL_HOST agent=$REPLCTL_AGENT run=$REPLCTL_RUN_ID" >> "$REPLCTL_STATE_DIR/markers.log"
if [ "$REPLCTL_STEP" = quiesce ] && [ -f %[1]s/slow ]; then exec sleep "$(cat %[1]s/slow)"; fi
`

// newCLIWorld is the test dir with the storage, scripts and config of cliConfig, for
// commands that read only the config and the disks: no server (e.addr is empty, so
// the config's address is used, and nothing dials it).
func newCLIWorld(t *testing.T) *cliEnv {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("REPLCTL_STATE", dir)
	e := &cliEnv{t: t, dir: dir, cfgFile: filepath.Join(dir, "replctl.yaml"), agents: map[string]*workers.Agent{}}
	layoutCLIWorld(t, dir)
	e.writeConfig(ordersSchedule)
	var err error
	e.cfg, err = config.Load(e.cfgFile)
	require.NoError(t, err)
	return e
}

// layoutCLIWorld creates the storage, the scripts and the source datasets of cliConfig in dir.
func layoutCLIWorld(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, testworld.Layout(dir, fmt.Sprintf(cliScript, dir), "array-a", "array-b"))
	for _, ds := range []string{"orders", "ticker"} {
		for i := 0; i < 12; i++ {
			p := filepath.Join(dir, "storage/array-a", ds, fmt.Sprintf("d%d", i%3), fmt.Sprintf("f%02d", i))
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
			require.NoError(t, os.WriteFile(p, bytes.Repeat([]byte{byte(i)}, 4096+i*100), 0o644))
		}
	}
}

// writeConfig writes cliConfig with edit to the world's config file.
func (e *cliEnv) writeConfig(edit func(c *config.Config)) {
	e.t.Helper()
	writeCLIConfig(e.t, e.cfgFile, e.dir, edit)
}
