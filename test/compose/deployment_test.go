// Package compose_test runs replctl end to end on the docker-compose deployment
// (docker-compose.yml): a Temporal container and four host containers with sshd and an agent
// each, faults injected with docker itself (kill, pause, network disconnect). Each test gets
// its own compose project (fresh volumes, random published ports) and tears it down, also
// when it fails.
//
// Skipped unless REPLCTL_COMPOSE=1. Run it with `make compose-test` (deploy/compose-test.sh),
// which builds the images and SSH keys first.
package compose_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/internal/runwait"
	"github.com/replctl/replctl/internal/testworld"
	"github.com/replctl/replctl/workflows"
)

var (
	repoRoot   string
	composeCmd []string // docker-compose, or docker compose
	replctlBin string   // the replctl binary for CLI calls from this machine
	// runPrefix starts every compose project name of this run, so the wrapper script can
	// remove leftovers of a crashed run.
	runPrefix string
)

func TestMain(m *testing.M) {
	if os.Getenv("REPLCTL_COMPOSE") != "1" {
		fmt.Println("compose tests skipped: set REPLCTL_COMPOSE=1 (make compose-test)")
		os.Exit(0)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		panic(err)
	}
	repoRoot = root
	if _, err := exec.LookPath("docker-compose"); err == nil {
		composeCmd = []string{"docker-compose"}
	} else if exec.Command("docker", "compose", "version").Run() == nil {
		composeCmd = []string{"docker", "compose"}
	} else {
		fmt.Fprintln(os.Stderr, "compose tests: neither docker-compose nor `docker compose` is available")
		os.Exit(1)
	}
	replctlBin = os.Getenv("REPLCTL_BIN")
	if replctlBin == "" {
		replctlBin = filepath.Join(repoRoot, ".deploy/build/replctl")
	}
	if _, err := os.Stat(replctlBin); err != nil {
		fmt.Fprintf(os.Stderr, "compose tests: replctl binary %s missing: run make images first (%v)\n", replctlBin, err)
		os.Exit(1)
	}
	runPrefix = os.Getenv("REPLCTL_COMPOSE_PREFIX")
	if runPrefix == "" {
		runPrefix = fmt.Sprintf("replctl-t%d", os.Getpid())
	}
	os.Exit(m.Run())
}

// deployment is one compose project: Temporal plus hosts a1, a2, b1, b2.
type deployment struct {
	t       *testing.T
	project string
	// files are the compose files: docker-compose.yml, and the PostgreSQL cluster's overlay
	// for a deployment of upPostgres.
	files []string
	port  int // Temporal frontend, published on 127.0.0.1
	env   []string
	c     client.Client
	ids   map[string]string // service → container ID
}

// up starts a fresh deployment (Temporal on SQLite in one container) and registers its
// teardown.
func up(t *testing.T) *deployment { return upWith(t, "docker-compose.yml") }

// clusterServices are the containers of docker-compose.postgres.yml besides temporal (the
// frontend there).
var clusterServices = []string{"postgres", "temporal-history", "temporal-matching", "temporal-worker"}

// upPostgres starts a fresh deployment whose Temporal is a cluster on PostgreSQL: the
// frontend, history, matching and worker services in four containers.
func upPostgres(t *testing.T) *deployment {
	return upWith(t, "docker-compose.yml", "docker-compose.postgres.yml")
}

