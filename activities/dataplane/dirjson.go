package dataplane

// Decoding kopia's directory objects. A pull decodes every directory of the new image and
// of the current replica's where they differ: 2.7 s of the 10.6 s of CPU of a 1 % pull of
// dataset B went to encoding/json, most of it in kopia's UnmarshalJSON methods for object
// IDs, permissions and timestamps, each of which starts a new decoder for one string.
// json v2 (github.com/go-json-experiment/json, the Go team's implementation behind
// encoding/json/v2) takes type-specific unmarshalers that read that string from the one
// decoder. The result is the same DirManifest encoding/json would give (TestDecodeDirManifest).

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	kfs "github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
)

// dirJSON decodes the types whose UnmarshalJSON methods dominated a directory's decoding;
// each is a JSON string, as those methods read it.
var dirJSON = json.WithUnmarshalers(json.JoinUnmarshalers(
	fromString("object ID", object.ParseID),
	fromString("mode", func(s string) (snapshot.Permissions, error) {
		v, err := strconv.ParseInt(s, 0, 32)
		return snapshot.Permissions(v), err
	}),
	fromString("time", func(s string) (kfs.UTCTimestamp, error) {
		var t time.Time
		err := t.UnmarshalText([]byte(s)) // RFC 3339, as time.Time's JSON
		return kfs.UTCTimestamp(t.UnixNano()), err
	}),
))

// fromString is an unmarshaler of T from a JSON string through parse; what names T in errors.
func fromString[T any](what string, parse func(string) (T, error)) *json.Unmarshalers {
	return json.UnmarshalFromFunc(func(d *jsontext.Decoder, v *T) error {
		tok, err := d.ReadToken()
		if err != nil {
			return err
		}
		if tok.Kind() != '"' {
			return fmt.Errorf("%s is a JSON %v, not a string", what, tok.Kind())
		}
		p, err := parse(tok.String())
		if err != nil {
			return fmt.Errorf("invalid %s %q: %w", what, tok.String(), err)
		}
		*v = p
		return nil
	})
}

// decodeDirManifest decodes one kopia directory object. Unknown fields are skipped, as
// encoding/json does (a newer kopia may add some); duplicate names and invalid UTF-8,
// which kopia's encoder never writes, are refused.
func decodeDirManifest(r io.Reader, dm *snapshot.DirManifest) error {
	return json.UnmarshalRead(r, dm, dirJSON)
}
