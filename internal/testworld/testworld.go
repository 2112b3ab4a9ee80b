// Package testworld holds what replctl's test worlds share: the integration tests (test/),
// the fault trials (test/chaos), the benchmark (test/bench) and the CLI tests (cmd/replctl)
// each run a Temporal server, agents and a config. Here are that config as a config.Config
// value (Config, WriteConfig) and the directories it names (Layout), the server and agent
// processes (Proc), the digest that compares a replica with its source (Digest), free
// ports and the test PKI. It is support code for tests and harnesses only; nothing replctl
// ships imports it.
package testworld

import (
	"fmt"
	"net"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another process may
// take it before the caller binds it: callers that can, retry with another port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("picking a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddr is FreePort as an address, 127.0.0.1:<port>.
func FreeAddr() (string, error) {
	p, err := FreePort()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", p), nil
}
