package dataplane

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestPushPullRoundTrip(t *testing.T) {
	e := newEnv(t)
	makeTree(t, e.src)

	var pushProgress []Progress

	pres, err := e.repos.Push(context.Background(), PushRequest{
		Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds,
	}, func(p Progress) { pushProgress = append(pushProgress, p) })
	require.NoError(t, err)
	require.NotEmpty(t, pres.ImageID)
	require.NotEmpty(t, pres.RootID)
	require.EqualValues(t, 27, pres.Files)
	require.NotEmpty(t, pushProgress, "push reports progress at least once (at the end)")

	// The password file was created where the config says (on this host, not beside the
	// repository), private, in a private directory.
	st, err := os.Stat(e.cfg.PasswordFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	st, err = os.Stat(filepath.Dir(e.cfg.PasswordFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	_, err = os.Lstat(e.cfg.Dir + ".password")
	require.ErrorIs(t, err, fs.ErrNotExist, "nothing beside the repository")

	var phases []string

	res, err := e.repos.Pull(context.Background(), e.pullReq(pres.ImageID, "r1"), func(p Progress) {
		phases = append(phases, p.Phase)
	})
	require.NoError(t, err)
	require.True(t, res.Verified)
	require.EqualValues(t, 27, res.Files)
	require.EqualValues(t, 0, res.Linked)
	require.Equal(t, e.link(), res.LinkPath)
	require.Equal(t, "publish", phases[len(phases)-1])

	// T/D is a relative symlink to the replica.
	target, err := os.Readlink(e.link())
	require.NoError(t, err)
	require.False(t, filepath.IsAbs(target))
	require.Equal(t, res.ReplicaPath, e.replicaDir())

	requireSameTree(t, e.src, e.replicaDir())

	reps, err := ListReplicas(e.target, e.ds)
	require.NoError(t, err)
	require.Len(t, reps, 1)
	require.True(t, reps[0].Current)
	require.Equal(t, "r1", reps[0].Name)

	ep, err := OpenFence(e.target, e.ds).Current()
	require.NoError(t, err)
	require.EqualValues(t, 1, ep)

	// The exported verifier agrees; a retry of the same pull is idempotent.
	require.NoError(t, e.repos.VerifyReplica(context.Background(), e.cfg, e.job, e.ds, pres.ImageID, e.replicaDir(), 0))

	req := e.pullReq(pres.ImageID, "r1")
	req.Epoch = 1
	again, err := e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	require.True(t, again.Verified)

	// A try that moved the replica into place but failed before swapping
	// the link is completed by its retry.
	require.NoError(t, os.Remove(e.link()))
	again, err = e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	require.Equal(t, res.ReplicaPath, e.replicaDir())

	// A symlink at T/D that points elsewhere is not ours: never replaced.
	require.NoError(t, os.Remove(e.link()))
	require.NoError(t, os.Symlink("../../elsewhere", e.link()))
	_, err = e.repos.Pull(context.Background(), req, nil)
	require.ErrorIs(t, err, ErrBadInput)
	require.Contains(t, err.Error(), "is not a replctl replica link")
	target, err = os.Readlink(e.link())
	require.NoError(t, err)
	require.Equal(t, "../../elsewhere", target)

	// A second Repos (another agent, same client dir) opens the existing repository.
	r2 := NewRepos(nil)
	defer r2.Close()
	require.NoError(t, r2.VerifyReplica(context.Background(), e.cfg, e.job, e.ds, pres.ImageID, res.ReplicaPath, 0))
}

func TestIncrementalPullHardLinks(t *testing.T) {
	e := newEnv(t)
	makeTree(t, e.src)

	p1 := e.push()
	r1 := e.pull(p1.ImageID, "r1")
	rep1 := r1.ReplicaPath
	before := walkTree(t, rep1)

	// change 1 (same size, new content), delete 1, add 1, chmod 1
	writeFile(t, filepath.Join(e.src, "top.txt"), []byte("HELLO\n"), 0o644, baseTime.Add(time.Hour))
	require.NoError(t, os.Remove(filepath.Join(e.src, "a", "b", "sibling.txt")))
	writeFile(t, filepath.Join(e.src, "a", "new.txt"), []byte("new file"), 0o644, baseTime)
	require.NoError(t, os.Chmod(filepath.Join(e.src, "bin", "tool.sh"), 0o700))
	setTimesDeepestFirst(t, e.src, baseTime.Add(-2*time.Hour))

	p2 := e.push()
	require.NotEqual(t, p1.ImageID, p2.ImageID)
	require.Greater(t, p2.Reused, int64(20), "unchanged files are not re-read by the second push")

	r2 := e.pull(p2.ImageID, "r2")
	require.True(t, r2.Verified)
	rep2 := r2.ReplicaPath
	requireSameTree(t, e.src, rep2)

	// 27 files: 1 deleted, 1 added => 27; changed, chmodded and new are written.
	require.EqualValues(t, 27, r2.Files)
	require.EqualValues(t, 24, r2.Linked)
	require.EqualValues(t, 3+2, r2.Restored, "3 files + 2 symlinks written")

	for _, rel := range []string{"big.bin", "empty", "many/f07.txt", "a/b/c/deep.txt", "owned.txt"} {
		require.Equal(t, inode(t, filepath.Join(rep1, rel)), inode(t, filepath.Join(rep2, rel)), "%s must be a hard link", rel)
	}

	require.NotEqual(t, inode(t, filepath.Join(rep1, "top.txt")), inode(t, filepath.Join(rep2, "top.txt")))
	require.NotEqual(t, inode(t, filepath.Join(rep1, "bin/tool.sh")), inode(t, filepath.Join(rep2, "bin/tool.sh")))
	require.NoFileExists(t, filepath.Join(rep2, "a", "b", "sibling.txt"))

	st, err := os.Stat(filepath.Join(rep2, "bin", "tool.sh"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), st.Mode().Perm())

	// The old replica is untouched (content, modes, mtimes, everything).
	require.Equal(t, before, walkTree(t, rep1))
	require.Equal(t, "hello\n", string(must(os.ReadFile(filepath.Join(rep1, "top.txt")))))

	// "changed" verification skips content of trusted links but still checks metadata.
	req := e.pullReq(p2.ImageID, "r3")
	req.Verify = VerifyChanged
	r3, err := e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	require.EqualValues(t, 27, r3.Linked)
	requireSameTree(t, e.src, r3.ReplicaPath)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}

	return v
}

func TestAtomicPublish(t *testing.T) {
	e := newEnv(t)

	const files = 30

	writeGen := func(gen int) {
		for i := range files {
			writeFile(t, filepath.Join(e.src, fmt.Sprintf("d%d", i%3), fmt.Sprintf("f%02d", i)),
				[]byte(fmt.Sprintf("gen %d", gen)), 0o644, baseTime.Add(time.Duration(gen)*time.Second))
		}

		writeFile(t, filepath.Join(e.src, "MARKER"), []byte(fmt.Sprintf("gen %d", gen)), 0o644, baseTime.Add(time.Duration(gen)*time.Second))
	}

	writeGen(0)
	e.pull(e.push().ImageID, "gen00")

	var (
		stop     atomic.Bool
		reads    atomic.Int64
		failures []string
		mu       sync.Mutex
		wg       sync.WaitGroup
	)

	wg.Add(1)

	go func() {
		defer wg.Done()

		for !stop.Load() {
			// T/D must always exist once published.
			target, err := os.Readlink(e.link())
			if err != nil {
				mu.Lock()
				failures = append(failures, "readlink: "+err.Error())
				mu.Unlock()

				return
			}

			dir := filepath.Join(filepath.Dir(e.link()), target)

			marker, err := os.ReadFile(filepath.Join(dir, "MARKER"))
			if err != nil {
				continue // replica removed by retention while we looked: not a mix
			}

			ok := true

			for i := range files {
				b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("d%d", i%3), fmt.Sprintf("f%02d", i)))
				if err != nil {
					ok = false
					break
				}

				if string(b) != string(marker) {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s: file %d has %q, marker %q", target, i, b, marker))
					mu.Unlock()
				}
			}

			if ok {
				reads.Add(1)
			}
		}
	}()

	for gen := 1; gen <= 6; gen++ {
		writeGen(gen)
		req := e.pullReq(e.push().ImageID, fmt.Sprintf("gen%02d", gen))
		req.Keep.Last = 2
		_, err := e.repos.Pull(context.Background(), req, nil)
		require.NoError(t, err)
	}

	stop.Store(true)
	wg.Wait()

	require.Empty(t, failures)
	require.Positive(t, reads.Load())
	require.Equal(t, "gen 6", string(must(os.ReadFile(filepath.Join(e.link(), "MARKER")))))
	t.Logf("consistent reads during publishes: %d", reads.Load())
}

