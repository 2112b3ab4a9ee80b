package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/internal/fsjournal"
	"golang.org/x/sys/unix"
)

// makeExtrasTree adds one entry of every kind kopia's image cannot hold to dir, and returns
// the kinds it could make (xattrs need a filesystem that has them).
func makeExtrasTree(t *testing.T, dir string) map[string]int {
	t.Helper()
	want := map[string]int{}
	writeFile(t, filepath.Join(dir, "plain.txt"), []byte("plain"), 0o644, baseTime)
	require.NoError(t, unix.Mkfifo(filepath.Join(dir, "pipe"), 0o644))
	want["fifo"]++
	// A unix socket path must be short: bind in dir through a relative name.
	wd, err := os.Getwd()
	require.NoError(t, err)
	require.NoError(t, os.Chdir(dir))
	l, err := net.Listen("unix", "sock")
	require.NoError(t, os.Chdir(wd))
	require.NoError(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, l.Close())
	want["socket"]++
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "dev"), 0o755))
	require.NoError(t, unix.Mknod(filepath.Join(dir, "dev", "null0"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
	require.NoError(t, unix.Mknod(filepath.Join(dir, "dev", "blk0"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))))
	want["device"] += 2
	writeFile(t, filepath.Join(dir, "a"), []byte("linked"), 0o644, baseTime)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
	require.NoError(t, os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "sub", "b")))
	want["hardlink"] += 2
	writeFile(t, filepath.Join(dir, "x.txt"), []byte("x"), 0o644, baseTime)
	if err := unix.Lsetxattr(filepath.Join(dir, "x.txt"), "user.note", []byte("v"), 0); err == nil {
		want["xattr:user"]++
	}
	writeFile(t, filepath.Join(dir, "acl.txt"), []byte("acl"), 0o644, baseTime)
	// A POSIX ACL granting uid 1234 read: header, user_obj, user 1234, group_obj, mask, other.
	acl := posixACL(t, [][3]uint32{{0x01, 6, 0xffffffff}, {0x02, 4, 1234}, {0x04, 4, 0xffffffff}, {0x10, 4, 0xffffffff}, {0x20, 4, 0xffffffff}})
	if err := unix.Lsetxattr(filepath.Join(dir, "acl.txt"), "system.posix_acl_access", acl, 0); err == nil {
		want["acl"]++
	} else {
		t.Logf("no ACL on this filesystem: %v", err)
	}
	writeFile(t, filepath.Join(dir, "cap"), []byte("#!/bin/true\n"), 0o755, baseTime)
	// VFS_CAP_REVISION_2 with cap_net_bind_service (bit 10) permitted and effective.
	capv := make([]byte, 20)
	capv[0], capv[3] = 0x01, 0x02 // magic 0x02000001 little-endian, effective flag
	capv[4+1] = 0x04              // permitted[0] bit 10
	if err := unix.Lsetxattr(filepath.Join(dir, "cap"), "security.capability", capv, 0); err == nil {
		want["capability"]++
	} else {
		t.Logf("no file capability on this filesystem: %v", err)
	}
	return want
}

// posixACL encodes a POSIX ACL xattr value: version 2, then (tag u16, perm u16, id u32) entries.
func posixACL(t *testing.T, entries [][3]uint32) []byte {
	t.Helper()
	b := []byte{2, 0, 0, 0}
	for _, e := range entries {
		b = append(b, byte(e[0]), byte(e[0]>>8), byte(e[1]), byte(e[1]>>8), byte(e[2]), byte(e[2]>>8), byte(e[2]>>16), byte(e[2]>>24))
	}
	return b
}

