package dataplane

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// bothResolvers runs fn with openat2 and again with the O_NOFOLLOW walk that replaces it
// on kernels without openat2 (forced here).
func bothResolvers(t *testing.T, fn func(t *testing.T)) {
	for _, walk := range []bool{false, true} {
		name := "openat2"
		if walk {
			name = "walk"
		}

		t.Run(name, func(t *testing.T) {
			noOpenat2.Store(walk)
			t.Cleanup(func() { noOpenat2.Store(false) })
			fn(t)

			if !walk {
				require.False(t, noOpenat2.Load(), "this kernel has openat2: the test must have used it")
			}
		})
	}
}

// worldWritable makes a 0777 directory outside the target: where a planted link points.
func worldWritable(t *testing.T) string {
	t.Helper()

	d := filepath.Join(t.TempDir(), "elsewhere")
	require.NoError(t, os.Mkdir(d, 0o777))
	require.NoError(t, os.Chmod(d, 0o777))

	return d
}

func requireEmptyDir(t *testing.T, d string) {
	t.Helper()

	ents, err := os.ReadDir(d)
	require.NoError(t, err)
	require.Empty(t, ents, "nothing may be written outside the target root")
}

func TestOpenBeneathRefusesSymlinksAndEscapes(t *testing.T) {
	bothResolvers(t, func(t *testing.T) {
		root := t.TempDir()
		require.NoError(t, os.MkdirAll(filepath.Join(root, "a", "b"), 0o755))
		require.NoError(t, os.Symlink("a", filepath.Join(root, "link")))
		require.NoError(t, os.Symlink("/", filepath.Join(root, "a", "abs")))

		rfd, err := openRoot(root)
		require.NoError(t, err)
		defer unix.Close(rfd) //nolint:errcheck

		fd, err := openBeneath(rfd, "a/b", unix.O_RDONLY|unix.O_DIRECTORY)
		require.NoError(t, err)
		require.NoError(t, unix.Close(fd))

		for rel, want := range map[string]error{
			"link/b":   unix.ELOOP, // a symlink in the middle
			"link":     unix.ELOOP, // ... and as the last component
			"a/abs":    unix.ELOOP,
			"a/../a/b": unix.EXDEV, // openat2 refuses ".." out of the root and the walk any ".."
			"a/nope":   unix.ENOENT,
		} {
			_, err := openBeneath(rfd, rel, unix.O_RDONLY|unix.O_DIRECTORY)
			if rel == "a/../a/b" && err == nil && !noOpenat2.Load() {
				continue // openat2 allows ".." that stays beneath; only the walk refuses it
			}

			require.ErrorIs(t, err, want, rel)
		}

		_, err = dirAt(rfd, root, "link/b/new", true, false, dirMode)
		require.ErrorIs(t, err, ErrUnsafePath)
		require.Contains(t, err.Error(), filepath.Join(root, "link")+" is a symlink to \"a\"")
		require.NoDirExists(t, filepath.Join(root, "a", "b", "new"), "nothing created through the link")
	})
}

// T/.replctl planted as a symlink to a world-writable directory: refused at the start of the
// pull, and nothing is written there.
func TestPullRefusesReplctlSymlink(t *testing.T) {
	bothResolvers(t, func(t *testing.T) {
		e := newEnv(t)
		makeTree(t, e.src)
		img := e.push().ImageID

		elsewhere := worldWritable(t)
		require.NoError(t, os.Symlink(elsewhere, filepath.Join(e.target, replctlDir)))

		_, err := e.repos.Pull(context.Background(), e.pullReq(img, "r1"), nil)
		require.ErrorIs(t, err, ErrUnsafePath)
		require.ErrorIs(t, err, ErrBadInput, "not retryable")
		require.Contains(t, err.Error(), filepath.Join(e.target, replctlDir)+" is a symlink to "+`"`+elsewhere+`"`)
		t.Log(err)
		requireEmptyDir(t, elsewhere)
		require.NoFileExists(t, e.link())
	})
}

// T/.replctl writable by its group (or owned by another user) is refused: another user could
// swap what is in it.
func TestPullRefusesReplctlOpenToOthers(t *testing.T) {
	bothResolvers(t, func(t *testing.T) {
		e := newEnv(t)
		makeTree(t, e.src)
		img := e.push().ImageID

		ctl := filepath.Join(e.target, replctlDir)
		require.NoError(t, os.Mkdir(ctl, 0o775))
		require.NoError(t, os.Chmod(ctl, 0o775))

		_, err := e.repos.Pull(context.Background(), e.pullReq(img, "r1"), nil)
		require.ErrorIs(t, err, ErrUnsafePath)
		require.Contains(t, err.Error(), ctl+" has mode 0775")
		require.Contains(t, err.Error(), "chmod go-w "+ctl)
		t.Log(err)
		requireEmptyDir(t, ctl)

		// The same one level down: a directory replctl keeps under .replctl.
		require.NoError(t, os.Chmod(ctl, 0o755))
		meta := filepath.Join(ctl, "meta")
		require.NoError(t, os.Mkdir(meta, 0o777))
		require.NoError(t, os.Chmod(meta, 0o777))

		_, err = e.repos.Pull(context.Background(), e.pullReq(img, "r1"), nil)
		require.ErrorIs(t, err, ErrUnsafePath)
		require.Contains(t, err.Error(), meta+" has mode 0777")
		requireEmptyDir(t, meta)
		require.NoError(t, os.Chmod(meta, 0o755))

		if os.Geteuid() == 0 {
			require.NoError(t, os.Chown(ctl, 4321, 4321))

			_, err = e.repos.Pull(context.Background(), e.pullReq(img, "r1"), nil)
			require.ErrorIs(t, err, ErrUnsafePath)
			require.Contains(t, err.Error(), ctl+" is owned by uid 4321")
			require.Contains(t, err.Error(), "chown 0 "+ctl)
			require.NoError(t, os.Chown(ctl, 0, 0))
		}

		// Fixed: the pull goes through and creates what it keeps there 0755 / 0700.
		e.pull(img, "r1")
		requireSameTree(t, e.src, e.replicaDir())

		for d, want := range map[string]os.FileMode{
			ctl: 0o755, filepath.Join(ctl, "replicas"): 0o755, filepath.Join(ctl, "staging"): 0o700,
			filepath.Join(ctl, "fence"): 0o755,
		} {
			st, err := os.Lstat(d)
			require.NoError(t, err)
			require.Equal(t, want, st.Mode().Perm(), d)
		}
	})
}

