package dataplane

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/snapshot"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/internal/fidelity"
)

// The fidelity suite's tree (every kind of entry real hosts have, but for names that are
// not valid UTF-8) through a push and a pull: the replica equals the source in every class
// the checker knows (xattrs, ACLs, capabilities, hard-link groups, FIFOs, sockets, devices
// included). A second pull of an unchanged source links nothing that has extras, and the
// groups stay whole. A changed xattr or a broken link group on the replica fails
// verification.
func TestPushPullKeepsExtras(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("owners, devices, trusted xattrs and capabilities need root")
	}
	e := newEnv(t)
	m, err := fidelity.Generate(e.src, fidelity.Options{Seed: 15, WideFiles: 50, Without: []string{fidelity.FeatNames}})
	require.NoError(t, err)
	for f, why := range m.Skipped {
		if why != fidelity.NotAsked {
			t.Logf("generator skipped %s: %s", f, why)
		}
	}

	res := e.push()
	require.Nil(t, res.Unsupported, "everything is kept")
	pres := e.pull(res.ImageID, "r1")
	require.True(t, pres.Verified)
	require.False(t, pres.Incomplete)
	r, err := fidelity.Check(e.src, e.link())
	require.NoError(t, err)
	require.Empty(t, r.Diffs)

	// Unchanged source, second image and pull: a file whose xattrs are the same in both
	// images is linked (its inode carries them), a hard-link group is written anew (linking
	// would join inodes r1 shares).
	res2 := e.push()
	pres2 := e.pull(res2.ImageID, "r2")
	r, err = fidelity.Check(e.src, e.link())
	require.NoError(t, err)
	require.Empty(t, r.Diffs)
	require.Positive(t, pres2.Linked)
	x := loadExtrasOf(t, e, res2.ImageID)
	require.NotEmpty(t, x.Links)
	same := func(p string) bool {
		return inode(t, filepath.Join(pres.ReplicaPath, p)) == inode(t, filepath.Join(pres2.ReplicaPath, p))
	}
	for _, g := range x.Links {
		for _, p := range g {
			require.False(t, same(p), "%s in a link group is written anew", p)
		}
	}
	var withX string // a regular file with xattrs, in no link group
	inGroup := map[string]bool{}
	for _, g := range x.Links {
		for _, p := range g {
			inGroup[p] = true
		}
	}
	for _, en := range x.Entries {
		fi, err := os.Lstat(filepath.Join(e.src, en.Path))
		require.NoError(t, err)
		if fi.Mode().IsRegular() && len(en.Xattrs) > 0 && !inGroup[en.Path] {
			withX = en.Path
			require.True(t, same(en.Path), "%s: same xattrs in both images, linked", en.Path)
		}
	}
	require.NotEmpty(t, withX, "the tree has a regular file with xattrs")

	// An xattr changed on the source: the next replica has a new inode with the new value,
	// and r2 keeps the old one (a change never reaches older replicas).
	require.NoError(t, unix.Lsetxattr(filepath.Join(e.src, withX), "user.changed", []byte("new"), 0))
	res3 := e.push()
	pres3 := e.pull(res3.ImageID, "r3")
	require.NotEqual(t, inode(t, filepath.Join(pres2.ReplicaPath, withX)), inode(t, filepath.Join(pres3.ReplicaPath, withX)))
	_, err = getXattr(filepath.Join(pres2.ReplicaPath, withX), "user.changed")
	require.ErrorIs(t, err, unix.ENODATA, "r2 is unchanged")
	v, err := getXattr(filepath.Join(pres3.ReplicaPath, withX), "user.changed")
	require.NoError(t, err)
	require.Equal(t, "new", string(v))
	require.NoError(t, unix.Lremovexattr(filepath.Join(e.src, withX), "user.changed"))

	// Verification covers the extras.
	ctx := context.Background()
	require.NoError(t, e.repos.VerifyReplica(ctx, e.cfg, e.job, e.ds, res2.ImageID, pres2.ReplicaPath, 2))
	p := filepath.Join(pres2.ReplicaPath, withX)
	require.NoError(t, unix.Lsetxattr(p, "user.added", []byte("x"), 0))
	err = e.repos.VerifyReplica(ctx, e.cfg, e.job, e.ds, res2.ImageID, pres2.ReplicaPath, 2)
	require.ErrorIs(t, err, ErrVerify)
	require.ErrorContains(t, err, "xattr user.added not in the image")
	require.NoError(t, unix.Lremovexattr(p, "user.added"))

	g := x.Links[0]
	member := filepath.Join(pres2.ReplicaPath, g[1])
	b, err := os.ReadFile(member)
	require.NoError(t, err)
	fi, err := os.Lstat(member)
	require.NoError(t, err)
	parent, err := os.Lstat(filepath.Dir(member))
	require.NoError(t, err)
	require.NoError(t, os.Remove(member))
	writeFile(t, member, b, fi.Mode().Perm(), fi.ModTime())
	require.NoError(t, os.Chtimes(filepath.Dir(member), parent.ModTime(), parent.ModTime()))
	err = e.repos.VerifyReplica(ctx, e.cfg, e.job, e.ds, res2.ImageID, pres2.ReplicaPath, 2)
	require.ErrorIs(t, err, ErrVerify)
	require.ErrorContains(t, err, "not a hard link of "+g[0])
}

