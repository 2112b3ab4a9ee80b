package dataplane

import (
	"errors"
	"io/fs"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// Retention is what a job keeps of one kind (replicas on the target, images in the
// repository): the newest Last, plus every item younger than Within measured from the newest
// item's time (restic's --keep-within). Measuring from the newest item, not from the clock,
// means a job whose runs stopped never loses its copies to age alone.
type Retention struct {
	// Last is how many of the newest items are kept; at least 1.
	Last int
	// Within keeps every item no older than the newest item's time minus Within; 0 = off.
	Within time.Duration
}

// retentionItem is one replica or image as the selection sees it.
type retentionItem struct {
	Name string
	Time time.Time
	// Pinned items are always kept and count towards Last (the current replica).
	Pinned bool
}

// selectRetained returns the names of the items to keep. Items are ranked newest first (by
// time, then name, so equal times give a stable order). Pinned items are kept first; then the
// newest items until Last are kept; then every item inside the Within window. A Last below 1
// counts as 1: retention never deletes everything.
func selectRetained(items []retentionItem, pol Retention) map[string]bool {
	ranked := append([]retentionItem(nil), items...)
	sort.SliceStable(ranked, func(i, j int) bool {
		if !ranked[i].Time.Equal(ranked[j].Time) {
			return ranked[i].Time.After(ranked[j].Time)
		}
		return ranked[i].Name > ranked[j].Name
	})
	last := max(pol.Last, 1)
	keep := map[string]bool{}
	for _, it := range ranked {
		if it.Pinned {
			keep[it.Name] = true
		}
	}
	for _, it := range ranked {
		if len(keep) >= last {
			break
		}
		keep[it.Name] = true
	}
	if pol.Within > 0 && len(ranked) > 0 {
		cutoff := ranked[0].Time.Add(-pol.Within)
		for _, it := range ranked {
			if !it.Time.Before(cutoff) {
				keep[it.Name] = true
			}
		}
	}
	return keep
}

// replicaItems ranks replicas by publish time; the current one is pinned.
func replicaItems(reps []ReplicaInfo) []retentionItem {
	out := make([]retentionItem, 0, len(reps))
	for _, ri := range reps {
		out = append(out, retentionItem{Name: ri.Name, Time: ri.ModTime, Pinned: ri.Current})
	}
	return out
}

// retain keeps the replicas pol selects (the current one always) and
// removes leftover staging dirs of epochs up to ours. Errors are logged, not
// returned: the new replica is already published.
func (l layout) retain(pol Retention, epoch int64, log func(string, ...any)) {
	reps, err := l.listReplicas()
	if err != nil {
		log("retention: listing replicas failed", "err", err)
		return
	}

	dirs, err := l.openDirs()
	if err != nil {
		log("retention: opening the dataset's directories failed", "err", err)
		return
	}
	defer dirs.close()

	kept := selectRetained(replicaItems(reps), pol)

	for _, ri := range reps {
		if kept[ri.Name] {
			continue
		}

		// Re-check right before deleting: never delete what T/D points to.
		if cur, err := l.currentReplica(); err != nil || cur == ri.Name {
			continue
		}

		if err := moveToTrash(dirs.replicas, ri.Name, dirs.trash); err != nil {
			log("retention: removing replica failed", "replica", ri.Path, "err", err)
			continue
		}

		_ = unix.Unlinkat(dirs.meta, ri.Name+".json", 0)
		_ = unix.Unlinkat(dirs.meta, ri.Name+trustExt, 0)
	}

	defer trash.sweep(l, log)

	names, err := dirNames(dirs.staging)
	if err != nil {
		return
	}

	for _, n := range names {
		_, ep, ok := parseStagingName(n)
		if !ok || ep > epoch {
			continue
		}

		if err := moveToTrash(dirs.staging, n, dirs.trash); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log("retention: removing staging failed", "dir", n, "err", err)
		}
	}
}