// T/<dataset>'s parent swapped for a symlink after the start check (between staging and
// publish): publish refuses and nothing is written outside T. Same for T/.replctl itself.
func TestPublishRefusesParentSwappedMidPull(t *testing.T) {
	bothResolvers(t, func(t *testing.T) {
		e := newEnv(t)
		e.ds = "dr/orders"
		makeTree(t, e.src)
		img1 := e.push().ImageID
		e.pull(img1, "r1")

		writeFile(t, filepath.Join(e.src, "new.txt"), []byte("second image"), 0o644, baseTime)
		img2 := e.push().ImageID

		elsewhere := worldWritable(t)
		parent := filepath.Join(e.target, "dr")
		e.repos.hooks.beforeVerify = func(string) {
			require.NoError(t, os.Rename(parent, parent+".real"))
			require.NoError(t, os.Symlink(elsewhere, parent))
		}

		_, err := e.repos.Pull(context.Background(), e.pullReq(img2, "r2"), nil)
		e.repos.hooks = testHooks{}
		require.ErrorIs(t, err, ErrUnsafePath)
		require.Contains(t, err.Error(), parent+" is a symlink")
		t.Log(err)
		requireEmptyDir(t, elsewhere)

		// Nothing was published: no replica r2, no meta record, the old link untouched.
		l := newLayout(e.target, e.ds)
		require.NoDirExists(t, l.replicaDir("r2"))
		require.NoFileExists(t, l.metaFile("r2"))
		target, err := os.Readlink(filepath.Join(parent+".real", "orders"))
		require.NoError(t, err)
		require.Equal(t, "r1", filepath.Base(target))

		// T/.replctl swapped for a symlink while the pull ran: refused at publish as well.
		require.NoError(t, os.Remove(parent))
		require.NoError(t, os.Rename(parent+".real", parent))

		ctl := filepath.Join(e.target, replctlDir)
		e.repos.hooks.beforePublish = func() {
			require.NoError(t, os.Rename(ctl, ctl+".real"))
			require.NoError(t, os.Symlink(elsewhere, ctl))
		}

		_, err = e.repos.Pull(context.Background(), e.pullReq(img2, "r3"), nil)
		e.repos.hooks = testHooks{}
		require.ErrorIs(t, err, ErrUnsafePath)
		require.Contains(t, err.Error(), ctl+" is a symlink")
		requireEmptyDir(t, elsewhere)
		require.NoDirExists(t, filepath.Join(ctl+".real", "replicas", l.esc, "r3"))

		// Put back, the next pull publishes normally.
		require.NoError(t, os.Remove(ctl))
		require.NoError(t, os.Rename(ctl+".real", ctl))
		e.pull(img2, "r4")
		requireSameTree(t, e.src, e.replicaDir())
	})
}

// A group publish resolves each T/D's parent again too.
func TestPublishGroupRefusesSymlinkedParent(t *testing.T) {
	bothResolvers(t, func(t *testing.T) {
		e := newEnv(t)
		e.ds = "grp/db"
		makeTree(t, e.src)

		req := e.pullReq(e.push().ImageID, "r1")
		req.Defer = true
		_, err := e.repos.Pull(context.Background(), req, nil)
		require.NoError(t, err)

		elsewhere := worldWritable(t)
		require.NoError(t, os.Symlink(elsewhere, filepath.Join(e.target, "grp")))

		e.epoch++
		_, err = PublishGroup(context.Background(), GroupPublishRequest{
			TargetRoot: e.target, Job: e.job, ReplicaName: "r1", Datasets: []string{e.ds}, Epoch: e.epoch, Agent: "agent-a",
		})
		require.ErrorIs(t, err, ErrUnsafePath)
		requireEmptyDir(t, elsewhere)
	})
}

func TestDatasetNamesStayBeneath(t *testing.T) {
	for _, d := range []string{"../x", "a/../../x", "/etc", "a\x00b", ".replctl/x", "a//b", "."} {
		require.ErrorIs(t, checkDataset("Dataset", d), ErrBadInput, d)
	}
}

// Removal by fds (trash, test copies) removes a symlink inside the tree, never what it
// points to, and copes with read-only directories.
func TestRemoveAllAtDoesNotFollowSymlinks(t *testing.T) {
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "keep"), []byte("not ours"), 0o644, baseTime)

	base := t.TempDir()
	tree := filepath.Join(base, "tree")
	writeFile(t, filepath.Join(tree, "ro", "f"), []byte("x"), 0o444, baseTime)
	require.NoError(t, os.Symlink(outside, filepath.Join(tree, "ro", "out")))
	require.NoError(t, os.Chmod(filepath.Join(tree, "ro"), 0o555))

	require.NoError(t, removeTree(tree))
	require.NoDirExists(t, tree)
	require.FileExists(t, filepath.Join(outside, "keep"))
}
