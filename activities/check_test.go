package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities/hostexec/sshtest"
	"github.com/replctl/replctl/config"
)

// checkWorld is a config of hosts h1 and h2, both attached to storage a (%[1]s/A) and b
// (%[1]s/B), with scripts in %[1]s/scripts and job orders from a to b with h1 then h2 in
// every order. connect is h1's connect section ("" = local).
func checkWorld(t *testing.T, connect string) (base, cfgFile string) {
	t.Helper()
	base = t.TempDir()
	for _, d := range []string{"A/orders", "B", "scripts"} {
		require.NoError(t, os.MkdirAll(filepath.Join(base, d), 0o755))
	}
	for _, s := range []string{"freeze.sh", "thaw.sh", "takeover.sh"} {
		require.NoError(t, os.WriteFile(filepath.Join(base, "scripts", s), []byte("#!/bin/sh\n"), 0o755))
	}
	if connect != "" {
		connect = ", connect: " + connect
	}
	cfgFile = filepath.Join(base, "replctl.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
storage: [{name: a}, {name: b}]
hosts:
  - {name: h1, attach: {a: %[1]s/A, b: %[1]s/B}, scripts: %[1]s/scripts%[2]s}
  - {name: h2, attach: {a: %[1]s/A, b: %[1]s/B}, scripts: %[1]s/scripts}
  - {name: h3}
jobs:
  - name: orders
    source: {storage: a, dataset: orders}
    target: {storage: b, dataset: orders}
    application: {host: h1, quiesce: freeze.sh, resume: thaw.sh, takeover: takeover.sh}
    order: {application: [h1, h2], source: [h1, h2], target: [h1, h2]}
`, base, connect)), 0o600))
	return base, cfgFile
}

// item returns the check named name of res (failing the test when there is none).
func item(t *testing.T, res CheckHostResult, name string) CheckItem {
	t.Helper()
	for _, it := range res.Items {
		if it.Check == name {
			return it
		}
	}
	t.Fatalf("no check %q in %+v", name, res.Items)
	return CheckItem{}
}

func results(res CheckHostResult) map[string]string {
	m := map[string]string{}
	for _, it := range res.Items {
		m[it.Check] = it.Result
	}
	return m
}

func TestCheckHostAllOK(t *testing.T) {
	_, cfgFile := checkWorld(t, "")
	a := &Agent{Host: "h1", ConfigFile: cfgFile}
	res, err := a.checkHost(context.Background(), CheckHostInput{Agent: "h1"}, checkLimits{minFreePercent: 0, maxSkew: time.Second, sshTimeout: time.Second}, time.Now())
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"config": CheckOK, "storage": CheckOK, "free space a": CheckOK, "free space b": CheckOK,
		"scripts orders": CheckOK, "ssh": CheckOK, "repository orders": CheckOK, "clock": CheckOK}, results(res))
	assert.Len(t, res.Fingerprint, 64)
	assert.Contains(t, item(t, res, "repository orders").Detail, "not created yet")
	assert.Contains(t, item(t, res, "scripts orders").Detail, "freeze.sh, thaw.sh, takeover.sh executable")
	// The same through the activity method (outside an activity: the server's time is now).
	res2, err := a.CheckHost(context.Background(), CheckHostInput{Agent: "h1", Job: "orders"})
	require.NoError(t, err)
	assert.Equal(t, CheckOK, item(t, res2, "scripts orders").Result)
}

func TestCheckHostFailures(t *testing.T) {
	base, cfgFile := checkWorld(t, "")
	a := &Agent{Host: "h1", ConfigFile: cfgFile}
	// Storage b gone, a script not executable, every storage under the free space
	// threshold, the clock 5 s ahead of the server's, and a repository with no password file.
	require.NoError(t, os.Remove(filepath.Join(base, "B")))
	require.NoError(t, os.Chmod(filepath.Join(base, "scripts/thaw.sh"), 0o644))
	require.NoError(t, os.Remove(filepath.Join(base, "scripts/takeover.sh")))
	lim := checkLimits{minFreePercent: 101, maxSkew: 2 * time.Second, sshTimeout: time.Second}
	res, err := a.checkHost(context.Background(), CheckHostInput{Agent: "h1"}, lim, time.Now().Add(-5*time.Second))
	require.NoError(t, err)
	r := results(res)
	assert.Equal(t, CheckFail, r["storage"])
	assert.Contains(t, item(t, res, "storage").Detail, base+"/B")
	assert.Equal(t, CheckWarn, r["free space a"])
	assert.NotContains(t, r, "free space b", "no free space of a storage that is not there")
	s := item(t, res, "scripts orders")
	assert.Equal(t, CheckFail, s.Result)
	assert.Contains(t, s.Detail, "thaw.sh is not executable")
	assert.Contains(t, s.Detail, "takeover.sh does not exist")
	assert.Contains(t, s.Fix, "chmod +x "+base+"/scripts/thaw.sh")
	assert.Contains(t, s.Fix, "install takeover.sh in "+base+"/scripts")
	assert.Equal(t, CheckFail, r["clock"])
	assert.Contains(t, item(t, res, "clock").Fix, "synchronise")
	// The repository's storage is gone: its parent (the storage root's parent) is writable.
	assert.Equal(t, CheckOK, r["repository orders"])

	// A repository that exists without its password file on this host.
	require.NoError(t, os.MkdirAll(filepath.Join(base, "B/.replctl/repository"), 0o755))
	res, err = a.checkHost(context.Background(), CheckHostInput{Agent: "h1"}, lim, time.Now())
	require.NoError(t, err)
	repo := item(t, res, "repository orders")
	assert.Equal(t, CheckFail, repo.Result)
	assert.Contains(t, repo.Detail, "password file")
	assert.Equal(t, CheckOK, item(t, res, "clock").Result)
}

// A host of the config with no job and no storage has little to check; a host the config
// lacks, or a config that does not load, is a failed check, not an error.
func TestCheckHostConfigProblems(t *testing.T) {
	base, cfgFile := checkWorld(t, "")
	lim := defaultCheckLimits
	res, err := (&Agent{Host: "h3", ConfigFile: cfgFile}).checkHost(context.Background(), CheckHostInput{Agent: "h3"}, lim, time.Now())
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"config": CheckOK, "storage": CheckOK, "ssh": CheckOK, "clock": CheckOK}, results(res))

	res, err = (&Agent{Host: "h9", ConfigFile: cfgFile}).checkHost(context.Background(), CheckHostInput{Agent: "h9"}, lim, time.Now())
	require.NoError(t, err)
	assert.Equal(t, CheckFail, item(t, res, "config").Result)
	assert.Contains(t, item(t, res, "config").Detail, `host "h9" is not defined`)

	bad := filepath.Join(base, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("hosts: [\n"), 0o600))
	res, err = (&Agent{Host: "h1", ConfigFile: bad}).checkHost(context.Background(), CheckHostInput{Agent: "h1"}, lim, time.Now())
	require.NoError(t, err)
	assert.Equal(t, CheckFail, item(t, res, "config").Result)
	assert.Empty(t, res.Fingerprint)
}

// The input only routes and filters: a check for another agent, a job the agent's config
// lacks or a job the host has no role in is refused.
func TestCheckHostRefusesHostileInput(t *testing.T) {
	_, cfgFile := checkWorld(t, "")
	for _, c := range []struct {
		agent, host, job, errType, want string
	}{
		{"h1", "h2", "", ErrTypeMisrouted, "reached agent"},
		{"h1", "h1", "nosuch", ErrTypeRefused, "has no such job"},
		{"h3", "h3", "orders", ErrTypeRefused, `host "h3" has no role in job "orders"`},
	} {
		_, err := (&Agent{Host: c.host, ConfigFile: cfgFile}).CheckHost(context.Background(), CheckHostInput{Agent: c.agent, Job: c.job})
		var appErr *temporal.ApplicationError
		require.True(t, errors.As(err, &appErr), "%+v: %v", c, err)
		assert.Equal(t, c.errType, appErr.Type())
		assert.True(t, appErr.NonRetryable())
		assert.Contains(t, err.Error(), c.want)
	}
}

// The fingerprint is of the parsed config: layout and comments do not change it, a value does.
func TestConfigFingerprint(t *testing.T) {
	base, cfgFile := checkWorld(t, "")
	b, err := os.ReadFile(cfgFile)
	require.NoError(t, err)
	fp := func(text string) string {
		f := filepath.Join(base, "other.yaml")
		require.NoError(t, os.WriteFile(f, []byte(text), 0o600))
		cfg, err := config.Load(f)
		require.NoError(t, err)
		return ConfigFingerprint(cfg)
	}
	orig := fp(string(b))
	assert.Equal(t, orig, fp("# a comment\n"+string(b)+"\n\n"))
	assert.NotEqual(t, orig, fp(strings.Replace(string(b), "thaw.sh", "resume.sh", 1)))
	assert.Equal(t, orig, fp(string(b)+"temporal: {address: 10.0.0.1:7233, plaintext: true}\n"), "the temporal section is each host's own")
}

// SSH to every host the agent may take over: a login that works, and one whose host key is
// not in known_hosts.
func TestCheckHostSSH(t *testing.T) {
	s := sshtest.Start(t)
	connect := fmt.Sprintf("{ssh: {address: %q, user: %s, key: %s, known_hosts: %s}}", s.Addr, s.User, s.KeyFile, s.KnownHostsFile)
	_, cfgFile := checkWorld(t, connect)
	a := &Agent{Host: "h2", ConfigFile: cfgFile}
	res, err := a.checkHost(context.Background(), CheckHostInput{Agent: "h2"}, defaultCheckLimits, time.Now())
	require.NoError(t, err)
	it := item(t, res, "ssh h1")
	assert.Equal(t, CheckOK, it.Result, "%+v", it)
	assert.Contains(t, it.Detail, "takeover in orders")

	empty := filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	connect = fmt.Sprintf("{ssh: {address: %q, user: %s, key: %s, known_hosts: %s}}", s.Addr, s.User, s.KeyFile, empty)
	_, cfgFile = checkWorld(t, connect)
	a = &Agent{Host: "h2", ConfigFile: cfgFile}
	res, err = a.checkHost(context.Background(), CheckHostInput{Agent: "h2"}, defaultCheckLimits, time.Now())
	require.NoError(t, err)
	it = item(t, res, "ssh h1")
	assert.Equal(t, CheckFail, it.Result)
	assert.Contains(t, it.Fix, "add h1's host key to "+empty)
	t.Logf("%+v", it)

	// h1 itself reaches no host over SSH: it comes first in every order.
	res, err = (&Agent{Host: "h1", ConfigFile: cfgFile}).checkHost(context.Background(), CheckHostInput{Agent: "h1"}, defaultCheckLimits, time.Now())
	require.NoError(t, err)
	assert.Equal(t, CheckOK, item(t, res, "ssh").Result)
}
