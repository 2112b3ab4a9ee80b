package devserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/types/known/durationpb"
)

// childDBEnv makes the test binary act as the first process of the restart
// test: it starts a server on the given DB file, writes state, stops, exits.
const childDBEnv = "REPLCTL_DEVSERVER_TEST_CHILD_DB"

const taskQueue = "devserver-test"

var (
	jobAttr  = temporal.NewSearchAttributeKeyKeyword("ReplctlJob")
	hostAttr = temporal.NewSearchAttributeKeyKeyword("ReplctlHost")
)

func TestMain(m *testing.M) {
	if db := os.Getenv(childDBEnv); db != "" {
		if err := childMain(db); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func greet(_ context.Context, name string) (string, error) { return "hello " + name, nil }

func greetWorkflow(ctx workflow.Context, name string) (string, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 10 * time.Second})
	var out string
	err := workflow.ExecuteActivity(ctx, greet, name).Get(ctx, &out)
	return out, err
}

func dial(addr, ns string) (client.Client, error) {
	return client.Dial(client.Options{
		HostPort:  addr,
		Namespace: ns,
		Logger:    sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	})
}

// runGreeting runs greetWorkflow once with a real worker and returns its result.
func runGreeting(ctx context.Context, c client.Client, id, name string, attrs ...temporal.SearchAttributeUpdate) (string, error) {
	w := worker.New(c, taskQueue, worker.Options{})
	w.RegisterWorkflow(greetWorkflow)
	w.RegisterActivity(greet)
	if err := w.Start(); err != nil {
		return "", err
	}
	defer w.Stop()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                    id,
		TaskQueue:             taskQueue,
		TypedSearchAttributes: temporal.NewSearchAttributes(attrs...),
	}, greetWorkflow, name)
	if err != nil {
		return "", err
	}
	var out string
	err = run.Get(ctx, &out)
	return out, err
}

func TestStartRunsWorkflowAndUI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	began := time.Now()
	s, err := Start(ctx, Options{
		SearchAttributes: map[string]enums.IndexedValueType{
			"ReplctlJob":     enums.INDEXED_VALUE_TYPE_KEYWORD,
			"ReplctlAttempt": enums.INDEXED_VALUE_TYPE_INT,
		},
	})
	require.NoError(t, err)
	t.Logf("startup, in-memory DB: %v", time.Since(began).Round(time.Millisecond))
	t.Cleanup(func() { _ = s.Stop() })
	require.True(t, strings.HasPrefix(s.FrontendAddress(), "127.0.0.1:"), s.FrontendAddress())
	require.True(t, strings.HasPrefix(s.UIAddress(), "http://127.0.0.1:"), s.UIAddress())

	c, err := dial(s.FrontendAddress(), DefaultNamespace)
	require.NoError(t, err)

	// A workflow with one activity, tagged with a custom search attribute.
	began = time.Now()
	out, err := runGreeting(ctx, c, "greet-1", "world", jobAttr.ValueSet("job-1"))
	require.NoError(t, err)
	require.Equal(t, "hello world", out)
	t.Logf("first workflow: %v", time.Since(began).Round(time.Millisecond))
	desc, err := c.DescribeWorkflowExecution(ctx, "greet-1", "")
	require.NoError(t, err)
	require.Equal(t, enums.WORKFLOW_EXECUTION_STATUS_COMPLETED, desc.GetWorkflowExecutionInfo().GetStatus())
	payload := desc.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields()["ReplctlJob"]
	require.NotNil(t, payload, "search attribute ReplctlJob not stored on the workflow")
	require.JSONEq(t, `"job-1"`, string(payload.GetData()))

	list, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: DefaultNamespace})
	require.NoError(t, err)
	require.Equal(t, enums.INDEXED_VALUE_TYPE_KEYWORD, list.GetCustomAttributes()["ReplctlJob"])
	require.Equal(t, enums.INDEXED_VALUE_TYPE_INT, list.GetCustomAttributes()["ReplctlAttempt"])

	ns, err := c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: DefaultNamespace})
	require.NoError(t, err)
	require.Equal(t, NamespaceRetention, ns.GetConfig().GetWorkflowExecutionRetentionTtl().AsDuration())

	// The UI page itself, and the UI's API proxy, which only works if the UI
	// reaches the frontend.
	resp, err := http.Get(s.UIAddress())
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, strings.ToLower(string(body)), "<html")
	resp, err = http.Get(s.UIAddress() + "/api/v1/namespaces/" + DefaultNamespace)
	require.NoError(t, err)
	body, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	var nsJSON struct {
		NamespaceInfo struct{ Name string } `json:"namespaceInfo"`
	}
	require.NoError(t, json.Unmarshal(body, &nsJSON), string(body))
	require.Equal(t, DefaultNamespace, nsJSON.NamespaceInfo.Name)

	c.Close()
	require.NoError(t, s.Stop())
	require.NoError(t, s.Stop(), "second Stop")
	// Both ports are released.
	for _, addr := range []string{s.FrontendAddress(), strings.TrimPrefix(s.UIAddress(), "http://")} {
		l, err := net.Listen("tcp", addr)
		require.NoError(t, err, "port %s still bound after Stop", addr)
		require.NoError(t, l.Close())
	}
}

