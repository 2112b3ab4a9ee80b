package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/replctl/replctl/internal/testworld"
)

// fenceSeen is a fence record the reader saw: the epoch and when the target recorded it.
type fenceSeen struct {
	Epoch    int64     `json:"epoch"`
	Agent    string    `json:"agent"`
	Recorded time.Time `json:"time"`
}

// readerCounts are what the reader found, over the whole harness run or one trial.
type readerCounts struct {
	Samples, Full       int
	Partial, Mixed, Bad int
}

func (c readerCounts) problems() int { return c.Partial + c.Mixed + c.Bad }

// reader samples the target all the time, as an application reading the replica would: it
// resolves T/orders once per sample and checks that the tree it reads is ONE complete
// generation. Per sample it reads every file's header (the generation), compares the file
// list and sizes with that generation, and fully hashes a few random files; every fullEvery
// it hashes the whole tree. It also polls the fence record so the checker knows when each
// epoch was recorded.
type reader struct {
	link, fence string
	gens        *generations
	rng         *rand.Rand
	fullEvery   time.Duration
	interval    time.Duration

	mu       sync.Mutex
	total    readerCounts
	trial    readerCounts
	problems []string
	fences   map[int64]fenceSeen
	lastFull time.Time
}

func newReader(link, fence string, gens *generations, seed uint64) *reader {
	return &reader{
		link: link, fence: fence, gens: gens, rng: rand.New(rand.NewPCG(seed, 99)),
		fullEvery: 1500 * time.Millisecond, interval: 40 * time.Millisecond,
		fences: map[int64]fenceSeen{},
	}
}

// run samples until ctx is done.
func (r *reader) run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		r.pollFence()
		full := time.Since(r.lastFull) >= r.fullEvery
		if full {
			r.lastFull = time.Now()
		}
		r.sample(full)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// takeTrial returns the counts since the last call (one trial's) and the problems seen.
func (r *reader) takeTrial() (readerCounts, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, p := r.trial, r.problems
	r.trial, r.problems = readerCounts{}, nil
	return c, p
}

func (r *reader) totals() readerCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

// fenceRecords returns every fence record seen so far.
func (r *reader) fenceRecords() []fenceSeen {
	r.pollFence()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]fenceSeen, 0, len(r.fences))
	for _, f := range r.fences {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Epoch < out[j].Epoch })
	return out
}

func (r *reader) pollFence() {
	b, err := os.ReadFile(r.fence)
	if err != nil {
		return
	}
	var f fenceSeen
	if json.Unmarshal(b, &f) != nil || f.Epoch == 0 {
		return
	}
	r.mu.Lock()
	if _, ok := r.fences[f.Epoch]; !ok {
		r.fences[f.Epoch] = f
	}
	r.mu.Unlock()
}

func (r *reader) count(f func(c *readerCounts), problem string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.total)
	f(&r.trial)
	if problem != "" && len(r.problems) < 20 {
		r.problems = append(r.problems, problem)
	}
}

// sample checks the replica T/orders points to now.
func (r *reader) sample(full bool) {
	dir, err := resolveLink(r.link)
	if err != nil || dir == "" {
		return // no replica published yet
	}
	name := filepath.Base(dir)
	files, err := scanTree(dir)
	if err != nil {
		r.count(func(c *readerCounts) { c.Samples++; c.Partial++ }, fmt.Sprintf("replica %s: listing failed: %v", name, err))
		return
	}
	gensSeen := map[int]int{}
	for rel, f := range files {
		if f.Err != nil {
			r.count(func(c *readerCounts) { c.Samples++; c.Bad++ }, fmt.Sprintf("replica %s: %s: %v", name, rel, f.Err))
			return
		}
		gensSeen[f.Gen]++
	}
	if len(gensSeen) > 1 {
		r.count(func(c *readerCounts) { c.Samples++; c.Mixed++ }, fmt.Sprintf("replica %s mixes generations %v (generation: files)", name, gensSeen))
		return
	}
	if len(gensSeen) == 0 {
		r.count(func(c *readerCounts) { c.Samples++; c.Partial++ }, fmt.Sprintf("replica %s is empty", name))
		return
	}
	var gen int
	for g := range gensSeen {
		gen = g
	}
	g := r.gens.get(gen)
	if g == nil {
		r.count(func(c *readerCounts) { c.Samples++; c.Bad++ }, fmt.Sprintf("replica %s holds generation %d, which the harness never wrote", name, gen))
		return
	}
	var diffs []string
	for rel, want := range g.Files {
		got, ok := files[rel]
		switch {
		case !ok:
			diffs = append(diffs, "missing "+rel)
		case got.Size != want.Size:
			diffs = append(diffs, fmt.Sprintf("size %s %d, want %d", rel, got.Size, want.Size))
		}
	}
	for rel := range files {
		if _, ok := g.Files[rel]; !ok {
			diffs = append(diffs, "extra "+rel)
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		r.count(func(c *readerCounts) { c.Samples++; c.Partial++ },
			fmt.Sprintf("replica %s (generation %d) incomplete: %s", name, gen, strings.Join(firstN(diffs, 5), "; ")))
		return
	}
	// Content: every file on a full check, a few random ones otherwise.
	rels := sortedKeys(g.Files)
	if !full {
		r.rng.Shuffle(len(rels), func(i, j int) { rels[i], rels[j] = rels[j], rels[i] })
		rels = rels[:min(4, len(rels))]
	}
	for _, rel := range rels {
		size, sum, err := testworld.HashFile(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil || size != g.Files[rel].Size || sum != g.Files[rel].Sum {
			why := "content differs"
			if err != nil {
				why = err.Error()
			}
			r.count(func(c *readerCounts) { c.Samples++; c.Bad++ }, fmt.Sprintf("replica %s (generation %d): %s: %s", name, gen, rel, why))
			return
		}
	}
	r.count(func(c *readerCounts) {
		c.Samples++
		if full {
			c.Full++
		}
	}, "")
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("… %d more", len(s)-n))
	}
	return s
}
