package config

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// parse parses YAML text as if it were the file dir/replctl.yaml.
func parse(t *testing.T, text string) (*Config, error) {
	t.Helper()
	return Parse([]byte(text), filepath.Join(t.TempDir(), "replctl.yaml"))
}

// mustParse parses text and fails the test on any error.
func mustParse(t *testing.T, text string) *Config {
	t.Helper()
	c, err := parse(t, text)
	require.NoError(t, err)
	return c
}

const minimal = `
storage:
  - name: src
  - name: dst
hosts:
  - name: h1
    attach: {src: /mnt/src, dst: /mnt/dst}
jobs:
  - name: j1
    source: {storage: src, dataset: data}
    target: {storage: dst, dataset: data}
    application: {host: h1}
    order: {source: [h1], target: [h1]}
`

func TestValidSamplesAndExamplesLoad(t *testing.T) {
	t.Setenv("REPLCTL_STATE", t.TempDir())
	files, err := filepath.Glob("samples/*.yaml")
	require.NoError(t, err)
	examples, err := filepath.Glob("examples/*.yaml")
	require.NoError(t, err)
	files = append(files, examples...)
	// The Debian package's default /etc/replctl/config.yaml.
	files = append(files, "../deploy/package/config.yaml")
	require.GreaterOrEqual(t, len(files), 5, "samples and examples")
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			c, err := Load(f)
			require.NoError(t, err)
			abs, err := filepath.Abs(f)
			require.NoError(t, err)
			require.Equal(t, abs, c.File)
			require.NotEmpty(t, c.Jobs)
		})
	}
}

func TestInvalidSamplesFailAsWanted(t *testing.T) {
	// invalid/env-unset.yaml relies on this variable being unset.
	t.Setenv("REPLCTL_TEST_UNSET_VAR", "")
	require.NoError(t, os.Unsetenv("REPLCTL_TEST_UNSET_VAR"))
	files, err := filepath.Glob("samples/invalid/*.yaml")
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 15)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			require.NoError(t, err)
			want, wantLine := wantComments(t, string(data))

			_, err = Load(f)
			require.Error(t, err, "%s must not load", f)
			var list ErrorList
			require.True(t, errors.As(err, &list), "want an ErrorList, got %T: %v", err, err)

			prefix := f + ":" + strconv.Itoa(wantLine) + ": "
			if wantLine == 0 {
				prefix = f + ": "
			}
			found := false
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.HasPrefix(line, prefix) && strings.Contains(line, want) {
					found = true
				}
			}
			require.True(t, found, "want a line starting %q containing %q; got:\n%s", prefix, want, err)
		})
	}
}

// wantComments reads the "# want:" and "# want-line:" header of an invalid sample.
func wantComments(t *testing.T, text string) (string, int) {
	t.Helper()
	want, line := "", -1
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, "# want: "); ok {
			want = v
		}
		if v, ok := strings.CutPrefix(l, "# want-line: "); ok {
			n, err := strconv.Atoi(v)
			require.NoError(t, err)
			line = n
		}
	}
	require.NotEmpty(t, want, "missing # want: comment")
	require.GreaterOrEqual(t, line, 0, "missing # want-line: comment")
	return want, line
}

