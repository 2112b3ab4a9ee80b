package dataplane

// Decoding kopia's directory objects. A pull decodes every directory of the new image and
// of the current replica's where they differ: 2.7 s of the 10.6 s of CPU of a 1 % pull of
// dataset B went to encoding/json, most of it in kopia's UnmarshalJSON methods for object
// IDs, permissions and timestamps, each of which starts a new decoder for one string.
// json v2 (github.com/go-json-experiment/json, the Go team's implementation behind
// encoding/json/v2) takes type-specific unmarshalers that read that string from the one
// decoder. The result is the same DirManifest encoding/json would give (TestDecodeDirManifest).

import (
	"bytes"
	"errors"
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
	fromString("object ID", parseObjectID),
	fromString("mode", parseMode),
	fromString("time", parseTime),
))

// parseObjectID parses a kopia object ID.
func parseObjectID(b []byte) (object.ID, error) { return object.ParseID(string(b)) }

// parseMode parses kopia's permissions, an octal string.
func parseMode(b []byte) (snapshot.Permissions, error) {
	v, err := strconv.ParseInt(string(b), 0, 32)
	return snapshot.Permissions(v), err
}

// parseEntryType returns kopia's entry type, its constants for the usual ones.
func parseEntryType(b []byte) (snapshot.EntryType, error) {
	for _, t := range []snapshot.EntryType{snapshot.EntryTypeFile, snapshot.EntryTypeDirectory, snapshot.EntryTypeSymlink} {
		if string(t) == string(b) {
			return t, nil
		}
	}
	return snapshot.EntryType(b), nil
}

// parseTime parses kopia's timestamps: RFC 3339, as time.Time's JSON.
func parseTime(b []byte) (kfs.UTCTimestamp, error) {
	var t time.Time
	err := t.UnmarshalText(b)
	return kfs.UTCTimestamp(t.UnixNano()), err
}

// fromString is an unmarshaler of T from a JSON string (not null) through parse; what
// names T in errors.
func fromString[T any](what string, parse func([]byte) (T, error)) *json.Unmarshalers {
	return json.UnmarshalFromFunc(func(d *jsontext.Decoder, v *T) error {
		return readScalar(d, what, '"', v, parse, false)
	})
}

// decodeDirManifest decodes one kopia directory object. Unknown fields are skipped, as
// encoding/json does (a newer kopia may add some); a member given twice and invalid UTF-8,
// which kopia's encoder never writes, are refused (a member of a summary or one we skip is
// not checked for a second time); names match exactly, as json v2's do.
// The entries, most of an object, are read field by field from jsontext's token stream:
// json.Unmarshal's reflection, its lookup of our unmarshalers for each value and jsontext's
// set of every name read took about a third of its time. The summaries, one per
// directory, go through json v2.
func decodeDirManifest(r io.Reader, dm *snapshot.DirManifest) error {
	d := jsontext.NewDecoder(r, jsontext.AllowDuplicateNames(true))
	err := readObject(d, "directory object", manifestFields, func(field int) error {
		switch field {
		case fieldStream:
			return readString(d, "stream", &dm.StreamType)
		case fieldEntries:
			return readEntries(d, &dm.Entries)
		case fieldSummary:
			return json.UnmarshalDecode(d, &dm.Summary, dirJSON)
		default:
			return d.SkipValue()
		}
	})
	if err != nil {
		return err
	}
	if _, err := d.ReadToken(); err != io.EOF {
		if err == nil {
			err = errors.New("data after the directory object")
		}
		return err
	}
	return nil
}

// The members read of a directory object and of an entry (snapshot.DirManifest, DirEntry),
// in the order of the constants that index them.
var (
	manifestFields = []string{"stream", "entries", "summary"}
	entryFields    = []string{"name", "type", "mode", "size", "mtime", "uid", "gid", "obj", "summ"}
)

const (
	fieldStream = iota
	fieldEntries
	fieldSummary
)

const (
	fieldName = iota
	fieldType
	fieldMode
	fieldSize
	fieldMtime
	fieldUID
	fieldGID
	fieldObj
	fieldSumm
)

// readObject reads a JSON object (null is none), calling member with the index in fields
// of each member's name (-1: another name); member must read the value. A name of fields
// given twice is an error.
func readObject(d *jsontext.Decoder, what string, fields []string, member func(field int) error) error {
	if isNull, err := readOpen(d, what, '{'); err != nil || isNull {
		return err
	}
	var seen uint64
	for d.PeekKind() == '"' {
		v, err := d.ReadValue()
		if err != nil {
			return err
		}
		name, err := unquoteBytes(v)
		if err != nil {
			return err
		}
		field := -1
		for i, f := range fields {
			if f == string(name) {
				field = i
				break
			}
		}
		if field >= 0 {
			if seen&(1<<field) != 0 {
				return fmt.Errorf("%s: duplicate name %q", what, fields[field])
			}
			seen |= 1 << field
		}
		if err := member(field); err != nil {
			return err
		}
	}
	_, err := d.ReadToken() // '}', or the decoder's error
	return err
}

