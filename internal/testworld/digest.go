package testworld

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// Entry kinds of a Tree.
const (
	KindFile  = "file"
	KindDir   = "dir"
	KindLink  = "link"
	KindOther = "other" // devices, fifos, sockets
)

// Entry is what the digest knows of one path: its kind, permissions, and a file's size and
// content hash or a symlink's target.
type Entry struct {
	Kind string
	Mode fs.FileMode // permission bits; the whole mode of KindOther
	Size int64       // KindFile
	Sum  string      // KindFile: hex SHA-256 of the content
	Link string      // KindLink: the target as stored
}

// String is the entry in one line, as Differences shows it.
func (e Entry) String() string {
	switch e.Kind {
	case KindFile:
		return fmt.Sprintf("file %o %d %s", e.Mode, e.Size, e.Sum)
	case KindDir:
		return fmt.Sprintf("dir %o", e.Mode)
	case KindLink:
		return "link " + e.Link
	}
	return "other " + e.Mode.String()
}

// Tree is the digest of a directory tree: each path (slash-separated, relative to the
// root; the root itself is ".") and its Entry. Two trees are equal when their digests are.
type Tree map[string]Entry

// Digest digests the tree at root; a symlink root is followed (a replica's published link).
// The root's own mode is in the digest as ".".
func Digest(root string) (Tree, error) {
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("digest %s: %w", root, err)
	}
	out := Tree{}
	var files []string
	err = filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(real, p)
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = Entry{Kind: KindLink, Link: t}
		case d.IsDir():
			out[rel] = Entry{Kind: KindDir, Mode: info.Mode().Perm()}
		case d.Type().IsRegular():
			out[rel] = Entry{Kind: KindFile, Mode: info.Mode().Perm()}
			files = append(files, rel)
		default:
			out[rel] = Entry{Kind: KindOther, Mode: info.Mode()}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("digest %s: %w", root, err)
	}
	// Two readers: a large tree (the benchmark's) hashes about twice as fast.
	var mu sync.Mutex
	err = Parallel(files, 2, func(rel string) error {
		size, sum, err := HashFile(filepath.Join(real, filepath.FromSlash(rel)))
		if err != nil {
			return err
		}
		mu.Lock()
		e := out[rel]
		e.Size, e.Sum = size, sum
		out[rel] = e
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("digest %s: %w", root, err)
	}
	return out, nil
}

// HashFile returns a file's size and hex SHA-256.
func HashFile(p string) (int64, string, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("reading %s: %w", p, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// Files is the part of t that are regular files.
func (t Tree) Files() Tree {
	out := Tree{}
	for p, e := range t {
		if e.Kind == KindFile {
			out[p] = e
		}
	}
	return out
}

// Paths returns t's paths, sorted.
func (t Tree) Paths() []string {
	ps := make([]string, 0, len(t))
	for p := range t {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// Sum is one short hash over the whole digest, to name a tree's state in a message.
func (t Tree) Sum() string {
	h := sha256.New()
	for _, p := range t.Paths() {
		fmt.Fprintf(h, "%s\x00%s\n", p, t[p])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Differences lists every path where got differs from want, sorted by path: "missing p",
// "extra p" or "differs p: got, want".
func (want Tree) Differences(got Tree) []string {
	keys := want.Paths()
	for _, k := range got.Paths() {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var lines []string
	for _, k := range keys {
		w, inWant := want[k]
		g, inGot := got[k]
		switch {
		case !inGot:
			lines = append(lines, "missing "+k)
		case !inWant:
			lines = append(lines, "extra "+k)
		case g != w:
			lines = append(lines, fmt.Sprintf("differs %s: %q, want %q", k, g, w))
		}
	}
	return lines
}

// Diff describes how got differs from want in at most max differences and a count of
// the rest, "" when they are equal.
func (want Tree) Diff(got Tree, max int) string {
	lines := want.Differences(got)
	if n := len(lines); n > max {
		lines = append(lines[:max], fmt.Sprintf("… %d differences in all", n))
	}
	return strings.Join(lines, "; ")
}

// Parallel runs fn on every item with n workers and returns the first error.
func Parallel[T any](items []T, n int, fn func(T) error) error {
	ch := make(chan T)
	errc := make(chan error, n)
	var wg sync.WaitGroup
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range ch {
				if err := fn(it); err != nil {
					errc <- err
					for range ch { // drain so the producer finishes
					}
					return
				}
			}
		}()
	}
	for _, it := range items {
		ch <- it
	}
	close(ch)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}