func TestDevExample(t *testing.T) {
	state := t.TempDir()
	t.Setenv("REPLCTL_STATE", state)
	c, err := Load("examples/dev.yaml")
	require.NoError(t, err)

	require.Equal(t, "127.0.0.1:7233", c.Temporal.Address)
	require.Equal(t, "default", c.Temporal.Namespace)
	require.Equal(t, "replctl", c.Temporal.TaskQueue)
	a, err := c.StorageByName("array-a")
	require.NoError(t, err)
	require.Equal(t, filepath.Join(state, "storage/array-a"), a.Path)

	scripts, err := filepath.Abs("examples/scripts")
	require.NoError(t, err)
	for _, name := range []string{"a1", "a2", "b1", "b2"} {
		h, err := c.Host(name)
		require.NoError(t, err)
		require.True(t, h.Connect.Local())
		require.Equal(t, scripts, h.Scripts)
		require.Equal(t, filepath.Join(state, "hosts", name), h.State)
		for _, s := range []string{"array-a", "array-b"} {
			m, ok := h.Mount(s)
			require.True(t, ok, "%s attaches %s", name, s)
			require.Equal(t, filepath.Join(state, "storage", s), m)
		}
	}

	orders, err := c.Job("orders")
	require.NoError(t, err)
	require.Equal(t, Endpoint{Storage: "array-a", Dataset: "orders"}, orders.Source)
	require.Equal(t, Endpoint{Storage: "array-b", Dataset: "orders"}, orders.Target)
	require.Equal(t, Application{Host: "a1", Quiesce: "freeze.sh", Resume: "thaw.sh", Takeover: "takeover.sh", Check: "check.sh", Timeout: DefaultScriptTimeout}, orders.Application)
	require.Equal(t, &Failback{Allow: true, PrimaryStopped: PrimaryStoppedCheck}, orders.Failback)
	require.Equal(t, Order{Application: []string{"a1", "a2"}, Source: []string{"a1", "a2", "b2"}, Target: []string{"b1", "b2", "a2"}}, orders.Order)
	require.Equal(t, Timeouts{Heartbeat: 2 * time.Second, ScheduleToStart: 5 * time.Second, StartToClose: 30 * time.Minute}, orders.Timeouts)
	require.Equal(t, Retention{Replicas: 3, Images: 10, Retire: RetireRecycle}, orders.Retention)
	require.Equal(t, filepath.Join(state, "secrets"), c.SecretsDir)
	require.Equal(t, Repository{Storage: "array-b", Path: DefaultRepositoryPath, PasswordFile: filepath.Join(state, "secrets", "array-b-replctl-repository.password"),
		Maintenance: Maintenance{Cron: DefaultMaintenanceCron, TimeZone: DefaultTimeZone}}, orders.Repository)
	require.Equal(t, OnUnreachableFail, orders.OnUnreachableHost)
	require.Nil(t, orders.Schedule)

	media, err := c.Job("media")
	require.NoError(t, err)
	require.Equal(t, Endpoint{Storage: "array-b", Dataset: "media"}, media.Source)
	require.Equal(t, Endpoint{Storage: "array-a", Dataset: "media"}, media.Target)
	require.Equal(t, "b1", media.Application.Host)
	require.Equal(t, Order{Application: []string{"b1", "b2"}, Source: []string{"b1", "b2", "a2"}, Target: []string{"a1", "a2", "b2"}}, media.Order)
	require.Equal(t, []string{"b1", "b2", "a2", "a1"}, media.Hosts())
}