// readOpen reads the start of an object or array (kind '{' or '['), or a null.
func readOpen(d *jsontext.Decoder, what string, kind jsontext.Kind) (isNull bool, err error) {
	tok, err := d.ReadToken()
	if err != nil {
		return false, err
	}
	switch tok.Kind() {
	case 'n':
		return true, nil
	case kind:
		return false, nil
	}
	return false, fmt.Errorf("%s is a JSON %v, not a %v", what, tok.Kind(), kind)
}

// readEntries reads the entries array (null is none; a null element is a nil entry).
func readEntries(d *jsontext.Decoder, out *[]*snapshot.DirEntry) error {
	if isNull, err := readOpen(d, "entries", '['); err != nil || isNull {
		*out = nil
		return err
	}
	entries := []*snapshot.DirEntry{}
	for d.PeekKind() != ']' {
		if d.PeekKind() == 'n' {
			if _, err := d.ReadToken(); err != nil {
				return err
			}
			entries = append(entries, nil)
			continue
		}
		e := &snapshot.DirEntry{}
		if err := readEntry(d, e); err != nil {
			return err
		}
		entries = append(entries, e)
	}
	if _, err := d.ReadToken(); err != nil {
		return err
	}
	*out = entries
	return nil
}

// readEntry reads one directory entry.
func readEntry(d *jsontext.Decoder, e *snapshot.DirEntry) error {
	return readObject(d, "an entry", entryFields, func(field int) error {
		switch field {
		case fieldName:
			return readString(d, "name", &e.Name)
		case fieldType:
			return readScalar(d, "type", '"', &e.Type, parseEntryType, true)
		case fieldMode:
			return readScalar(d, "mode", '"', &e.Permissions, parseMode, false)
		case fieldSize:
			return readScalar(d, "size", '0', &e.FileSize, parseInt64, true)
		case fieldMtime:
			return readScalar(d, "mtime", '"', &e.ModTime, parseTime, false)
		case fieldUID:
			return readScalar(d, "uid", '0', &e.UserID, parseUint32, true)
		case fieldGID:
			return readScalar(d, "gid", '0', &e.GroupID, parseUint32, true)
		case fieldObj:
			return readScalar(d, "object ID", '"', &e.ObjectID, parseObjectID, false)
		case fieldSumm:
			return json.UnmarshalDecode(d, &e.DirSummary, dirJSON)
		default:
			return d.SkipValue()
		}
	})
}

// readValue reads the next value, which must be of kind k or null (isNull then).
func readValue(d *jsontext.Decoder, what string, k jsontext.Kind) (v jsontext.Value, isNull bool, err error) {
	v, err = d.ReadValue()
	if err != nil {
		return nil, false, err
	}
	switch v.Kind() {
	case k:
		return v, false, nil
	case 'n':
		return nil, true, nil
	}
	return nil, false, fmt.Errorf("%s is a JSON %v, not a %v", what, v.Kind(), k)
}

// readScalar reads a string (kind '"') or a number (kind '0') and parses it: a string's
// contents, a number's text. null is the zero value where nullOK, else an error (the
// strings dirJSON parses refuse it, as before).
func readScalar[T any](d *jsontext.Decoder, what string, kind jsontext.Kind, out *T, parse func([]byte) (T, error), nullOK bool) error {
	v, isNull, err := readValue(d, what, kind)
	if err != nil {
		return err
	}
	if isNull {
		if !nullOK {
			return fmt.Errorf("%s is a JSON null, not a %v", what, kind)
		}
		var zero T
		*out = zero
		return nil
	}
	b := []byte(v)
	if kind == '"' {
		if b, err = unquoteBytes(v); err != nil {
			return err
		}
	}
	p, err := parse(b)
	if err != nil {
		return fmt.Errorf("invalid %s %q: %w", what, b, err)
	}
	*out = p
	return nil
}

// readString reads a string (null: the empty string).
func readString(d *jsontext.Decoder, what string, out *string) error {
	return readScalar(d, what, '"', out, func(b []byte) (string, error) { return string(b), nil }, true)
}

// parseInt64 and parseUint32 parse a JSON number that must be an integer of the type.
func parseInt64(b []byte) (int64, error) { return strconv.ParseInt(string(b), 10, 64) }

func parseUint32(b []byte) (uint32, error) {
	n, err := strconv.ParseUint(string(b), 10, 32)
	return uint32(n), err
}

// unquoteBytes returns what a JSON string value holds, in v itself when it has no escapes.
func unquoteBytes(v jsontext.Value) ([]byte, error) {
	if len(v) >= 2 && bytes.IndexByte(v[1:len(v)-1], '\\') < 0 {
		return v[1 : len(v)-1], nil
	}
	return jsontext.AppendUnquote(nil, v)
}
