package worecord

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// tree is the copy the tests record: what the replica must be.
var tree = []Entry{
	{Type: Dir, Path: ".", Mode: 0o750, UID: 11, GID: 12, MtimeNs: 1_500_000_000_000_000_001},
	{Type: Dir, Path: "a", Mode: 0o1777, UID: 13, GID: 14, MtimeNs: 1_500_000_000_000_000_002},
	{Type: Dir, Path: "a/b", Mode: 0o700, UID: 0, GID: 0, MtimeNs: 1_500_000_000_000_000_003},
	fileEntry("a/b/one", "first file", 0o4755),
	fileEntry("a/two", "second", 0o600),
	fileEntry("empty", "", 0o644),
	{Type: Symlink, Path: "a/link", Target: "/etc/passwd", UID: 15, GID: 16, MtimeNs: 1_500_000_000_000_000_004},
}

// stage writes what the writer sends: directories and file contents, with whatever modes
// and times it likes (the record decides those).
func stage(t *testing.T) (*os.Root, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "staging")
	require.NoError(t, os.Mkdir(dir, 0o700))
	contents := map[string]string{"a/b/one": "first file", "a/two": "second", "empty": ""}
	for _, e := range tree {
		switch e.Type {
		case Dir:
			require.NoError(t, os.MkdirAll(filepath.Join(dir, e.Path), 0o777))
		case File:
			require.NoError(t, os.WriteFile(filepath.Join(dir, e.Path), []byte(contents[e.Path]), 0o666))
		}
	}
	r, err := os.OpenRoot(dir)
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r, dir
}

// got lists the tree at dir as entries (hash and size only for files).
func got(t *testing.T, dir string) []Entry {
	t.Helper()
	var out []Entry
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(p, &st))
		e := Entry{Path: filepath.ToSlash(rel), Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, MtimeNs: st.Mtim.Nano()}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.Type = Dir
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			e = fileEntry(e.Path, string(b), e.Mode)
			e.UID, e.GID, e.MtimeNs = st.Uid, st.Gid, st.Mtim.Nano()
		case unix.S_IFLNK:
			e.Type, e.Mode = Symlink, 0
			e.Target, err = os.Readlink(p)
			require.NoError(t, err)
		default:
			e.Type, e.Rdev = specials[st.Mode&unix.S_IFMT], st.Rdev
			require.NotZero(t, e.Type, "%s: file type %o", p, st.Mode&unix.S_IFMT)
		}
		e.Xattrs, err = readXattrs(p, -1)
		require.NoError(t, err)
		out = append(out, e)
		return nil
	}))
	return out
}

func sorted(es []Entry) []Entry {
	out := append([]Entry(nil), es...)
	for i := range out {
		if out[i].Type == Symlink {
			out[i].Mode = 0
		}
	}
	for i := range out {
		out[i].Xattrs = append([]Xattr(nil), out[i].Xattrs...)
		sort.Slice(out[i].Xattrs, func(a, b int) bool { return out[i].Xattrs[a].Name < out[i].Xattrs[b].Name })
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sets owners: needs root")
	}
}

func TestCheckMakesTheTreeItsRecordSays(t *testing.T) {
	requireRoot(t)
	r, dir := stage(t)
	// Left by the writer or anyone else: not in the record.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a", "extra"), []byte("x"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "junk", "deep"), 0o755))
	// An attribute the record lacks, on a staged file: removed.
	require.NoError(t, unix.Setxattr(filepath.Join(dir, "a/two"), "user.stray", []byte("x"), 0))
	res, err := Check(r, append([]Entry(nil), tree...), 2)
	require.NoError(t, err)
	assert.Equal(t, Result{Dirs: 3, Files: 3, Symlinks: 1, Bytes: int64(len("first file") + len("second")), Removed: 2}, res)
	want := sorted(tree)
	assert.Equal(t, want, sorted(got(t, dir)))
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(filepath.Join(dir, "a/b/one"), &st))
	assert.Equal(t, [3]uint32{1234, 5678, 0o4755}, [3]uint32{st.Uid, st.Gid, st.Mode & 0o7777}, "owner, then mode: setuid survives")
	assert.Equal(t, int64(1_600_000_000_123_456_789), st.Mtim.Nano())
}

