package dataplane

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/blob/filesystem"
	"github.com/kopia/kopia/repo/content"
	"github.com/kopia/kopia/repo/format"
	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/internal/secret"
)

// RepoConfig locates a job's repository and this agent's client state for it.
type RepoConfig struct {
	// Dir is the absolute directory of the kopia filesystem repository
	// (typically on shared storage).
	Dir string
	// PasswordFile holds the repository password: an absolute path on this
	// host, required, never on the repository storage (the config's default is
	// in the host's secrets_dir). It must be private (mode 0600: secret.ReadFile);
	// the agent that initializes the repository creates it (32 random bytes,
	// hex) if it is missing. Other hosts need a copy of the same file.
	PasswordFile string
	// ClientDir is an absolute per-host directory for kopia client state
	// (config, caches); a subdirectory per repository is derived from Dir.
	ClientDir string
	// CacheMB sizes kopia's local content and metadata caches (each) under
	// ClientDir. 0 (default): no cache. The repository is itself a filesystem,
	// and kopia's cache writes every content it reads to a cache file: a full
	// pull of 20k small files measured ~2x slower with a cache than without.
	// A cache may help when the shared storage has high latency.
	CacheMB int
	// Remote, when set, means this host is not attached to the repository's
	// storage: it is reached over SFTP through the first of these hosts that
	// answers (remote.go). Dir is then Remote[0].Dir, for messages.
	Remote []RemoteHost
}

func (c RepoConfig) validate() error {
	if err := checkAbs("Repo.Dir", c.Dir); err != nil {
		return err
	}

	if err := checkAbs("Repo.ClientDir", c.ClientDir); err != nil {
		return err
	}

	// An empty PasswordFile used to mean <Dir>.password, beside the repository:
	// that default is gone (whoever reads the storage would read the key).
	return checkAbs("Repo.PasswordFile", c.PasswordFile)
}

func (c RepoConfig) key() string {
	return c.Dir + "\x00" + c.PasswordFile + "\x00" + c.ClientDir + remoteKey(c.Remote)
}

// clientDir is the per-repository kopia client state directory.
func (c RepoConfig) clientDir() string {
	h := sha256.Sum256([]byte(c.Dir))
	return filepath.Join(c.ClientDir, "repo-"+hex.EncodeToString(h[:8]))
}

// Repos is a cache of open repositories, safe for concurrent use. Opening a
// kopia repository derives keys from the password (scrypt) and loads indexes,
// so repositories stay open across calls until Close.
type Repos struct {
	log func(msg string, kv ...any)

	mu    sync.Mutex
	repos map[string]*openRepo

	hooks testHooks // tests only
}

type openRepo struct {
	mu  sync.Mutex // serializes opening
	rep repo.Repository
}

// LogWarn is the key of a log line's pair ("warn", true) that marks it as something an
// operator should look at although the step did not fail (a replica changed on the target);
// a line with a non-nil "err" is one too.
const LogWarn = "warn"

// NewRepos returns an empty cache. log receives occasional diagnostics (may be nil).
func NewRepos(log func(msg string, kv ...any)) *Repos {
	if log == nil {
		log = func(string, ...any) {}
	}

	return &Repos{log: log, repos: map[string]*openRepo{}}
}

// Close closes all open repositories. Call it after all operations returned.
func (r *Repos) Close() error {
	r.mu.Lock()
	repos := r.repos
	r.repos = map[string]*openRepo{}
	r.mu.Unlock()

	var errs []error

	for k, o := range repos {
		o.mu.Lock()
		if o.rep != nil {
			if err := o.rep.Close(context.Background()); err != nil {
				errs = append(errs, fmt.Errorf("closing repository %s: %w", strings.SplitN(k, "\x00", 2)[0], err))
			}

			o.rep = nil
		}
		o.mu.Unlock()
	}

	return errors.Join(errs...)
}