func TestFencing(t *testing.T) {
	e := newEnv(t)
	makeTree(t, e.src)
	img := e.push().ImageID

	require.NoError(t, OpenFence(e.target, e.ds).Advance(5, "newer-agent"))

	req := e.pullReq(img, "r1")
	req.Epoch = 4
	res, err := e.repos.Pull(context.Background(), req, nil)
	require.ErrorIs(t, err, ErrFenced)
	require.Contains(t, err.Error(), "newer-agent")
	require.NoFileExists(t, e.link())
	require.NoDirExists(t, res.ReplicaPath)

	// Advance refuses to go back, accepts equal.
	require.ErrorIs(t, OpenFence(e.target, e.ds).Advance(4, "x"), ErrFenced)
	require.NoError(t, OpenFence(e.target, e.ds).Advance(5, "again"))

	// A passed write deadline fences too.
	req = e.pullReq(img, "r2")
	req.Epoch = 6
	req.WriteDeadline = time.Now().Add(-time.Second)
	_, err = e.repos.Pull(context.Background(), req, nil)
	require.ErrorIs(t, err, ErrFenced)
	require.Contains(t, err.Error(), "write deadline passed")
	require.NoFileExists(t, e.link())
}

func TestFencedMidRestore(t *testing.T) {
	e := newEnv(t)
	makeManyFiles(t, e.src, 1500, 512)
	img := e.push().ImageID

	fence := OpenFence(e.target, e.ds)
	advanced := make(chan error, 1)

	e.repos.hooks.afterFileRestored = func(n int64) {
		if n == 20 {
			go func() { advanced <- fence.Advance(100, "usurper") }()
			assert.NoError(t, <-advanced)
		}
	}
	defer func() { e.repos.hooks = testHooks{} }()

	req := e.pullReq(img, "r1")
	req.Parallel = 2
	res, err := e.repos.Pull(context.Background(), req, nil)
	require.ErrorIs(t, err, ErrFenced)
	require.Contains(t, err.Error(), "usurper")
	// One check interval plus what the writers had in flight; a loaded machine lets a few
	// dozen more files through before a writer looks again (seen: 291 of 1500).
	require.Less(t, res.Restored, int64(20+fenceCheckFiles+64), "stops within about one fence check interval")
	require.NoFileExists(t, e.link())
	require.NoDirExists(t, res.ReplicaPath)
	require.DirExists(t, res.StagingPath, "staging is kept for a resume")
}

