package fidelity

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// small keeps the trees of the damage tests quick to copy.
var small = Options{Seed: 7, SparseSize: 8 << 20, WideFiles: 50, Depth: 40}

// tempDir is t.TempDir that can also be removed when a non-root test made read-only dirs.
func tempDir(t *testing.T) string {
	d := t.TempDir()
	t.Cleanup(func() {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				_ = os.Chmod(p, 0o700)
			}
			return nil
		})
	})
	return d
}

func generate(t *testing.T, o Options) (string, Manifest) {
	t.Helper()
	dir := filepath.Join(tempDir(t), "src")
	m, err := Generate(dir, o)
	require.NoError(t, err)
	if os.Geteuid() == 0 {
		assert.Empty(t, m.Skipped, "as root nothing should be refused on this filesystem")
	}
	for f, why := range m.Skipped {
		t.Logf("skipped %s: %s", f, why)
	}
	return dir, m
}

// Every feature is made (as root), and a tree compares equal to itself and to a second
// tree from the same seed, and unequal to one from another seed.
func TestGenerateIsCompleteAndDeterministic(t *testing.T) {
	a, m := generate(t, small)
	if os.Geteuid() == 0 {
		for _, f := range AllFeatures {
			assert.NotEmpty(t, m.Made[f], f)
		}
	}
	r, err := Check(a, a)
	require.NoError(t, err)
	assert.Empty(t, r.Diffs)
	for _, class := range []string{AttrMode, AttrMtime, AttrContent, AttrTarget, AttrHardlinks, AttrSparse, "exists:dir"} {
		assert.Positive(t, r.Entries[class], "class %s must have entries to check", class)
	}
	b, _ := generate(t, small)
	d, err := Compare(a, b)
	require.NoError(t, err)
	assert.Empty(t, d, "same seed, same tree")
	other := small
	other.Seed++
	c, _ := generate(t, other)
	d, err = Compare(a, c)
	require.NoError(t, err)
	assert.NotEmpty(t, d, "another seed, another tree")
}

func TestGenerateRefusesBadInput(t *testing.T) {
	dir := tempDir(t)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "x"), nil, 0o644))
	_, err := Generate(dir, Options{})
	assert.ErrorContains(t, err, "not empty")
	_, err = Generate(filepath.Join(dir, "new"), Options{SparseSize: 10})
	assert.ErrorContains(t, err, "SparseSize")
	_, err = Compare(filepath.Join(dir, "missing"), dir)
	assert.Error(t, err)
}

// damage changes one attribute of a copy; want lists the (path, attr) pairs Compare must
// report, and nothing else.
type damage struct {
	name string
	fn   func(t *testing.T, dst string)
	want [][2]string
}

// keepTimes runs fn on paths of dst and then restores their mtimes (and atimes), so a
// damage changes only what it means to.
func keepTimes(t *testing.T, dst string, fn func(), rels ...string) {
	t.Helper()
	var ts [][]unix.Timespec
	for _, r := range rels {
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(filepath.Join(dst, r), &st))
		ts = append(ts, []unix.Timespec{st.Atim, st.Mtim})
	}
	fn()
	for i, r := range rels {
		require.NoError(t, unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dst, r), ts[i], unix.AT_SYMLINK_NOFOLLOW))
	}
}

func touchNs(t *testing.T, p string) {
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(p, &st))
	st.Mtim.Nsec = (st.Mtim.Nsec + 1) % 1e9
	require.NoError(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW))
}

