package hostexec

import (
	"context"
	"errors"
	"fmt"
)

// CheckLocalScript reports whether script in scriptsDir on this machine would run: the same
// checks as a local Run makes before it starts the script (errors wrap ErrNoScript when the
// directory or file is missing, not a regular file or not executable). It runs nothing.
func CheckLocalScript(host, scriptsDir, script string) (string, error) {
	r := Request{Host: host, ScriptsDir: scriptsDir, Script: script}
	if err := validate(&r); err != nil {
		return "", err
	}
	return checkLocalScript(&r)
}

// Probe logs into t as a script run would (key-only login, known_hosts enforced, the connect
// timeout) and runs `true` there. Errors wrap ErrHostKey or ErrUnreachable as Run's do; a
// login whose `true` does not exit 0 is a plain error.
func Probe(ctx context.Context, t *Target) error {
	client, err := Dial(ctx, t)
	if err != nil {
		return err
	}
	defer client.Close()
	s, err := client.NewSession()
	if err != nil {
		return fmt.Errorf("ssh %s@%s: open session: %v: %w", t.User, t.Address, err, ErrUnreachable)
	}
	defer s.Close()
	done := make(chan error, 1)
	go func() { done <- s.Run("true") }()
	select {
	case err = <-done:
	case <-ctx.Done():
		return fmt.Errorf("ssh %s@%s: `true` did not finish: %w", t.User, t.Address, errors.Join(ctx.Err(), ErrUnreachable))
	}
	if err != nil {
		return fmt.Errorf("ssh %s@%s: `true` failed: %v", t.User, t.Address, err)
	}
	return nil
}