func TestScanTreeCollectsExtras(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("devices and capabilities need root")
	}
	dir := t.TempDir()
	made := makeExtrasTree(t, dir)
	require.Positive(t, made["xattr:user"], "the test filesystem must have user xattrs")
	writeFile(t, filepath.Join(dir, "bad-\xff-name"), []byte("n"), 0o644, baseTime)
	writeFile(t, filepath.Join(dir, "clash-\xff"), []byte("n"), 0o644, baseTime)
	writeFile(t, filepath.Join(dir, "clash-\uf7ff"), []byte("its image name"), 0o644, baseTime)

	u, x, err := ScanTree(context.Background(), dir, ScanOptions{Name: "orders"})
	require.NoError(t, err)
	require.Equal(t, map[string]int{KindName: 1}, u.ByKind, "only the name whose image name is taken cannot be kept")
	require.Equal(t, []string{`"orders/clash-\xff" (name not valid UTF-8, and its image name is a sibling's)`}, u.First)
	require.NotNil(t, x)
	require.Equal(t, [][]string{{"a", "sub/b"}}, x.Links)
	got := map[string]ExtraEntry{}
	var order []string
	for _, e := range x.Entries {
		got[e.Path] = e
		order = append(order, e.Path)
	}
	require.IsIncreasing(t, order)
	require.Equal(t, &Special{Type: SpecialFIFO, Mode: 0o644 &^ umask(), Mtime: got["pipe"].Special.Mtime}, got["pipe"].Special)
	require.Equal(t, SpecialSocket, got["sock"].Special.Type)
	require.Equal(t, &Special{Type: SpecialChar, Mode: 0o600 &^ umask(), Rdev: unix.Mkdev(1, 3), Mtime: got["dev/null0"].Special.Mtime}, got["dev/null0"].Special)
	require.Equal(t, SpecialBlock, got["dev/blk0"].Special.Type)
	require.Equal(t, []Xattr{{Name: "user.note", Value: []byte("v")}}, got["x.txt"].Xattrs)
	if made["acl"] > 0 {
		require.Equal(t, "system.posix_acl_access", got["acl.txt"].Xattrs[0].Name)
	}
	if made["capability"] > 0 {
		require.Equal(t, capabilityXattr, got["cap"].Xattrs[0].Name)
	}
	require.NotContains(t, got, "plain.txt")

	// The summary alone (the preflight) collects nothing.
	u2, err := ScanUnsupported(context.Background(), dir, ScanOptions{Name: "orders"})
	require.NoError(t, err)
	require.Equal(t, u, u2)
}

// TestPushListingFeedsTheScan: the extras a push keeps, collected from its own listing,
// are what a walk of their own (ScanTree) collects from the same tree, root attribute,
// deep entries, links, special entries and odd names included.
func TestPushListingFeedsTheScan(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("devices and capabilities need root")
	}
	e := newEnv(t)
	makeExtrasTree(t, e.src)
	require.NoError(t, os.MkdirAll(filepath.Join(e.src, "deep", "er", "est"), 0o755))
	writeFile(t, filepath.Join(e.src, "deep", "er", "est", "bad-\xff-name"), []byte("n"), 0o644, baseTime)
	require.NoError(t, os.Link(filepath.Join(e.src, "a"), filepath.Join(e.src, "deep", "er", "a2")))
	require.NoError(t, unix.Lsetxattr(filepath.Join(e.src, "deep", "er"), "user.dir", []byte("d"), 0))
	require.NoError(t, unix.Lsetxattr(e.src, "user.root", []byte("r"), 0))
	_, want, err := ScanTree(context.Background(), e.src, ScanOptions{Name: e.ds})
	require.NoError(t, err)
	require.NotNil(t, want)
	res := e.push()
	got := loadExtrasOf(t, e, res.ImageID)
	require.Equal(t, want, got)
	require.Equal(t, [][]string{{"a", "deep/er/a2", "sub/b"}}, got.Links)
}

func umask() uint32 {
	m := unix.Umask(0)
	unix.Umask(m)
	return uint32(m)
}

func TestScanCapsPathsButCountsAll(t *testing.T) {
	dir := t.TempDir()
	for i := range 50 {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("p%02d\xff", i)), nil, 0o644, baseTime)
		writeFile(t, filepath.Join(dir, fmt.Sprintf("p%02d\uf7ff", i)), nil, 0o644, baseTime)
	}

	u, err := ScanUnsupported(context.Background(), dir, ScanOptions{})
	require.NoError(t, err)
	require.Equal(t, 50, u.Count)
	require.Equal(t, map[string]int{KindName: 50}, u.ByKind)
	require.Len(t, u.First, UnsupportedFirst)
	require.Equal(t, `"p00\xff" (name not valid UTF-8, and its image name is a sibling's)`, u.First[0])
	require.Equal(t, `"p19\xff" (name not valid UTF-8, and its image name is a sibling's)`, u.First[UnsupportedFirst-1])
	require.Contains(t, u.String(), `50 entries cannot be replicated (name 50): "p00\xff" (name not valid UTF-8, and its image name is a sibling's), `)
	require.True(t, strings.HasSuffix(u.String(), " and 30 more"), u.String())

	u, err = ScanUnsupported(context.Background(), dir, ScanOptions{MaxEntries: 10})
	require.NoError(t, err)
	require.True(t, u.Partial, "a bounded scan says it did not see everything")
	require.Less(t, u.Count, 50)

	u, err = ScanUnsupported(context.Background(), dir, ScanOptions{MaxTime: time.Nanosecond})
	require.NoError(t, err)
	require.True(t, u.Partial, "a scan out of time says it did not see everything")

	clean := t.TempDir()
	makeTree(t, clean)
	u, err = ScanUnsupported(context.Background(), clean, ScanOptions{})
	require.NoError(t, err)
	require.True(t, u.Empty(), "regular files, dirs and symlinks are kept: %v", u)
}