// TestDevScripts runs the example scripts the way an agent will and checks
// the markers they leave.
func TestDevScripts(t *testing.T) {
	dir := t.TempDir()
	source := filepath.Join(dir, "array-a", "orders")
	stateDir := filepath.Join(dir, "hosts", "a1")
	run := func(script, step string, extra ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join("examples", "scripts", script))
		cmd.Env = append(os.Environ(),
			"REPLCTL_JOB=orders", "REPLCTL_STEP="+step, "REPLCTL_HOST=a1", "REPLCTL_AGENT=a2",
			"REPLCTL_RUN_ID=run-42", "REPLCTL_SOURCE_PATH="+source, "REPLCTL_STATE_DIR="+stateDir)
		cmd.Env = append(cmd.Env, extra...)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s: %s", script, out)
		return string(out)
	}

	out := run("freeze.sh", "quiesce")
	require.Contains(t, out, "freeze:")
	_, err := os.Stat(source)
	require.True(t, os.IsNotExist(err), "freeze.sh writes nothing into the dataset")
	marker, err := os.ReadFile(filepath.Join(stateDir, "QUIESCED"))
	require.NoError(t, err)
	require.Contains(t, string(marker), "run_id=run-42")
	require.Contains(t, string(marker), "host=a1")
	require.Contains(t, string(marker), "agent=a2")
	require.Regexp(t, `time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`, string(marker))

	run("thaw.sh", "resume")
	_, err = os.Stat(filepath.Join(stateDir, "QUIESCED"))
	require.True(t, os.IsNotExist(err), "thaw.sh removes the flag")

	run("takeover.sh", "takeover", "REPLCTL_FAILED_HOST=a9")
	log, err := os.ReadFile(filepath.Join(stateDir, "markers.log"))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	require.Len(t, lines, 3)
	require.Contains(t, lines[0], "step=quiesce")
	require.Contains(t, lines[1], "step=resume")
	require.Contains(t, lines[2], "step=takeover")
	require.Contains(t, lines[2], "failed_host=a9")

	// check.sh: stopped (exit 0) unless the stand-in application "runs" (exit 3).
	require.Contains(t, run("check.sh", "check"), "check: application stopped on a1")
	require.NoError(t, os.WriteFile(filepath.Join(stateDir, "RUNNING"), nil, 0o644))
	cmd := exec.Command(filepath.Join("examples", "scripts", "check.sh"))
	cmd.Env = append(os.Environ(), "REPLCTL_HOST=a1", "REPLCTL_STATE_DIR="+stateDir)
	out3, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, CheckExitRunning, exit.ExitCode(), "%s", out3)
	require.Contains(t, string(out3), "check: application running on a1")

	// An empty REPLCTL_SOURCE_PATH (the host does not see the source) is fine.
	cmd = exec.Command(filepath.Join("examples", "scripts", "freeze.sh"))
	cmd.Env = append(os.Environ(), "REPLCTL_SOURCE_PATH=", "REPLCTL_STATE_DIR="+stateDir)
	out2, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out2)
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, minimal)
	require.Equal(t, Temporal{Address: DefaultTemporalAddress, Namespace: "default", TaskQueue: "replctl"}, c.Temporal)
	h := c.Hosts[0]
	require.True(t, h.Connect.Local())
	require.Empty(t, h.Scripts)
	require.Empty(t, h.State)
	j := c.Jobs[0]
	require.Equal(t, []string{"h1"}, j.Order.Application, "order.application defaults to [application.host]")
	require.Equal(t, 5*time.Minute, j.Application.Timeout)
	require.Equal(t, Timeouts{Heartbeat: 5 * time.Second, ScheduleToStart: 10 * time.Second, StartToClose: time.Hour}, j.Timeouts)
	require.Equal(t, "fail", j.OnUnreachableHost)
	require.Equal(t, Retention{Replicas: 3, Images: 10, Retire: RetireRecycle}, j.Retention)
	require.Equal(t, Repository{Storage: "dst", Path: ".replctl/repository", PasswordFile: filepath.Join(filepath.Dir(c.File), "secrets", "dst-replctl-repository.password"),
		Maintenance: Maintenance{Cron: "@daily", TimeZone: "UTC"}}, j.Repository, "repository.storage defaults to the target storage; the password file to secrets/ beside the config")
	require.Nil(t, j.Schedule)

	c = mustParse(t, minimal+"    schedule: {cron: \"0 3 * * *\"}\n")
	require.Equal(t, &Schedule{Cron: "0 3 * * *", TimeZone: "UTC", Overlap: "skip"}, c.Jobs[0].Schedule)
}

func TestNullMeansDefault(t *testing.T) {
	c := mustParse(t, minimal+"    timeouts: {heartbeat: null, start_to_close: ~}\n    retention:\n")
	require.Equal(t, DefaultHeartbeat, c.Jobs[0].Timeouts.Heartbeat)
	require.Equal(t, DefaultStartToClose, c.Jobs[0].Timeouts.StartToClose)
	require.Equal(t, DefaultReplicas, c.Jobs[0].Retention.Replicas)
}

func TestRetentionKeepWithin(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       Retention
	}{
		{"off by default", "    retention: {replicas: 2}\n", Retention{Replicas: 2, Images: 10}},
		{"keep_within applies to both kinds", "    retention: {keep_within: 24h}\n",
			Retention{Replicas: 3, Images: 10, KeepWithin: 24 * time.Hour, ReplicasWithin: 24 * time.Hour, ImagesWithin: 24 * time.Hour}},
		{"per-kind key overrides", "    retention: {keep_within: 24h, images_within: 168h}\n",
			Retention{Replicas: 3, Images: 10, KeepWithin: 24 * time.Hour, ReplicasWithin: 24 * time.Hour, ImagesWithin: 168 * time.Hour}},
		{"an explicit 0s turns one kind off", "    retention: {keep_within: 1h, replicas_within: 0s}\n",
			Retention{Replicas: 3, Images: 10, KeepWithin: time.Hour, ImagesWithin: time.Hour}},
		{"per-kind key alone", "    retention: {replicas_within: 30m}\n",
			Retention{Replicas: 3, Images: 10, ReplicasWithin: 30 * time.Minute}},
		{"retire after the publish", "    retention: {retire: after_publish}\n",
			Retention{Replicas: 3, Images: 10, Retire: RetireAfterPublish}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want.Retire == "" {
				tc.want.Retire = RetireRecycle // the default
			}
			require.Equal(t, tc.want, mustParse(t, minimal+tc.yaml).Jobs[0].Retention)
		})
	}
}