// Damage: a byte changed, a file cut short, a file and a directory missing. Check fails
// naming each, removes the damaged files (the next copy writes them again) and sets no
// metadata and no symlink.
func TestCheckFailsOnDamageAndRemovesIt(t *testing.T) {
	r, dir := stage(t)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a/two"), []byte("SECOND"), 0o666))
	require.NoError(t, os.Truncate(filepath.Join(dir, "a/b/one"), 3))
	require.NoError(t, os.Remove(filepath.Join(dir, "empty")))
	entries := append(append([]Entry(nil), tree...), Entry{Type: Dir, Path: "gone", Mode: 0o755})
	_, err := Check(r, entries, 2)
	require.ErrorIs(t, err, ErrIncomplete)
	for _, want := range []string{`"a/two": content differs`, `"a/b/one": size 3, recorded 10`, `"empty": missing`, `"gone": missing`} {
		assert.Contains(t, err.Error(), want)
	}
	for _, p := range []string{"a/two", "a/b/one", "a/link"} {
		_, err := os.Lstat(filepath.Join(dir, p))
		assert.True(t, errors.Is(err, fs.ErrNotExist), "%s: %v", p, err)
	}
	st, err := os.Stat(filepath.Join(dir, "a"))
	require.NoError(t, err)
	assert.NotEqual(t, os.FileMode(0o1777), st.Mode()&(os.ModePerm|os.ModeSticky), "no metadata was set")
}

// Hostile input: symlinks someone placed in the staging where the record has a file or a
// directory are removed, never followed; what they point to stays as it was.
func TestCheckNeverFollowsASymlinkInTheStaging(t *testing.T) {
	r, dir := stage(t)
	outside := filepath.Join(t.TempDir(), "outside")
	require.NoError(t, os.Mkdir(outside, 0o755))
	secret := filepath.Join(outside, "secret")
	require.NoError(t, os.WriteFile(secret, []byte("keep"), 0o600))
	require.NoError(t, os.Remove(filepath.Join(dir, "a/two")))
	require.NoError(t, os.Symlink(secret, filepath.Join(dir, "a/two")))
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "a/b")))
	require.NoError(t, os.Symlink(outside, filepath.Join(dir, "a/b")))

	_, err := Check(r, append([]Entry(nil), tree...), 2)
	require.ErrorIs(t, err, ErrIncomplete)
	assert.Contains(t, err.Error(), `"a/two": missing`)
	assert.Contains(t, err.Error(), `"a/b": missing`)
	for _, p := range []string{"a/two", "a/b"} {
		_, err := os.Lstat(filepath.Join(dir, p))
		assert.True(t, errors.Is(err, fs.ErrNotExist), "%s was removed: %v", p, err)
	}
	b, err := os.ReadFile(secret)
	require.NoError(t, err)
	assert.Equal(t, "keep", string(b))
	st, err := os.Stat(secret)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	ents, err := os.ReadDir(outside)
	require.NoError(t, err)
	assert.Len(t, ents, 1)
}

func TestCheckRefusesARecordWithoutItsTree(t *testing.T) {
	r, _ := stage(t)
	for name, es := range map[string][]Entry{
		"no root":         tree[1:],
		"no parent":       {tree[0], fileEntry("nowhere/f", "x", 0o644)},
		"twice":           {tree[0], tree[4], tree[4]},
		"root not a dir":  {{Type: File, Path: "."}},
		"link to a dir":   {tree[0], tree[1], {Type: Hardlink, Path: "h", Target: "a"}},
		"link to nothing": {tree[0], {Type: Hardlink, Path: "h", Target: "nothing"}},
		"link to a link":  {tree[0], tree[5], {Type: Hardlink, Path: "h", Target: "empty"}, {Type: Hardlink, Path: "h2", Target: "h"}},
	} {
		_, err := Check(r, es, 1)
		assert.ErrorIs(t, err, ErrRecord, name)
	}
}