// By default a push refuses a tree with entries that cannot be replicated (a name that is
// not valid UTF-8 whose image name is a sibling's real name), naming them; with OnUnsupported "skip" it keeps the image without them
// and the replica's meta record says it is incomplete. A FIFO and hard links are kept.
func TestPushRefusesOrSkipsUnsupported(t *testing.T) {
	e := newEnv(t)
	writeFile(t, filepath.Join(e.src, "f"), []byte("x"), 0o644, baseTime)
	require.NoError(t, unix.Mkfifo(filepath.Join(e.src, "fifo"), 0o644))
	writeFile(t, filepath.Join(e.src, "a"), []byte("linked"), 0o644, baseTime)
	require.NoError(t, os.Link(filepath.Join(e.src, "a"), filepath.Join(e.src, "b")))
	writeFile(t, filepath.Join(e.src, "bad-\xfe"), []byte("n"), 0o644, baseTime)
	writeFile(t, filepath.Join(e.src, "bad-\uf7fe"), []byte("its image name"), 0o644, baseTime)

	req := PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds}
	_, err := e.repos.Push(context.Background(), req, nil)
	require.ErrorIs(t, err, ErrUnsupported)
	require.EqualError(t, err, `push: 1 entry cannot be replicated (name 1): "data/set1/bad-\xfe" (name not valid UTF-8, and its image name is a sibling's); `+
		"set on_unsupported: skip on job job1 to replicate without them")
	require.Zero(t, e.manifests(sourceInfo(e.job, e.ds)), "no image is kept")

	req.OnUnsupported = "sometimes"
	_, err = e.repos.Push(context.Background(), req, nil)
	require.ErrorIs(t, err, ErrBadInput)

	req.OnUnsupported = OnUnsupportedSkip
	res, err := e.repos.Push(context.Background(), req, nil)
	require.NoError(t, err)
	require.NotNil(t, res.Unsupported)
	require.Equal(t, 1, res.Unsupported.Count)

	pres := e.pull(res.ImageID, "r1")
	require.True(t, pres.Incomplete)
	require.True(t, pres.Verified, "verified against its image, which lacks the bad name")
	require.FileExists(t, filepath.Join(pres.ReplicaPath, "f"))
	require.FileExists(t, filepath.Join(pres.ReplicaPath, "bad-\uf7fe"), "the sibling with the real name is kept")
	require.NoFileExists(t, filepath.Join(pres.ReplicaPath, "bad-\xfe"))
	fi, err := os.Lstat(filepath.Join(pres.ReplicaPath, "fifo"))
	require.NoError(t, err)
	require.Equal(t, os.ModeNamedPipe, fi.Mode().Type(), "the fifo is kept beside the image")
	require.Equal(t, inode(t, filepath.Join(pres.ReplicaPath, "a")), inode(t, filepath.Join(pres.ReplicaPath, "b")), "the hard links are kept")
	m, err := readMeta(newLayout(e.target, e.ds).metaFile("r1"))
	require.NoError(t, err)
	require.True(t, m.Incomplete)
	require.Equal(t, res.Unsupported, m.Unsupported)
	b, err := os.ReadFile(newLayout(e.target, e.ds).metaFile("r1"))
	require.NoError(t, err)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(b, &raw))
	require.Equal(t, true, raw["incomplete"])

	// A precopy reads the live tree and never refuses: the push decides.
	req.OnUnsupported, req.Precopy, req.PrecopyFirst = "", true, true
	pre, err := e.repos.Push(context.Background(), req, nil)
	require.NoError(t, err)
	require.Nil(t, pre.Unsupported)
	// Unless it does the run's preflight: its listing is looked at, its finding returned.
	req.ScanUnsupported = true
	pre, err = e.repos.Push(context.Background(), req, nil)
	require.NoError(t, err)
	require.NotNil(t, pre.Unsupported)
	require.Equal(t, 1, pre.Unsupported.Count)
	require.Equal(t, []string{`"data/set1/bad-\xfe" (name not valid UTF-8, and its image name is a sibling's)`}, pre.Unsupported.First)
	req.ScanUnsupported = false

	// A complete image leaves no mark on its replica.
	require.NoError(t, os.Remove(filepath.Join(e.src, "bad-\xfe")))
	clean := e.push()
	require.Nil(t, clean.Unsupported)
	require.False(t, e.pull(clean.ImageID, "r2").Incomplete)
	m, err = readMeta(newLayout(e.target, e.ds).metaFile("r2"))
	require.NoError(t, err)
	require.False(t, m.Incomplete)
	require.Nil(t, m.Unsupported)
}

