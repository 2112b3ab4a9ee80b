package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/cmd/replctl/internal/devserver"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/testworld"
)

// tlsFiles is a test PKI (testworld.PKI: a CA with a server certificate for localhost and
// 127.0.0.1) and the client certificate of role operator, as PEM files.
type tlsFiles struct {
	dir, ca, serverCert, serverKey, clientCert, clientKey string
	// client makes another client certificate of the CA with common name cn (a role).
	client func(cn string) (certFile, keyFile string)
}

func newTLSFiles(t *testing.T) tlsFiles {
	t.Helper()
	p, err := testworld.NewPKI(t.TempDir())
	require.NoError(t, err)
	f := tlsFiles{dir: p.Dir, ca: p.CA, serverCert: p.ServerCert, serverKey: p.ServerKey}
	f.clientCert, f.clientKey, err = p.Client("operator")
	require.NoError(t, err)
	f.client = func(cn string) (string, string) {
		certFile, keyFile, err := p.Client(cn)
		require.NoError(t, err)
		return certFile, keyFile
	}
	return f
}

// rootWith parses args with the root command's persistent flags into a new factory whose
// config file is cfgFile.
func rootWith(t *testing.T, cfgFile string, args ...string) *Factory {
	t.Helper()
	f := NewFactory(&bytes.Buffer{}, &bytes.Buffer{})
	cmd := NewCmdRoot(f)
	require.NoError(t, cmd.PersistentFlags().Parse(append([]string{"--config", cfgFile}, args...)))
	return f
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// Every connection setting comes from its flag, else the environment, else the config.
func TestConnectionPrecedence(t *testing.T) {
	cfg := config.Temporal{
		Address: "cfg:7233", Namespace: "cfg-ns",
		TLS:        &config.TLS{CA: "/cfg/ca.pem", Cert: "/cfg/cert.pem", Key: "/cfg/key.pem", ServerName: "cfg.example"},
		APIKeyFile: "/cfg/api-key",
	}
	env := map[string]string{
		EnvAddress: "env:7233", EnvNamespace: "env-ns", EnvTLSCA: "/env/ca.pem",
		"TEMPORAL_TLS_CLIENT_CERT_PATH": "/env/cert.pem", EnvTLSKey: "/env/key.pem", EnvAPIKey: "env-key",
	}

	f := rootWith(t, "unused.yaml", "--address", "flag:7233", "--tls-ca", "/flag/ca.pem")
	r, err := resolveConnection(f, cfg, envOf(env))
	require.NoError(t, err)
	require.Equal(t, setting{"flag:7233", "--address"}, r.address)
	require.Equal(t, setting{"env-ns", EnvNamespace}, r.namespace)
	require.Equal(t, setting{"/flag/ca.pem", "--tls-ca"}, r.ca)
	require.Equal(t, setting{"/env/cert.pem", "TEMPORAL_TLS_CLIENT_CERT_PATH"}, r.cert, "the SDK's name works too")
	require.Equal(t, setting{"/env/key.pem", EnvTLSKey}, r.key)
	require.Equal(t, setting{"cfg.example", "config temporal.tls.server_name"}, r.serverName)
	require.Equal(t, setting{"env-key", EnvAPIKey}, r.apiKey)
	require.True(t, r.tls)

	// Nothing but the config: plain gRPC to a loopback address unless the config has a tls
	// section.
	r, err = resolveConnection(rootWith(t, "unused.yaml"), config.Temporal{Address: "127.0.0.1:7233", Namespace: "ns"}, envOf(nil))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:7233", r.address.value)
	require.False(t, r.tls)
	require.Empty(t, r.apiKey.value)

	// TLS forced on (system roots) or off, from the environment or the flag (which wins).
	r, err = resolveConnection(rootWith(t, "unused.yaml"), config.Temporal{}, envOf(map[string]string{EnvTLS: "true"}))
	require.NoError(t, err)
	require.True(t, r.tls)
	r, err = resolveConnection(rootWith(t, "unused.yaml", "--tls=false"), cfg, envOf(map[string]string{EnvTLS: "true", EnvAPIKey: "k"}))
	require.NoError(t, err)
	require.True(t, r.tlsOff)
	require.Equal(t, "k", r.apiKey.value)
	var o client.Options
	require.NoError(t, r.apply(&o))
	require.Nil(t, o.ConnectionOptions.TLS)
	require.True(t, o.ConnectionOptions.TLSDisabled, "an API key must not turn TLS back on")
	_, err = resolveConnection(rootWith(t, "unused.yaml"), config.Temporal{}, envOf(map[string]string{EnvTLS: "maybe"}))
	require.ErrorContains(t, err, `TEMPORAL_TLS="maybe"`)

	// API key: --api-key-file beats the environment; an empty file is an error naming it.
	keyFile := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(keyFile, []byte("  file-key\n"), 0o600))
	r, err = resolveConnection(rootWith(t, "unused.yaml", "--api-key-file", keyFile), cfg, envOf(env))
	require.NoError(t, err)
	require.Equal(t, "file-key", r.apiKey.value)
	require.NoError(t, os.WriteFile(keyFile, nil, 0o600))
	_, err = resolveConnection(rootWith(t, "unused.yaml"), config.Temporal{APIKeyFile: keyFile}, envOf(nil))
	require.ErrorContains(t, err, keyFile+" (from config temporal.api_key_file) is empty")
	_, err = resolveConnection(rootWith(t, "unused.yaml", "--api-key", "k", "--api-key-file", keyFile), cfg, envOf(nil))
	require.ErrorContains(t, err, "use one")
	// An API key file that group or others can read is refused, naming file, mode and fix.
	require.NoError(t, os.WriteFile(keyFile, []byte("file-key\n"), 0o600))
	require.NoError(t, os.Chmod(keyFile, 0o644))
	_, err = resolveConnection(rootWith(t, "unused.yaml", "--api-key-file", keyFile), cfg, envOf(nil))
	require.ErrorContains(t, err, "Temporal API key file "+keyFile+" has mode 0644")
	require.ErrorContains(t, err, "chmod 600 "+keyFile)
	require.ErrorContains(t, err, "(from --api-key-file)")
}