func upWith(t *testing.T, files ...string) *deployment {
	t.Helper()
	name := strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), ""))
	d := &deployment{t: t, project: runPrefix + "-" + name, ids: map[string]string{}, files: files}
	t.Cleanup(d.down)
	began := time.Now()
	// The published ports are picked free here but bound later by Docker: another process
	// may take one in between, then try other ports.
	for attempt := 1; ; attempt++ {
		port, err := testworld.FreePort()
		require.NoError(t, err)
		d.port = port
		d.env = append(os.Environ(),
			"COMPOSE_PROJECT_NAME="+d.project,
			"REPLCTL_TEMPORAL_PORT="+strconv.Itoa(d.port),
			"REPLCTL_AGENT_RESTART=",
		)
		out, err := d.composeErr("up", "-d")
		if err == nil {
			break
		}
		portTaken := strings.Contains(out, "port is already allocated") || strings.Contains(out, "address already in use")
		require.True(t, portTaken && attempt < 3, "compose up -d of %s:\n%s", d.project, out)
		t.Logf("a published port was taken meanwhile; again with other ports")
		_, _ = d.composeErr("down", "-v", "--remove-orphans", "-t", "1")
	}
	services := []string{"temporal", "a1", "a2", "b1", "b2"}
	if len(files) > 1 {
		services = append(services, clusterServices...)
	}
	for _, s := range services {
		d.ids[s] = strings.TrimSpace(d.compose("ps", "-q", s))
		require.NotEmpty(t, d.ids[s], "no container for service %s", s)
	}

	// A cluster on a loaded machine (CI) takes minutes to set up its schema and services.
	upWait := 150 * time.Second
	if len(files) > 1 {
		upWait = 240 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), upWait)
	defer cancel()
	for {
		c, err := client.DialContext(ctx, client.Options{HostPort: fmt.Sprintf("127.0.0.1:%d", d.port), Namespace: "default", Logger: quietLogger{},
			ConnectionOptions: client.ConnectionOptions{TLS: operatorTLS(t)}})
		if err == nil {
			d.c = c
			break
		}
		require.NoError(t, ctx.Err(), "Temporal of project %s did not answer: %v", d.project, err)
		time.Sleep(300 * time.Millisecond)
	}
	for _, h := range []string{"a1", "a2", "b1", "b2"} {
		d.waitPolling(ctx, h)
	}
	t.Logf("deployment %s up in %s (Temporal on 127.0.0.1:%d)", d.project, time.Since(began).Round(time.Millisecond), d.port)
	return d
}

// down removes the project's containers, networks and volumes; on failure it first logs the
// containers' output.
func (d *deployment) down() {
	if d.c != nil {
		d.c.Close()
	}
	for _, id := range d.ids {
		_ = exec.Command("docker", "unpause", id).Run() // a paused container cannot be stopped
	}
	if d.t.Failed() {
		out, _ := d.composeErr("logs", "--no-color", "--tail=60")
		d.t.Logf("logs of %s:\n%s", d.project, out)
	}
	began := time.Now()
	if out, err := d.composeErr("down", "-v", "--remove-orphans", "-t", "2"); err != nil {
		d.t.Errorf("tearing down %s: %v\n%s", d.project, err, out)
	}
	d.t.Logf("deployment %s removed in %s", d.project, time.Since(began).Round(time.Millisecond))
}

// compose runs a compose command of the project and returns its standard output.
func (d *deployment) compose(args ...string) string {
	d.t.Helper()
	out, err := d.composeErr(args...)
	require.NoError(d.t, err, "%s %s:\n%s", strings.Join(composeCmd, " "), strings.Join(args, " "), out)
	return out
}