// TestMeasureScan times ScanUnsupported and an unchanged push (which runs the scan beside
// kopia's walk) on a tree of many small files. Skipped unless REPLCTL_MEASURE is set:
//
//	REPLCTL_MEASURE=1 REPLCTL_MEASURE_FILES=200000 go test ./activities/dataplane -run TestMeasureScan -v
func TestMeasureScan(t *testing.T) {
	if os.Getenv("REPLCTL_MEASURE") == "" {
		t.Skip("set REPLCTL_MEASURE=1 to run")
	}
	files := envInt("REPLCTL_MEASURE_FILES", 200000)
	e := newEnv(t)
	for d := range (files + 199) / 200 {
		dir := filepath.Join(e.src, fmt.Sprintf("d%04d", d))
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for f := range min(200, files-d*200) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", f)), []byte{byte(f)}, 0o644))
		}
	}
	e.push()
	// REPLCTL_MEASURE_PARALLEL: directory readers (default: the preflight's); REPLCTL_MEASURE_DROP=1:
	// each scan starts from a dropped page cache.
	par := envInt("REPLCTL_MEASURE_PARALLEL", 0)
	for i := range 3 {
		if os.Getenv("REPLCTL_MEASURE_DROP") != "" {
			unix.Sync()
			require.NoError(t, os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0))
		}
		t0 := time.Now()
		u, err := ScanUnsupported(context.Background(), e.src, ScanOptions{Parallel: par})
		require.NoError(t, err)
		require.True(t, u.Empty())
		scan := time.Since(t0)
		t0 = time.Now()
		e.push()
		t.Logf("run %d: %d files: scan %v, unchanged push (scan beside it) %v", i, files, scan.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	}
	// What the preflight does with the agent's change journal (internal/fsjournal): 1 % of
	// the files rewritten, 0.01 % deleted and as many added, then a scan of what changed.
	j, err := fsjournal.Open(fsjournal.Options{})
	require.NoError(t, err)
	defer j.Close()
	for i := range 3 {
		p, err := j.Begin(e.src)
		require.NoError(t, err)
		for f := range files / 100 {
			d, n := f*7%((files+199)/200), f%200
			require.NoError(t, os.WriteFile(filepath.Join(e.src, fmt.Sprintf("d%04d/f%03d", d, n)), []byte{byte(i)}, 0o644))
		}
		for f := range max(files/10000, 1) {
			d := f * 13 % ((files + 199) / 200)
			require.NoError(t, os.Remove(filepath.Join(e.src, fmt.Sprintf("d%04d/f%03d", d, 199-i))))
			require.NoError(t, os.WriteFile(filepath.Join(e.src, fmt.Sprintf("d%04d/new%d", d, i)), nil, 0o644))
		}
		if os.Getenv("REPLCTL_MEASURE_DROP") != "" {
			unix.Sync()
			require.NoError(t, os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0))
		}
		t0 := time.Now()
		ch, err := j.Since(p)
		require.NoError(t, err)
		since := time.Since(t0)
		u, err := ScanChangedUnsupported(context.Background(), e.src, ch.Dirs, ch.Trees, ch.Names, ScanOptions{Parallel: par})
		require.NoError(t, err)
		require.True(t, u.Empty())
		t.Logf("journal %d: %d directories changed: since %v, scan of them %v", i, len(ch.Dirs), since.Round(time.Microsecond), (time.Since(t0) - since).Round(time.Microsecond))
	}
}

// An entry the push cannot read fails it (kopia's file and directory errors are not ignored
// outside a precopy): unreadable entries need no scan. Root reads anything, so this runs only
// without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, e.g.:
//
//	go test -c ./activities/dataplane && setpriv --bounding-set -dac_override,-dac_read_search ./dataplane.test -test.run TestPushFailsOnUnreadableEntry
func TestPushFailsOnUnreadableEntry(t *testing.T) {
	e := newEnv(t)
	writeFile(t, filepath.Join(e.src, "secret"), []byte("x"), 0o000, baseTime)
	if f, err := os.Open(filepath.Join(e.src, "secret")); err == nil {
		f.Close()
		t.Skip("this process reads a mode 000 file (root with CAP_DAC_OVERRIDE)")
	}
	_, err := e.repos.Push(context.Background(), PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds}, nil)
	require.ErrorContains(t, err, "1 entries could not be read")
	require.Zero(t, e.manifests(sourceInfo(e.job, e.ds)), "no image is kept")
}
