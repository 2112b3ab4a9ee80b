package devserver

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"

	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	"go.temporal.io/server/common/config"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// TLSOptions turn on TLS for the frontend (Options.TLS). The services behind the frontend
// keep talking plain gRPC on loopback.
type TLSOptions struct {
	CertFile string // server certificate (PEM; may hold the chain)
	KeyFile  string // its private key (PEM)
	// CAFile holds the CA certificates that client certificates must chain to. Required with
	// RequireClientCert; otherwise optional (then clients are not asked for a certificate).
	CAFile string
	// RequireClientCert makes the frontend refuse clients without a certificate signed by a
	// CA of CAFile (mutual TLS).
	RequireClientCert bool
}

// enabled tells whether any TLS setting was given.
func (t *TLSOptions) enabled() bool {
	return t != nil && (t.CertFile != "" || t.KeyFile != "" || t.CAFile != "" || t.RequireClientCert)
}

// serverTLS is the loaded TLS material of a server: the frontend's settings, and what the
// server's own clients (system workers, the admin connection of Start, the Web UI) present
// and trust.
//
// The own clients get a certificate from a CA made for this process (its key never leaves
// memory), which the frontend trusts next to CAFile: with mutual TLS they need a client
// certificate, and the server certificate usually may not be used as one.
type serverTLS struct {
	serverName    string   // a name the server certificate is valid for; own clients check it
	trustPEM      [][]byte // server certificate, CAFile: what own clients trust
	clientCAsPEM  [][]byte // CAFile, the internal CA: what the frontend trusts for clients
	requireClient bool
	internalCert  []byte // PEM: the own clients' certificate
	internalKey   []byte // PEM: its key
	internalPair  tls.Certificate
	internalCA    []byte // DER of the internal CA: the claim mapper recognises its certificates
	uiCert, uiKey []byte // PEM: the Web UI's certificate (role uiRole) and key
	uiRole        string
	serverCertPEM []byte
	serverKeyPEM  []byte
}

// loadServerTLS checks and loads o. Every error names the file and what is wrong with it.
// uiRole (reader or operator) is the role of the Web UI's client certificate.
// clusterCA, when set, is the CA of the own clients' certificates (shared by a cluster's
// processes, so that one process's system workers pass another's frontend).
func loadServerTLS(o *TLSOptions, uiRole string, clusterCA *internalCA) (*serverTLS, error) {
	if !o.enabled() {
		return nil, nil
	}
	if o.CertFile == "" || o.KeyFile == "" {
		return nil, errors.New("TLS needs both a server certificate and its key (--tls-cert and --tls-key)")
	}
	if o.RequireClientCert && o.CAFile == "" {
		return nil, errors.New("requiring client certificates needs the CA that signs them (--tls-ca)")
	}
	certPEM, err := os.ReadFile(o.CertFile)
	if err != nil {
		return nil, fmt.Errorf("TLS server certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS server key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("TLS server certificate %s with key %s: %w", o.CertFile, o.KeyFile, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("TLS server certificate %s: %w", o.CertFile, err)
		}
	}
	if time.Now().After(leaf.NotAfter) {
		return nil, fmt.Errorf("TLS server certificate %s expired on %s", o.CertFile, leaf.NotAfter.Format(time.RFC3339))
	}
	s := &serverTLS{requireClient: o.RequireClientCert, serverCertPEM: certPEM, serverKeyPEM: keyPEM}
	switch {
	case len(leaf.DNSNames) > 0:
		s.serverName = leaf.DNSNames[0]
	case len(leaf.IPAddresses) > 0:
		s.serverName = leaf.IPAddresses[0].String()
	default:
		return nil, fmt.Errorf("TLS server certificate %s has no DNS name or IP address (subject alternative name): clients cannot verify it", o.CertFile)
	}
	// Own clients trust the server certificate itself (a certificate in the root pool is
	// valid as is), so they work whichever CA signed it.
	s.trustPEM = [][]byte{pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})}
	if o.CAFile != "" {
		caPEM, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("TLS CA: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("TLS CA %s: no PEM certificate in it", o.CAFile)
		}
		s.trustPEM = append(s.trustPEM, caPEM)
		s.clientCAsPEM = append(s.clientCAsPEM, caPEM)
	}
	ca := clusterCA
	if ca == nil {
		if ca, err = newInternalCA(); err != nil {
			return nil, fmt.Errorf("internal CA: %w", err)
		}
	}
	s.internalCA = ca.cert.Raw
	s.clientCAsPEM = append(s.clientCAsPEM, ca.pem())
	if s.internalCert, s.internalKey, err = ca.client(internalClientCN); err != nil {
		return nil, fmt.Errorf("internal client certificate: %w", err)
	}
	if s.internalPair, err = tls.X509KeyPair(s.internalCert, s.internalKey); err != nil {
		return nil, fmt.Errorf("internal client certificate: %w", err)
	}
	// The Web UI never gets the internal certificate: it serves HTTP to whoever reaches it.
	if s.uiCert, s.uiKey, err = ca.client(uiRole); err != nil {
		//lint:ignore ST1005 "Web UI" is a proper noun
		return nil, fmt.Errorf("Web UI client certificate: %w", err)
	}
	s.uiRole = uiRole
	return s, nil
}