func TestResumeAfterCancel(t *testing.T) {
	e := newEnv(t)
	makeManyFiles(t, e.src, 600, 2048)
	writeFile(t, filepath.Join(e.src, "big.bin"), randBytes(t, 5<<20), 0o600, baseTime)
	img := e.push().ImageID

	req1 := e.pullReq(img, "r1")
	res1, err := e.repos.Pull(e.cancelAfterRestored(250), req1, nil)
	require.ErrorIs(t, err, context.Canceled)
	require.DirExists(t, res1.StagingPath)
	require.NoFileExists(t, e.link())

	e.repos.hooks = testHooks{}

	req2 := e.pullReq(img, "r1")
	req2.ResumeFrom = res1.StagingPath
	res2, err := e.repos.Pull(context.Background(), req2, nil)
	require.NoError(t, err)
	require.True(t, res2.Verified)
	require.GreaterOrEqual(t, res2.Linked, int64(240))
	require.Less(t, res2.Restored, int64(601-240))
	require.Equal(t, res2.Files, res2.Linked+res2.Restored)
	requireSameTree(t, e.src, e.replicaDir())

	// The stale attempt's staging was cleaned up after the publish.
	require.NoDirExists(t, res1.StagingPath)
}

func TestResumeIgnoresTamperedFiles(t *testing.T) {
	e := newEnv(t)
	makeManyFiles(t, e.src, 50, 1000)
	img := e.push().ImageID

	// A fake "stale attempt" staging dir whose files have the right metadata
	// but one of them the wrong content: it must not be linked.
	l := newLayout(e.target, e.ds)
	stale := l.stagingDir("old", 1)
	require.NoError(t, os.MkdirAll(l.staging, 0o755))
	require.NoError(t, os.CopyFS(stale, os.DirFS(e.src)))
	setTimesLikeSource(t, e.src, stale)

	bad := filepath.Join(stale, "d000", "f00007")
	st, err := os.Stat(bad)
	require.NoError(t, err)
	f, err := os.OpenFile(bad, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("X"), 10)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Chtimes(bad, st.ModTime(), st.ModTime()))

	req := e.pullReq(img, "r1")
	req.Epoch = 2
	req.ResumeFrom = stale
	res, err := e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	require.EqualValues(t, 49, res.Linked)
	require.EqualValues(t, 1, res.Restored)
	requireSameTree(t, e.src, e.replicaDir())
}

