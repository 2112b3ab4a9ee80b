package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/blob/retrying"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/activities/hostexec"
	"github.com/replctl/replctl/activities/hostexec/sshtest"
)

// remoteHost describes sshd s as a host attached to the repository storage;
// both test servers see the same files, as two hosts attached to one array do.
func remoteHost(name string, s *sshtest.Server, dir string) RemoteHost {
	return RemoteHost{Name: name, Target: hostexec.Target{Address: s.Addr, User: s.User, KeyFile: s.KeyFile, KnownHostsFile: s.KnownHostsFile, ConnectTimeout: 5 * time.Second}, Dir: dir}
}

func accepted(s *sshtest.Server) int { return strings.Count(s.Log(), "Accepted publickey") }

// TestRemoteRepository pushes and pulls through real sshd servers: the
// repository is created over SFTP, an agent attached to the storage reads what
// came over SFTP (and the reverse), and when the first host is down the
// second is used; with both down the error names each host and why.
func TestRemoteRepository(t *testing.T) {
	b1, b2 := sshtest.Start(t), sshtest.Start(t)
	e := newEnv(t)
	dir := e.cfg.Dir
	local := e.cfg
	remote := e.cfg
	remote.Remote = []RemoteHost{remoteHost("b1", b1, dir), remoteHost("b2", b2, dir)}
	e.cfg = remote

	makeTree(t, e.src)
	pres := e.push()
	require.EqualValues(t, 27, pres.Files)
	require.Positive(t, accepted(b1), "the first host in order was used")
	require.Zero(t, accepted(b2), "the second host was not needed")

	// Created over SFTP: the repository; its password file is a private file on this host,
	// none on the repository storage.
	st, err := os.Stat(e.cfg.PasswordFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	_, err = os.Lstat(dir + ".password")
	require.True(t, os.IsNotExist(err), "no password file beside the repository: %v", err)
	_, err = os.Stat(filepath.Join(dir, "kopia.repository.f"))
	require.NoError(t, err)

	res := e.pull(pres.ImageID, "r1")
	require.True(t, res.Verified)
	requireSameTree(t, e.src, e.replicaDir())

	// An agent attached to the storage opens the same repository directly.
	direct := NewRepos(nil)
	defer direct.Close()
	require.NoError(t, direct.VerifyReplica(context.Background(), local, e.job, e.ds, pres.ImageID, e.replicaDir(), 0))
	writeFile(t, filepath.Join(e.src, "added-locally.txt"), []byte("local push\n"), 0o644, baseTime)
	lres, err := direct.Push(context.Background(), PushRequest{Repo: local, Job: e.job, SourceDir: e.src, Dataset: e.ds}, nil)
	require.NoError(t, err)

	// b1 goes down: a fresh agent reaches the repository through b2 and pulls
	// the image the local agent pushed.
	b1.Stop()
	before := accepted(b2)
	viaB2 := NewRepos(func(msg string, kv ...any) { t.Logf("%s %v", msg, kv) })
	defer viaB2.Close()
	e.repos = viaB2
	res = e.pull(lres.ImageID, "r2")
	require.True(t, res.Verified)
	require.Positive(t, res.Linked, "unchanged files are hard-linked from r1")
	requireSameTree(t, e.src, e.replicaDir())
	require.Greater(t, accepted(b2), before, "b2 served the pull")

	// Both down: the error says which hosts were tried, in order, and why.
	b2.Stop()
	down := NewRepos(nil)
	defer down.Close()
	_, err = down.Push(context.Background(), PushRequest{Repo: remote, Job: e.job, SourceDir: e.src, Dataset: e.ds}, nil)
	require.Error(t, err)
	t.Logf("both hosts down: %v", err)
	msg := err.Error()
	require.Contains(t, msg, "tried in order: b1 (")
	require.Contains(t, msg, "; b2 (")
	require.Contains(t, msg, "connection refused")
	require.Less(t, strings.Index(msg, "b1 ("), strings.Index(msg, "b2 ("))
}

// TestRemoteHostKeyEnforced: a host whose key is not the one in known_hosts is
// refused (never trusted), and the next host is used.
func TestRemoteHostKeyEnforced(t *testing.T) {
	b1, b2 := sshtest.Start(t), sshtest.Start(t)
	e := newEnv(t)
	bad := remoteHost("b1", b1, e.cfg.Dir)
	// b2's known_hosts has no entry for b1's address.
	bad.KnownHostsFile = b2.KnownHostsFile
	e.cfg.Remote = []RemoteHost{bad}
	makeTree(t, e.src)

	_, err := e.repos.Push(context.Background(), PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds}, nil)
	require.Error(t, err)
	t.Logf("unknown host key: %v", err)
	require.Contains(t, err.Error(), "b1 (")
	require.Contains(t, err.Error(), "known_hosts")
	require.Zero(t, accepted(b1), "no login to a host with an unknown key")

	e.cfg.Remote = []RemoteHost{bad, remoteHost("b2", b2, e.cfg.Dir)}
	pres := e.push()
	require.Positive(t, accepted(b2))
	res := e.pull(pres.ImageID, "r1")
	requireSameTree(t, e.src, e.replicaDir())
	require.True(t, res.Verified)
}

