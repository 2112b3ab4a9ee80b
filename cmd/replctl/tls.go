package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/codec"
	"github.com/replctl/replctl/internal/secret"
)

// Environment variables of the Temporal connection: the names the Temporal CLI and SDKs use.
// Each setting is taken from the flag, else the environment, else the config file.
const (
	EnvAddress       = "TEMPORAL_ADDRESS"
	EnvNamespace     = "TEMPORAL_NAMESPACE"
	EnvTLS           = "TEMPORAL_TLS" // true/false: force TLS on (system roots) or off
	EnvTLSCA         = "TEMPORAL_TLS_CA"
	EnvTLSCert       = "TEMPORAL_TLS_CERT"
	EnvTLSKey        = "TEMPORAL_TLS_KEY"
	EnvTLSServerName = "TEMPORAL_TLS_SERVER_NAME"
	EnvAPIKey        = "TEMPORAL_API_KEY"
	// EnvCodecKeyFile names the payload codec's key file (replctl's own setting).
	EnvCodecKeyFile = "REPLCTL_CODEC_KEY_FILE"
)

// envAliases are the names of the SDK's environment configuration for the same settings;
// the short names above win when both are set.
var envAliases = map[string]string{
	EnvTLSCA:   "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
	EnvTLSCert: "TEMPORAL_TLS_CLIENT_CERT_PATH",
	EnvTLSKey:  "TEMPORAL_TLS_CLIENT_KEY_PATH",
}

// ConnectionFlags are the Temporal connection flags every command has, besides --address
// and --namespace (Factory.Address, Factory.Namespace).
type ConnectionFlags struct {
	TLS           bool // --tls: TLS on with the system's roots; --tls=false: off
	TLSCA         string
	TLSCert       string
	TLSKey        string
	TLSServerName string
	APIKey        string
	APIKeyFile    string
	CodecKeyFile  string // --codec-key-file: turns the payload codec on

	fs *pflag.FlagSet // tells which flags were given
}

// AddFlags registers the connection flags on fs (the root command's persistent flags).
func (c *ConnectionFlags) AddFlags(fs *pflag.FlagSet) {
	c.fs = fs
	fs.BoolVar(&c.TLS, "tls", false, "connect to Temporal with TLS even without other TLS settings (--tls=false: never) (env "+EnvTLS+")")
	fs.StringVar(&c.TLSCA, "tls-ca", "", "CA certificates (PEM) that sign Temporal's server certificate; default: system roots (env "+EnvTLSCA+")")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "client certificate (PEM) for mutual TLS, with --tls-key (env "+EnvTLSCert+")")
	fs.StringVar(&c.TLSKey, "tls-key", "", "private key (PEM) of --tls-cert (env "+EnvTLSKey+")")
	fs.StringVar(&c.TLSServerName, "tls-server-name", "", "name to check in Temporal's server certificate; default: host of --address (env "+EnvTLSServerName+")")
	fs.StringVar(&c.APIKey, "api-key", "", "Temporal API key, e.g. for Temporal Cloud; prefer --api-key-file or the environment (env "+EnvAPIKey+")")
	fs.StringVar(&c.APIKeyFile, "api-key-file", "", "file holding the Temporal API key")
	fs.StringVar(&c.CodecKeyFile, "codec-key-file", "", "payload codec key file (mode 0600): encrypt every payload put into Temporal with it, and decrypt with it (env "+EnvCodecKeyFile+"; config temporal.codec_key_file)")
}

// given tells whether the flag name was set on the command line.
func (c *ConnectionFlags) given(name string) bool {
	return c.fs != nil && c.fs.Changed(name)
}

// setting is one connection setting and where it came from, for error messages.
type setting struct {
	value  string
	source string // "--tls-cert", "TEMPORAL_TLS_CERT", "config temporal.tls.cert"
}

func (s setting) String() string { return fmt.Sprintf("%s (from %s)", s.value, s.source) }

// connection is the resolved Temporal connection of a command.
type connection struct {
	address, namespace        setting
	tls                       bool // use TLS
	tlsOff                    bool // TLS explicitly off
	ca, cert, key, serverName setting
	apiKey                    setting // value is the key itself; source says where it came from
	codecKeyFile              setting // the payload codec's key file; empty: no codec
}

