package dataplane

// Names that are not valid UTF-8. kopia keeps entry names as JSON strings, which would turn
// each invalid byte into U+FFFD: the entry would come back under another name, and two such
// names could become one. An image holds such an entry under its image name instead (each
// byte of an invalid sequence as the private-use code point U+F700+byte, as macOS's SFM
// mapping does: valid UTF-8, one name per raw name), and the extras keep the raw bytes
// (ExtraEntry.Name). A pull writes the entry under its image name and renames it to its raw
// name at the end; verification maps image paths to the names on disk.

import (
	"fmt"
	"path"
	"sort"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// escapeBase is the first code point of the image names of invalid bytes (0x80..0xFF).
const escapeBase = 0xF700

// imageName is the name entry n has in an image: n itself when it is valid UTF-8.
func imageName(n string) string {
	if utf8.ValidString(n) {
		return n
	}
	var b strings.Builder
	for i := 0; i < len(n); {
		r, size := utf8.DecodeRuneInString(n[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(escapeBase + rune(n[i]))
		} else {
			b.WriteString(n[i : i+size])
		}
		i += size
	}
	return b.String()
}

// imagePath is the image path of relative path p: each component its image name.
func imagePath(p string) string {
	if utf8.ValidString(p) {
		return p
	}
	parts := strings.Split(p, "/")
	for i, c := range parts {
		parts[i] = imageName(c)
	}
	return strings.Join(parts, "/")
}

// diskNames maps the image paths of renamed entries to their raw names.
type diskNames map[string]string

// diskNames returns x's renamed entries (nil when there are none).
func (x *Extras) diskNames() diskNames {
	if x == nil {
		return nil
	}
	var m diskNames
	for _, e := range x.Entries {
		if e.Name != nil {
			if m == nil {
				m = diskNames{}
			}
			m[e.Path] = string(e.Name)
		}
	}
	return m
}

// disk is the path on disk of image path rel (relative, "/"-separated).
func (m diskNames) disk(rel string) string {
	if len(m) == 0 || rel == "." {
		return rel
	}
	parts := strings.Split(rel, "/")
	img := ""
	for i, c := range parts {
		img = path.Join(img, c)
		if raw, ok := m[img]; ok {
			parts[i] = raw
		}
	}
	return strings.Join(parts, "/")
}

// base is the name on disk of the entry at image path rel, whose image name is name.
func (m diskNames) base(rel, name string) string {
	if raw, ok := m[rel]; ok {
		return raw
	}
	return name
}

// checkName checks a renamed entry's raw name against its image path.
func (e *ExtraEntry) checkName() error {
	if e.Name == nil {
		return nil
	}
	n := string(e.Name)
	_, base := splitRel(e.Path)
	switch {
	case e.Path == ".":
		return fmt.Errorf("extras: the root has no name to restore")
	case n == "" || n == "." || n == ".." || strings.ContainsAny(n, "/\x00"):
		return fmt.Errorf("extras entry %q: raw name %q is not one path component", e.Path, n)
	case utf8.ValidString(n) || imageName(n) != base:
		return fmt.Errorf("extras entry %q: raw name %q is not the one its image name stands for", e.Path, n)
	}
	return nil
}

// renameEntries gives the renamed entries m (Extras.diskNames) of the tree under rootFd their
// raw names, deepest first (a directory keeps its image name until everything beneath it is
// renamed).
func renameEntries(rootFd int, m diskNames) error {
	if len(m) == 0 {
		return nil
	}
	paths := make([]string, 0, len(m))
	for p := range m {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool {
		if a, b := strings.Count(paths[i], "/"), strings.Count(paths[j], "/"); a != b {
			return a > b
		}
		return paths[i] < paths[j]
	})
	for _, p := range paths {
		dir, base := splitRel(p)
		fd, err := openBeneath(rootFd, dir, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return fmt.Errorf("%s: opening its directory to restore its name: %w", p, err)
		}
		err = unix.Renameat2(fd, base, fd, m[p], unix.RENAME_NOREPLACE)
		unix.Close(fd) //nolint:errcheck
		if err != nil {
			return fmt.Errorf("%s: restoring its name %q: %w", p, ShowPath(m[p]), err)
		}
	}
	return nil
}