func TestRepositoryMaintenance(t *testing.T) {
	c := mustParse(t, minimal+"    repository: {maintenance: {cron: \"0 4 * * *\", time_zone: Europe/Berlin, quick: true}}\n")
	require.Equal(t, Maintenance{Cron: "0 4 * * *", TimeZone: "Europe/Berlin", Quick: true}, c.Jobs[0].Repository.Maintenance)
	require.Equal(t, `cron "0 4 * * *" Europe/Berlin, quick`, c.Jobs[0].Repository.Maintenance.String())
	c = mustParse(t, minimal+"    repository: {maintenance: {cron: \"off\"}}\n")
	require.Equal(t, "off", c.Jobs[0].Repository.Maintenance.String())
	require.Equal(t, []RepositoryUse{{Storage: "dst", Path: ".replctl/repository", Jobs: []string{"j1"}, Maintenance: Maintenance{Cron: "off", TimeZone: "UTC"}}}, c.Repositories())
}

func TestEnvExpansion(t *testing.T) {
	t.Setenv("REPLCTL_T_ROOT", "/data/root")
	t.Setenv("REPLCTL_T_EMPTY", "")
	// Inside a YAML flow mapping a value starting with $ must be quoted.
	text := strings.Replace(minimal, "/mnt/src", `"${REPLCTL_T_ROOT}/src"`, 1)
	c := mustParse(t, text)
	m, ok := c.Hosts[0].Mount("src")
	require.True(t, ok)
	require.Equal(t, "/data/root/src", m)

	_, err := parse(t, strings.Replace(minimal, "/mnt/src", `"${REPLCTL_T_NOT_SET_ANYWHERE}/src"`, 1))
	require.ErrorContains(t, err, ":7: hosts[0].attach.src: environment variable REPLCTL_T_NOT_SET_ANYWHERE is not set")

	_, err = parse(t, strings.Replace(minimal, "/mnt/src", `"${REPLCTL_T_EMPTY}/src"`, 1))
	require.ErrorContains(t, err, "environment variable REPLCTL_T_EMPTY is empty")

	_, err = parse(t, strings.Replace(minimal, "/mnt/src", `"${REPLCTL_T_ROOT/src"`, 1))
	require.ErrorContains(t, err, "unterminated ${")

	_, err = parse(t, strings.Replace(minimal, "/mnt/src", `"${1BAD}/src"`, 1))
	require.ErrorContains(t, err, "${1BAD} is not a valid environment variable reference")

	// A lone $ is an ordinary character.
	c = mustParse(t, strings.Replace(minimal, "/mnt/src", "/mnt/$src", 1))
	require.Equal(t, "/mnt/$src", c.Hosts[0].Attach["src"])
}

func TestRelativePathsResolveAgainstConfigDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc", "replctl")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	file := filepath.Join(dir, "replctl.yaml")
	text := strings.Replace(minimal, "    attach: {src: /mnt/src, dst: /mnt/dst}\n",
		"    attach: {src: ./mnt/../src, dst: /mnt/dst/}\n    scripts: ../scripts\n    state: state\n", 1) +
		"    repository: {password_file: secrets/pw}\n" +
		"temporal:\n  tls: {ca: ca.pem}\n  api_key_file: /abs/key\n"
	require.NoError(t, os.WriteFile(file, []byte(text), 0o644))

	// Load through a relative file name: resolution must still use the file's directory.
	t.Chdir(filepath.Dir(dir))
	c, err := Load(filepath.Join("replctl", "replctl.yaml"))
	require.NoError(t, err)
	require.Equal(t, file, c.File)
	h := c.Hosts[0]
	require.Equal(t, filepath.Join(dir, "src"), h.Attach["src"])
	require.Equal(t, "/mnt/dst", h.Attach["dst"])
	require.Equal(t, filepath.Join(filepath.Dir(dir), "scripts"), h.Scripts)
	require.Equal(t, filepath.Join(dir, "state"), h.State)
	require.Equal(t, filepath.Join(dir, "secrets", "pw"), c.Jobs[0].Repository.PasswordFile)
	require.Equal(t, filepath.Join(dir, "ca.pem"), c.Temporal.TLS.CA)
	require.Equal(t, "/abs/key", c.Temporal.APIKeyFile)
}

