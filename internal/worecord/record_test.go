package worecord

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zeebo/blake3"
)

var header = Header{Job: "orders", Dataset: "orders", Run: "run-1", Epoch: 3}

func key(t *testing.T, password, job, dataset string) []byte {
	t.Helper()
	k, err := Key([]byte(password), job, dataset)
	require.NoError(t, err)
	return k
}

func record(t *testing.T, k []byte, h Header, entries []Entry) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := NewWriter(&b, k, h)
	require.NoError(t, err)
	for _, e := range entries {
		require.NoError(t, w.Add(e))
	}
	require.NoError(t, w.Close())
	return b.Bytes()
}

func fileEntry(p, content string, mode uint32) Entry {
	return Entry{Type: File, Path: p, Mode: mode, UID: 1234, GID: 5678, MtimeNs: 1_600_000_000_123_456_789,
		Size: int64(len(content)), Hash: blake3.Sum256([]byte(content))}
}

func TestRecordRoundTrips(t *testing.T) {
	k := key(t, "pw", "orders", "orders")
	entries := []Entry{
		{Type: Dir, Path: ".", Mode: 0o755, MtimeNs: 1},
		{Type: Dir, Path: "d\xff not utf-8", Mode: 0o1777, UID: 7, GID: 8, MtimeNs: -5},
		fileEntry("d\xff not utf-8/f", "content", 0o4755),
		{Type: Symlink, Path: "l", Target: "../../anywhere", MtimeNs: 9},
		{Type: Hardlink, Path: "h", Target: "d\xff not utf-8/f"},
		{Type: Fifo, Path: "p", Mode: 0o640, Xattrs: []Xattr{{"user.a", []byte{0, 1}}, {"security.x\xff", bytes.Repeat([]byte("v"), maxXattrValue)}}},
		{Type: Socket, Path: "s", Mode: 0o600},
		{Type: Char, Path: "c", Mode: 0o620, Rdev: 0x103},
		{Type: Block, Path: "b", Mode: 0o660, Rdev: 0x800},
	}
	got, err := Read(record(t, k, header, entries), k, header)
	require.NoError(t, err)
	assert.Equal(t, entries, got)
}

func TestRecordRefusesWhatItCannotHold(t *testing.T) {
	var b bytes.Buffer
	w, err := NewWriter(&b, key(t, "pw", "j", "d"), header)
	require.NoError(t, err)
	for _, p := range []string{"", "/abs", "../up", "a/../b", "a//b", "a/", "nul\x00"} {
		assert.Error(t, w.Add(Entry{Type: Dir, Path: p}), "%q", p)
	}
	assert.Error(t, w.Add(Entry{Type: Symlink, Path: "l"}), "a symlink without a target")
	assert.Error(t, w.Add(Entry{Type: 'x', Path: "x"}))
	for _, x := range []Xattr{{"", []byte("v")}, {"user.nul\x00", nil}, {"user." + string(bytes.Repeat([]byte("n"), maxXattrName)), nil}, {"user.big", make([]byte, maxXattrValue+1)}} {
		assert.Error(t, w.Add(Entry{Type: Dir, Path: "x", Xattrs: []Xattr{x}}), "xattr %.20q of %d bytes", x.Name, len(x.Value))
	}
	for _, target := range []string{"", ".", "../out", "/abs"} {
		assert.Error(t, w.Add(Entry{Type: Hardlink, Path: "h", Target: target}), "a hard link to %q", target)
	}
	_, err = Key(nil, "j", "d")
	assert.Error(t, err, "an empty password")
}

// Hostile input: a record made with another password, for another job or dataset, of
// another run, or changed in any byte is refused as a whole.
func TestReadRefusesAForgedOrMovedRecord(t *testing.T) {
	k := key(t, "pw", "orders", "orders")
	entries := []Entry{{Type: Dir, Path: ".", Mode: 0o755}, fileEntry("f", "x", 0o644)}
	good := record(t, k, header, entries)
	_, err := Read(good, k, header)
	require.NoError(t, err)

	for name, b := range map[string][]byte{
		"another password": record(t, key(t, "other", "orders", "orders"), header, entries),
		"another job":      record(t, key(t, "pw", "books", "orders"), header, entries),
		"another dataset":  record(t, key(t, "pw", "orders", "books"), header, entries),
		"truncated":        good[:len(good)-1],
		"extended":         append(bytes.Clone(good), 0),
		"empty":            nil,
	} {
		_, err := Read(b, k, header)
		assert.ErrorIs(t, err, ErrRecord, name)
	}
	for i := range good {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		_, err := Read(b, k, header)
		require.ErrorIs(t, err, ErrRecord, "byte %d flipped", i)
	}
	for _, h := range []Header{{Job: "orders", Dataset: "orders", Run: "run-0", Epoch: 3}, {Job: "orders", Dataset: "orders", Run: "run-1", Epoch: 2}} {
		_, err := Read(good, k, h)
		assert.ErrorIs(t, err, ErrRecord, "a record of %+v read as %+v", header, h)
	}
}
