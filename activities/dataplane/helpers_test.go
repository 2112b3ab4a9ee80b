package dataplane

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/snapshot"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// env is one test setup: a repository, a client dir, a source and a target.
type env struct {
	t      *testing.T
	repos  *Repos
	cfg    RepoConfig
	src    string
	target string
	job    string
	ds     string
	epoch  int64
}

func newEnv(t *testing.T) *env {
	t.Helper()

	base := t.TempDir()
	e := &env{
		t:      t,
		repos:  NewRepos(func(msg string, kv ...any) { t.Logf("%s %v", msg, kv) }),
		cfg:    RepoConfig{Dir: filepath.Join(base, "repo"), PasswordFile: filepath.Join(base, "secrets", "repo.password"), ClientDir: filepath.Join(base, "client")},
		src:    filepath.Join(base, "src"),
		target: filepath.Join(base, "target"),
		job:    "job1",
		ds:     "data/set1",
	}

	require.NoError(t, os.MkdirAll(e.src, 0o755))
	require.NoError(t, os.MkdirAll(e.target, 0o755))
	t.Cleanup(func() { require.NoError(t, e.repos.Close()) })
	t.Cleanup(WaitTrash) // before t.TempDir's removal: the sweeper may still be deleting

	return e
}

func (e *env) push() PushResult {
	e.t.Helper()

	res, err := e.repos.Push(context.Background(), PushRequest{
		Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds,
		Tags: map[string]string{"run": "r1", "agent": "a1"},
	}, nil)
	require.NoError(e.t, err)

	return res
}

// image opens the repository and loads the job's image id.
func (e *env) image(id string) (repo.DirectRepository, *snapshot.Manifest) {
	e.t.Helper()
	ctx := context.Background()
	rep, err := e.repos.open(ctx, e.cfg, false)
	require.NoError(e.t, err)
	man, err := loadImage(ctx, rep, id, e.job, e.ds)
	require.NoError(e.t, err)
	return rep, man
}

func (e *env) pullReq(image, name string) PullRequest {
	e.epoch++

	return PullRequest{
		Repo: e.cfg, Job: e.job, ImageID: image, TargetRoot: e.target, Dataset: e.ds,
		ReplicaName: name, Epoch: e.epoch, Agent: "agent-a", Verify: VerifyFull,
	}
}

func (e *env) pull(image, name string) PullResult {
	e.t.Helper()

	res, err := e.repos.Pull(context.Background(), e.pullReq(image, name), nil)
	require.NoError(e.t, err)

	return res
}

// cancelAfterRestored returns a context that is cancelled once a pull has restored n files
// (the hook stays until the test clears e.repos.hooks).
func (e *env) cancelAfterRestored(n int64) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	e.repos.hooks.afterFileRestored = func(k int64) {
		if k == n {
			cancel()
		}
	}

	return ctx
}

func (e *env) link() string { return filepath.Join(e.target, e.ds) }

// replicaDir resolves T/D to the replica directory it points to.
func (e *env) replicaDir() string {
	e.t.Helper()

	p, err := filepath.EvalSymlinks(e.link())
	require.NoError(e.t, err)

	return p
}

var baseTime = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

func writeFile(t *testing.T, p string, data []byte, mode os.FileMode, mtime time.Time) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, data, mode))
	require.NoError(t, os.Chmod(p, mode))
	require.NoError(t, os.Chtimes(p, mtime, mtime))
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()

	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)

	return b
}