const sshHost = `
storage:
  - name: src
  - name: dst
hosts:
  - name: h1
    attach: {src: /mnt/src, dst: /mnt/dst}
    connect: %s
jobs:
  - name: j1
    source: {storage: src, dataset: data}
    target: {storage: dst, dataset: data}
    application: {host: h1}
    order: {source: [h1], target: [h1]}
`

func TestConnect(t *testing.T) {
	for _, v := range []string{"local", "null", "~", "\"local\""} {
		c := mustParse(t, fmt.Sprintf(sshHost, v))
		require.True(t, c.Hosts[0].Connect.Local(), v)
	}

	c := mustParse(t, fmt.Sprintf(sshHost, "{ssh: {address: h1.example.net, user: repl, key: id, known_hosts: /etc/kh}}"))
	s := c.Hosts[0].Connect.SSH
	require.False(t, c.Hosts[0].Connect.Local())
	require.Equal(t, &SSH{
		Address:    "h1.example.net:22",
		User:       "repl",
		Key:        filepath.Join(filepath.Dir(c.File), "id"),
		KnownHosts: "/etc/kh",
		Timeout:    10 * time.Second,
	}, s)

	c = mustParse(t, fmt.Sprintf(sshHost, "{ssh: {address: \"[fe80::1]\", user: u, key: /k, known_hosts: /kh, timeout: 3s}}"))
	require.Equal(t, "[fe80::1]:22", c.Hosts[0].Connect.SSH.Address)
	require.Equal(t, 3*time.Second, c.Hosts[0].Connect.SSH.Timeout)

	bad := map[string]string{
		"remote":                       `:8: hosts[0].connect: connect "remote" is not valid: want ` + "`local`",
		"42":                           `connect "42" is not valid`,
		"[local]":                      ":8: hosts[0].connect: connect must be `local` or a mapping {ssh: {...}}",
		"{}":                           "connect must be `local` or a mapping",
		"{local: true}":                "hosts[0].connect.local: unknown key",
		"{ssh: null}":                  "hosts[0].connect.ssh: must be a mapping with address, user, key and known_hosts",
		"{ssh: [a]}":                   "hosts[0].connect.ssh: must be a mapping, not a list",
		"{ssh: {address: h, user: u}}": "hosts[0].connect.ssh.key: required",
		"{ssh: {address: 'h:x', user: u, key: /k, known_hosts: /kh}}":           `port "x" is not a number`,
		"{ssh: {address: h, user: u, key: /k, known_hosts: /kh, timeout: -1s}}": "hosts[0].connect.ssh.timeout: must be positive",
	}
	for v, want := range bad {
		_, err := parse(t, fmt.Sprintf(sshHost, v))
		require.ErrorContains(t, err, want, "connect: %s", v)
	}
}

// TestConnectUnmarshalStandalone checks Connect's own UnmarshalYAML (used
// when other code decodes a Connect without Parse) and the MarshalYAML round trip.
func TestConnectUnmarshalStandalone(t *testing.T) {
	var c Connect
	require.NoError(t, yaml.Unmarshal([]byte("local"), &c))
	require.True(t, c.Local())

	require.NoError(t, yaml.Unmarshal([]byte("ssh: {address: 'h:22', user: u, key: /k, known_hosts: /kh, timeout: 2s}"), &c))
	require.Equal(t, &SSH{Address: "h:22", User: "u", Key: "/k", KnownHosts: "/kh", Timeout: 2 * time.Second}, c.SSH)

	out, err := yaml.Marshal(c)
	require.NoError(t, err)
	var back Connect
	require.NoError(t, yaml.Unmarshal(out, &back))
	require.Equal(t, c, back)
	out, err = yaml.Marshal(Connect{})
	require.NoError(t, err)
	require.Equal(t, "local\n", string(out))

	err = yaml.Unmarshal([]byte("ssh: {address: h, port: 22}"), &c)
	require.ErrorContains(t, err, `line 1: unknown key "port" in ssh`)
	err = yaml.Unmarshal([]byte("remote"), &c)
	require.ErrorContains(t, err, `connect "remote" is not valid`)
	err = yaml.Unmarshal([]byte("tcp: x"), &c)
	require.ErrorContains(t, err, `unknown key "tcp" in connect`)
}