// sessionPIDs lists the per-connection sshd processes of s (children of the listener).
func sessionPIDs(t *testing.T, s *sshtest.Server) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", s.Pid(), s.Pid()))
	require.NoError(t, err)
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		require.NoError(t, err)
		pids = append(pids, pid)
	}
	return pids
}

// TestRemoteReconnectsAfterLostConnection: an open repository whose host dies (listener
// and sessions gone) is used again: the lost connection is re-dialled, hosts in order,
// and the second host serves the next push.
func TestRemoteReconnectsAfterLostConnection(t *testing.T) {
	b1, b2 := sshtest.Start(t), sshtest.Start(t)
	e := newEnv(t)
	e.cfg.Remote = []RemoteHost{remoteHost("b1", b1, e.cfg.Dir), remoteHost("b2", b2, e.cfg.Dir)}
	makeTree(t, e.src)
	e.push()
	require.Zero(t, accepted(b2))

	sessions := sessionPIDs(t, b1)
	require.NotEmpty(t, sessions, "the open repository holds a session on b1")
	b1.Stop()
	for _, pid := range sessions {
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	}

	writeFile(t, filepath.Join(e.src, "after-loss.txt"), []byte("second push\n"), 0o644, baseTime)
	pres := e.push() // the same Repos: its repository stays open, its connection is redialled
	require.Positive(t, accepted(b2), "b2 serves after b1 is lost")
	res := e.pull(pres.ImageID, "r1")
	require.True(t, res.Verified)
	requireSameTree(t, e.src, e.replicaDir())
}

// The hosts are stored in the agent's kopia client config: their JSON keys must not change.
func TestRemoteHostStoredShape(t *testing.T) {
	h := RemoteHost{Name: "b1", Target: hostexec.Target{Address: "b1:22", User: "u", KeyFile: "/k", KnownHostsFile: "/kh", ConnectTimeout: time.Second}, Dir: "/r"}
	b, err := json.Marshal(h)
	require.NoError(t, err)
	require.JSONEq(t, `{"name":"b1","address":"b1:22","user":"u","keyFile":"/k","knownHostsFile":"/kh","connectTimeout":1000000000,"dir":"/r"}`, string(b))
	var back RemoteHost
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, h, back)
	h.ConnectTimeout = 0
	b, err = json.Marshal(h)
	require.NoError(t, err)
	require.NotContains(t, string(b), "connectTimeout")
}

// TestPackFilesOverSFTP: a repository reached over SFTP reads pack ranges through remote
// files kept open: the same bytes as reads that open the file each time, far fewer opens
// than reads, at most packFilesOpen open; after the host's sessions are killed, reads still
// return the right bytes (dead handles dropped, the link dialled again).
func TestPackFilesOverSFTP(t *testing.T) {
	b1 := sshtest.Start(t)
	e := newEnv(t)
	e.cfg.Remote = []RemoteHost{remoteHost("b1", b1, e.cfg.Dir)}
	makeManyFiles(t, e.src, 300, 3000)
	img := e.push().ImageID
	require.True(t, e.pull(img, "r1").Verified, "pulled over SFTP through open pack files")
	requireSameTree(t, e.src, e.replicaDir())

	ctx := context.Background()
	opts := &remoteOptions{Hosts: e.cfg.Remote}
	plain, err := dialRemoteStorage(ctx, opts, false)
	require.NoError(t, err)
	t.Cleanup(func() { _ = plain.Close(ctx) })
	spool := t.TempDir()
	st, err := dialRemoteStorage(ctx, &remoteOptions{Hosts: e.cfg.Remote, Spool: spool}, false)
	require.NoError(t, err)
	var opens atomic.Int64
	pf := withPackFiles(st, func(ctx context.Context, id blob.ID) (packHandle, error) {
		opens.Add(1)
		return st.openPack(ctx, id)
	}, "")
	t.Cleanup(func() { _ = pf.Close(ctx) })

	packs := packsOf(t, plain)
	readRangesAlike(t, plain, pf, packs) // 800 reads
	require.Positive(t, opens.Load())
	require.LessOrEqual(t, opens.Load(), int64(4*len(packs)), "a remote file opened for each read")
	pf.mu.Lock()
	open := len(pf.files)
	pf.mu.Unlock()
	require.Positive(t, open, "no remote pack file was kept open")
	require.LessOrEqual(t, open, packFilesOpen)
	require.Positive(t, spooled(pf), "no pack read often was copied (pack_spool.go)")
	readRangesAlike(t, plain, pf, packs) // from the copies
	_, err = readBlob(pf, "p0000000000000000000000000000000", 0, 10)
	require.ErrorIs(t, err, blob.ErrBlobNotFound)
	last := packs[len(packs)-1]
	_, err = readBlob(pf, last.BlobID, last.Length-5, 10)
	require.ErrorIs(t, err, blob.ErrInvalidRange)

	// The host's sessions die with the handles open: as in the agent, kopia's retrying
	// storage is above, and the reads come back right over a new session.
	before := accepted(b1)
	for _, pid := range sessionPIDs(t, b1) {
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	}
	readRangesAlike(t, retrying.NewWrapper(plain), retrying.NewWrapper(pf), packs)
	require.Greater(t, accepted(b1), before, "the link was dialled again")
	require.NoError(t, pf.Close(ctx))
	left, err := os.ReadDir(spool)
	require.NoError(t, err)
	require.Empty(t, left, "a pack's copy was left behind")
}