// internalClientCN is the common name of the internal client's certificate: with mutual
// TLS, a certificate of the internal CA with this name has full access (roles.go).
const internalClientCN = "replctl server internal client"

// internalCA is the CA made for one server process; its key never leaves memory.
type internalCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newInternalCA() (*internalCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "replctl server internal CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &internalCA{cert: cert, key: key}, nil
}

func (ca *internalCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// client makes a client certificate with common name cn signed by ca, both PEM.
func (ca *internalCA) client(cn string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     ca.cert.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func b64All(bs [][]byte) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b64(b)
	}
	return out
}

// apply sets the server config's TLS section: TLS (or mTLS) on the frontend, the system
// workers' client settings; internode traffic stays plain on loopback.
func (s *serverTLS) apply(conf *config.Config) {
	if s == nil {
		return
	}
	conf.Global.TLS.Frontend.Server = config.ServerTLS{
		CertData:          b64(s.serverCertPEM),
		KeyData:           b64(s.serverKeyPEM),
		ClientCAData:      b64All(s.clientCAsPEM),
		RequireClientAuth: s.requireClient,
	}
	conf.Global.TLS.SystemWorker = config.WorkerTLS{
		CertData: b64(s.internalCert),
		KeyData:  b64(s.internalKey),
		Client: config.ClientTLS{
			ServerName: s.serverName,
			RootCAData: b64All(s.trustPEM),
			ForceTLS:   true,
		},
	}
}

// uiTLS is the Web UI's connection to the frontend.
func (s *serverTLS) uiTLS() uiconfig.TLS {
	if s == nil {
		return uiconfig.TLS{}
	}
	return uiconfig.TLS{
		CaData:                 b64(bytes.Join(s.trustPEM, []byte("\n"))),
		CertData:               b64(s.uiCert),
		KeyData:                b64(s.uiKey),
		ServerName:             s.serverName,
		EnableHostVerification: true,
	}
}

// clientTLS is a tls.Config for the server's own clients (the admin connection of Start).
func (s *serverTLS) clientTLS() *tls.Config {
	pool := x509.NewCertPool()
	for _, p := range s.trustPEM {
		pool.AppendCertsFromPEM(p)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      pool,
		ServerName:   s.serverName,
		Certificates: []tls.Certificate{s.internalPair},
	}
}

// transportCredentials is the gRPC transport of the server's own clients.
func (s *serverTLS) transportCredentials() grpc.DialOption {
	if s == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(s.clientTLS()))
}
