package devserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// UIOptions configure the Web UI. The zero value is a read-only UI on loopback over plain
// HTTP without login.
type UIOptions struct {
	IP string // default 127.0.0.1, whatever the frontend's IP
	// WriteActions lets the UI start, signal, cancel and terminate workflows. Off, the UI
	// server refuses every API call but reads and queries (HTTP 405).
	WriteActions bool
	// OIDC is the UI's own login; required with mutual TLS on the frontend.
	OIDC *OIDCOptions
	// TLSCertFile and TLSKeyFile serve the UI over HTTPS.
	TLSCertFile, TLSKeyFile string
}

// OIDCOptions are the Web UI's OpenID Connect login (the ui-server's auth provider).
type OIDCOptions struct {
	IssuerURL    string   // the provider; its /.well-known/openid-configuration must answer
	ClientID     string   // the UI's client at the provider
	ClientSecret string   // its secret
	CallbackURL  string   // where the provider sends the browser back: <UI URL>/auth/sso/callback
	Scopes       []string // default openid, profile, email
}

// role is the role of the UI's client certificate: operator only with write actions AND a
// login; otherwise reader.
func (u UIOptions) role() string {
	if u.WriteActions && u.OIDC != nil {
		return RoleOperator
	}
	return RoleReader
}

func (u UIOptions) scheme() string {
	if u.TLSCertFile != "" {
		return "https"
	}
	return "http"
}

// authenticated tells whether the UI has its own login and serves HTTPS, so that it may
// listen beyond loopback.
func (u UIOptions) authenticated() bool {
	return u.OIDC != nil && u.TLSCertFile != ""
}

// validate checks the UI options (defaults already applied); mutualTLS says whether the
// frontend requires client certificates.
func (u UIOptions) validate(mutualTLS, insecureListen bool) error {
	if (u.TLSCertFile == "") != (u.TLSKeyFile == "") {
		return errors.New("the Web UI's HTTPS needs both --ui-tls-cert and --ui-tls-key")
	}
	if o := u.OIDC; o != nil {
		if err := o.validate(); err != nil {
			//lint:ignore ST1005 "Web UI" is a proper noun; the --ui-oidc-* flags' help starts so too
			return fmt.Errorf("Web UI login: %w", err)
		}
	}
	if mutualTLS && u.OIDC == nil {
		return errors.New("the Web UI would let anyone who reaches it around --tls-require-client-cert: " +
			"give it its own login (--ui-oidc-issuer, --ui-oidc-client-id, --ui-oidc-client-secret-file, --ui-oidc-callback-url) or run without UI (--ui-port -1)")
	}
	if !isLoopback(u.IP) && !u.authenticated() && !insecureListen {
		return fmt.Errorf("--ui-ip %s is not a loopback address and the Web UI has no login and HTTPS: "+
			"anyone who reaches it could use it; give --ui-oidc-* and --ui-tls-cert/--ui-tls-key, or --insecure-listen", u.IP)
	}
	return nil
}

// validate checks that the login's flags are there and its URLs are http(s) URLs.
func (o *OIDCOptions) validate() error {
	switch {
	case o.IssuerURL == "":
		return errors.New("--ui-oidc-issuer is missing")
	case o.ClientID == "":
		return errors.New("--ui-oidc-client-id is missing")
	case o.CallbackURL == "":
		return errors.New("--ui-oidc-callback-url is missing (the UI's URL + /auth/sso/callback)")
	}
	for flag, raw := range map[string]string{"--ui-oidc-issuer": o.IssuerURL, "--ui-oidc-callback-url": o.CallbackURL} {
		if u, err := url.Parse(raw); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%s %q is not an http(s) URL", flag, raw)
		}
	}
	return nil
}

// checkOIDC fetches the provider's discovery document, as the UI server will at start (it
// exits the process when that fails), so that a wrong issuer is an error instead.
func checkOIDC(ctx context.Context, o *OIDCOptions) error {
	if o == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := oidc.NewProvider(ctx, o.IssuerURL); err != nil {
		//lint:ignore ST1005 "Web UI" is a proper noun, as in validate's errors
		return fmt.Errorf("Web UI login: OIDC provider --ui-oidc-issuer %s: %w", o.IssuerURL, err)
	}
	return nil
}

// isLoopback tells whether ip (a literal) is a loopback address.
func isLoopback(ip string) bool {
	p := net.ParseIP(ip)
	return p != nil && p.IsLoopback()
}
