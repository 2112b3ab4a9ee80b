package devserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/replctl/replctl/internal/testworld"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
)

// pki is a test PKI (testworld.PKI: a CA with a server certificate for 127.0.0.1 and
// localhost), a client certificate it signed, and a client certificate of another CA, all as
// PEM files in a temp dir.
type pki struct {
	ca                        string
	serverCert, serverKey     string
	clientCert, clientKey     string // CN "operator"
	strangerCert, strangerKey string

	pki *testworld.PKI
}

// client makes a client certificate of the test CA with common name cn (a role).
func (p pki) client(t *testing.T, cn string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, err := p.pki.Client(cn)
	require.NoError(t, err)
	return certFile, keyFile
}

func newPKI(t *testing.T) pki {
	t.Helper()
	w, err := testworld.NewPKI(t.TempDir())
	require.NoError(t, err)
	other, err := testworld.NewPKI(t.TempDir())
	require.NoError(t, err)
	p := pki{ca: w.CA, serverCert: w.ServerCert, serverKey: w.ServerKey, pki: w}
	p.clientCert, p.clientKey = p.client(t, RoleOperator)
	p.strangerCert, p.strangerKey, err = other.Client("stranger")
	require.NoError(t, err)
	return p
}

// lazyTLSClient is tlsClient without the dial-time call: the first call connects.
func lazyTLSClient(t *testing.T, p pki, addr, certFile, keyFile string) (client.Client, error) {
	t.Helper()
	return client.NewLazyClient(client.Options{HostPort: addr, Namespace: DefaultNamespace,
		ConnectionOptions: client.ConnectionOptions{TLS: testClientTLS(t, p, certFile, keyFile)}})
}

// testClientTLS trusts the test CA and presents certFile/keyFile (none when empty).
func testClientTLS(t *testing.T, p pki, certFile, keyFile string) *tls.Config {
	t.Helper()
	caPEM, err := os.ReadFile(p.ca)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	tc := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		require.NoError(t, err)
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc
}

// tlsClient dials the server with TLS trusting the test CA and presenting certFile/keyFile
// (none when empty).
func tlsClient(t *testing.T, p pki, addr, certFile, keyFile string) (client.Client, error) {
	t.Helper()
	tc := testClientTLS(t, p, certFile, keyFile)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return client.DialContext(ctx, client.Options{HostPort: addr, Namespace: DefaultNamespace, ConnectionOptions: client.ConnectionOptions{TLS: tc}})
}

// The frontend with mutual TLS: clients with certificates of the CA run a workflow (a host
// worker, an operator starting it); no certificate, a certificate of another CA, or no TLS
// at all are refused. The server's own clients (system workers) still work. The Web UI is
// refused without its own login.
func TestMutualTLSFrontend(t *testing.T) {
	p := newPKI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	mtls := &TLSOptions{CertFile: p.serverCert, KeyFile: p.serverKey, CAFile: p.ca, RequireClientCert: true}
	_, err := Start(ctx, Options{UIPort: 0, TLS: mtls, Access: roleAccess})
	require.ErrorContains(t, err, "--ui-oidc-issuer")
	t.Logf("UI with mutual TLS and no login: %v", err)

	s, err := Start(ctx, Options{UIPort: -1, TLS: mtls, Access: roleAccess})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Stop() })
	require.Equal(t, "localhost", s.TLSServerName())

	c, err := tlsClient(t, p, s.FrontendAddress(), p.clientCert, p.clientKey)
	require.NoError(t, err, "client with a certificate of the CA")
	defer c.Close()
	hostCert, hostKey := p.client(t, "host:t1")
	hc, err := tlsClient(t, p, s.FrontendAddress(), hostCert, hostKey)
	require.NoError(t, err)
	defer hc.Close()
	w := worker.New(hc, taskQueue, worker.Options{})
	w.RegisterWorkflow(greetWorkflow)
	w.RegisterActivity(greet)
	require.NoError(t, w.Start())
	defer w.Stop()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "tls-greet", TaskQueue: taskQueue}, greetWorkflow, "mtls")
	require.NoError(t, err)
	var out string
	require.NoError(t, run.Get(ctx, &out))
	require.Equal(t, "hello mtls", out)

	_, err = tlsClient(t, p, s.FrontendAddress(), "", "")
	require.Error(t, err, "client without a certificate")
	// The alert, or only the closed connection (timing).
	require.Regexp(t, `certificate required|bad certificate|broken pipe|connection reset|EOF`, err.Error())
	t.Logf("without a client certificate: %v", err)

	_, err = tlsClient(t, p, s.FrontendAddress(), p.strangerCert, p.strangerKey)
	// The server closes the connection after its alert; depending on timing the client sees
	// the alert or only the closed connection.
	require.Error(t, err, "client with a certificate of another CA")
	t.Logf("with a certificate of another CA: %v", err)

	plainCtx, plainCancel := context.WithTimeout(ctx, 5*time.Second)
	defer plainCancel()
	_, err = client.DialContext(plainCtx, client.Options{HostPort: s.FrontendAddress(), Namespace: DefaultNamespace})
	require.Error(t, err, "plaintext client")
}

// TLS without client certificates: any TLS client that trusts the server works.
func TestTLSFrontendWithoutClientCerts(t *testing.T) {
	p := newPKI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Start(ctx, Options{UIPort: -1, TLS: &TLSOptions{CertFile: p.serverCert, KeyFile: p.serverKey}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Stop() })
	c, err := tlsClient(t, p, s.FrontendAddress(), "", "")
	require.NoError(t, err)
	defer c.Close()
	_, err = c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: DefaultNamespace})
	require.NoError(t, err)
}

// Bad TLS settings are refused before anything starts, with errors naming the file.
func TestTLSOptionsErrors(t *testing.T) {
	p := newPKI(t)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("not a certificate\n"), 0o644))
	for name, tc := range map[string]struct {
		o    TLSOptions
		want string
	}{
		"key of another certificate": {TLSOptions{CertFile: p.serverCert, KeyFile: p.clientKey}, "private key does not match public key"},
		"missing key":                {TLSOptions{CertFile: p.serverCert}, "--tls-key"},
		"missing certificate file":   {TLSOptions{CertFile: "/nonexistent/server.pem", KeyFile: p.serverKey}, "/nonexistent/server.pem"},
		"mTLS without CA":            {TLSOptions{CertFile: p.serverCert, KeyFile: p.serverKey, RequireClientCert: true}, "--tls-ca"},
		"CA without certificate":     {TLSOptions{CertFile: p.serverCert, KeyFile: p.serverKey, CAFile: garbage}, "no PEM certificate"},
		"certificate without SAN":    {TLSOptions{CertFile: p.clientCert, KeyFile: p.clientKey}, "no DNS name or IP address"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Start(context.Background(), Options{UIPort: -1, TLS: &tc.o})
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}