// open returns the open repository for cfg; with create it initializes a
// missing repository, otherwise a missing one is ErrNotFound. The repository's
// indexes are refreshed so writes of other agents are visible.
func (r *Repos) open(ctx context.Context, cfg RepoConfig, create bool) (repo.DirectRepository, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}

	r.mu.Lock()
	o := r.repos[cfg.key()]
	if o == nil {
		o = &openRepo{}
		r.repos[cfg.key()] = o
	}
	r.mu.Unlock()

	o.mu.Lock()
	defer o.mu.Unlock()

	if o.rep == nil {
		rep, err := r.openUncached(ctx, cfg, create)
		if err != nil {
			return nil, err
		}

		o.rep = rep
	} else if err := o.rep.Refresh(ctx); err != nil {
		return nil, fmt.Errorf("refreshing repository %s: %w", cfg.Dir, err)
	}

	dr, ok := o.rep.(repo.DirectRepository)
	if !ok {
		return nil, fmt.Errorf("repository %s is not a direct repository", cfg.Dir)
	}

	return dr, nil
}

func (r *Repos) openUncached(ctx context.Context, cfg RepoConfig, create bool) (repo.Repository, error) {
	if len(cfg.Remote) > 0 {
		return r.openRemote(ctx, cfg, create)
	}

	initialized, err := repoInitialized(ctx, cfg.Dir)
	if err != nil {
		return nil, err
	}

	if !initialized {
		if !create {
			return nil, fmt.Errorf("%w: no kopia repository at %s", ErrNotFound, cfg.Dir)
		}

		if err := initRepo(ctx, cfg, r.log); err != nil {
			return nil, err
		}
	}

	pw, err := readPassword(cfg)
	if err != nil {
		return nil, err
	}

	cdir := cfg.clientDir()
	if err := os.MkdirAll(cdir, 0o700); err != nil {
		return nil, fmt.Errorf("creating client dir %s: %w", cdir, err)
	}

	cfgFile := filepath.Join(cdir, "repository.config")
	st, err := newLocalStorage(ctx, &filesystem.Options{Path: cfg.Dir}, false)
	if err != nil {
		return nil, fmt.Errorf("opening repository storage %s: %w", cfg.Dir, err)
	}
	defer st.Close(ctx) //nolint:errcheck // only its connection info is used

	return r.connectOpen(ctx, st, cfg, cfgFile, pw, "")
}

// cachingOptions returns kopia's client cache settings. Without CacheMB
// there is no cache directory at all (kopia's supported "no cache" mode; a
// cache directory with zero sizes makes kopia dereference a nil cache).
func (c RepoConfig) cachingOptions(cfgFile string) *content.CachingOptions {
	if c.CacheMB <= 0 {
		return &content.CachingOptions{}
	}

	return &content.CachingOptions{
		CacheDirectory:         filepath.Join(filepath.Dir(cfgFile), "cache"),
		ContentCacheSizeBytes:  int64(c.CacheMB) << 20,
		MetadataCacheSizeBytes: int64(c.CacheMB) << 20,
	}
}

// openOptions are kopia's open options for cfg's repository.
func (r *Repos) openOptions(cfg RepoConfig) *repo.Options {
	return &repo.Options{
		DisableRepositoryLog: true,
		// Kopia's default calls os.Exit; an agent must survive and report instead.
		OnFatalError: func(err error) { r.log("kopia fatal error", "repo", cfg.Dir, "err", err) },
	}
}

// connectOpen writes kopia's client config cfgFile for the repository in st (mounted or
// reached over SFTP) and opens the repository through it; a failed open removes the config
// and kopia's caches and is tried once more. via (how the storage is reached: "" or " over SFTP") goes into its error messages.
//
// The config is written anew at every open, so it always names this storage type and
// connection and this CacheMB, and the repository is opened once. kopia's Connect opens the
// repository to check the password, closes it, and the caller then opens it again; each
// open derives the format key from the password (PBKDF2, 0.12–0.18 s of CPU on a 2-core
// VM; over SFTP also a login), and a first open is on a run's path: the agent that creates
// a job's repository, the one that pulls its first image, an agent taking over (issue 16).
func (r *Repos) connectOpen(ctx context.Context, st blob.Storage, cfg RepoConfig, cfgFile, pw, via string) (repo.Repository, error) {
	var err error
	for try := 0; try < 2; try++ {
		if err = writeClientConfig(ctx, st, cfg, cfgFile); err != nil {
			return nil, fmt.Errorf("connecting to repository %s%s: %w", cfg.Dir, via, err)
		}
		var rep repo.Repository
		if rep, err = repo.Open(ctx, cfgFile, pw, r.openOptions(cfg)); err == nil {
			return rep, nil
		}
		// Removes the config and its caches: a format blob cached before the repository
		// was made anew in place is not read again.
		_ = repo.Disconnect(ctx, cfgFile)
	}
	if errors.Is(err, repo.ErrInvalidPassword) {
		return nil, fmt.Errorf("%w: wrong password in %s for repository %s%s: the repository was made with another password; copy the password file from a host where the repository opens (the one that created it), mode 0600",
			ErrBadInput, cfg.PasswordFile, cfg.Dir, via)
	}
	return nil, fmt.Errorf("opening repository %s%s: %w", cfg.Dir, via, err)
}

