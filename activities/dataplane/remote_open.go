package dataplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/format"
	"github.com/pkg/sftp"
)

// openRemote is openUncached for a repository reached over SFTP (cfg.Remote).
// The password file is a file on this agent's host, as for a local repository:
// never read from the repository's storage.
func (r *Repos) openRemote(ctx context.Context, cfg RepoConfig, create bool) (repo.Repository, error) {
	link, err := newSFTPLink(cfg.Remote)
	if err != nil {
		return nil, err
	}
	defer link.Close()

	initialized, err := remoteInitialized(ctx, link, cfg.Remote)
	if err != nil {
		return nil, err
	}
	if !initialized {
		if !create {
			return nil, fmt.Errorf("%w: no kopia repository at %s (over SFTP via %s)", ErrNotFound, cfg.Dir, hostNames(cfg.Remote))
		}
		if err := initRemoteRepo(ctx, link, cfg, r.log); err != nil {
			return nil, err
		}
	}

	pw, err := readPassword(cfg)
	if err != nil {
		return nil, err
	}

	h := sha256.Sum256([]byte(cfg.Dir + remoteKey(cfg.Remote)))
	cdir := filepath.Join(cfg.ClientDir, "repo-sftp-"+hex.EncodeToString(h[:8]))
	if err := os.MkdirAll(cdir, 0o700); err != nil {
		return nil, fmt.Errorf("creating client dir %s: %w", cdir, err)
	}
	cfgFile := filepath.Join(cdir, "repository.config")

	st := newRemoteStorageOn(link, &remoteOptions{Hosts: cfg.Remote, Spool: cdir})
	defer st.Close(ctx) //nolint:errcheck // only its connection info is used
	return r.connectOpen(ctx, st, cfg, cfgFile, pw, " over SFTP")
}

func hostNames(hosts []RemoteHost) string {
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = h.Name
	}
	return strings.Join(names, ", ")
}

// remoteInitialized reports whether the repository exists. Like the local
// check it looks at the directory first: opening storage in a missing
// directory would create it, and then initialization could not rename into it.
func remoteInitialized(ctx context.Context, link *sftpLink, hosts []RemoteHost) (bool, error) {
	exists := false
	err := link.do(ctx, func(c *sftp.Client, h RemoteHost) error {
		_, err := c.Stat(h.Dir)
		if notExist(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("checking repository %s on host %s: %w", h.Dir, h.Name, err)
		}
		exists = true
		return nil
	})
	if err != nil || !exists {
		return false, err
	}
	st := newRemoteStorageOn(link, &remoteOptions{Hosts: hosts})
	defer st.Close(ctx) //nolint:errcheck
	_, err = st.GetMetadata(ctx, format.KopiaRepositoryBlobID)
	if errors.Is(err, blob.ErrBlobNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking repository %s: %w", hosts[0].Dir, err)
	}
	return true, nil
}

// initRemoteRepo creates the repository as initRepo does locally, with the
// same race rules: the (local) password file by hard link of a complete temp
// file, the repository in a temp directory renamed into place (posix-rename:
// fails unless the target is missing or empty).
func initRemoteRepo(ctx context.Context, link *sftpLink, cfg RepoConfig, log func(string, ...any)) error {
	if err := ensurePasswordFile(cfg.PasswordFile); err != nil {
		return err
	}
	pw, err := readPassword(cfg)
	if err != nil {
		return err
	}

	base := "." + path.Base(cfg.Remote[0].Dir) + ".init-" + randomHex(8)
	tmpHosts := make([]RemoteHost, len(cfg.Remote))
	for i, h := range cfg.Remote {
		h.Dir = path.Join(path.Dir(h.Dir), base)
		tmpHosts[i] = h
	}
	defer func() {
		_ = link.do(ctx, func(c *sftp.Client, h RemoteHost) error {
			_ = c.RemoveAll(path.Join(path.Dir(h.Dir), base)) // gone after a successful rename
			return nil
		})
	}()

	st, err := newRemoteStorage(ctx, &remoteOptions{Hosts: tmpHosts}, true)
	if err != nil {
		return fmt.Errorf("creating repository storage next to %s: %w", cfg.Dir, err)
	}
	err = repo.Initialize(ctx, st, newRepositoryOptions(), pw)
	st.Close(ctx) //nolint:errcheck
	if err != nil {
		return fmt.Errorf("initializing repository next to %s over SFTP: %w", cfg.Dir, err)
	}

	var renameErr error
	if err := link.do(ctx, func(c *sftp.Client, h RemoteHost) error {
		tmp := path.Join(path.Dir(h.Dir), base)
		if err := c.Chmod(tmp, dirMode); err != nil {
			return fmt.Errorf("chmod %s on host %s: %w", tmp, h.Name, err)
		}
		renameErr = c.PosixRename(tmp, h.Dir)
		return nil
	}); err != nil {
		return err
	}
	if renameErr != nil {
		ok, ierr := remoteInitialized(ctx, link, cfg.Remote)
		if ierr == nil && ok {
			log("repository initialized concurrently by another agent", "repo", cfg.Dir)
			return nil
		}
		return fmt.Errorf("%w: Repo.Dir: %s exists and is not a kopia repository (rename over SFTP: %v)", ErrBadInput, cfg.Dir, renameErr)
	}
	log("initialized repository over SFTP", "repo", cfg.Dir)
	return nil
}
