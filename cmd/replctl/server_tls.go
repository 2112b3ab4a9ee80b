//go:build !noserver

package main

import (
	"fmt"

	"github.com/replctl/replctl/cmd/replctl/internal/devserver"
	"github.com/replctl/replctl/internal/secret"
	"github.com/spf13/pflag"
)

// ServerTLSFlags are the TLS flags of `replctl server` (they shadow the client flags of the
// same names there).
type ServerTLSFlags struct {
	CA, Cert, Key     string
	RequireClientCert bool
}

// AddFlags registers the server's TLS flags on fs.
func (s *ServerTLSFlags) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&s.Cert, "tls-cert", "", "server certificate (PEM) of the frontend: turns TLS on")
	fs.StringVar(&s.Key, "tls-key", "", "private key (PEM) of --tls-cert")
	fs.StringVar(&s.CA, "tls-ca", "", "CA certificates (PEM) that client certificates must chain to (with --tls-require-client-cert)")
	fs.BoolVar(&s.RequireClientCert, "tls-require-client-cert", false, "mutual TLS: refuse clients without a certificate signed by --tls-ca")
}

// options converts the flags for devserver; nil without TLS.
func (s *ServerTLSFlags) options() (*devserver.TLSOptions, error) {
	if s.Cert == "" && s.Key == "" && s.CA == "" && !s.RequireClientCert {
		return nil, nil
	}
	if s.Cert == "" || s.Key == "" {
		return nil, usageError("server TLS needs --tls-cert and --tls-key")
	}
	if s.RequireClientCert && s.CA == "" {
		return nil, usageError("--tls-require-client-cert needs --tls-ca (the CA that signs client certificates)")
	}
	if err := secret.Check(s.Key, "TLS server key (--tls-key)"); err != nil {
		return nil, &ExitError{Code: ExitUsage, Err: err}
	}
	return &devserver.TLSOptions{CertFile: s.Cert, KeyFile: s.Key, CAFile: s.CA, RequireClientCert: s.RequireClientCert}, nil
}

// tlsLabel describes the frontend's TLS mode for the server's start message.
func tlsLabel(t *devserver.TLSOptions, s *devserver.Server) string {
	switch {
	case t == nil:
		return ""
	case t.RequireClientCert:
		return fmt.Sprintf(", mutual TLS: client certificates signed by %s required; certificate name %s", t.CAFile, s.TLSServerName())
	default:
		return fmt.Sprintf(", TLS; certificate name %s", s.TLSServerName())
	}
}
