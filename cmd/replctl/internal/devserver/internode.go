package devserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"go.temporal.io/server/common/config"

	"github.com/replctl/replctl/internal/secret"
)

// ClusterCA is the CA the server processes of one cluster share (Options.ClusterCA): it
// signs each process's internode certificate (mutual TLS between frontend, history,
// matching and worker) and the certificate the server's own clients present to a
// frontend with mutual TLS, which the frontend's role mapper gives full access. Without
// it, each process makes its own CA in memory, which no other process trusts.
type ClusterCA struct {
	CertFile string // PEM certificate of the CA
	KeyFile  string // its private key (PEM, mode 0600)
}

// internodeServerName is the name in every internode certificate, which peers check.
const internodeServerName = "replctl-internode"

// loadClusterCA reads c; nil when c is nil.
func loadClusterCA(c *ClusterCA) (*internalCA, error) {
	if c == nil {
		return nil, nil
	}
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, errors.New("the cluster CA needs both its certificate and its key (--cluster-ca-cert, --cluster-ca-key)")
	}
	certPEM, err := os.ReadFile(c.CertFile)
	if err != nil {
		return nil, fmt.Errorf("cluster CA certificate: %w", err)
	}
	keyPEM, err := secret.ReadFile(c.KeyFile, "cluster CA key")
	if err != nil {
		return nil, err
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("cluster CA certificate %s: no PEM certificate in it", c.CertFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("cluster CA certificate %s: %w", c.CertFile, err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("cluster CA certificate %s is not a CA certificate (basic constraints CA, key usage certSign)", c.CertFile)
	}
	if time.Now().After(cert.NotAfter) {
		return nil, fmt.Errorf("cluster CA certificate %s expired on %s", c.CertFile, cert.NotAfter.Format(time.RFC3339))
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("cluster CA key %s: no PEM key in it", c.KeyFile)
	}
	var key *ecdsa.PrivateKey
	if k, err := x509.ParseECPrivateKey(kb.Bytes); err == nil {
		key = k
	} else if k, err := x509.ParsePKCS8PrivateKey(kb.Bytes); err == nil {
		key, _ = k.(*ecdsa.PrivateKey)
	}
	if key == nil {
		return nil, fmt.Errorf("cluster CA key %s: want an ECDSA key (EC PRIVATE KEY or PKCS #8)", c.KeyFile)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("cluster CA key %s does not belong to the certificate %s", c.KeyFile, c.CertFile)
	}
	return &internalCA{cert: cert, key: key}, nil
}

// internode makes this process's internode certificate (server and client) for its
// broadcast IP and the shared name, and sets the internode TLS of conf: every service
// presents it and requires one of the same CA from its peers.
func (ca *internalCA) internode(conf *config.Config, broadcastIP string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: internodeServerName},
		DNSNames:     []string{internodeServerName},
		IPAddresses:  []net.IP{net.ParseIP(broadcastIP)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     ca.cert.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return fmt.Errorf("internode certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	conf.Global.TLS.Internode = config.GroupTLS{
		Server: config.ServerTLS{CertData: b64(certPEM), KeyData: b64(keyPEM), ClientCAData: []string{b64(ca.pem())}, RequireClientAuth: true},
		Client: config.ClientTLS{ServerName: internodeServerName, RootCAData: []string{b64(ca.pem())}},
	}
	return nil
}
