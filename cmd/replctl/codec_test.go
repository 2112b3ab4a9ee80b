package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/replctl/replctl/cmd/replctl/internal/devserver"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/codec"
	"github.com/replctl/replctl/internal/secret"
	"github.com/replctl/replctl/internal/testworld"
	"github.com/replctl/replctl/workflows"
)

// writeCodecKey writes a new codec key file (0600) and returns its name.
func writeCodecKey(t *testing.T, name string) string {
	t.Helper()
	k, err := codec.NewKey()
	require.NoError(t, err)
	f := filepath.Join(t.TempDir(), name)
	require.NoError(t, secret.WriteFile(f, k))
	return f
}

// runCLI runs replctl with args in-process and returns stdout, stderr and the error.
func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	f := NewFactory(&out, &errOut)
	root := NewCmdRoot(f)
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	err := execute(ctx, f, root)
	return out.String(), errOut.String(), err
}

// With the payload codec on (config temporal.codec_key_file), a whole run through real
// agents and a real server leaves no path, script name or output in the raw history (read
// by a client without the codec), while the CLI with the key reads status and history, a
// wrong key fails clearly, and `replctl codec-server` decodes the raw payloads over HTTP.
func TestCodecKeepsHistoryOpaque(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("REPLCTL_STATE", dir)
	require.NoError(t, testworld.Layout(dir, fmt.Sprintf(cliScript, dir), "array-a", "array-b"))
	for _, ds := range []string{"orders", "ticker"} {
		p := filepath.Join(dir, "storage/array-a", ds, "secret-name.db")
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte("rows\n"), 0o644))
	}
	key := writeCodecKey(t, "codec.key")
	cfgFile := filepath.Join(dir, "replctl.yaml")
	writeCLIConfig(t, cfgFile, dir, func(c *config.Config) { c.Temporal.CodecKeyFile = key })

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	srv, err := devserver.Start(ctx, devserver.Options{Port: 0, UIPort: -1, SearchAttributes: workflows.SearchAttributes(), Logger: zap.NewNop(), LogLevel: "error"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })
	addr := srv.FrontendAddress()
	base := []string{"--config", cfgFile, "--address", addr, "--log-level", "error"}

	// The agents dial as `replctl agent` does: through the factory, so with the codec.
	f := NewFactory(&bytes.Buffer{}, &bytes.Buffer{})
	f.ConfigFile, f.Address = cfgFile, addr
	cc, err := f.Client(ctx)
	require.NoError(t, err)
	t.Cleanup(cc.Close)
	cfg, err := config.Load(cfgFile)
	require.NoError(t, err)
	for _, h := range []string{"a1", "a2", "b1", "b2"} {
		a, err := startAgent(cc, cfg, h, nil, agentJournal{})
		require.NoError(t, err)
		t.Cleanup(a.Stop)
	}

	out, errOut, err := runCLI(t, append(base, "start", "orders", "--wait", "-o", "json")...)
	require.NoError(t, err, "start: %s %s", out, errOut)

	// Raw history, read without the codec: no path, dataset file, script name or host
	// dir anywhere in the events' bytes; the payloads say they are encrypted.
	plain, err := client.DialContext(ctx, client.Options{HostPort: addr, Namespace: "default", Logger: newSDKLogger(zap.NewNop())})
	require.NoError(t, err)
	defer plain.Close()
	var raw []byte
	var sealed []*commonpb.Payload
	it := plain.GetWorkflowHistory(ctx, workflows.WorkflowID("orders"), "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		require.NoError(t, err)
		b, err := proto.Marshal(e)
		require.NoError(t, err)
		raw = append(raw, b...)
		if a := e.GetActivityTaskScheduledEventAttributes(); a != nil && a.GetActivityType().GetName() == "Push" {
			sealed = append(sealed, a.GetInput().GetPayloads()...)
		}
	}
	require.NotEmpty(t, sealed, "the run pushed")
	for _, p := range sealed {
		require.Equal(t, codec.Encoding, string(p.GetMetadata()[converter.MetadataEncoding]))
	}
	for _, clear := range []string{dir, "storage/array-a", "secret-name.db", "freeze.sh", "thaw.sh", "markers.log"} {
		require.False(t, bytes.Contains(raw, []byte(clear)), "raw history holds %q in clear", clear)
	}
	// The same check has teeth: the decoded Push input names the source dir.
	c, err := codec.Load(key)
	require.NoError(t, err)
	opened, err := c.Decode(sealed[:1])
	require.NoError(t, err)
	require.Contains(t, string(opened[0].GetData()), filepath.Join(dir, "storage/array-a/orders"))

	// The CLI with the key (from the config) reads status and history.
	var st workflows.Status
	out, errOut, err = runCLI(t, append(base, "status", "orders", "-o", "json")...)
	require.NoError(t, err, errOut)
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	require.Equal(t, workflows.PhaseCompleted, st.Phase)
	out, errOut, err = runCLI(t, append(base, "history", "orders")...)
	require.NoError(t, err, errOut)
	require.Contains(t, out, "push")

	// A wrong key: a clear error naming both key fingerprints.
	wrong := writeCodecKey(t, "other.key")
	for _, cmd := range [][]string{{"status", "orders"}, {"history", "orders"}, {"list"}} {
		_, _, err = runCLI(t, append(append(base, "--codec-key-file", wrong), cmd...)...)
		require.ErrorContains(t, err, "payload encrypted with another codec key", cmd)
		require.ErrorContains(t, err, "the payload's key is "+c.KeyID(), cmd)
	}

	// A key file others can read is refused before anything connects.
	require.NoError(t, os.Chmod(wrong, 0o644))
	_, _, err = runCLI(t, append(base, "--codec-key-file", wrong, "list")...)
	require.ErrorContains(t, err, "payload codec key file "+wrong+" has mode 0644")

	// The codec server (as the Web UI calls it) decodes the raw payloads.
	listen, err := testworld.FreeAddr()
	require.NoError(t, err)
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		var out, errOut bytes.Buffer
		f := NewFactory(&out, &errOut)
		root := NewCmdRoot(f)
		root.SetArgs([]string{"--config", cfgFile, "codec-server", "--codec-key-file", key, "--listen", listen})
		served <- root.ExecuteContext(sctx)
	}()
	defer func() { stop(); require.NoError(t, <-served) }()
	remote := converter.NewRemotePayloadCodec(converter.RemotePayloadCodecOptions{Endpoint: "http://" + listen})
	var decoded []*commonpb.Payload
	eventually(t, 10*time.Second, "codec server answering", func() error {
		decoded, err = remote.Decode(sealed)
		return err
	})
	want, err := c.Decode(sealed)
	require.NoError(t, err)
	require.Len(t, decoded, len(want))
	for i := range want {
		require.True(t, proto.Equal(want[i], decoded[i]), "payload %d decoded over HTTP as the codec does", i)
	}
	reencoded, err := remote.Encode(decoded[:1])
	require.NoError(t, err)
	back, err := c.Decode(reencoded)
	require.NoError(t, err)
	require.True(t, proto.Equal(decoded[0], back[0]), "encode over HTTP opens locally")
}
