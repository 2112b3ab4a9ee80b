package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/testworld"
)

// specFormat is bumped whenever the layout or content of generated datasets changes, so
// cached datasets of an older format are regenerated.
const specFormat = 1

// Spec describes a generated dataset. Every file's content is a pure function of (Seed,
// file index, version), so a dataset can be regenerated, mutated and reverted without
// keeping a pristine copy.
type Spec struct {
	Name    string `json:"name"`
	Files   int    `json:"files"`
	MinSize int    `json:"min_size"`
	MaxSize int    `json:"max_size"`
	PerDir  int    `json:"per_dir"`
	// AddDel is how many files each mutation round adds and deletes.
	AddDel int    `json:"add_del"`
	Seed   uint64 `json:"seed"`
	Format int    `json:"format"`
	// Growth: round k rewrites growthRates[(k-1) % 3] of the files instead of 1 %.
	Growth bool `json:"growth,omitempty"`
}

// growthRates are the changes of a Growth dataset's rounds, in files per 10,000: 0.01 %,
// 0.1 %, 1 %.
var growthRates = []int{1, 10, 100}

// rewrites is how many files round k rewrites.
func (s Spec) rewrites(k int) int {
	if s.Growth {
		return max(1, s.Files/10000*growthRates[(k-1)%len(growthRates)])
	}
	return max(1, s.Files/100)
}

// Bytes is the dataset's total size of regular files (base state).
func (s Spec) Bytes() int64 {
	var n int64
	for i := 0; i < s.Files; i++ {
		n += int64(s.size(i))
	}
	return n
}

func (s Spec) leaves() int { return (s.Files + s.PerDir - 1) / s.PerDir }

// leafDir is the nested directory holding leaf number l: 10 leaves per top directory.
func leafDir(l int) string { return fmt.Sprintf("d%03d/s%02d", l/10, l%10) }

func (s Spec) path(i int) string {
	return fmt.Sprintf("%s/f%06d.bin", leafDir(i/s.PerDir), i)
}

func (s Spec) size(i int) int {
	if s.MaxSize <= s.MinSize {
		return s.MinSize
	}
	r := rand.New(rand.NewPCG(s.Seed^0x9e3779b97f4a7c15, uint64(i)))
	return s.MinSize + r.IntN(s.MaxSize-s.MinSize+1)
}

// content fills buf with the random content of file i at the given version (0 = base).
func (s Spec) content(buf []byte, i, version int) {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[0:], s.Seed)
	binary.LittleEndian.PutUint64(seed[8:], uint64(i))
	binary.LittleEndian.PutUint64(seed[16:], uint64(version))
	copy(seed[24:], "replctl!")
	c := rand.NewChaCha8(seed)
	_, _ = c.Read(buf) // ChaCha8.Read never fails
}

// Mutation is one round of changes: rewritten and deleted base files (indexes), added files.
type Mutation struct {
	Round   int
	Rewrite []int
	Delete  []int
	Add     []string
}

// mutations returns rounds 1..n. Rewrites and deletes are chosen among base files not
// deleted by an earlier round, so the sequence is the same whenever it is recomputed.
func (s Spec) mutations(n int) []Mutation {
	deleted := map[int]bool{}
	var out []Mutation
	for k := 1; k <= n; k++ {
		r := rand.New(rand.NewPCG(s.Seed, uint64(k)*7919))
		m := Mutation{Round: k}
		chosen := map[int]bool{}
		pick := func() int {
			for {
				i := r.IntN(s.Files)
				if !chosen[i] && !deleted[i] {
					chosen[i] = true
					return i
				}
			}
		}
		for j := 0; j < s.rewrites(k); j++ {
			m.Rewrite = append(m.Rewrite, pick())
		}
		for j := 0; j < s.AddDel; j++ {
			m.Delete = append(m.Delete, pick())
		}
		for _, i := range m.Delete {
			deleted[i] = true
		}
		for j := 0; j < s.AddDel; j++ {
			m.Add = append(m.Add, fmt.Sprintf("%s/new-r%03d-%04d.bin", leafDir(j%s.leaves()), k, j))
		}
		out = append(out, m)
	}
	return out
}

// addedIndex is the content index of the j-th file added in round k (beyond base indexes).
func (s Spec) addedIndex(k, j int) int { return s.Files + k*100000 + j }

// datasetState is what BENCH_DIR/meta/<name>.json records about the cached dataset.
type datasetState struct {
	Spec     Spec `json:"spec"`
	Complete bool `json:"complete"`
	// Rounds of mutation applied (possibly partially: the state is written before a round).
	Rounds int `json:"rounds"`
}

// Dataset is a generated dataset on disk.
type Dataset struct {
	Spec Spec
	Dir  string
	meta string
	// Rounds is the number of mutation rounds applied to Dir.
	Rounds int
}