// spooled waits for the copies under way of pf's open remote packs and counts those made.
func spooled(pf *packFiles) int {
	pf.mu.Lock()
	var spools []*packSpool
	for _, f := range pf.files {
		spools = append(spools, f.h.(*sftpPack).spool) //nolint:forcetypeassert // remote packs only
	}
	pf.mu.Unlock()
	n := 0
	for _, s := range spools {
		s.mu.Lock()
		done := s.done
		s.mu.Unlock()
		if done != nil {
			<-done
		}
		if stateOf(s) == spoolReady {
			n++
		}
	}
	return n
}

// TestRemoteOpenLogins: the SSH logins (about ten round trips each) of opening a
// repository over SFTP on an agent that has not opened it since it started: two, one for the
// checks (and the client config's connection info) and one for the repository kept open,
// whether or not an earlier open wrote a client config, and whatever connection that config
// named (here the host's known_hosts moved). Five before the checks and kopia's connect
// shared a link; three while kopia's connect opened the repository once more to check the
// config it wrote. A password kopia cannot open with is refused as the wrong password.
func TestRemoteOpenLogins(t *testing.T) {
	b1 := sshtest.Start(t)
	e := newEnv(t)
	e.cfg.ClientDir = filepath.Join(t.TempDir(), "pushing-agent")
	e.cfg.Remote = []RemoteHost{remoteHost("b1", b1, e.cfg.Dir)}
	makeTree(t, e.src)
	e.push()
	cfg := e.cfg // this agent's client dir holds no config yet
	cfg.ClientDir = filepath.Join(t.TempDir(), "this-agent")

	logins := func(cfg RepoConfig) int {
		t.Helper()
		repos := NewRepos(nil)
		defer func() { _ = repos.Close() }()
		before := accepted(b1)
		_, err := repos.open(context.Background(), cfg, false)
		require.NoError(t, err)
		return accepted(b1) - before
	}
	require.Equal(t, 2, logins(cfg), "first open on this agent")
	require.Equal(t, 2, logins(cfg), "open again, a config stored")

	moved := filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(moved, must(os.ReadFile(b1.KnownHostsFile)), 0o600))
	cfg.Remote[0].KnownHostsFile = moved
	require.Equal(t, 2, logins(cfg), "a stored config of another connection")
	stored := must(filepath.Glob(filepath.Join(cfg.ClientDir, "repo-sftp-*", "repository.config")))
	require.Len(t, stored, 1)
	lc, err := repo.LoadConfigFromFile(stored[0])
	require.NoError(t, err)
	require.Contains(t, string(must(json.Marshal(lc.Storage.Config))), moved, "the config names the connection of this open")

	// A password from another repository: the wrong password.
	pwFile := filepath.Join(t.TempDir(), "other.password")
	require.NoError(t, os.WriteFile(pwFile, []byte("another password of forty-four characters..."), 0o600))
	cfg.PasswordFile = pwFile
	_, err = NewRepos(nil).open(context.Background(), cfg, false)
	require.ErrorIs(t, err, ErrBadInput)
	require.ErrorContains(t, err, "wrong password")
}
