package storagecheck

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/config"
)

// world makes dir/a and dir/b (real directories) and returns dir.
func world(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"a", "b"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	return dir
}

// requireNames asserts err is an error whose message holds every want.
func requireNames(t *testing.T, err error, want ...string) {
	t.Helper()
	require.Error(t, err)
	for _, w := range want {
		assert.Contains(t, err.Error(), w)
	}
}

func TestCheckGood(t *testing.T) {
	dir := world(t)
	require.NoError(t, Check([]Root{
		{Host: "h1", Storage: "array-a", Path: filepath.Join(dir, "a")},
		{Host: "h1", Storage: "array-b", Path: filepath.Join(dir, "b")},
		// The same storage seen by another host at the same place is fine.
		{Host: "h2", Storage: "array-a", Path: filepath.Join(dir, "a")},
	}))
}

func TestCheckSymlinkStorage(t *testing.T) {
	dir := world(t)
	etc := filepath.Join(dir, "etc")
	require.NoError(t, os.Mkdir(etc, 0o755))
	link := filepath.Join(dir, "linked")
	require.NoError(t, os.Symlink(etc, link))
	err := Check([]Root{{Host: "h1", Storage: "array-a", Path: filepath.Join(dir, "a")}, {Host: "h1", Storage: "array-b", Path: link}})
	requireNames(t, err, "host h1", "storage array-b at "+link, "is a symlink to "+etc, "real directory")
	assert.NotContains(t, err.Error(), "storage array-a at", "array-a is fine and not named")
}

func TestCheckStorageLinkedToOtherStorage(t *testing.T) {
	dir := world(t)
	a := filepath.Join(dir, "a")
	b := filepath.Join(dir, "b2")
	require.NoError(t, os.Symlink(a, b))
	err := Check([]Root{{Host: "h1", Storage: "array-a", Path: a}, {Host: "h1", Storage: "array-b", Path: b}})
	requireNames(t, err,
		"storage array-b at "+b+" is a symlink to "+a,
		"storage array-b at "+b+" is the same directory as storage array-a at "+a+" (device ")
}

func TestCheckSamePathTwice(t *testing.T) {
	dir := world(t)
	a := filepath.Join(dir, "a")
	// The config refuses the same path string on one host; "a/." is the same directory.
	err := Check([]Root{{Host: "h1", Storage: "array-a", Path: a}, {Host: "h1", Storage: "array-b", Path: a + "/."}})
	requireNames(t, err, "storage array-b at "+a+"/. is the same directory as storage array-a at "+a, "inode ")
	// Across hosts of one machine (replctl dev): both hosts are named.
	err = Check([]Root{{Host: "a1", Storage: "array-a", Path: a}, {Host: "b1", Storage: "array-b", Path: a}})
	requireNames(t, err, "storage array-b at "+a+" (host b1) is the same directory as storage array-a at "+a+" (host a1)")
}

func TestCheckBindMountLikeSameInode(t *testing.T) {
	// A hard link to a directory is impossible, so "same inode, other path" is shown with a
	// parent symlink (the last component stays a real directory, as a bind mount would).
	dir := world(t)
	alias := filepath.Join(dir, "alias")
	require.NoError(t, os.Symlink(dir, alias))
	a, b := filepath.Join(dir, "a"), filepath.Join(alias, "a")
	err := Check([]Root{{Host: "h1", Storage: "array-a", Path: a}, {Host: "h1", Storage: "array-b", Path: b}})
	requireNames(t, err, "storage array-b at "+b+" is the same directory as storage array-a at "+a)
	assert.NotContains(t, err.Error(), "symlink", "a symlinked parent is followed, not refused")
}

func TestCheckNested(t *testing.T) {
	dir := world(t)
	outer, inner := filepath.Join(dir, "a"), filepath.Join(dir, "a", "inner")
	require.NoError(t, os.Mkdir(inner, 0o755))
	for _, order := range [][]Root{
		{{Host: "h1", Storage: "array-a", Path: outer}, {Host: "h1", Storage: "array-b", Path: inner}},
		{{Host: "h1", Storage: "array-b", Path: inner}, {Host: "h1", Storage: "array-a", Path: outer}},
	} {
		err := Check(order)
		requireNames(t, err, "storage array-b at "+inner+" is inside storage array-a at "+outer, "must not nest")
	}
	// Nested through a parent symlink: the real paths are compared and named.
	alias := filepath.Join(dir, "alias")
	require.NoError(t, os.Symlink(filepath.Join(dir, "a"), alias))
	err := Check([]Root{{Host: "h1", Storage: "array-a", Path: outer}, {Host: "h1", Storage: "array-b", Path: filepath.Join(alias, "inner")}})
	requireNames(t, err, "storage array-b at "+filepath.Join(alias, "inner")+" is inside storage array-a at "+outer, "real paths "+inner+" and "+outer)
	// A sibling whose name starts with the other's is not inside it.
	require.NoError(t, os.Mkdir(outer+"x", 0o755))
	require.NoError(t, Check([]Root{{Host: "h1", Storage: "array-a", Path: outer}, {Host: "h1", Storage: "array-b", Path: outer + "x"}}))
}

func TestCheckMissingAndNotADirectory(t *testing.T) {
	dir := world(t)
	missing := filepath.Join(dir, "mnt", "array-b")
	err := Check([]Root{{Host: "h1", Storage: "array-a", Path: filepath.Join(dir, "a")}, {Host: "h1", Storage: "array-b", Path: missing}})
	requireNames(t, err, "storage array-b at "+missing+" does not exist", "nearest existing parent: "+dir)

	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	err = Check([]Root{{Host: "h1", Storage: "array-a", Path: file}})
	requireNames(t, err, "storage array-a at "+file+" is not a directory (mode -rw-r--r--)")

	dangling := filepath.Join(dir, "dangling")
	require.NoError(t, os.Symlink(filepath.Join(dir, "gone"), dangling))
	err = Check([]Root{{Host: "h1", Storage: "array-a", Path: dangling}})
	requireNames(t, err, "storage array-a at "+dangling+" is a symlink to "+filepath.Join(dir, "gone"), "does not resolve")
}

func TestCheckReportsEveryProblem(t *testing.T) {
	dir := world(t)
	a, nope := filepath.Join(dir, "a"), filepath.Join(dir, "nope")
	err := Check([]Root{
		{Host: "h1", Storage: "array-a", Path: a},
		{Host: "h1", Storage: "array-b", Path: a + "/"},
		{Host: "h1", Storage: "array-c", Path: nope},
	})
	requireNames(t, err, "storage array-b at "+a+"/ is the same directory as storage array-a at "+a, "storage array-c at "+nope+" does not exist")
	t.Log(err)
}

func TestHostFromConfig(t *testing.T) {
	dir := world(t)
	require.NoError(t, os.Symlink(filepath.Join(dir, "a"), filepath.Join(dir, "b-link")))
	cfgText := "storage: [{name: array-a}, {name: array-b}]\n" +
		"hosts:\n" +
		"  - {name: h1, attach: {array-a: " + dir + "/a, array-b: " + dir + "/b}}\n" +
		"  - {name: h2, attach: {array-a: " + dir + "/a, array-b: " + dir + "/b-link}}\n"
	cfg, err := config.Parse([]byte(cfgText), filepath.Join(dir, "replctl.yaml"))
	require.NoError(t, err)
	require.NoError(t, Host(cfg, "h1"))
	err = Host(cfg, "h2")
	requireNames(t, err, "host h2", "storage array-b at "+dir+"/b-link is the same directory as storage array-a at "+dir+"/a")
	requireNames(t, Host(cfg, "h9"), "h9")
}