// makeTree builds the round-trip test tree in dir.
func makeTree(t *testing.T, dir string) {
	t.Helper()

	writeFile(t, filepath.Join(dir, "top.txt"), []byte("hello\n"), 0o644, baseTime)
	writeFile(t, filepath.Join(dir, "empty"), nil, 0o600, baseTime.Add(time.Second))
	writeFile(t, filepath.Join(dir, "big.bin"), randBytes(t, 3<<20), 0o600, baseTime.Add(2*time.Second))
	writeFile(t, filepath.Join(dir, "bin", "tool.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755, baseTime.Add(3*time.Second))
	writeFile(t, filepath.Join(dir, "a", "b", "c", "deep.txt"), []byte("deep"), 0o640, baseTime.Add(4*time.Second))
	writeFile(t, filepath.Join(dir, "a", "b", "sibling.txt"), []byte("sib"), 0o644, baseTime.Add(5*time.Second))
	writeFile(t, filepath.Join(dir, "owned.txt"), []byte("owner test"), 0o644, baseTime.Add(6*time.Second))

	if os.Geteuid() == 0 {
		require.NoError(t, os.Chown(filepath.Join(dir, "owned.txt"), 1234, 5678))
	}

	require.NoError(t, os.MkdirAll(filepath.Join(dir, "emptydir"), 0o750))
	require.NoError(t, os.Symlink("a/b/sibling.txt", filepath.Join(dir, "link-rel")))
	require.NoError(t, os.Symlink("/nonexistent/target", filepath.Join(dir, "link-dangling")))

	for i := range 20 {
		writeFile(t, filepath.Join(dir, "many", fmt.Sprintf("f%02d.txt", i)), []byte(fmt.Sprintf("file %d\n", i)), 0o644, baseTime.Add(time.Duration(i)*time.Minute))
	}

	setTimesDeepestFirst(t, dir, baseTime.Add(-time.Hour))
}

// setTimesDeepestFirst sets every directory's mtime (children first) and
// symlink mtimes, so directory mtimes are deterministic.
func setTimesDeepestFirst(t *testing.T, dir string, mt time.Time) {
	t.Helper()

	var dirs []string

	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)

		if d.IsDir() {
			dirs = append(dirs, p)
		} else if d.Type()&fs.ModeSymlink != 0 {
			ts := unix.NsecToTimespec(mt.Add(7 * time.Millisecond).UnixNano())
			require.NoError(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
		}

		return nil
	}))

	for i := len(dirs) - 1; i >= 0; i-- {
		require.NoError(t, os.Chtimes(dirs[i], mt, mt))
	}
}

// entryInfo is what a replica must reproduce for one path.
type entryInfo struct {
	Type   string
	Mode   os.FileMode
	Size   int64
	MTime  int64
	UID    uint32
	GID    uint32
	SHA256 string
	Target string
}

// walkTree describes every entry of dir (root included as ".").
func walkTree(t *testing.T, dir string) map[string]entryInfo {
	t.Helper()

	out := map[string]entryInfo{}

	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)

		rel, err := filepath.Rel(dir, p)
		require.NoError(t, err)

		st, err := os.Lstat(p)
		require.NoError(t, err)

		sys := st.Sys().(*syscall.Stat_t)
		ei := entryInfo{Mode: st.Mode(), MTime: st.ModTime().UnixNano(), UID: sys.Uid, GID: sys.Gid}

		switch {
		case st.IsDir():
			ei.Type = "dir"
		case st.Mode()&fs.ModeSymlink != 0:
			ei.Type = "symlink"
			ei.Target, err = os.Readlink(p)
			require.NoError(t, err)
		default:
			ei.Type = "file"
			ei.Size = st.Size()
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			h := sha256.Sum256(b)
			ei.SHA256 = hex.EncodeToString(h[:])
		}

		out[rel] = ei

		return nil
	}))

	return out
}

func requireSameTree(t *testing.T, want, got string) {
	t.Helper()

	w, g := walkTree(t, want), walkTree(t, got)

	var wk, gk []string
	for k := range w {
		wk = append(wk, k)
	}

	for k := range g {
		gk = append(gk, k)
	}

	sort.Strings(wk)
	sort.Strings(gk)
	require.Equal(t, wk, gk, "tree names differ")

	for _, k := range wk {
		require.Equal(t, w[k], g[k], "entry %s differs", k)
	}
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()

	st, err := os.Lstat(p)
	require.NoError(t, err)

	return st.Sys().(*syscall.Stat_t).Ino
}

func sha(t *testing.T, p string) string {
	t.Helper()

	b, err := os.ReadFile(p)
	require.NoError(t, err)

	h := sha256.Sum256(b)

	return hex.EncodeToString(h[:])
}

// makeManyFiles creates n small files spread over subdirectories.
func makeManyFiles(t *testing.T, dir string, n, size int) {
	t.Helper()

	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("d%03d", i/100), fmt.Sprintf("f%05d", i))
		b := []byte(strings.Repeat(fmt.Sprintf("%08d", i), size/8+1))[:size]
		writeFile(t, p, b, 0o644, baseTime)
	}
}
