package devserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/serviceerror"
)

// postFailback sends through the UI's HTTP API what issue 13 saw start a failback: the
// replication workflow of job docs with direction failback. It carries an Authorization
// header, as an attacker's request may, which makes the UI skip its CSRF check.
func postFailback(t *testing.T, uiAddr, id string) (int, string) {
	t.Helper()
	input, err := json.Marshal(map[string]string{"job": "docs", "direction": "failback"})
	require.NoError(t, err)
	body, err := json.Marshal(map[string]any{
		"workflowId":   id,
		"workflowType": map[string]string{"name": "Replication"},
		"taskQueue":    map[string]string{"name": "replctl"},
		"requestId":    "ui-post-" + id,
		"input": map[string]any{"payloads": []any{map[string]any{
			"metadata": map[string]string{"encoding": base64.StdEncoding.EncodeToString([]byte("json/plain"))},
			"data":     base64.StdEncoding.EncodeToString(input),
		}}},
	})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, uiAddr+"/api/v1/namespaces/"+DefaultNamespace+"/workflows/"+id, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer anything")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(out))
}

// With the default settings the Web UI listens on loopback and refuses the POST that starts
// a failback; no workflow starts. With --ui-write-actions the same POST starts one (so the
// refusal is the setting's doing, not a malformed request).
func TestUIReadOnlyByDefault(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := Start(ctx, Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Stop() })
	require.True(t, strings.HasPrefix(s.UIAddress(), "http://127.0.0.1:"), s.UIAddress())

	code, body := postFailback(t, s.UIAddress(), "replctl-docs")
	t.Logf("default UI, POST start failback: HTTP %d %s", code, body)
	require.Equal(t, http.StatusMethodNotAllowed, code)
	c, err := dial(s.FrontendAddress(), DefaultNamespace)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.DescribeWorkflowExecution(ctx, "replctl-docs", "")
	var nf *serviceerror.NotFound
	require.ErrorAs(t, err, &nf, "no workflow started")

	// Reading still works.
	resp, err := http.Get(s.UIAddress() + "/api/v1/namespaces/" + DefaultNamespace)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	w, err := Start(ctx, Options{UI: UIOptions{WriteActions: true}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Stop() })
	code, body = postFailback(t, w.UIAddress(), "replctl-docs")
	t.Logf("UI with write actions, same POST: HTTP %d %s", code, body)
	require.Equal(t, http.StatusOK, code)
	wc, err := dial(w.FrontendAddress(), DefaultNamespace)
	require.NoError(t, err)
	defer wc.Close()
	_, err = wc.DescribeWorkflowExecution(ctx, "replctl-docs", "")
	require.NoError(t, err, "with write actions the POST started the workflow")
}

// Listening beyond loopback without authentication is refused with the flag to use.
func TestListenRules(t *testing.T) {
	p := newPKI(t)
	mtls := &TLSOptions{CertFile: p.serverCert, KeyFile: p.serverKey, CAFile: p.ca, RequireClientCert: true}
	serverOnly := &TLSOptions{CertFile: p.serverCert, KeyFile: p.serverKey}
	oidc := &OIDCOptions{IssuerURL: "https://login.example", ClientID: "ui", CallbackURL: "https://ui.example/auth/sso/callback"}
	for name, tc := range map[string]struct {
		o    Options
		want string
	}{
		"frontend on all addresses, plain":        {Options{IP: "0.0.0.0", UIPort: -1}, "--insecure-listen"},
		"frontend on all addresses, TLS only":     {Options{IP: "0.0.0.0", UIPort: -1, TLS: serverOnly}, "--tls-require-client-cert"},
		"UI on all addresses":                     {Options{UI: UIOptions{IP: "0.0.0.0"}}, "--ui-ip 0.0.0.0"},
		"UI on all addresses with login only":     {Options{UI: UIOptions{IP: "0.0.0.0", OIDC: oidc}}, "--ui-tls-cert"},
		"UI with mutual TLS and no login":         {Options{TLS: mtls}, "--ui-oidc-issuer"},
		"UI login without client ID":              {Options{UI: UIOptions{OIDC: &OIDCOptions{IssuerURL: "https://x", CallbackURL: "https://y/cb"}}}, "--ui-oidc-client-id"},
		"UI login with a callback that is no URL": {Options{UI: UIOptions{OIDC: &OIDCOptions{IssuerURL: "https://x", ClientID: "ui", CallbackURL: "ui/cb"}}}, "--ui-oidc-callback-url"},
		"UI HTTPS without key":                    {Options{UI: UIOptions{TLSCertFile: p.serverCert}}, "--ui-tls-key"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Start(context.Background(), tc.o)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			t.Log(err)
		})
	}

	// --insecure-listen is the explicit way out; mutual TLS needs none.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := Start(ctx, Options{IP: "0.0.0.0", UIPort: -1, InsecureListen: true})
	require.NoError(t, err)
	require.NoError(t, s.Stop())
	s, err = Start(ctx, Options{IP: "0.0.0.0", UIPort: -1, TLS: mtls, Access: roleAccess})
	require.NoError(t, err)
	require.NoError(t, s.Stop())
}