// childResult is what the first process of the restart test reports.
type childResult struct {
	StartupMS int64 `json:"startup_ms"`
	RSSKB     int64 `json:"rss_kb"`
}

// childMain is the first life of the file DB: it creates state, then stops.
func childMain(db string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	began := time.Now()
	s, err := Start(ctx, Options{
		DBFile:           db,
		UIPort:           -1,
		SearchAttributes: map[string]enums.IndexedValueType{"ReplctlJob": enums.INDEXED_VALUE_TYPE_KEYWORD},
	})
	if err != nil {
		return err
	}
	res := childResult{StartupMS: time.Since(began).Milliseconds()}
	defer func() { _ = s.Stop() }()

	c, err := dial(s.FrontendAddress(), DefaultNamespace)
	if err != nil {
		return err
	}
	if _, err := runGreeting(ctx, c, "persisted-wf", "persisted", jobAttr.ValueSet("job-p")); err != nil {
		return err
	}
	if _, err := c.WorkflowService().RegisterNamespace(ctx, &workflowservice.RegisterNamespaceRequest{
		Namespace:                        "second",
		WorkflowExecutionRetentionPeriod: durationpb.New(72 * time.Hour),
	}); err != nil {
		return err
	}
	res.RSSKB = rssKB()
	c.Close()
	if err := s.Stop(); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// rssKB reads the resident set size of this process (Linux only; 0 elsewhere).
func rssKB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func TestFileDBSurvivesRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// The directory does not exist yet: Start creates it.
	db := filepath.Join(t.TempDir(), "state", "nested", "temporal.db")

	// First life in a separate process, so the second start really reopens
	// the file (the SQLite plugin keeps connections for the process lifetime).
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childDBEnv+"="+db)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "child process failed: %s", stderr.String())
	var res childResult
	require.NoError(t, json.Unmarshal(out, &res), "child output %q", out)
	t.Logf("startup, fresh file DB (child process): %d ms, RSS after one workflow: %d MB", res.StartupMS, res.RSSKB/1024)

	// SQLite records WAL mode in the file header (bytes 18 and 19 are 2).
	f, err := os.Open(db)
	require.NoError(t, err)
	header := make([]byte, 20)
	_, err = io.ReadFull(f, header)
	require.NoError(t, f.Close())
	require.NoError(t, err)
	require.Equal(t, []byte{2, 2}, header[18:20], "DB file is not in WAL mode")

	// Second life: same file, same search attributes.
	began := time.Now()
	s, err := Start(ctx, Options{
		DBFile:           db,
		UIPort:           -1,
		SearchAttributes: map[string]enums.IndexedValueType{"ReplctlJob": enums.INDEXED_VALUE_TYPE_KEYWORD},
	})
	require.NoError(t, err)
	t.Logf("startup, existing file DB: %v", time.Since(began).Round(time.Millisecond))
	t.Cleanup(func() { _ = s.Stop() })
	c, err := dial(s.FrontendAddress(), DefaultNamespace)
	require.NoError(t, err)

	// A second server on the same file is refused while this one runs.
	_, err = Start(ctx, Options{DBFile: db, UIPort: -1})
	require.ErrorContains(t, err, "is in use by another replctl server")

	var result string
	require.NoError(t, c.GetWorkflow(ctx, "persisted-wf", "").Get(ctx, &result))
	require.Equal(t, "hello persisted", result)
	second, err := c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: "second"})
	require.NoError(t, err)
	require.Equal(t, 72*time.Hour, second.GetConfig().GetWorkflowExecutionRetentionTtl().AsDuration())
	list, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: DefaultNamespace})
	require.NoError(t, err)
	require.Equal(t, enums.INDEXED_VALUE_TYPE_KEYWORD, list.GetCustomAttributes()["ReplctlJob"])
	require.NotContains(t, list.GetCustomAttributes(), "ReplctlHost")
	c.Close()
	require.NoError(t, s.Stop())

	// Third life: a search attribute added on an existing DB is usable as
	// soon as Start returns.
	began = time.Now()
	s, err = Start(ctx, Options{
		DBFile: db,
		UIPort: -1,
		SearchAttributes: map[string]enums.IndexedValueType{
			"ReplctlJob":  enums.INDEXED_VALUE_TYPE_KEYWORD,
			"ReplctlHost": enums.INDEXED_VALUE_TYPE_KEYWORD,
		},
	})
	require.NoError(t, err)
	t.Logf("startup, existing file DB + one new search attribute: %v", time.Since(began).Round(time.Millisecond))
	t.Cleanup(func() { _ = s.Stop() })
	c, err = dial(s.FrontendAddress(), DefaultNamespace)
	require.NoError(t, err)
	out2, err := runGreeting(ctx, c, "after-restart", "again", hostAttr.ValueSet("host-a"), jobAttr.ValueSet("job-2"))
	require.NoError(t, err)
	require.Equal(t, "hello again", out2)
	list, err = c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: DefaultNamespace})
	require.NoError(t, err)
	require.Equal(t, enums.INDEXED_VALUE_TYPE_KEYWORD, list.GetCustomAttributes()["ReplctlHost"])
	c.Close()
	require.NoError(t, s.Stop())

	// Fourth life: an existing attribute with another type is refused.
	_, err = Start(ctx, Options{
		DBFile:           db,
		UIPort:           -1,
		SearchAttributes: map[string]enums.IndexedValueType{"ReplctlJob": enums.INDEXED_VALUE_TYPE_INT},
	})
	require.ErrorContains(t, err, `search attribute "ReplctlJob" in namespace "default" has type Keyword, want Int`)
}