// resolveConnection applies the precedence flags > environment > config file to every
// setting. getenv is os.Getenv (tests pass their own).
func resolveConnection(f *Factory, t config.Temporal, getenv func(string) string) (connection, error) {
	c := &f.Conn
	env := func(name string) setting {
		if v := getenv(name); v != "" {
			return setting{v, name}
		}
		if alias := envAliases[name]; alias != "" {
			if v := getenv(alias); v != "" {
				return setting{v, alias}
			}
		}
		return setting{}
	}
	pick := func(flagValue, flag, envName, cfgValue, cfgKey string) setting {
		if flagValue != "" {
			return setting{flagValue, "--" + flag}
		}
		if s := env(envName); s.value != "" {
			return s
		}
		if cfgValue != "" {
			return setting{cfgValue, "config " + cfgKey}
		}
		return setting{}
	}
	var cfgTLS config.TLS
	if t.TLS != nil {
		cfgTLS = *t.TLS
	}
	r := connection{
		address:      pick(f.Address, "address", EnvAddress, t.Address, "temporal.address"),
		namespace:    pick(f.Namespace, "namespace", EnvNamespace, t.Namespace, "temporal.namespace"),
		ca:           pick(c.TLSCA, "tls-ca", EnvTLSCA, cfgTLS.CA, "temporal.tls.ca"),
		cert:         pick(c.TLSCert, "tls-cert", EnvTLSCert, cfgTLS.Cert, "temporal.tls.cert"),
		key:          pick(c.TLSKey, "tls-key", EnvTLSKey, cfgTLS.Key, "temporal.tls.key"),
		serverName:   pick(c.TLSServerName, "tls-server-name", EnvTLSServerName, cfgTLS.ServerName, "temporal.tls.server_name"),
		codecKeyFile: pick(c.CodecKeyFile, "codec-key-file", EnvCodecKeyFile, t.CodecKeyFile, "temporal.codec_key_file"),
	}
	r.tls = t.TLS != nil || r.ca.value != "" || r.cert.value != "" || r.key.value != "" || r.serverName.value != ""
	// Config's plaintext applies unless TLS settings came from flags or the environment
	// (a tls section together with plaintext is a config error).
	r.tlsOff = t.Plaintext && !r.tls
	switch {
	case c.given("tls"):
		r.tls, r.tlsOff = c.TLS, !c.TLS
	case getenv(EnvTLS) != "":
		on, err := strconv.ParseBool(getenv(EnvTLS))
		if err != nil {
			return r, usageError("%s=%q: want true or false", EnvTLS, getenv(EnvTLS))
		}
		r.tls, r.tlsOff = on, !on
	}

	switch {
	case c.APIKey != "" && c.APIKeyFile != "":
		return r, usageError("--api-key and --api-key-file both given: use one")
	case c.APIKey != "":
		r.apiKey = setting{c.APIKey, "--api-key"}
	case c.APIKeyFile != "":
		key, err := readAPIKey(c.APIKeyFile, "--api-key-file")
		if err != nil {
			return r, err
		}
		r.apiKey = setting{key, "--api-key-file " + c.APIKeyFile}
	case getenv(EnvAPIKey) != "":
		r.apiKey = setting{strings.TrimSpace(getenv(EnvAPIKey)), EnvAPIKey}
	case t.APIKeyFile != "":
		key, err := readAPIKey(t.APIKeyFile, "config temporal.api_key_file")
		if err != nil {
			return r, err
		}
		r.apiKey = setting{key, "config temporal.api_key_file " + t.APIKeyFile}
	}
	// An API key turns TLS on in the SDK (unless TLS is off explicitly).
	if !r.tls && !r.tlsOff && r.apiKey.value == "" && !loopbackAddress(r.address.value) {
		return r, usageError("Temporal address %s is not a loopback address and no TLS is set up: plain gRPC would carry "+
			"workflow data, credentials and control of the agents in clear over the network. Give TLS settings "+
			"(--tls-ca, --tls-cert/--tls-key or --tls; %s/%s/%s; config temporal.tls), or say plain gRPC is intended: "+
			"--tls=false (%s=false, config temporal.plaintext: true)", r.address, EnvTLSCA, EnvTLSCert, EnvTLSKey, EnvTLS)
	}
	return r, nil
}