func damages() []damage {
	no := require.NoError
	return []damage{
		{"chmod file", func(t *testing.T, d string) { no(t, os.Chmod(filepath.Join(d, "files/small"), 0o641)) },
			[][2]string{{"files/small", AttrMode}}},
		{"clear sticky of dir", func(t *testing.T, d string) { no(t, os.Chmod(filepath.Join(d, "dirs/sticky"), 0o777)) },
			[][2]string{{"dirs/sticky", AttrMode}}},
		{"lchown symlink", func(t *testing.T, d string) { no(t, os.Lchown(filepath.Join(d, "symlinks/odd"), 1, 1)) },
			[][2]string{{"symlinks/odd", AttrOwner}}},
		{"file mtime ns", func(t *testing.T, d string) { touchNs(t, filepath.Join(d, "files/big")) },
			[][2]string{{"files/big", AttrMtime}}},
		{"symlink mtime ns (touch -h)", func(t *testing.T, d string) { touchNs(t, filepath.Join(d, "symlinks/dangling")) },
			[][2]string{{"symlinks/dangling", AttrMtime}}},
		{"dir mtime ns", func(t *testing.T, d string) { touchNs(t, filepath.Join(d, "dirs/empty")) },
			[][2]string{{"dirs/empty", AttrMtime}}},
		{"same-size content", func(t *testing.T, d string) {
			keepTimes(t, d, func() {
				f, err := os.OpenFile(filepath.Join(d, "files/big"), os.O_WRONLY, 0)
				no(t, err)
				_, err = f.WriteAt([]byte("changed"), 1<<20)
				no(t, err)
				no(t, f.Close())
			}, "files/big")
		}, [][2]string{{"files/big", AttrContent}}},
		{"truncate", func(t *testing.T, d string) {
			keepTimes(t, d, func() { no(t, os.Truncate(filepath.Join(d, "files/small"), 1)) }, "files/small")
		}, [][2]string{{"files/small", AttrContent}, {"files/small", AttrSize}, {"files/small", AttrSparse}}},
		{"symlink target", func(t *testing.T, d string) {
			keepTimes(t, d, func() {
				p := filepath.Join(d, "symlinks/dangling")
				no(t, os.Remove(p))
				no(t, os.Symlink("no/such/entrx", p))
			}, "symlinks", "symlinks/dangling")
		}, [][2]string{{"symlinks/dangling", AttrTarget}}},
		{"device numbers", func(t *testing.T, d string) {
			keepTimes(t, d, func() {
				p := filepath.Join(d, "special/chardev")
				no(t, os.Remove(p))
				no(t, unix.Mknod(p, unix.S_IFCHR, int(unix.Mkdev(1, 8))))
				no(t, os.Chmod(p, 0o640))
			}, "special", "special/chardev")
		}, [][2]string{{"special/chardev", AttrRdev}}},
		{"fifo becomes file", func(t *testing.T, d string) {
			keepTimes(t, d, func() {
				p := filepath.Join(d, "special/fifo")
				no(t, os.Remove(p))
				no(t, os.WriteFile(p, nil, 0o620))
			}, "special", "special/fifo")
		}, [][2]string{{"special/fifo", AttrType}}},
		{"entry lost", func(t *testing.T, d string) {
			keepTimes(t, d, func() { no(t, os.Remove(filepath.Join(d, "names/tab\there"))) }, "names")
		}, [][2]string{{"names/tab\there", AttrExists}}},
		{"entry added", func(t *testing.T, d string) {
			keepTimes(t, d, func() { no(t, os.WriteFile(filepath.Join(d, "names/cafe\u0301 "), nil, 0o644)) }, "names")
		}, [][2]string{{"names/cafe\u0301 ", AttrExists}}},
		{"user xattr value", func(t *testing.T, d string) {
			no(t, unix.Lsetxattr(filepath.Join(d, "xattr/file"), "user.binary", []byte{0, 1, 2}, 0))
		}, [][2]string{{"xattr/file", FeatUserXattr}}},
		{"trusted xattr on symlink removed", func(t *testing.T, d string) {
			no(t, unix.Lremovexattr(filepath.Join(d, "xattr/trusted-link"), "trusted.on-link"))
		}, [][2]string{{"xattr/trusted-link", FeatTrusted}}},
		{"capability", func(t *testing.T, d string) {
			no(t, unix.Lsetxattr(filepath.Join(d, "caps/net-bind"), "security.capability", CapabilityV2(1<<10, 0, true), 0))
		}, [][2]string{{"caps/net-bind", FeatCapability}}},
		{"access ACL entry", func(t *testing.T, d string) { // same mask, so the mode stays
			acl := ACL([]ACLEntry{
				{Tag: ACLUserObj, Perm: 6}, {Tag: ACLUser, ID: OddUID, Perm: 6}, {Tag: ACLGroupObj, Perm: 4},
				{Tag: ACLGroup, ID: OddGID, Perm: 6}, {Tag: ACLMask, Perm: 6}, {Tag: ACLOther, Perm: 0},
			})
			no(t, unix.Lsetxattr(filepath.Join(d, "acl/file"), "system.posix_acl_access", acl, 0))
		}, [][2]string{{"acl/file", FeatACLAccess}}},
		{"default ACL removed", func(t *testing.T, d string) {
			no(t, unix.Lremovexattr(filepath.Join(d, "acl/dir"), "system.posix_acl_default"))
		}, [][2]string{{"acl/dir", FeatACLDefault}}},
		{"hard link broken", func(t *testing.T, d string) {
			keepTimes(t, d, func() {
				p := filepath.Join(d, "hardlinks/sub/trio-c")
				out, err := exec.Command("cp", "-a", p, p+".tmp").CombinedOutput()
				no(t, err, string(out))
				no(t, os.Rename(p+".tmp", p))
			}, "hardlinks/sub")
		}, [][2]string{{"hardlinks/sub/trio-c", AttrHardlinks}, {"hardlinks/trio-a", AttrHardlinks}, {"hardlinks/trio-b", AttrHardlinks}}},
		{"hole filled with zeros", func(t *testing.T, d string) {
			keepTimes(t, d, func() {
				f, err := os.OpenFile(filepath.Join(d, "sparse/large"), os.O_WRONLY, 0)
				no(t, err)
				_, err = f.WriteAt(make([]byte, 8192), 0)
				no(t, err)
				no(t, f.Close())
			}, "sparse/large")
		}, [][2]string{{"sparse/large", AttrSparse}}},
	}
}