// writeClientConfig writes kopia's client config cfgFile for the repository in st without
// opening it: the storage's connection info and this host's client options (as kopia's
// Connect writes them), then the cache settings through kopia's SetCachingOptions.
func writeClientConfig(ctx context.Context, st blob.Storage, cfg RepoConfig, cfgFile string) error {
	host, _ := os.Hostname()
	if host == "" {
		host = "replctl"
	}
	ci := st.ConnectionInfo()
	lc := repo.LocalConfig{
		Storage:       &ci,
		ClientOptions: repo.ClientOptions{Hostname: host, Username: "replctl"}.ApplyDefaults(ctx, "Repository in "+st.DisplayName()),
	}
	b, err := json.MarshalIndent(lc, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(cfgFile)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	dfd, err := openatRetry(unix.AT_FDCWD, dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dir, err)
	}
	defer closeFd(dfd)
	if err := writeFileAt(dfd, dir, filepath.Base(cfgFile), b, 0o600); err != nil {
		return err
	}
	return repo.SetCachingOptions(ctx, cfgFile, cfg.cachingOptions(cfgFile))
}

// repoInitialized reports whether dir holds a kopia repository.
func repoInitialized(ctx context.Context, dir string) (bool, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}

	st, err := filesystem.New(ctx, &filesystem.Options{Path: dir}, false)
	if err != nil {
		return false, fmt.Errorf("opening repository storage %s: %w", dir, err)
	}
	defer st.Close(ctx) //nolint:errcheck

	_, err = st.GetMetadata(ctx, format.KopiaRepositoryBlobID)
	if errors.Is(err, blob.ErrBlobNotFound) {
		return false, nil
	}

	if err != nil {
		return false, fmt.Errorf("checking repository %s: %w", dir, err)
	}

	return true, nil
}

// initRepo creates the repository without locks, safely against other agents
// doing the same at the same time (possibly on other hosts, over shared
// storage where flock may not be reliable):
//
//  1. The password file is created by link(2) of a complete temp file: link
//     fails if the name exists, so exactly one password wins and every agent
//     then reads that one.
//  2. The repository is initialized in a private temp dir next to Dir and
//     renamed to Dir. rename(2) of a directory only succeeds if Dir is
//     missing or empty, so exactly one initialization wins; a loser deletes
//     its temp dir and uses the winner's repository (same password).
func initRepo(ctx context.Context, cfg RepoConfig, log func(string, ...any)) error {
	parent := filepath.Dir(cfg.Dir)
	if err := os.MkdirAll(parent, dirMode); err != nil {
		return fmt.Errorf("creating parent of repository %s: %w", cfg.Dir, err)
	}

	if err := ensurePasswordFile(cfg.PasswordFile); err != nil {
		return err
	}

	pw, err := readPassword(cfg)
	if err != nil {
		return err
	}

	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(cfg.Dir)+".init-")
	if err != nil {
		return fmt.Errorf("creating temp dir for repository %s: %w", cfg.Dir, err)
	}
	defer os.RemoveAll(tmp) //nolint:errcheck // no-op after a successful rename

	st, err := filesystem.New(ctx, &filesystem.Options{Path: tmp}, true)
	if err != nil {
		return fmt.Errorf("creating repository storage in %s: %w", tmp, err)
	}

	err = repo.Initialize(ctx, st, newRepositoryOptions(), pw)
	st.Close(ctx) //nolint:errcheck

	if err != nil {
		return fmt.Errorf("initializing repository in %s: %w", tmp, err)
	}

	if err := os.Chmod(tmp, dirMode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}

	if err := os.Rename(tmp, cfg.Dir); err != nil {
		// Lost the race (or Dir is a non-empty non-repository).
		ok, ierr := repoInitialized(ctx, cfg.Dir)
		if ierr == nil && ok {
			log("repository initialized concurrently by another agent", "repo", cfg.Dir)
			return nil
		}

		return fmt.Errorf("%w: Repo.Dir: %s exists and is not a kopia repository (rename: %v)", ErrBadInput, cfg.Dir, err)
	}

	if err := syncDir(parent); err != nil {
		return err
	}

	log("initialized repository", "repo", cfg.Dir)

	return nil
}

