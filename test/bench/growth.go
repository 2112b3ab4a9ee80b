package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/replctl/replctl/internal/testworld"
)

// growthMode is the sample mode of a Growth dataset's round k: "incremental 0.01%" ...
func growthMode(k int) string {
	r := growthRates[(k-1)%len(growthRates)]
	return "incremental " + strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", float64(r)/100), "0"), ".") + "%"
}

// growthModes are the modes of a Growth dataset's rounds, smallest change first.
func growthModes() []string {
	out := make([]string, len(growthRates))
	for i := range growthRates {
		out[i] = growthMode(i + 1)
	}
	return out
}

// growthPhase measures how each tool's incremental time grows with the change on a large
// dataset (C): one full copy by replctl and rsync as the starting point, then rounds that
// rewrite 0.01 %, 0.1 % and 1 % of the files in turn, b.o.runs times each, both tools and
// the walk floor in rotating order, every copy compared with the source.
func (b *bench) growthPhase(ctx context.Context, ds *Dataset) error {
	job := b.job("bench-" + ds.Spec.Name)
	if err := b.digestSource(ds); err != nil {
		return err
	}
	for _, tool := range []string{"replctl", "rsync"} {
		s, err := b.copyBy(ctx, tool, job, ds, true)
		if err != nil {
			return fmt.Errorf("full copy by %s: %w", tool, err)
		}
		s.Round = 1
		b.record(s)
	}
	rounds := b.o.runs * len(growthRates)
	for r := 1; r <= rounds; r++ {
		if err := b.mutateKnown(ds); err != nil {
			return err
		}
		mode := growthMode(ds.Rounds)
		for _, tool := range rotate([]string{"replctl", "rsync", toolWalk}, r-1) {
			if err := ctx.Err(); err != nil {
				return err
			}
			s, err := b.copyBy(ctx, tool, job, ds, false)
			if err != nil {
				return fmt.Errorf("%s copy %d by %s: %w", mode, r, tool, err)
			}
			s.Mode = mode
			s.Round = (r-1)/len(growthRates) + 1
			b.record(s)
		}
	}
	if err := ds.Revert(); err != nil {
		return err
	}
	delete(b.srcDigest, ds.Spec.Name)
	return removeAll(ctx, b.peerDir("rsync", ds.Spec.Name))
}

// mutateKnown applies the dataset's next round and updates the source's digest from what
// the round changed (a full digest of C costs more than the copies it checks); every copy
// is still digested in full.
func (b *bench) mutateKnown(ds *Dataset) error {
	m, err := ds.Mutate()
	if err != nil {
		return err
	}
	b.logf("dataset %s: mutation %d (%s): %d rewritten, %d deleted, %d added", ds.Spec.Name, m.Round, growthMode(m.Round), len(m.Rewrite), len(m.Delete), len(m.Add))
	t := b.srcDigest[ds.Spec.Name]
	var changed []string
	for _, i := range m.Rewrite {
		changed = append(changed, ds.Spec.path(i))
	}
	changed = append(changed, m.Add...)
	for _, i := range m.Delete {
		delete(t, ds.Spec.path(i))
	}
	sort.Strings(changed)
	for _, rel := range changed {
		e, err := fileEntry(filepath.Join(ds.Dir, rel))
		if err != nil {
			return err
		}
		t[rel] = e
	}
	return nil
}

// fileEntry is a regular file's digest entry.
func fileEntry(p string) (testworld.Entry, error) {
	info, err := os.Lstat(p)
	if err != nil {
		return testworld.Entry{}, err
	}
	if !info.Mode().IsRegular() {
		return testworld.Entry{}, fmt.Errorf("%s: not a regular file", p)
	}
	f, err := os.Open(p)
	if err != nil {
		return testworld.Entry{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return testworld.Entry{}, fmt.Errorf("reading %s: %w", p, err)
	}
	return testworld.Entry{Kind: testworld.KindFile, Mode: info.Mode().Perm(), Size: n, Sum: hex.EncodeToString(h.Sum(nil))}, nil
}
