package testworld

import (
	"crypto/tls"
	"testing"
)

// A client with a role's certificate and the server with the PKI's server certificate
// complete a mutual TLS handshake, and the server sees the role as the client's CN.
func TestPKIMutualTLS(t *testing.T) {
	p, err := NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := p.ClientTLS("host:a1")
	if err != nil {
		t.Fatal(err)
	}
	srvTLS := &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: clientTLS.RootCAs, ClientAuth: tls.RequireAndVerifyClientCert}
	l, err := tls.Listen("tcp", "127.0.0.1:0", srvTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cn := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			cn <- err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			cn <- err.Error()
			return
		}
		cn <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := <-cn; got != "host:a1" {
		t.Fatalf("server saw client %q, want host:a1", got)
	}
	args, err := p.ClientArgs("operator")
	if err != nil || len(args) != 8 || args[len(args)-1] != ServerName {
		t.Fatalf("ClientArgs: %v %v", args, err)
	}
}
