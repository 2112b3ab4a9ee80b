// Command treediff compares two directory trees with the fidelity checker and prints every
// difference, then a table of entries and diffs per attribute class. Exit status: 0 when
// the trees are equal, 1 when they differ, 2 on bad usage or an error.
//
//	go run ./internal/fidelity/cmd/treediff A B
//	go run ./internal/fidelity/cmd/treediff -generate DIR [-seed N] [-wide N] [-without fifo,socket]
package main

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/replctl/replctl/internal/fidelity"
)

func main() {
	generate := flag.String("generate", "", "generate the awkward tree into this (new or empty) dir instead of comparing")
	seed := flag.Uint64("seed", 1, "seed of the generated tree")
	wide := flag.Int("wide", 0, "files in the wide dir (default 2000)")
	without := flag.String("without", "", "comma-separated features not to generate")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: treediff A B | treediff -generate DIR [-seed N] [-wide N] [-without f1,f2]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *generate != "" {
		o := fidelity.Options{Seed: *seed, WideFiles: *wide}
		if *without != "" {
			o.Without = strings.Split(*without, ",")
		}
		m, err := fidelity.Generate(*generate, o)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		for _, f := range slices.Sorted(maps.Keys(m.Made)) {
			fmt.Printf("made    %-14s %d path(s)\n", f, len(m.Made[f]))
		}
		for _, f := range slices.Sorted(maps.Keys(m.Skipped)) {
			fmt.Printf("skipped %-14s %s\n", f, m.Skipped[f])
		}
		return
	}
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	r, err := fidelity.Check(flag.Arg(0), flag.Arg(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	perClass := map[string]int{}
	for _, d := range r.Diffs {
		fmt.Println(d)
		perClass[d.Class()]++
	}
	classes := slices.Sorted(maps.Keys(r.Entries))
	for c := range perClass {
		if _, ok := r.Entries[c]; !ok {
			classes = append(classes, c)
		}
	}
	sort.Strings(classes)
	fmt.Printf("%-18s %8s %8s\n", "class", "entries", "diffs")
	for _, c := range classes {
		fmt.Printf("%-18s %8d %8d\n", c, r.Entries[c], perClass[c])
	}
	fmt.Printf("%d difference(s)\n", len(r.Diffs))
	if len(r.Diffs) > 0 {
		os.Exit(1)
	}
}