// PrepareDataset makes dir hold spec's dataset in its base state: it reuses a cached copy
// when the recorded spec matches and the tree checks out, reverts mutations of an earlier
// run, and regenerates otherwise. logf reports what it does.
func PrepareDataset(spec Spec, dir, metaDir string, logf func(string, ...any)) (*Dataset, error) {
	spec.Format = specFormat
	d := &Dataset{Spec: spec, Dir: dir, meta: filepath.Join(metaDir, spec.Name+".json")}
	var st datasetState
	b, err := os.ReadFile(d.meta)
	reuse := err == nil && json.Unmarshal(b, &st) == nil && st.Complete && st.Spec == spec
	if reuse && st.Rounds > 0 {
		logf("dataset %s: reverting %d mutation round(s) of an earlier run", spec.Name, st.Rounds)
		if err := d.revert(st.Rounds); err != nil {
			return nil, err
		}
	}
	if reuse {
		if err := d.check(); err != nil {
			logf("dataset %s: cached copy unusable (%v): regenerating", spec.Name, err)
			reuse = false
		}
	}
	if !reuse {
		logf("dataset %s: generating %d files (%s) in %s", spec.Name, spec.Files, human(spec.Bytes()), dir)
		if err := d.generate(); err != nil {
			return nil, err
		}
	} else {
		logf("dataset %s: reusing cached %s", spec.Name, dir)
	}
	return d, nil
}

func (d *Dataset) writeState(complete bool, rounds int) error {
	b, err := json.MarshalIndent(datasetState{Spec: d.Spec, Complete: complete, Rounds: rounds}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(d.meta), 0o755); err != nil {
		return err
	}
	tmp := d.meta + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("dataset state %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, d.meta); err != nil {
		return fmt.Errorf("dataset state %s: %w", d.meta, err)
	}
	d.Rounds = rounds
	return nil
}

func (d *Dataset) generate() error {
	if err := d.writeState(false, 0); err != nil {
		return err
	}
	if err := os.RemoveAll(d.Dir); err != nil {
		return fmt.Errorf("remove old dataset %s: %w", d.Dir, err)
	}
	for l := 0; l < d.Spec.leaves(); l++ {
		if err := os.MkdirAll(filepath.Join(d.Dir, leafDir(l)), 0o755); err != nil {
			return err
		}
	}
	idx := make([]int, d.Spec.Files)
	for i := range idx {
		idx[i] = i
	}
	if err := testworld.Parallel(idx, 2, func(i int) error { return d.writeFile(d.Spec.path(i), i, 0) }); err != nil {
		return err
	}
	// A few entries of the other kinds, so every tool must carry them over.
	if err := os.WriteFile(filepath.Join(d.Dir, "empty-file"), nil, 0o600); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(d.Dir, "empty-dir"), 0o750); err != nil {
		return err
	}
	if err := os.Symlink(d.Spec.path(0), filepath.Join(d.Dir, "link")); err != nil {
		return err
	}
	if err := syncFS(); err != nil {
		return err
	}
	return d.writeState(true, 0)
}

// writeFile writes the content of index i at version v to rel (file size from the index).
func (d *Dataset) writeFile(rel string, i, v int) error {
	buf := make([]byte, d.Spec.size(i))
	d.Spec.content(buf, i, v)
	p := filepath.Join(d.Dir, rel)
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		return fmt.Errorf("dataset %s: write %s: %w", d.Spec.Name, p, err)
	}
	return nil
}

// check is a quick sanity check of the base state: every file exists with its size and
// nothing else is there.
func (d *Dataset) check() error {
	want := map[string]int64{}
	for i := 0; i < d.Spec.Files; i++ {
		want[d.Spec.path(i)] = int64(d.Spec.size(i))
	}
	want["empty-file"] = 0
	n := 0
	err := filepath.WalkDir(d.Dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(d.Dir, p)
		sz, ok := want[rel]
		if !ok {
			return fmt.Errorf("unexpected file %s", rel)
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		if info.Size() != sz {
			return fmt.Errorf("%s has %d bytes, want %d", rel, info.Size(), sz)
		}
		n++
		return nil
	})
	if err != nil {
		return err
	}
	if n != len(want) {
		return fmt.Errorf("%d files, want %d", n, len(want))
	}
	return nil
}

// Mutate applies the next mutation round to the dataset and returns it.
func (d *Dataset) Mutate() (Mutation, error) {
	k := d.Rounds + 1
	m := d.Spec.mutations(k)[k-1]
	// Record the round first: a crash half-way is reverted like a full round.
	if err := d.writeState(true, k); err != nil {
		return m, err
	}
	for _, i := range m.Rewrite {
		if err := d.writeFile(d.Spec.path(i), i, k); err != nil {
			return m, err
		}
	}
	for _, i := range m.Delete {
		if err := os.Remove(filepath.Join(d.Dir, d.Spec.path(i))); err != nil {
			return m, fmt.Errorf("dataset %s: delete: %w", d.Spec.Name, err)
		}
	}
	for j, rel := range m.Add {
		if err := d.writeFile(rel, d.Spec.addedIndex(k, j), 0); err != nil {
			return m, err
		}
	}
	return m, nil
}

// Revert brings the dataset back to its base state.
func (d *Dataset) Revert() error {
	if d.Rounds == 0 {
		return nil
	}
	return d.revert(d.Rounds)
}

func (d *Dataset) revert(rounds int) error {
	touched := map[int]bool{}
	for _, m := range d.Spec.mutations(rounds) {
		for _, i := range append(append([]int(nil), m.Rewrite...), m.Delete...) {
			touched[i] = true
		}
		for _, rel := range m.Add {
			if err := os.Remove(filepath.Join(d.Dir, rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("dataset %s: revert: %w", d.Spec.Name, err)
			}
		}
	}
	idx := make([]int, 0, len(touched))
	for i := range touched {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	if err := testworld.Parallel(idx, 2, func(i int) error { return d.writeFile(d.Spec.path(i), i, 0) }); err != nil {
		return err
	}
	return d.writeState(true, 0)
}

// human formats a byte count with binary units, as the CLI does.
func human(n int64) string { return config.FormatBytes(n) }
