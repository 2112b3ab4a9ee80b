package devserver

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every bad cluster option is refused with an error naming it, before anything starts.
func TestClusterOptionsRefused(t *testing.T) {
	pg := &Postgres{URL: "postgres://temporal@db/temporal"}
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"services on SQLite", Options{Cluster: &Cluster{Services: []string{"history"}}}, "needs a shared PostgreSQL database"},
		{"unknown service", Options{Postgres: pg, Cluster: &Cluster{Services: []string{"histroy"}}}, `service "histroy": want some of frontend, history, matching, worker`},
		{"open internal services", Options{Postgres: pg, IP: "127.0.0.1", Cluster: &Cluster{Services: []string{"history"}, BroadcastIP: "10.0.0.2", Frontend: "f:7233"}}, "pass --insecure-listen"},
		{"no frontend address", Options{Postgres: pg, IP: "127.0.0.1", Cluster: &Cluster{Services: []string{"history"}, BindIP: "127.0.0.1"}}, "--frontend-address"},
		{"bad bind IP", Options{Postgres: pg, IP: "127.0.0.1", Cluster: &Cluster{BindIP: "host"}}, `bind IP "host"`},
		{"unspecified broadcast", Options{Postgres: pg, IP: "127.0.0.1", Cluster: &Cluster{BroadcastIP: "0.0.0.0"}}, `broadcast IP "0.0.0.0"`},
		{"port too high for smallint", Options{Postgres: pg, IP: "127.0.0.1", Cluster: &Cluster{HistoryPort: 40000}}, "membership ports are kept as smallint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := normalizeCluster(tc.o)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestClusterDefaults(t *testing.T) {
	c, err := normalizeCluster(Options{})
	require.NoError(t, err)
	assert.Nil(t, c, "SQLite: no cluster, static hosts")

	c, err = normalizeCluster(Options{Postgres: &Postgres{URL: "postgres://u@h/d"}, IP: "127.0.0.1"})
	require.NoError(t, err)
	assert.Equal(t, ServiceNames, c.Services)
	assert.Equal(t, "127.0.0.1", c.BindIP, "all services in one process stay on loopback")
	assert.Equal(t, "127.0.0.1", c.BroadcastIP)
	assert.Equal(t, []int{7234, 7235, 7239}, []int{c.HistoryPort, c.MatchingPort, c.WorkerPort})

	c, err = normalizeCluster(Options{Postgres: &Postgres{URL: "postgres://u@h/d"}, IP: "0.0.0.0", InsecureListen: true,
		Cluster: &Cluster{Services: []string{"matching"}, BroadcastIP: "10.1.2.3", Frontend: "frontend:7233"}})
	require.NoError(t, err)
	assert.Equal(t, "0.0.0.0", c.BindIP, "a split service listens where the others reach it")
	assert.Equal(t, "frontend:7233", c.frontendAddr(portSet{}, "0.0.0.0"))
}

// A bad database URL names what is wrong and never prints the password.
func TestPostgresURLRefused(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"mysql://u:secret@h/d", `scheme "mysql"`},
		{"postgres://u:secret@h/", "want one database name"},
		{"postgres://u:secret@h/a/b", "want one database name"},
		{"postgres://h/d", "no user"},
		{"postgres://u:secret@/d", "no host"},
	} {
		_, _, err := postgresStores(Postgres{URL: tc.url})
		require.Error(t, err, tc.url)
		assert.Contains(t, err.Error(), tc.want)
		assert.NotContains(t, err.Error(), "secret", "the password is redacted")
	}
}

func TestPostgresStores(t *testing.T) {
	main, vis, err := postgresStores(Postgres{URL: "postgres://temporal:inurl@db.example/temporal?sslmode=require", Password: "fromfile"})
	require.NoError(t, err)
	assert.Equal(t, "db.example:5432", main.ConnectAddr)
	assert.Equal(t, "temporal", main.DatabaseName)
	assert.Equal(t, "temporal_visibility", vis.DatabaseName)
	assert.Equal(t, "fromfile", main.Password, "--db-password-file wins over the URL")
	assert.Equal(t, "require", vis.ConnectAttributes["sslmode"])
	assert.True(t, schemaBefore("1.9", "1.19"))
	assert.False(t, schemaBefore("1.19", "1.19"))
	assert.False(t, schemaBefore("1.20", "1.19"))
}

// A cluster CA that is not one, or whose key is another's or readable by others, is
// refused with the file named.
func TestClusterCARefused(t *testing.T) {
	dir := t.TempDir()
	ca, err := newInternalCA()
	require.NoError(t, err)
	other, err := newInternalCA()
	require.NoError(t, err)
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, mode))
		return p
	}
	keyPEM := func(c *internalCA) []byte {
		der, err := x509.MarshalECPrivateKey(c.key)
		require.NoError(t, err)
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	caCert := write("ca.pem", ca.pem(), 0o644)
	caKey := write("ca.key", keyPEM(ca), 0o600)
	leafPEM, _, err := ca.client("someone")
	require.NoError(t, err)

	got, err := loadClusterCA(&ClusterCA{CertFile: caCert, KeyFile: caKey})
	require.NoError(t, err)
	assert.Equal(t, ca.cert.Raw, got.cert.Raw)

	for _, tc := range []struct {
		name string
		c    ClusterCA
		want string
	}{
		{"no key", ClusterCA{CertFile: caCert}, "needs both"},
		{"not a CA", ClusterCA{CertFile: write("leaf.pem", leafPEM, 0o644), KeyFile: caKey}, "is not a CA certificate"},
		{"another CA's key", ClusterCA{CertFile: caCert, KeyFile: write("other.key", keyPEM(other), 0o600)}, "does not belong to the certificate"},
		{"key readable by others", ClusterCA{CertFile: caCert, KeyFile: write("open.key", keyPEM(ca), 0o644)}, "open.key"},
		{"no PEM", ClusterCA{CertFile: write("junk.pem", []byte("junk"), 0o644), KeyFile: caKey}, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadClusterCA(&tc.c)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// A process without the frontend runs no Web UI, so the UI's login rules do not stop it.
func TestNoUIWithoutFrontend(t *testing.T) {
	o, _, err := normalize(Options{Postgres: &Postgres{URL: "postgres://u@h/d"}, UIPort: 8233,
		TLS: &TLSOptions{RequireClientCert: true}, Cluster: &Cluster{Services: []string{"history"}}})
	require.NoError(t, err)
	assert.Equal(t, -1, o.UIPort)
}