// loopbackAddress tells whether the gRPC target addr stays on this machine: a loopback IP
// (127.0.0.0/8, ::1), localhost, a unix socket, or empty (the SDK's default,
// localhost:7233). Any other name may resolve to another machine.
func loopbackAddress(addr string) bool {
	if addr == "" || strings.HasPrefix(addr, "unix:") {
		return true
	}
	a := strings.TrimPrefix(addr, "dns:///")
	if strings.Contains(a, "://") {
		return false
	}
	host, _, err := net.SplitHostPort(a)
	if err != nil {
		host = a
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// readAPIKey reads an API key file; from names the setting that pointed to it. A file
// that group or others can read is refused.
func readAPIKey(file, from string) (string, error) {
	return readSecretString(file, "Temporal API key file", from)
}

// readSecretString reads a one-line secret (an API key, an OIDC client secret) from a file
// that only its owner may read, white space trimmed; an empty one is an error. from, when
// set, says where the file's name came from.
func readSecretString(file, what, from string) (string, error) {
	where := file
	if from != "" {
		where = fmt.Sprintf("%s (from %s)", file, from)
	}
	b, err := secret.ReadFile(file, what)
	if err != nil {
		if from != "" {
			return "", fmt.Errorf("%w (from %s)", err, from)
		}
		return "", err
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s %s is empty", what, where)
	}
	return v, nil
}

// apply sets the connection on o: address, namespace, TLS, API key and payload codec.
func (r connection) apply(o *client.Options) error {
	o.HostPort, o.Namespace = r.address.value, r.namespace.value
	if r.codecKeyFile.value != "" {
		c, err := codec.Load(r.codecKeyFile.value)
		if err != nil {
			return fmt.Errorf("%w (from %s)", err, r.codecKeyFile.source)
		}
		o.DataConverter = c.DataConverter()
		o.FailureConverter = codec.FailureConverter(o.DataConverter)
	}
	if r.apiKey.value != "" {
		o.Credentials = client.NewAPIKeyStaticCredentials(r.apiKey.value)
	}
	if r.tlsOff {
		// Also keeps an API key from turning TLS on (a plain test server).
		o.ConnectionOptions.TLSDisabled = true
		return nil
	}
	if !r.tls {
		return nil
	}
	tc, err := r.tlsConfig()
	if err != nil {
		return err
	}
	o.ConnectionOptions.TLS = tc
	return nil
}

// tlsConfig loads the TLS material, with errors that name each file and where it was set.
func (r connection) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: r.serverName.value}
	if r.ca.value != "" {
		pem, err := os.ReadFile(r.ca.value)
		if err != nil {
			return nil, fmt.Errorf("TLS CA certificates (from %s): %w", r.ca.source, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA file %s: no PEM certificate in it", r.ca)
		}
		tc.RootCAs = pool
	}
	switch {
	case r.cert.value != "" && r.key.value == "":
		return nil, fmt.Errorf("TLS client certificate %s needs its private key (--tls-key, %s or temporal.tls.key)", r.cert, EnvTLSKey)
	case r.key.value != "" && r.cert.value == "":
		return nil, fmt.Errorf("TLS client key %s needs its certificate (--tls-cert, %s or temporal.tls.cert)", r.key, EnvTLSCert)
	case r.cert.value != "":
		certPEM, err := os.ReadFile(r.cert.value)
		if err != nil {
			return nil, fmt.Errorf("TLS client certificate (from %s): %w", r.cert.source, err)
		}
		keyPEM, err := secret.ReadFile(r.key.value, "TLS client key")
		if err != nil {
			return nil, fmt.Errorf("%w (from %s)", err, r.key.source)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("TLS client certificate %s with key %s: %w", r.cert, r.key, err)
		}
		if leaf, err := x509.ParseCertificate(pair.Certificate[0]); err == nil && time.Now().After(leaf.NotAfter) {
			return nil, fmt.Errorf("TLS client certificate %s expired on %s", r.cert, leaf.NotAfter.Format(time.RFC3339))
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// dialHint explains a failed connection when TLS is the likely cause.
func dialHint(o client.Options, err error) string {
	msg := err.Error()
	tc := o.ConnectionOptions.TLS
	// A server that requires client certificates sends an alert and closes the connection;
	// depending on timing the client sees the alert or only the closed connection.
	closed := strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset") || strings.Contains(msg, "EOF")
	switch {
	case strings.Contains(msg, "certificate required") || strings.Contains(msg, "bad certificate") ||
		tc != nil && len(tc.Certificates) == 0 && closed:
		return "; the server may want a client certificate it trusts: give --tls-cert and --tls-key (or TEMPORAL_TLS_CERT/KEY, temporal.tls.cert/key)"
	case strings.Contains(msg, "unknown certificate authority"):
		return "; the server does not trust this client certificate (signed by another CA?)"
	case strings.Contains(msg, "x509:") || strings.Contains(msg, "unknown authority"):
		return "; the server's certificate is not trusted or not valid for this name: check --tls-ca and --tls-server-name"
	case tc != nil && strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "; the server does not speak TLS: drop the TLS settings"
	case tc == nil && closed:
		return "; if the server uses TLS, give --tls or --tls-ca"
	}
	return ""
}
