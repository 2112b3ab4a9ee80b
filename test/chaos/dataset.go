package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/replctl/replctl/internal/testworld"
)

// headerSize is the length of the line every file of a generation starts with.
const headerSize = 64

// generation is one version of the source dataset: the files it has (their digest as
// testworld.Digest gives it) and their total size.
type generation struct {
	N     int
	Files testworld.Tree
	Bytes int64
}

// datasetShape bounds the generations the harness writes.
type datasetShape struct {
	FilesMin, FilesMax int
	SizeMin, SizeMax   int64
}

// header is the first line of every file: its generation and its own path, so a reader can
// tell from a few bytes which generation a file belongs to.
func header(gen int, rel string) []byte {
	s := fmt.Sprintf("replctl-chaos gen=%d path=%s", gen, rel)
	if len(s) > headerSize-1 {
		s = s[:headerSize-1]
	}
	b := make([]byte, headerSize)
	copy(b, s)
	for i := len(s); i < headerSize-1; i++ {
		b[i] = ' '
	}
	b[headerSize-1] = '\n'
	return b
}

// parseHeader returns the generation named in a file's first bytes.
func parseHeader(b []byte) (int, error) {
	const prefix = "replctl-chaos gen="
	if len(b) < headerSize || !bytes.HasPrefix(b, []byte(prefix)) {
		return 0, fmt.Errorf("no generation header (got %q)", truncate(string(b), 40))
	}
	rest := string(b[len(prefix):headerSize])
	end := strings.IndexByte(rest, ' ')
	if end < 0 {
		return 0, fmt.Errorf("bad generation header %q", truncate(string(b), 40))
	}
	return strconv.Atoi(rest[:end])
}

// filePath is the path of file i of a generation: nested directories, stable across
// generations so that consecutive generations overlap partly.
func filePath(i int) string {
	return fmt.Sprintf("d%02d/s%d/f%03d.bin", i%7, i%3, i)
}

// writeGeneration replaces the dataset in dir by generation gen, as an application writing
// in place would: it rewrites every file of the new generation, removes the files (and
// emptied directories) the new generation does not have, and returns the digests.
func writeGeneration(dir string, gen int, shape datasetShape, rng *rand.Rand) (*generation, error) {
	n := shape.FilesMin + rng.IntN(shape.FilesMax-shape.FilesMin+1)
	g := &generation{N: gen, Files: make(testworld.Tree, n)}
	buf := make([]byte, shape.SizeMax)
	for i := 0; i < n; i++ {
		rel := filePath(i)
		size := shape.SizeMin + rng.Int64N(shape.SizeMax-shape.SizeMin+1)
		if size < headerSize {
			size = headerSize
		}
		b := buf[:size]
		copy(b, header(gen, rel))
		fill(b[headerSize:], uint64(gen), uint64(i))
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return nil, fmt.Errorf("writing generation %d file %s: %w", gen, p, err)
		}
		// The mode as written (umask applied; a rewrite keeps the file's mode).
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		g.Files[rel] = testworld.Entry{Kind: testworld.KindFile, Mode: st.Mode().Perm(), Size: size, Sum: hex.EncodeToString(sum[:])}
		g.Bytes += size
	}
	// Remove what the new generation does not have, deepest first.
	var extra, dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		switch {
		case rel == ".":
		case d.IsDir():
			dirs = append(dirs, p)
		default:
			if _, ok := g.Files[rel]; !ok {
				extra = append(extra, p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing source %s: %w", dir, err)
	}
	for _, p := range extra {
		if err := os.Remove(p); err != nil {
			return nil, fmt.Errorf("removing %s (not in generation %d): %w", p, gen, err)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	for _, d := range dirs {
		_ = os.Remove(d) // fails (as it should) unless empty
	}
	return g, nil
}

// fill writes deterministic pseudo-random bytes for file i of generation gen.
func fill(b []byte, gen, i uint64) {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[0:], gen)
	binary.LittleEndian.PutUint64(seed[8:], i)
	c := rand.NewChaCha8(seed)
	_, _ = c.Read(b)
}

// generations remembers every generation written in a harness run (the reader may find any
// of them on the target).
type generations struct {
	mu sync.Mutex
	m  map[int]*generation
}

func (gs *generations) add(g *generation) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gs.m == nil {
		gs.m = map[int]*generation{}
	}
	gs.m[g.N] = g
}

func (gs *generations) get(n int) *generation {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	return gs.m[n]
}

// scannedFile is a file found in a tree: its size and (when read) its generation header.
type scannedFile struct {
	Size int64
	Gen  int
	Err  error
}

// scanTree lists the regular files under root with their sizes and generation headers. Any
// entry that is neither a directory nor a regular file is an error.
func scanTree(root string) (map[string]scannedFile, error) {
	out := map[string]scannedFile{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if rel == "." || d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: unexpected %s", p, d.Type())
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		sf := scannedFile{Size: info.Size()}
		sf.Gen, sf.Err = readGen(p)
		out[rel] = sf
		return nil
	})
	return out, err
}

// readGen reads a file's header and returns its generation.
func readGen(p string) (int, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b := make([]byte, headerSize)
	if _, err := io.ReadFull(f, b); err != nil {
		return 0, fmt.Errorf("reading header of %s: %w", p, err)
	}
	return parseHeader(b)
}

// replicaFiles is the digest of the tree at root without its directories: what a
// generation's Files is compared with (a symlink or device in a replica shows as extra).
func replicaFiles(root string) (testworld.Tree, error) {
	t, err := testworld.Digest(root)
	if err != nil {
		return nil, err
	}
	for p, e := range t {
		if e.Kind == testworld.KindDir {
			delete(t, p)
		}
	}
	return t, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// resolveLink returns the directory the replica symlink points to now ("" if there is no
// link yet).
func resolveLink(link string) (string, error) {
	t, err := os.Readlink(link)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(t) {
		t = filepath.Join(filepath.Dir(link), t)
	}
	return t, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
