package dataplane

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The repository password file: required, private, on the host (not beside the
// repository), with errors that say how to fix or migrate.
func TestRepositoryPasswordFile(t *testing.T) {
	e := newEnv(t)
	makeTree(t, e.src)
	push := func(r *Repos, cfg RepoConfig) error {
		_, err := r.Push(context.Background(), PushRequest{Repo: cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds}, nil)
		return err
	}
	fresh := func() *Repos {
		r := NewRepos(nil)
		t.Cleanup(func() { _ = r.Close() })
		return r
	}

	// No password file: refused before anything is created (there is no default beside
	// the repository any more).
	noPW := e.cfg
	noPW.PasswordFile = ""
	err := push(fresh(), noPW)
	require.ErrorIs(t, err, ErrBadInput)
	require.ErrorContains(t, err, "Repo.PasswordFile: must not be empty")
	_, err = os.Lstat(e.cfg.Dir)
	require.True(t, os.IsNotExist(err), "no repository was created")

	require.NoError(t, push(fresh(), e.cfg))

	// A password file that others can read is refused, with its mode and the fix.
	require.NoError(t, os.Chmod(e.cfg.PasswordFile, 0o644))
	err = push(fresh(), e.cfg)
	require.ErrorIs(t, err, ErrBadInput)
	require.ErrorContains(t, err, "repository password file "+e.cfg.PasswordFile+" has mode 0644")
	require.ErrorContains(t, err, "chmod 600 "+e.cfg.PasswordFile)
	require.NoError(t, os.Chmod(e.cfg.PasswordFile, 0o600))

	// Another host (own client dir, own secrets dir) without a copy: not found, and an
	// existing repository is never given a new password.
	other := e.cfg
	other.ClientDir = filepath.Join(t.TempDir(), "client")
	other.PasswordFile = filepath.Join(t.TempDir(), "secrets", "repo.password")
	err = push(fresh(), other)
	require.ErrorIs(t, err, ErrNotFound)
	require.ErrorContains(t, err, "password file "+other.PasswordFile+" of repository "+e.cfg.Dir+" does not exist on this host; copy it (mode 0600)")
	_, err = os.Lstat(other.PasswordFile)
	require.True(t, os.IsNotExist(err), "not created for an existing repository")

	// Migration: the old default beside the repository is named with the commands to move it.
	pw, err := os.ReadFile(e.cfg.PasswordFile)
	require.NoError(t, err)
	legacy := e.cfg.Dir + ".password"
	require.NoError(t, os.WriteFile(legacy, pw, 0o600))
	err = push(fresh(), other)
	require.ErrorIs(t, err, ErrNotFound)
	require.ErrorContains(t, err, "the old default "+legacy+" beside the repository is there: move it (install -m 600 "+legacy+" "+other.PasswordFile+" && rm "+legacy+")")
	require.NoError(t, os.MkdirAll(filepath.Dir(other.PasswordFile), 0o700))
	require.NoError(t, os.Rename(legacy, other.PasswordFile))
	require.NoError(t, push(fresh(), other), "the moved password opens the repository")

	// A different password: the error says to copy the right file.
	require.NoError(t, os.WriteFile(other.PasswordFile, []byte("not-the-password\n"), 0o600))
	other.ClientDir = filepath.Join(t.TempDir(), "client")
	err = push(fresh(), other)
	require.ErrorIs(t, err, ErrBadInput)
	require.ErrorContains(t, err, "wrong password in "+other.PasswordFile+" for repository "+e.cfg.Dir)
	require.ErrorContains(t, err, "copy the password file from a host where the repository opens")
}