// pbkdf2Algorithm is kopia's PBKDF2 key derivation (its name in kopia's
// internal crypto package, checked against the supported list in a test).
const pbkdf2Algorithm = "pbkdf2-sha256-600000"

// ensurePasswordFile creates the password file path (0600, in a directory created 0700
// if missing) unless it exists.
func ensurePasswordFile(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return nil
	}

	pw := make([]byte, 32)
	if _, err := rand.Read(pw); err != nil {
		return fmt.Errorf("generating password: %w", err)
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating the directory of password file %s: %w", path, err)
	}

	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-password-*")
	if err != nil {
		return fmt.Errorf("creating password file %s: %w", path, err)
	}

	tmp := f.Name()
	defer os.Remove(tmp) //nolint:errcheck

	_, err = f.WriteString(hex.EncodeToString(pw) + "\n")
	if err == nil {
		err = f.Chmod(0o600)
	}

	if err == nil {
		err = f.Sync()
	}

	if cerr := f.Close(); err == nil {
		err = cerr
	}

	if err != nil {
		return fmt.Errorf("writing password file %s: %w", tmp, err)
	}

	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating password file %s: %w", path, err)
	}

	return syncDir(filepath.Dir(path))
}

// readPassword reads cfg's password file, which must be private (secret.ReadFile).
func readPassword(cfg RepoConfig) (string, error) {
	path := cfg.PasswordFile
	b, err := secret.ReadFile(path, "repository password file")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("%w: password file %s of repository %s does not exist on this host%s", ErrNotFound, path, cfg.Dir, legacyPasswordHint(cfg))
	case errors.Is(err, secret.ErrInsecure):
		return "", fmt.Errorf("%w: %w", ErrBadInput, err)
	case err != nil:
		return "", err
	}

	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("%w: password file %s is empty", ErrBadInput, path)
	}

	return pw, nil
}

// legacyPasswordHint tells how to migrate when the old default password file,
// <Dir>.password beside the repository, is still there; "" otherwise. Over SFTP the old
// file is on the remote storage: the hint names it without looking.
func legacyPasswordHint(cfg RepoConfig) string {
	old := cfg.Dir + ".password"
	if len(cfg.Remote) > 0 {
		return fmt.Sprintf("; releases before this one kept it beside the repository (%s on host %s): copy that file here (mode 0600), then delete it from the storage",
			old, cfg.Remote[0].Name)
	}

	if _, err := os.Lstat(old); err != nil {
		return "; copy it (mode 0600) from a host that has it"
	}

	return fmt.Sprintf("; the old default %s beside the repository is there: move it (install -m 600 %s %s && rm %s), and the same file to every host using the repository",
		old, old, cfg.PasswordFile, old)
}

// newRepositoryOptions is the format of every repository replctl creates, on a mounted
// filesystem or over SFTP.
func newRepositoryOptions() *repo.NewRepositoryOptions {
	return &repo.NewRepositoryOptions{
		// kopia's default (scrypt-65536-8-1) allocates 64 MiB at every open,
		// the largest part of an agent's peak RSS. The password is 256 random
		// bits, so a memory-hard key derivation adds no strength.
		FormatBlockKeyDerivationAlgorithm: pbkdf2Algorithm,
		BlockFormat: format.ContentFormat{
			Hash:       "BLAKE3-256",
			Encryption: "AES256-GCM-HMAC-SHA256",
			// kopia's smallest pack size (default 20 MiB): a push holds a
			// pack being filled and packs being written per content kind, so
			// this bounds an agent's memory (and a pull over SFTP's copies of
			// packs, pack_spool.go).
			MutableParameters: format.MutableParameters{MaxPackSize: 10 << 20},
		},
	}
}