// setTimesLikeSource copies modes, owners and mtimes of src entries onto
// dst (a copy made with os.CopyFS), deepest entries first.
func setTimesLikeSource(t *testing.T, src, dst string) {
	t.Helper()

	tree := walkTree(t, src)

	var rels []string
	for rel := range tree {
		rels = append(rels, rel)
	}

	sort.Sort(sort.Reverse(sort.StringSlice(rels)))

	for _, rel := range rels {
		ei, p := tree[rel], filepath.Join(dst, rel)
		require.NoError(t, os.Lchown(p, int(ei.UID), int(ei.GID)))

		if ei.Type != "symlink" {
			require.NoError(t, os.Chmod(p, ei.Mode&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky)))
		}

		ts := unix.NsecToTimespec(ei.MTime)
		require.NoError(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
	}
}

func TestVerifyCatchesCorruption(t *testing.T) {
	e := newEnv(t)
	makeTree(t, e.src)
	img := e.push().ImageID

	e.repos.hooks.beforeVerify = func(staging string) {
		// Flip one byte in the middle of the 3 MiB file, keeping size and mtime.
		p := filepath.Join(staging, "big.bin")
		st, err := os.Stat(p)
		require.NoError(t, err)
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		require.NoError(t, err)
		b := make([]byte, 1)
		_, err = f.ReadAt(b, 1<<20)
		require.NoError(t, err)
		b[0] ^= 0xff
		_, err = f.WriteAt(b, 1<<20)
		require.NoError(t, err)
		require.NoError(t, f.Close())
		require.NoError(t, os.Chtimes(p, st.ModTime(), st.ModTime()))
	}

	res, err := e.repos.Pull(context.Background(), e.pullReq(img, "r1"), nil)
	require.ErrorIs(t, err, ErrVerify)
	require.Contains(t, err.Error(), "big.bin")
	require.NoFileExists(t, e.link(), "nothing published")
	require.DirExists(t, res.StagingPath, "staging kept for inspection")

	e.repos.hooks = testHooks{}

	// The exported verifier catches tampering of a copy too: content, extra entry, mode.
	good := e.pull(img, "r2").ReplicaPath
	cases := map[string]func(dir string){
		"many/f03.txt": func(dir string) {
			p := filepath.Join(dir, "many/f03.txt")
			st := must(os.Stat(p))
			require.NoError(t, os.WriteFile(p, []byte("file X\n"), 0o644))
			require.NoError(t, os.Chtimes(p, st.ModTime(), st.ModTime()))
		},
		"extra.txt": func(dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "a", "extra.txt"), nil, 0o644))
		},
		"bin/tool.sh": func(dir string) { require.NoError(t, os.Chmod(filepath.Join(dir, "bin/tool.sh"), 0o777)) },
		"link-rel": func(dir string) {
			require.NoError(t, os.Remove(filepath.Join(dir, "link-rel")))
			require.NoError(t, os.Symlink("elsewhere", filepath.Join(dir, "link-rel")))
		},
	}

	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			cp := filepath.Join(t.TempDir(), "copy")
			require.NoError(t, os.CopyFS(cp, os.DirFS(good)))
			setTimesLikeSource(t, good, cp)
			tamper(cp)

			err := e.repos.VerifyReplica(context.Background(), e.cfg, e.job, e.ds, img, cp, 0)
			require.ErrorIs(t, err, ErrVerify)
			require.Contains(t, err.Error(), name)
		})
	}
}