// Plain gRPC is used silently only on loopback; to any other address it needs an explicit
// --tls=false, TEMPORAL_TLS=false or temporal.plaintext, and the refusal names the address
// and both fixes.
func TestPlaintextOnlyOnLoopback(t *testing.T) {
	for _, addr := range []string{"", "127.0.0.1:7233", "127.8.9.10:7233", "[::1]:7233", "localhost:7233", "LOCALHOST.:1", "dns:///localhost:7233", "unix:///run/temporal.sock"} {
		r, err := resolveConnection(rootWith(t, "unused.yaml"), config.Temporal{Address: addr, Namespace: "ns"}, envOf(nil))
		require.NoError(t, err, addr)
		require.False(t, r.tls || r.tlsOff, addr)
	}
	for _, addr := range []string{"10.0.0.5:7233", "temporal:7233", "[2001:db8::1]:7233", "0.0.0.0:7233", "dns:///temporal.example:7233", "localhost.example:7233"} {
		_, err := resolveConnection(rootWith(t, "unused.yaml"), config.Temporal{Address: addr, Namespace: "ns"}, envOf(nil))
		require.Error(t, err, addr)
		var ee *ExitError
		require.ErrorAs(t, err, &ee)
		require.Equal(t, ExitUsage, ee.Code)
		require.ErrorContains(t, err, "Temporal address "+addr+" (from config temporal.address) is not a loopback address and no TLS is set up")
		require.ErrorContains(t, err, "Give TLS settings (--tls-ca")
		require.ErrorContains(t, err, "--tls=false (TEMPORAL_TLS=false, config temporal.plaintext: true)")
	}
	remote := config.Temporal{Address: "10.0.0.5:7233", Namespace: "ns"}
	_, err := resolveConnection(rootWith(t, "unused.yaml", "--address", "temporal:7233"), remote, envOf(nil))
	require.ErrorContains(t, err, "temporal:7233 (from --address)")

	// Each explicit way out: the flag, the environment, the config.
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
		cfg  config.Temporal
	}{
		"--tls=false":        {args: []string{"--tls=false"}, cfg: remote},
		"TEMPORAL_TLS=false": {env: map[string]string{EnvTLS: "false"}, cfg: remote},
		"temporal.plaintext": {cfg: config.Temporal{Address: remote.Address, Namespace: "ns", Plaintext: true}},
	} {
		r, err := resolveConnection(rootWith(t, "unused.yaml", tc.args...), tc.cfg, envOf(tc.env))
		require.NoError(t, err, name)
		require.True(t, r.tlsOff, name)
		var o client.Options
		require.NoError(t, r.apply(&o), name)
		require.True(t, o.ConnectionOptions.TLSDisabled, name)
	}
	// An API key turns TLS on (Temporal Cloud): not refused.
	r, err := resolveConnection(rootWith(t, "unused.yaml"), remote, envOf(map[string]string{EnvAPIKey: "k"}))
	require.NoError(t, err)
	var o client.Options
	require.NoError(t, r.apply(&o))
	require.False(t, o.ConnectionOptions.TLSDisabled)
	// TLS from anywhere is enough, and TLS from the environment wins over config plaintext.
	r, err = resolveConnection(rootWith(t, "unused.yaml", "--tls"), remote, envOf(nil))
	require.NoError(t, err)
	require.True(t, r.tls)
	r, err = resolveConnection(rootWith(t, "unused.yaml"), config.Temporal{Address: remote.Address, Plaintext: true}, envOf(map[string]string{EnvTLSCA: "/ca.pem"}))
	require.NoError(t, err)
	require.True(t, r.tls)
	require.False(t, r.tlsOff)
}

