package hostexec

import (
	"context"
	"fmt"

	"golang.org/x/crypto/ssh"
)

// Dial opens an authenticated SSH connection to t with the same rules as a
// script run: key-only login, known_hosts always enforced (a host without an
// entry or with another key is ErrHostKey), dial plus handshake bounded by
// the connect timeout and ctx. Other failures wrap ErrUnreachable.
//
// The connection is probed with keepalives (every few seconds, each answered
// within the connect timeout) and closed when the host stops answering, so
// users of a long-lived connection see an error instead of hanging. Close the
// client to stop them.
func Dial(ctx context.Context, t *Target) (*ssh.Client, error) {
	addr := withDefaultPort(t.Address)
	where := fmt.Sprintf("ssh %s@%s", t.User, addr)
	signer, err := loadSigner(t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	checkKey, algos, err := hostKeyChecker(t.KnownHostsFile, addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	client, err := dial(ctx, addr, t, signer, checkKey, algos)
	if err != nil {
		var res Result
		return nil, classifyDialError(ctx, ctx, where, err, &res)
	}
	stop := keepalive(client, connectTimeout(t))
	go func() {
		_ = client.Wait()
		stop()
	}()
	return client, nil
}