func TestMultipleErrorsAreAllReportedSortedByLine(t *testing.T) {
	text := `storage:
  - name: src
  - name: dst
hosts:
  - name: h1
    attach: {src: /mnt/src, dst: /mnt/dst}
jobs:
  - name: j1
    target: {storage: dst, dataset: /abs}
    source: {storage: nope, dataset: data}
    application: {host: h1}
    order: {source: [h1, h9], target: [h1]}
    timeouts: {heartbeat: 100ms}
`
	file := filepath.Join(t.TempDir(), "multi.yaml")
	_, err := Parse([]byte(text), file)
	require.Error(t, err)
	var list ErrorList
	require.True(t, errors.As(err, &list))
	got := strings.Split(err.Error(), "\n")
	require.Equal(t, []string{
		file + `:9: jobs[0].target.dataset: dataset "/abs" is absolute: give a path relative to the storage root`,
		file + `:10: jobs[0].source.storage: storage "nope" is not defined (storage: dst, src)`,
		file + `:12: jobs[0].order.source[1]: host "h9" is not defined (hosts: h1)`,
		file + `:13: jobs[0].timeouts.heartbeat: 100ms is too short: at least 1s (default 5s)`,
	}, got)
	require.Len(t, list, 4)
	require.Equal(t, 12, list[2].Line)
	require.Equal(t, "jobs[0].order.source[1]", list[2].Path)

	var one *Error
	require.True(t, errors.As(err, &one), "single problems are reachable with errors.As")
	require.Equal(t, 9, one.Line)
}

func TestStructuralErrors(t *testing.T) {
	cases := map[string]string{
		"":                                       "file is empty",
		"# only a comment\n":                     "file is empty",
		"~\n":                                    "file is empty",
		"- a\n- b\n":                             ":1: top level must be a mapping",
		"jobs: []\n---\njobs: []\n":              ":2: only one YAML document is allowed",
		"jobs: [\n":                              "did not find expected node content",
		"temporal: {adress: x}\n":                ":1: temporal.adress: unknown key (known keys here: address, namespace, task_queue, tls, api_key_file, plaintext, codec_key_file)",
		"jobs:\n  - name: a\n    name: b\n":      ":3: jobs[0].name: duplicate key (first given at line 2)",
		"storage: {name: a}\n":                   ":1: storage: must be a list, not a mapping",
		"jobs:\n  - retention: {images: many}\n": `:2: jobs[0].retention.images: cannot use "many" as an integer`,
		"jobs:\n  - schedule: {pause_on_failure: maybe}\n": `jobs[0].schedule.pause_on_failure: cannot use "maybe" as a boolean`,
		"jobs:\n  - timeouts: {heartbeat: [1s]}\n":         "jobs[0].timeouts.heartbeat: must be a duration (such as 30s, 5m, 1h30m), not a list",
	}
	for text, want := range cases {
		_, err := Parse([]byte(text), "x.yaml")
		require.ErrorContains(t, err, want, "input %q", text)
		require.True(t, strings.HasPrefix(err.Error(), "x.yaml:") || strings.HasPrefix(err.Error(), "x.yaml: "), err.Error())
	}
}

func TestAliasesWork(t *testing.T) {
	text := `
storage:
  - name: src
  - name: dst
hosts:
  - name: h1
    attach: &both {src: /mnt/src, dst: /mnt/dst}
  - name: h2
    attach: *both
jobs:
  - name: j1
    source: {storage: src, dataset: data}
    target: {storage: dst, dataset: data}
    application: {host: h1}
    order: {source: [h1, h2], target: [h2, h1]}
`
	c := mustParse(t, text)
	require.Equal(t, map[string]string{"src": "/mnt/src", "dst": "/mnt/dst"}, c.Hosts[1].Attach)
}

func TestCron(t *testing.T) {
	for _, ok := range []string{"0 2 * * *", "*/15 * * * MON-FRI", "0 0 1 1 * 2030", "0 0 0 1 1 * 2030", "@daily", "@hourly", "@every 6h", "@every 1d/2h", "0 12 * * * # noon"} {
		require.NoError(t, checkCron(ok), ok)
	}
	for _, bad := range []string{"0 2 * *", "@fortnightly", "@every", "@every -1h", "@every 1h/x", "CRON_TZ=UTC 0 2 * * *", "0 2 * * * * * *", "0 2 * * $"} {
		require.Error(t, checkCron(bad), bad)
	}
}