// Unreadable or mismatched TLS files give errors that name the file and where it was set.
func TestClientTLSErrors(t *testing.T) {
	files := newTLSFiles(t)
	garbage := filepath.Join(files.dir, "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("hello\n"), 0o644))
	looseKey := filepath.Join(files.dir, "loose.key")
	b, err := os.ReadFile(files.clientKey)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(looseKey, b, 0o644))
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"certificate without key": {[]string{"--tls-cert", files.clientCert}, "needs its private key"},
		"key without certificate": {[]string{"--tls-key", files.clientKey}, "needs its certificate"},
		"key of another certificate": {[]string{"--tls-cert", files.clientCert, "--tls-key", files.serverKey},
			"private key does not match public key"},
		"missing CA file":     {[]string{"--tls-ca", "/nonexistent/ca.pem"}, "TLS CA certificates (from --tls-ca): open /nonexistent/ca.pem"},
		"CA file not PEM":     {[]string{"--tls-ca", garbage}, "no PEM certificate"},
		"missing client cert": {[]string{"--tls-cert", "/nonexistent/c.pem", "--tls-key", files.clientKey}, "TLS client certificate (from --tls-cert): open /nonexistent/c.pem"},
		"client key readable by others": {[]string{"--tls-cert", files.clientCert, "--tls-key", looseKey},
			"TLS client key " + looseKey + " has mode 0644: group or others can read or change it; run `chmod 600 " + looseKey + "`"},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := resolveConnection(rootWith(t, "unused.yaml", tc.args...), config.Temporal{Address: "x:1", Namespace: "n"}, envOf(nil))
			require.NoError(t, err)
			var o client.Options
			err = r.apply(&o)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

// `replctl server` has its own --tls-* flags (they shadow the client flags there).
func TestServerTLSFlags(t *testing.T) {
	f := NewFactory(&bytes.Buffer{}, &bytes.Buffer{})
	var got *ServerOptions
	root := NewCmdRoot(f)
	for _, c := range root.Commands() {
		if c.Name() == "server" {
			root.RemoveCommand(c)
		}
	}
	root.AddCommand(NewCmdServer(f, func(o *ServerOptions) error { got = o; return nil }))
	files := newTLSFiles(t)
	root.SetArgs([]string{"server", "--tls-cert", files.serverCert, "--tls-key", files.serverKey, "--tls-ca", files.ca, "--tls-require-client-cert"})
	require.NoError(t, root.Execute())
	opts, err := got.TLS.options()
	require.NoError(t, err)
	require.Equal(t, &devserver.TLSOptions{CertFile: files.serverCert, KeyFile: files.serverKey, CAFile: files.ca, RequireClientCert: true}, opts)
	require.Empty(t, f.Conn.TLSCert, "the client flag is not set by the server's flag")

	_, err = (&ServerTLSFlags{Cert: "s.pem", Key: "s.key", RequireClientCert: true}).options()
	require.ErrorContains(t, err, "--tls-require-client-cert needs --tls-ca")
	// A server key that group or others can read is refused before anything listens.
	require.NoError(t, os.Chmod(files.serverKey, 0o640))
	_, err = (&ServerTLSFlags{Cert: files.serverCert, Key: files.serverKey}).options()
	require.ErrorContains(t, err, "TLS server key (--tls-key) "+files.serverKey+" has mode 0640")
	opts, err = (&ServerTLSFlags{}).options()
	require.NoError(t, err)
	require.Nil(t, opts)
}

// The embedded server with mutual TLS required: the CLI's connection settings from the
// config file or the environment reach it; without a client certificate the connection is
// refused and the error says what to give.
func TestClientAgainstMutualTLSServer(t *testing.T) {
	files := newTLSFiles(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	srv, err := devserver.Start(ctx, devserver.Options{UIPort: -1, LogLevel: "error",
		TLS: &devserver.TLSOptions{CertFile: files.serverCert, KeyFile: files.serverKey, CAFile: files.ca, RequireClientCert: true}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })

	writeCfg := func(tls string) string {
		file := filepath.Join(t.TempDir(), "replctl.yaml")
		require.NoError(t, os.WriteFile(file, []byte(fmt.Sprintf("temporal:\n  address: %s\n  namespace: default\n%s", srv.FrontendAddress(), tls)), 0o644))
		return file
	}
	describe := func(f *Factory) error {
		o, err := f.ClientOptions()
		require.NoError(t, err)
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		defer dcancel()
		c, err := client.DialContext(dctx, o)
		if err != nil {
			return fmt.Errorf("%w%s", err, dialHint(o, err))
		}
		defer c.Close()
		_, err = c.WorkflowService().DescribeNamespace(dctx, &workflowservice.DescribeNamespaceRequest{Namespace: "default"})
		return err
	}

	// All from the config file.
	cfgTLS := fmt.Sprintf("  tls:\n    ca: %s\n    cert: %s\n    key: %s\n    server_name: localhost\n", files.ca, files.clientCert, files.clientKey)
	require.NoError(t, describe(rootWith(t, writeCfg(cfgTLS))))

	// All from the environment, the config has no TLS.
	plainCfg := writeCfg("")
	t.Setenv(EnvTLSCA, files.ca)
	t.Setenv(EnvTLSCert, files.clientCert)
	t.Setenv(EnvTLSKey, files.clientKey)
	t.Setenv(EnvTLSServerName, "localhost")
	require.NoError(t, describe(rootWith(t, plainCfg)))

	// No client certificate: refused, with a hint.
	os.Unsetenv(EnvTLSCert)
	os.Unsetenv(EnvTLSKey)
	err = describe(rootWith(t, plainCfg))
	require.Error(t, err)
	require.Contains(t, err.Error(), "give --tls-cert and --tls-key")
	t.Logf("refused: %v", err)

	// A server certificate not valid for the name asked for.
	err = describe(rootWith(t, plainCfg, "--tls-server-name", "other.example", "--tls-cert", files.clientCert, "--tls-key", files.clientKey))
	require.Error(t, err)
	require.Contains(t, err.Error(), "check --tls-ca and --tls-server-name")
}

// `replctl config validate` refuses a secret file on this host that others can read, with
// the field, the file, its mode and the fix; the same config passes once it is 0600.
func TestConfigValidateChecksSecretFiles(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "orders.password")
	require.NoError(t, os.WriteFile(pw, []byte("x\n"), 0o600))
	require.NoError(t, os.Chmod(pw, 0o644))
	cfg := filepath.Join(dir, "replctl.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`storage: [{name: src}, {name: dst}]
hosts: [{name: h1, attach: {src: /mnt/src, dst: /mnt/dst}}]
jobs:
  - name: j1
    source: {storage: src, dataset: data}
    target: {storage: dst, dataset: data}
    application: {host: h1}
    order: {source: [h1], target: [h1]}
    repository: {password_file: `+pw+`}
`), 0o644))
	_, _, err := runCLI(t, "config", "validate", cfg)
	var ee *ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, ExitUsage, ee.Code)
	require.ErrorContains(t, err, "jobs[0].repository.password_file: repository password file "+pw+" has mode 0644")
	require.ErrorContains(t, err, "chmod 600 "+pw)

	require.NoError(t, os.Chmod(pw, 0o600))
	out, _, err := runCLI(t, "config", "validate", cfg)
	require.NoError(t, err)
	require.Contains(t, out, ": ok (")
}