// An extras record that names a path outside the tree is refused before anything is
// applied.
func TestExtrasCheckRefusesForeignPaths(t *testing.T) {
	for _, x := range []Extras{
		{Version: extrasVersion, Entries: []ExtraEntry{{Path: "../etc/passwd", Xattrs: []Xattr{{Name: "user.x"}}}}},
		{Version: extrasVersion, Entries: []ExtraEntry{{Path: "/etc/passwd"}}},
		{Version: extrasVersion, Entries: []ExtraEntry{{Path: "a/../../b"}}},
		{Version: extrasVersion, Links: [][]string{{"a", "../../etc/shadow"}}},
		{Version: extrasVersion, Links: [][]string{{"a"}}},
		{Version: extrasVersion, Entries: []ExtraEntry{{Path: "d", Special: &Special{Type: "door"}}}},
		{Version: extrasVersion, Entries: []ExtraEntry{{Path: "d", Special: &Special{Type: SpecialFIFO, Mode: unix.S_IFREG | 0o644}}}},
		{Version: extrasVersion + 1},
	} {
		require.Error(t, x.check(), "%+v", x)
	}
	ok := Extras{Version: extrasVersion, Entries: []ExtraEntry{{Path: "."}, {Path: "a/b", Special: &Special{Type: SpecialSocket, Mode: 0o755}}}}
	require.NoError(t, ok.check())
}

// A path in the extras that a symlink in the staged tree would lead outside is refused,
// not followed: the parent dirs are opened beneath the root with no symlinks.
func TestApplyExtrasRefusesSymlinkedParent(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	require.NoError(t, os.Symlink(outside, filepath.Join(root, "link")))
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY, 0)
	require.NoError(t, err)
	defer unix.Close(fd) //nolint:errcheck
	x := &Extras{Version: extrasVersion, Entries: []ExtraEntry{{Path: "link/fifo", Special: &Special{Type: SpecialFIFO, Mode: 0o644}}}}
	require.Error(t, applyExtras(fd, x, false, nil))
	ents, err := os.ReadDir(outside)
	require.NoError(t, err)
	require.Empty(t, ents, "nothing was made outside the tree")
}

func loadExtrasOf(t *testing.T, e *env, image string) *Extras {
	t.Helper()
	rep, man := e.image(image)
	x, err := loadExtras(context.Background(), rep, man)
	require.NoError(t, err)
	require.NotNil(t, x)
	return x
}

// What the target refuses (here: a file capability whose value the kernel rejects, as a
// filesystem without xattrs or a non-root agent would refuse others) fails the pull by
// default, naming the path and the attribute; with OnUnsupported "skip" it is left out, the
// rest of the extras kept, and the replica is verified but incomplete.
func TestPullTargetRefusal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("security.* xattrs need root")
	}
	e := newEnv(t)
	writeFile(t, filepath.Join(e.src, "f"), []byte("x"), 0o755, baseTime)
	writeFile(t, filepath.Join(e.src, "g"), []byte("y"), 0o644, baseTime)
	res := e.push()
	image := imageWithExtras(t, e, res.ImageID, &Extras{Version: extrasVersion, Entries: []ExtraEntry{
		{Path: "f", Xattrs: []Xattr{{Name: capabilityXattr, Value: []byte{1, 2, 3}}}},
		{Path: "g", Xattrs: []Xattr{{Name: "user.kept", Value: []byte("v")}}},
	}})

	_, err := e.repos.Pull(context.Background(), e.pullReq(image, "r1"), nil)
	require.ErrorIs(t, err, ErrUnsupported)
	require.ErrorContains(t, err, "f: xattr security.capability refused by the target")
	require.ErrorContains(t, err, "set on_unsupported: skip on job job1")

	req := e.pullReq(image, "r2")
	req.OnUnsupported = OnUnsupportedSkip
	pres, err := e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	require.True(t, pres.Verified)
	require.True(t, pres.Incomplete)
	require.NotNil(t, pres.Refused)
	require.Equal(t, map[string]int{"target": 1}, pres.Refused.ByKind)
	v, err := getXattr(filepath.Join(pres.ReplicaPath, "g"), "user.kept")
	require.NoError(t, err)
	require.Equal(t, "v", string(v), "what the target takes is kept")
	m, err := readMeta(newLayout(e.target, e.ds).metaFile("r2"))
	require.NoError(t, err)
	require.True(t, m.Incomplete)
	require.Equal(t, 1, m.Unsupported.Count)

	req.OnUnsupported = "maybe"
	_, err = e.repos.Pull(context.Background(), req, nil)
	require.ErrorIs(t, err, ErrBadInput)
}