func TestHelpers(t *testing.T) {
	c := mustParse(t, minimal)
	_, err := c.Job("nope")
	require.ErrorContains(t, err, `job "nope" is not defined (jobs: j1)`)
	require.ErrorContains(t, err, c.File)
	_, err = c.Host("nope")
	require.ErrorContains(t, err, `host "nope" is not defined (hosts: h1)`)
	_, err = c.StorageByName("nope")
	require.ErrorContains(t, err, `storage "nope" is not defined (storage: dst, src)`)
	s, err := c.StorageByName("dst")
	require.NoError(t, err)
	require.Equal(t, "dst", s.Name)
	j, err := c.Job("j1")
	require.NoError(t, err)
	j.Retention.Images = 99 // helpers return pointers into the config
	require.Equal(t, 99, c.Jobs[0].Retention.Images)
	_, ok := c.Hosts[0].Mount("elsewhere")
	require.False(t, ok)
	require.Equal(t, "src:data", j.Source.String())
}

func TestValidateConfigBuiltInGo(t *testing.T) {
	c := &Config{
		Storage: []Storage{{Name: "src"}, {Name: "dst"}},
		Hosts:   []Host{{Name: "h1", Attach: map[string]string{"src": "/s", "dst": "/d"}}},
		Jobs: []Job{{
			Name:        "j1",
			Source:      Endpoint{Storage: "src", Dataset: "x"},
			Target:      Endpoint{Storage: "dst", Dataset: "x"},
			Application: Application{Host: "h1"},
			Order:       Order{Source: []string{"h1"}, Target: []string{"h1"}},
		}},
	}
	require.NoError(t, c.Validate())
	require.Equal(t, DefaultHeartbeat, c.Jobs[0].Timeouts.Heartbeat)
	require.Equal(t, "dst", c.Jobs[0].Repository.Storage)
	require.Equal(t, []string{"h1"}, c.Jobs[0].Order.Application)

	c.Jobs[0].Order.Target = []string{"h2"}
	err := c.Validate()
	require.ErrorContains(t, err, `jobs[0].order.target[0]: host "h2" is not defined (hosts: h1)`)
}

// A job's runs have workflow ID "replctl-<job>"; names that would make it another kind's ID
// (workflows/ids.go) are refused, with the job and the prefix named. Ordinary names, and
// names that merely contain a reserved word, are accepted.
func TestReservedJobNames(t *testing.T) {
	for _, c := range []struct {
		name, prefix string // prefix "" = accepted
	}{
		{"test-failover-orders-x", "test-failover-"},
		{"test-failover-", "test-failover-"},
		{"maintenance-array-b-repo", "maintenance-"},
		{"maintenance-schedule-x", "maintenance-"},
		{"schedule-orders", "schedule-"},
		{"orders", ""},
		{"j1", ""},
		{"maintenance", ""},
		{"schedule", ""},
		{"test-failover", ""},
		{"test-failovers", ""},
		{"orders-maintenance-x", ""},
		{"scheduled-orders", ""},
		{"maintenance_x", ""},
		{"verify", ""},
		{"host-a1", ""},
		{"agent-a1", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := parse(t, strings.Replace(minimal, "name: j1", "name: "+c.name, 1))
			if c.prefix == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), fmt.Sprintf("jobs[0].name: job name %q begins with %q, which is reserved", c.name, c.prefix))
		})
	}
}

// The shared queue must not be named like a host's own activity queue.
func TestTaskQueueNotAHostQueue(t *testing.T) {
	for _, q := range []string{"replctl", "replctl-prod", "replctl-hosts", "other"} {
		_, err := parse(t, "temporal: {task_queue: "+q+"}\n"+minimal)
		require.NoError(t, err, q)
	}
	for _, q := range []string{"replctl-host-h1", "replctl-host-"} {
		_, err := parse(t, "temporal: {task_queue: "+q+"}\n"+minimal)
		require.ErrorContains(t, err, fmt.Sprintf("temporal.task_queue: %q begins with %q", q, ReservedTaskQueuePrefix), q)
	}
}