func TestStartRefusesBusyPortsAndBadOptions(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	db := filepath.Join(t.TempDir(), "never", "temporal.db")
	ctx := context.Background()

	_, err = Start(ctx, Options{DBFile: db, Port: port})
	require.EqualError(t, err, fmt.Sprintf("port %d on 127.0.0.1 is in use (is another replctl server running? use --port)", port))
	_, err = Start(ctx, Options{DBFile: db, UIPort: port})
	require.EqualError(t, err, fmt.Sprintf("port %d on 127.0.0.1 is in use (is another replctl server running? use --ui-port)", port))
	// Nothing was created before the port check failed.
	_, err = os.Stat(filepath.Dir(db))
	require.True(t, os.IsNotExist(err), "DB directory created despite the busy port: %v", err)

	_, err = Start(ctx, Options{LogLevel: "loud"})
	require.ErrorContains(t, err, `log level "loud"`)
	_, err = Start(ctx, Options{IP: "my-host"})
	require.ErrorContains(t, err, `IP "my-host" is not an IP address`)
	_, err = Start(ctx, Options{Port: 7300, UIPort: 7300})
	require.ErrorContains(t, err, "both set to port 7300")
	_, err = Start(ctx, Options{SearchAttributes: map[string]enums.IndexedValueType{"X": enums.INDEXED_VALUE_TYPE_UNSPECIFIED}})
	require.ErrorContains(t, err, `search attribute "X" has invalid type`)
}
