package testworld

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ServerName is the name a PKI's server certificate is valid for (besides 127.0.0.1):
// clients that reach the server through a proxy on another port check this name.
const ServerName = "localhost"

// PKI is a test world's mutual TLS: a CA, the server's certificate, and client
// certificates made on demand, one per role (the subject CN: operator, host:<name>,
// reader, ...). All are PEM files in Dir; keys are mode 0600. Certificates are valid from
// an hour ago for a week.
type PKI struct {
	Dir        string
	CA         string // the CA certificate
	ServerCert string // valid for ServerName and 127.0.0.1
	ServerKey  string

	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

// NewPKI makes a CA and the server's certificate in dir (created if need be).
func NewPKI(dir string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "replctl test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, CA: filepath.Join(dir, "ca.pem"), caCert: ca, caKey: key}
	if err := os.WriteFile(p.CA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	p.ServerCert, p.ServerKey, err = p.leaf("server", &x509.Certificate{
		DNSNames: []string{ServerName}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return p, err
}

// Client makes a client certificate for role (its subject CN). The files are named after
// the role, ':' and '/' made '-': host:a1 is host-a1.pem and host-a1.key.
func (p *PKI) Client(role string) (certFile, keyFile string, err error) {
	return p.leaf(role, &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

func (p *PKI) leaf(cn string, tmpl *x509.Certificate) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return "", "", err
	}
	tmpl.SerialNumber = serial
	tmpl.Subject = pkix.Name{CommonName: cn}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), p.caCert.NotAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return "", "", fmt.Errorf("certificate %s: %w", cn, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	base := filepath.Join(p.Dir, strings.NewReplacer(":", "-", "/", "-").Replace(cn))
	certFile, keyFile = base+".pem", base+".key"
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}

// ClientTLS is an in-process client's TLS config with a new certificate of role.
func (p *PKI) ClientTLS(role string) (*tls.Config, error) {
	certFile, keyFile, err := p.Client(role)
	if err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.caCert)
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: ServerName, Certificates: []tls.Certificate{pair}}, nil
}

// CAKey writes the CA's private key to Dir/ca.key (mode 0600) for a test that needs the
// CA itself, e.g. as a Temporal cluster's CA (`replctl server --cluster-ca-key`).
func (p *PKI) CAKey() (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(p.caKey)
	if err != nil {
		return "", err
	}
	name := filepath.Join(p.Dir, "ca.key")
	return name, os.WriteFile(name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// ServerArgs are `replctl server`'s flags for mutual TLS with roles.
func (p *PKI) ServerArgs() []string {
	return []string{"--tls-cert", p.ServerCert, "--tls-key", p.ServerKey, "--tls-ca", p.CA, "--tls-require-client-cert"}
}

// ClientArgs are a replctl client's flags (agent, CLI) with a new certificate of role.
func (p *PKI) ClientArgs(role string) ([]string, error) {
	certFile, keyFile, err := p.Client(role)
	if err != nil {
		return nil, err
	}
	return []string{"--tls-ca", p.CA, "--tls-cert", certFile, "--tls-key", keyFile, "--tls-server-name", ServerName}, nil
}