// imageWithExtras saves a copy of image with x as its extras and returns its ID.
func imageWithExtras(t *testing.T, e *env, image string, x *Extras) string {
	t.Helper()
	ctx := context.Background()
	rep, man := e.image(image)
	wctx, w, err := rep.NewWriter(ctx, repo.WriteSessionOptions{Purpose: "test"})
	require.NoError(t, err)
	defer w.Close(ctx) //nolint:errcheck
	xid, err := saveExtras(wctx, w, e.job, e.ds, x)
	require.NoError(t, err)
	man.ID = ""
	setTag(man, extrasTag, string(xid))
	id, err := snapshot.SaveSnapshot(wctx, w, man)
	require.NoError(t, err)
	require.NoError(t, w.Flush(wctx))
	return string(id)
}

// ListImages lists a job's images newest first with their totals; extras and checkpoints of
// other sources are not images.
func TestListImages(t *testing.T) {
	e := newEnv(t)
	writeFile(t, filepath.Join(e.src, "f"), []byte("x"), 0o644, baseTime)
	require.NoError(t, unix.Mkfifo(filepath.Join(e.src, "p"), 0o644))
	first := e.push()
	writeFile(t, filepath.Join(e.src, "g"), []byte("yy"), 0o644, baseTime)
	second := e.push()
	imgs, err := e.repos.ListImages(context.Background(), e.cfg, e.job, e.ds)
	require.NoError(t, err)
	require.Len(t, imgs, 2, "the extras snapshots are not images")
	require.Equal(t, []string{second.ImageID, first.ImageID}, []string{imgs[0].ID, imgs[1].ID})
	require.Equal(t, int64(2), imgs[0].Files)
	require.Equal(t, int64(3), imgs[0].Bytes)
	require.True(t, imgs[0].Extras, "the fifo is kept beside the image")
	require.Equal(t, "r1", imgs[0].Tags["run"])
	_, err = e.repos.ListImages(context.Background(), e.cfg, e.job, "../x")
	require.ErrorIs(t, err, ErrBadInput)
}

// Restore brings an image back into a new directory beneath a storage root: the same tree
// as the source, every class the checker knows, verified; never into a non-empty directory,
// never outside the root.
func TestRestoreImage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("owners, devices, trusted xattrs and capabilities need root")
	}
	e := newEnv(t)
	_, err := fidelity.Generate(e.src, fidelity.Options{Seed: 7, WideFiles: 20, Without: []string{fidelity.FeatNames}})
	require.NoError(t, err)
	res := e.push()
	req := RestoreRequest{Repo: e.cfg, Job: e.job, Dataset: e.ds, ImageID: res.ImageID, Root: e.target, Rel: "restores/r1", Parallel: 2}
	rr, err := e.repos.Restore(context.Background(), req, nil)
	require.NoError(t, err)
	require.True(t, rr.Verified)
	r, err := fidelity.Check(e.src, rr.Path)
	require.NoError(t, err)
	require.Empty(t, r.Diffs)

	_, err = e.repos.Restore(context.Background(), req, nil)
	require.ErrorIs(t, err, ErrBadInput, "not into a non-empty directory")
	for _, rel := range []string{"../x", "/etc", "a/../../b", ""} {
		req.Rel = rel
		_, err = e.repos.Restore(context.Background(), req, nil)
		require.ErrorIs(t, err, ErrBadInput, rel)
	}
	outside := t.TempDir()
	require.NoError(t, os.Symlink(outside, filepath.Join(e.target, "link")))
	req.Rel = "link/x"
	_, err = e.repos.Restore(context.Background(), req, nil)
	require.Error(t, err, "never through a symlink")
	ents, err := os.ReadDir(outside)
	require.NoError(t, err)
	require.Empty(t, ents)
}