func (d *deployment) composeErr(args ...string) (string, error) {
	full := append([]string{}, composeCmd[1:]...)
	for _, f := range d.files {
		full = append(full, "-f", filepath.Join(repoRoot, f))
	}
	full = append(append(full, "--project-directory", repoRoot), args...)
	cmd := exec.Command(composeCmd[0], full...)
	cmd.Env = d.env
	cmd.Dir = repoRoot
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// docker runs a docker command and returns its output.
func (d *deployment) docker(args ...string) string {
	d.t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	require.NoError(d.t, err, "docker %s:\n%s", strings.Join(args, " "), out)
	return string(out)
}

// sh runs a shell command inside a service's container.
func (d *deployment) sh(service, script string) string {
	d.t.Helper()
	return d.docker("exec", d.ids[service], "bash", "-c", script)
}

// waitPolling waits until host's agent polls its task queue.
func (d *deployment) waitPolling(ctx context.Context, host string) {
	d.t.Helper()
	for {
		resp, err := d.c.DescribeTaskQueue(ctx, "replctl-host-"+host, enums.TASK_QUEUE_TYPE_ACTIVITY)
		if err == nil && len(resp.GetPollers()) > 0 {
			return
		}
		require.NoError(d.t, ctx.Err(), "agent %s never polled its queue (last error: %v)", host, err)
		time.Sleep(200 * time.Millisecond)
	}
}

// seed writes into a source dataset on array-a data that takes a few seconds to push and
// pull (many small files, some large ones), so faults can hit a running step.
func (d *deployment) seed(dataset string) { d.seedBig(dataset, 48) }

// seedBig is seed with big MiB of 1-MiB files: a test that cuts a pull off after its first
// progress needs a pull that lasts well beyond the heartbeat that reports it (a pull of
// seed's 128 MiB took about 3 s here, and ended before the cut). At most 999: split names
// the big files with three digits.
func (d *deployment) seedBig(dataset string, big int) {
	d.t.Helper()
	began := time.Now()
	d.sh("a1", `set -e
		mkdir -p /srv/array-a/`+dataset+` && cd /srv/array-a/`+dataset+` && mkdir -p small big
		for i in 0 1; do mkdir small/$i; (cd small/$i && head -c $((10000 * 4096)) /dev/urandom | split -b 4096 -a 5 -d - s); done
		(cd big && head -c $((`+strconv.Itoa(big)+` << 20)) /dev/urandom | split -b $((1 << 20)) -a 3 -d - b)
		ln -s big/b000 link-to-big; mkdir -p empty-dir; chmod 0750 empty-dir; touch empty; chmod 0600 empty`)
	d.t.Logf("seeded %s: %d files, %d MiB in %s", dataset, 20_000+big, 80+big, time.Since(began).Round(time.Millisecond))
}

// start starts a run of job.
func (d *deployment) start(job string) client.WorkflowRun {
	d.t.Helper()
	run, err := d.c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: workflows.WorkflowID(job), TaskQueue: workflows.DefaultTaskQueue, WorkflowExecutionTimeout: 5 * time.Minute,
	}, workflows.ReplicationWorkflowName, workflows.ReplicationInput{Job: job})
	require.NoError(d.t, err)
	return run
}

// wait waits for a run; a failed run's status comes from its status query.
func (d *deployment) wait(run client.WorkflowRun) (workflows.Status, error) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	began := time.Now()
	var st workflows.Status
	// Through the cluster's faults (a database restart) the server may not answer a while.
	err := runwait.GetRun(ctx, d.c, run, &st, runwait.Options{OnRetry: func(err error) { d.t.Logf("waiting out: %v", err) }})
	d.t.Logf("run %s ended after %s more (error: %v)", run.GetRunID(), time.Since(began).Round(time.Millisecond), err)
	if err != nil {
		if v, qerr := d.c.QueryWorkflow(ctx, run.GetID(), run.GetRunID(), workflows.StatusQuery); qerr == nil {
			_ = v.Get(&st)
		}
	}
	return st, err
}

// waitStarted waits until the run's activity is running and returns the host running it.
func (d *deployment) waitStarted(run client.WorkflowRun, activity string) string {
	d.t.Helper()
	return d.waitPending(run, activity, "started", func(activities.Progress, bool) bool { return true })
}

// waitPushing waits until a Push runs its push part (a push that carries the quiesce runs
// the script first: its heartbeats say quiesce until then), the application quiesced, and
// returns the host running it.
func (d *deployment) waitPushing(run client.WorkflowRun) string {
	d.t.Helper()
	return d.waitPending(run, activities.PushName, "started its push part", func(p activities.Progress, ok bool) bool {
		return ok && p.Step == activities.StepPush
	})
}

// waitProgress waits until the run's activity is running and has reported progress (files
// written or uploaded) and returns the host running it.
func (d *deployment) waitProgress(run client.WorkflowRun, activity string) string {
	d.t.Helper()
	host := d.waitPending(run, activity, "reported progress", func(p activities.Progress, ok bool) bool {
		return ok && p.FilesDone > 0
	})
	d.t.Logf("%s on %s: progress reported", activity, host)
	return host
}

