package dataplane

import (
	"bytes"
	"encoding/hex"
	stdjson "encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"testing"

	"github.com/go-json-experiment/json"
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

// decodeDirManifestV2 is json v2's reflection over DirManifest with our unmarshalers: the
// decoder before the entries were read by hand, kept as the reference.
func decodeDirManifestV2(b []byte, dm *snapshot.DirManifest) error {
	return json.Unmarshal(b, dm, dirJSON)
}

// TestDecodeDirManifestAsBefore: what the hand-read entries give equals json v2's
// reflection for objects kopia does not write but a decoder must read the same: members in
// any order, escaped names and strings, unknown members, nulls, empty objects.
func TestDecodeDirManifestAsBefore(t *testing.T) {
	for _, obj := range []string{
		`{"entries":[{"obj":"` + strings.Repeat("ab", 16) + `","gid":7,"uid":8,"mtime":"2024-01-02T03:04:05.123456789Z","size":12,"mode":"0755","type":"f","name":"x"}],"stream":"kopia:directory"}`,
		`{"stream":"kopia:directory","entries":[{"name":"a\"b\\c\u00e9\u003c\n","type":"s","obj":"` + strings.Repeat("0f", 16) + `"}]}`,
		`{"stream":"kopia:directory","future":{"a":[1,2,{"b":null}]},"entries":[{"name":"a","later":[true,false],"obj":"` + strings.Repeat("cd", 16) + `"}]}`,
		`{"stream":"kopia:directory","entries":[{"name":null,"size":null,"uid":null,"gid":null,"type":null,"summ":null,"obj":"` + strings.Repeat("01", 16) + `"}],"summary":null}`,
		`{"stream":"kopia:directory","entries":[null,{},{"name":"b","obj":"` + strings.Repeat("ef", 16) + `"}]}`,
		`{"stream":"kopia:directory","entries":null}`,
		`{"stream":"kopia:directory","entries":[]}`,
		`{"stream":"kopia:directory"}`,
		`{}`,
		` {"stream" : "kopia:directory" , "entries" : [ { "name" : "sp" , "size" : 0 , "obj":"` + strings.Repeat("23", 16) + `" } ] } ` + "\n",
		`{"stream":"kopia:directory","entries":[{"name":"d","type":"d","mode":"02755","obj":"k` + strings.Repeat("45", 16) + `","summ":{"size":3,"files":1,"dirs":1,"maxTime":"2024-01-02T03:04:05Z","numFailed":1,"errors":[{"path":"p","error":"e"}]}}]}`,
		`{"stream":"kopia:directory","entries":[{"name":"z","size":-1,"uid":4294967295,"gid":0,"obj":"Ix` + strings.Repeat("67", 16) + `"}]}`,
	} {
		var want, got snapshot.DirManifest
		require.NoError(t, decodeDirManifestV2([]byte(obj), &want), obj)
		require.NoError(t, decodeDirManifest(strings.NewReader(obj), &got), obj)
		require.Equal(t, want, got, obj)
	}
	for _, bad := range []string{
		`{"stream":"kopia:directory","entries":[{"name":"a","mode":null}]}`,
		`{"stream":"kopia:directory","entries":[{"name":"a","mtime":null}]}`,
		`{"stream":"kopia:directory","entries":[{"name":"a","obj":null}]}`,
		`{"stream":"kopia:directory","entries":[{"name":"a","size":1.5}]}`,
		`{"stream":"kopia:directory","entries":[{"name":"a","uid":4294967296}]}`,
		`{"stream":"kopia:directory","entries":[{"name":"a","uid":-1}]}`,
		`{"stream":"kopia:directory","entries":[{"name":"a","size":"1"}]}`,
		`{"stream":"kopia:directory","entries":[{"name":1}]}`,
		`{"stream":"kopia:directory","entries":["a"]}`,
		`{"stream":"kopia:directory","entries":{}}`,
		`{"stream":"kopia:directory","stream":"kopia:directory","entries":[]}`,
		`{"stream":"kopia:directory","entries":[{"name":"a","obj":"` + strings.Repeat("ab", 16) + `","obj":"` + strings.Repeat("ab", 16) + `"}]}`,
		`[]`,
		``,
	} {
		var dm snapshot.DirManifest
		require.Error(t, decodeDirManifest(strings.NewReader(bad), &dm), bad)
	}
}

// FuzzDecodeDirManifest: whatever json v2's reflection reads, the decoder reads the same,
// and it never panics. (What it reads and json v2 refuses: a member given twice that it
// skips, or inside a summary.)
//
//	go test ./activities/dataplane -run '^$' -fuzz FuzzDecodeDirManifest -fuzztime 60s
func FuzzDecodeDirManifest(f *testing.F) {
	f.Add(testDirObject(f, 2, 1))
	f.Add([]byte(`{"stream":"kopia:directory","entries":[null,{"name":"a\u00e9","x":[{}],"obj":"` + strings.Repeat("ab", 16) + `"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var want, got snapshot.DirManifest
		errGot := decodeDirManifest(bytes.NewReader(b), &got)
		if decodeDirManifestV2(b, &want) != nil {
			return
		}
		require.NoError(t, errGot)
		require.Equal(t, want, got)
	})
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
	b.Run("json-v2-reflection", func(b *testing.B) {
		for b.Loop() {
			var dm snapshot.DirManifest
			if err := decodeDirManifestV2(obj, &dm); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("entries-by-hand", func(b *testing.B) {
		for b.Loop() {
			var dm snapshot.DirManifest
			if err := decodeDirManifest(bytes.NewReader(obj), &dm); err != nil {
				b.Fatal(err)
			}
		}
	})
}
