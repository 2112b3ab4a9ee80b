package main

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
	"time"
)

// serverName is the name the world's server certificate is valid for; agents reach the
// server through proxies on other ports, so they check this name, not the address.
const serverName = "localhost"

// worldPKI is the world's mutual TLS: a CA, the server's certificate, and one client
// certificate per role (host:<name> for each agent, operator for the harness). Files are
// PEM in dir; keys are mode 0600.
type worldPKI struct {
	dir        string
	ca         string
	serverCert string
	serverKey  string
	caCert     *x509.Certificate
	caKey      *ecdsa.PrivateKey
}

func newWorldPKI(dir string) (*worldPKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "replctl chaos CA"},
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
	p := &worldPKI{dir: dir, ca: filepath.Join(dir, "ca.pem"), caCert: ca, caKey: key}
	if err := os.WriteFile(p.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	p.serverCert, p.serverKey, err = p.leaf("server", &x509.Certificate{
		DNSNames: []string{serverName}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return p, err
}

// client makes the client certificate of role (the subject CN: host:<name>, operator).
func (p *worldPKI) client(role string) (certFile, keyFile string, err error) {
	return p.leaf(role, &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

func (p *worldPKI) leaf(cn string, tmpl *x509.Certificate) (certFile, keyFile string, err error) {
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
	base := filepath.Join(p.dir, fileName(cn))
	certFile, keyFile = base+".pem", base+".key"
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}

func fileName(cn string) string {
	b := []byte(cn)
	for i, c := range b {
		if c == ':' || c == '/' {
			b[i] = '-'
		}
	}
	return string(b)
}

// clientTLS is the harness's own TLS config with the certificate of role.
func (p *worldPKI) clientTLS(role string) (*tls.Config, error) {
	certFile, keyFile, err := p.client(role)
	if err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.caCert)
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: serverName, Certificates: []tls.Certificate{pair}}, nil
}

// serverArgs are `replctl server`'s flags for mutual TLS with roles.
func (p *worldPKI) serverArgs() []string {
	return []string{"--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-ca", p.ca, "--tls-require-client-cert"}
}

// clientArgs are a replctl client's flags (agent, CLI) with the certificate of role.
func (p *worldPKI) clientArgs(role string) ([]string, error) {
	certFile, keyFile, err := p.client(role)
	if err != nil {
		return nil, err
	}
	return []string{"--tls-ca", p.ca, "--tls-cert", certFile, "--tls-key", keyFile, "--tls-server-name", serverName}, nil
}