// waitPending waits up to 2 minutes until a started activity of the run of type activity
// has a last heartbeat that match accepts (ok: the details decoded), and returns the host
// running it; what says what the wait is for, in its failure.
func (d *deployment) waitPending(run client.WorkflowRun, activity, what string, match func(p activities.Progress, ok bool) bool) string {
	d.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		desc, err := d.c.DescribeWorkflowExecution(context.Background(), run.GetID(), run.GetRunID())
		require.NoError(d.t, err)
		for _, pa := range desc.GetPendingActivities() {
			if pa.GetActivityType().GetName() != activity || pa.GetState() != enums.PENDING_ACTIVITY_STATE_STARTED {
				continue
			}
			var p activities.Progress
			ok := pa.GetHeartbeatDetails() != nil && converter.GetDefaultDataConverter().FromPayloads(pa.GetHeartbeatDetails(), &p) == nil
			if match(p, ok) {
				return strings.TrimPrefix(pa.GetLastWorkerIdentity(), "replctl-agent-")
			}
		}
		if s := desc.GetWorkflowExecutionInfo().GetStatus(); s != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
			d.t.Fatalf("run ended (%s) before %s %s", s, activity, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.t.Fatalf("%s not %s within 2 minutes", activity, what)
	return ""
}

// killAgent kills the agent process inside host's container (kill -9); sshd and the
// container stay up.
func (d *deployment) killAgent(host string) {
	d.t.Helper()
	d.sh(host, `kill -9 "$(cat /run/replctl-agent.pid)"`)
}

// digest is tree-digest of dir inside service's container.
func (d *deployment) digest(service, dir string) string {
	d.t.Helper()
	return strings.TrimSpace(d.sh(service, "tree-digest "+dir))
}

// freezeDigest is the digest freeze.sh recorded for the run on the application host.
func (d *deployment) freezeDigest(host, job, runID string) string {
	d.t.Helper()
	return strings.TrimSpace(d.sh(host, fmt.Sprintf("cat /var/lib/replctl/digests/%s-%s", job, runID)))
}

// markers are the script calls logged on host.
func (d *deployment) markers(host string) string {
	d.t.Helper()
	return d.sh(host, "cat /var/lib/replctl/markers.log 2>/dev/null || true")
}

// fenceEpoch reads the target's fence record of dataset from service's view of array-b.
func (d *deployment) fenceEpoch(service, dataset string) int64 {
	d.t.Helper()
	out := d.sh(service, fmt.Sprintf(`sed -n 's/.*"epoch": *\([0-9]*\).*/\1/p' /srv/array-b/.replctl/fence/%s.json`, dataset))
	n, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	require.NoError(d.t, err, "fence record of %s: %q", dataset, out)
	return n
}

// network is the project's name of a network of docker-compose.yml.
func (d *deployment) network(key string) string { return d.project + "_" + key }

// keysDir holds deploy/keys.sh's output, as docker-compose.yml finds it.
func keysDir() string {
	if d := os.Getenv("REPLCTL_KEYS_DIR"); d != "" {
		return d
	}
	return filepath.Join(repoRoot, ".deploy/keys")
}

// operatorTLS is the operator's mutual TLS (deploy/keys.sh): Temporal in the deployment
// requires a client certificate, and the operator role may start and watch runs.
func operatorTLS(t *testing.T) *tls.Config {
	t.Helper()
	dir := filepath.Join(keysDir(), "tls/operator")
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "operator.pem"), filepath.Join(dir, "operator.key"))
	require.NoError(t, err, "operator certificate (deploy/keys.sh)")
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM), "CA in %s/ca.pem", dir)
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{pair}}
}

// cli runs the replctl CLI from this machine against the deployment (operator certificate)
// and returns its combined output.
func (d *deployment) cli(args ...string) (string, error) {
	args = append(args, "--config", repoRoot+"/config/examples/compose.yaml", "--address", fmt.Sprintf("127.0.0.1:%d", d.port))
	out, err := exec.Command(replctlBin, append(args, operatorArgs()...)...).CombinedOutput()
	return string(out), err
}

// operatorArgs are the CLI's flags for the same.
func operatorArgs() []string {
	dir := filepath.Join(keysDir(), "tls/operator")
	return []string{"--tls-ca", filepath.Join(dir, "ca.pem"), "--tls-cert", filepath.Join(dir, "operator.pem"), "--tls-key", filepath.Join(dir, "operator.key")}
}

// quietLogger drops the SDK client's logs (retries while the server starts).
type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}
