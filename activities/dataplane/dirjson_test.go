package dataplane

import (
	"bytes"
	"encoding/hex"
	stdjson "encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"testing"

	kfs "github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
	"github.com/stretchr/testify/require"
)

// testDirObject is a directory object as kopia writes one (its encoder is encoding/json):
// n files and a subdirectory, with every field a pull reads.
func testDirObject(t testing.TB, n int, seed uint64) []byte {
	rng := mrand.New(mrand.NewPCG(seed, 7))
	oid := func(prefix string) object.ID {
		b := make([]byte, 32)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		id, err := object.ParseID(prefix + hex.EncodeToString(b))
		require.NoError(t, err)
		return id
	}
	dm := snapshot.DirManifest{StreamType: "kopia:directory"}
	for i := range n {
		dm.Entries = append(dm.Entries, &snapshot.DirEntry{
			Name: fmt.Sprintf("f%06d", i), Type: snapshot.EntryTypeFile, Permissions: 0o644,
			FileSize: int64(256 + rng.IntN(768)), ModTime: kfs.UTCTimestamp(1_700_000_000_000_000_000 + rng.Int64N(1e15)),
			UserID: 1000, GroupID: 1000, ObjectID: oid(""),
		})
	}
	sum := &kfs.DirectorySummary{TotalFileSize: 1 << 20, TotalFileCount: int64(n), TotalDirCount: 1, MaxModTime: 1_700_000_000_123_456_789,
		FailedEntries: []*kfs.EntryWithError{{EntryPath: "x", Error: "e"}}}
	dm.Entries = append(dm.Entries, &snapshot.DirEntry{Name: "sub é", Type: snapshot.EntryTypeDirectory, Permissions: 0o2755,
		ModTime: 1_600_000_000_000_000_001, ObjectID: oid("k"), DirSummary: sum},
		&snapshot.DirEntry{Name: "ln", Type: snapshot.EntryTypeSymlink, Permissions: 0o777, FileSize: 3, ObjectID: oid("")})
	dm.Summary = sum
	var buf bytes.Buffer
	require.NoError(t, stdjson.NewEncoder(&buf).Encode(&dm))
	return buf.Bytes()
}

// TestDecodeDirManifest: the decoder gives what encoding/json gives for kopia's own
// output, and refuses what is not a directory object of that shape.
func TestDecodeDirManifest(t *testing.T) {
	for _, n := range []int{0, 1, 200} {
		b := testDirObject(t, n, uint64(n))
		var want, got snapshot.DirManifest
		require.NoError(t, stdjson.Unmarshal(b, &want))
		require.NoError(t, decodeDirManifest(bytes.NewReader(b), &got))
		require.Equal(t, want, got)
	}
	for _, bad := range []string{
		`{"stream":"kopia:directory","entries":[{"name":"a","obj":"zz"}]}`,
		`{"stream":"kopia:directory","entries":[{"name":"a","mode":"9x"}]}`,
		`{"stream":"kopia:directory","entries":[{"name":"a","mode":420}]}`,
		`{"stream":"kopia:directory","entries":[{"name":"a","mtime":"yesterday"}]}`,
		`{"stream":"kopia:directory","entries":[{"name":"a","name":"b"}]}`,
		`{"stream":"kopia:directory","entries":[{"name":"a"}]`,
		`{"stream":"kopia:directory","entries":[]} {}`,
		"{\"stream\":\"kopia:directory\",\"entries\":[{\"name\":\"\xff\"}]}",
	} {
		var dm snapshot.DirManifest
		require.Error(t, decodeDirManifest(strings.NewReader(bad), &dm), bad)
	}
}

// BenchmarkDecodeDirManifest compares the decoder with encoding/json on a directory of
// 200 files (dataset B's shape):
//
//	go test ./activities/dataplane -run '^$' -bench DecodeDirManifest -benchmem
func BenchmarkDecodeDirManifest(b *testing.B) {
	obj := testDirObject(b, 200, 1)
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			var dm snapshot.DirManifest
			if err := stdjson.NewDecoder(bytes.NewReader(obj)).Decode(&dm); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json-v2", func(b *testing.B) {
		for b.Loop() {
			var dm snapshot.DirManifest
			if err := decodeDirManifest(bytes.NewReader(obj), &dm); err != nil {
				b.Fatal(err)
			}
		}
	})
}