// Each kind of damage to a copy is reported on exactly its path and attribute, so the
// checker cannot silently pass.
func TestCompareReportsEachDamage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the damages include devices, trusted xattrs and capabilities: root only (CI is root)")
	}
	src, _ := generate(t, small)
	for _, dmg := range damages() {
		t.Run(dmg.name, func(t *testing.T) {
			dst := filepath.Join(tempDir(t), "dst")
			out, err := exec.Command("cp", "-a", src, dst).CombinedOutput()
			require.NoError(t, err, string(out))
			d, err := Compare(src, dst)
			require.NoError(t, err)
			require.Empty(t, d, "the copy must be exact before the damage")
			dmg.fn(t, dst)
			d, err = Compare(src, dst)
			require.NoError(t, err)
			var got [][2]string
			for _, x := range d {
				got = append(got, [2]string{x.Path, x.Attr})
				t.Log(x)
			}
			sort.Slice(got, func(i, j int) bool { return got[i][0]+got[i][1] < got[j][0]+got[j][1] })
			assert.Equal(t, dmg.want, got)
		})
	}
}

// rsync -aHAXS --numeric-ids is the bar: its copy of the full-size tree compares equal in
// every class. rsync is a test dependency (make test-deps installs it).
func TestRsyncCopyIsExact(t *testing.T) {
	rsync, err := exec.LookPath("rsync")
	require.NoError(t, err, "rsync is a test dependency: make test-deps")
	src, m := generate(t, Options{Seed: 1})
	dst := filepath.Join(tempDir(t), "dst")
	out, err := exec.Command(rsync, "-aHAXS", "--numeric-ids", src+"/", dst+"/").CombinedOutput()
	require.NoError(t, err, string(out))
	start := time.Now()
	r, err := Check(src, dst)
	require.NoError(t, err)
	t.Logf("compared %d entries in %s", r.Entries[AttrType], time.Since(start).Round(time.Millisecond))
	for _, d := range r.Diffs {
		t.Error(d)
	}
	classes := make([]string, 0, len(r.Entries))
	for c := range r.Entries {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	for _, c := range classes {
		t.Logf("%-18s %6d entries, 0 diffs", c, r.Entries[c])
	}
	assert.Greater(t, r.Entries[AttrType], 2000)
	for _, f := range []string{FeatUserXattr, FeatTrusted, FeatCapability, FeatACLAccess, FeatACLDefault} {
		if len(m.Made[f]) > 0 {
			assert.Positive(t, r.Entries[f], "class %s was made, so it must have been checked", f)
		}
	}
}