// Identical directories share one image object; a pull with "changed"
// verification builds and checks each of them at its own place, also when
// linking from the current replica.
func TestIdenticalDirectories(t *testing.T) {
	e := newEnv(t)

	for _, d := range []string{"x", "y", "z/x"} {
		for i := range 5 {
			writeFile(t, filepath.Join(e.src, d, fmt.Sprintf("f%d", i)), []byte(fmt.Sprintf("same %d", i)), 0o644, baseTime)
		}
	}

	for _, name := range []string{"r1", "r2"} {
		req := e.pullReq(e.push().ImageID, name)
		req.Verify = VerifyChanged
		r, err := e.repos.Pull(context.Background(), req, nil)
		require.NoError(t, err)
		requireSameTree(t, e.src, r.ReplicaPath)

		if name == "r2" {
			require.EqualValues(t, 14, r.Linked, "all but the changed y/f0")
		}

		writeFile(t, filepath.Join(e.src, "y", "f0"), []byte("changed"), 0o644, baseTime.Add(time.Hour))
	}
}

// "changed" verification trusts each file for exactly what was checked of it: a file written
// in a directory of linked files still has its metadata verified.
func TestChangedVerifyTrustIsPerFile(t *testing.T) {
	e := newEnv(t)
	makeTree(t, e.src)
	e.pull(e.push().ImageID, "r1")

	writeFile(t, filepath.Join(e.src, "many", "f07.txt"), []byte("FILE 7\n"), 0o644, baseTime.Add(time.Hour))
	setTimesDeepestFirst(t, e.src, baseTime.Add(-2*time.Hour))
	img := e.push().ImageID

	e.repos.hooks.beforeVerify = func(staging string) {
		require.NoError(t, os.Chmod(filepath.Join(staging, "many", "f07.txt"), 0o600))
	}
	req := e.pullReq(img, "r2")
	req.Verify = VerifyChanged
	res, err := e.repos.Pull(context.Background(), req, nil)
	require.ErrorIs(t, err, ErrVerify)
	require.Contains(t, err.Error(), "many/f07.txt: mode")
	require.EqualValues(t, 1+2, res.Restored, "the changed file and the 2 symlinks were written")

	e.repos.hooks = testHooks{}
	req = e.pullReq(img, "r3")
	req.Verify = VerifyChanged
	res, err = e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	require.EqualValues(t, 1+2, res.Restored)
	requireSameTree(t, e.src, res.ReplicaPath)
}

// The data plane's default verify mode is the config's (config.Job.Verify); a repair always
// reads everything.
func TestVerifyModeDefault(t *testing.T) {
	cfg := RepoConfig{Dir: "/r", PasswordFile: "/p", ClientDir: "/c"}
	req := PullRequest{Repo: cfg, Job: "j", ImageID: "i", TargetRoot: t.TempDir(), Dataset: "d", ReplicaName: "r1", Epoch: 1, Agent: "a"}
	require.NoError(t, validatePull(&req))
	require.Equal(t, VerifyChanged, req.Verify)
	req.Verify, req.Replaces = VerifyChanged, "r0"
	require.NoError(t, validatePull(&req))
	require.Equal(t, VerifyFull, req.Verify)
}
