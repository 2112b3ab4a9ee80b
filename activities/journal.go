package activities

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/internal/fsjournal"
)

// JournalUse is what an agent follows its change journal for.
type JournalUse string

const (
	// JournalOff keeps no journal: every preflight scan and every push walks the whole tree.
	JournalOff JournalUse = ""
	// JournalPreflight: the preflight's scan looks only where names or attributes changed.
	// Nothing it gives up: the scan looks for names and attributes, which the journal sees.
	JournalPreflight JournalUse = "preflight"
	// JournalPush: the push too lists only the directories changed since the job's previous
	// image and takes the rest from that image (dataplane/reuse.go). A write through a
	// shared mapping is not in the journal until the file is closed: the push looks at every
	// file some process maps shared and writable or holds open for writing (heldIn). It
	// gives up a write through a mapping of a process it may not examine (each push logs
	// them) and a write through a hard link made outside the dataset since that image (not
	// reported) by a process that no longer holds the file: the file may keep its previous
	// content until its directory's next change, the agent's next start or JournalRescan.
	JournalPush JournalUse = "push"
)

// ParseJournalUse reads the --change-journal flag's value.
func ParseJournalUse(s string) (JournalUse, error) {
	switch u := JournalUse(s); u {
	case JournalOff, JournalPreflight, JournalPush:
		return u, nil
	case "off":
		return JournalOff, nil
	}
	return "", fmt.Errorf("change journal %q: want off, %s or %s", s, JournalPreflight, JournalPush)
}

// changeJournal is the agent's journal of changed directories (internal/fsjournal) and, per
// source dataset dir, the journal's point before the last complete scan of it that found
// nothing an image cannot hold. The preflight's next scan of that dir then looks only at
// the directories changed since (issue 16). Nothing is kept across restarts: a new agent
// process scans every tree whole once, so a change made while no agent watched is seen.
type changeJournal struct {
	once sync.Once
	j    *fsjournal.Journal // nil: no journal on this agent

	mu    sync.Mutex
	clean map[string]fsjournal.Point
	// pushed holds, per job, dataset and source dir, the point taken before the push that
	// made the job's newest image began to list the source, and that image (JournalPush).
	pushed map[string]pushedImage
	// looking holds the points of the scans under way, kept from Forget like clean's.
	looking map[*fsjournal.Point]bool
	// scans counts the scans by how they looked (tests and logs).
	whole, changed int
}

// journal opens the agent's change journal once; nil when it is off (Agent.ChangeJournal)
// or the host does not allow it.
func (a *Agent) journal(ctx context.Context) *fsjournal.Journal {
	c := &a.changes
	c.once.Do(func() {
		if a.ChangeJournal == JournalOff {
			return
		}
		j, err := fsjournal.Open(fsjournal.Options{Writes: a.ChangeJournal == JournalPush})
		if err != nil {
			if activity.IsActivity(ctx) {
				activity.GetLogger(ctx).Warn("no change journal on this agent: every preflight and push looks at whole trees", "error", err)
			}
			return
		}
		c.j = j
	})
	return c.j
}

// scanUnsupported is the preflight's scan of the source dataset dir: only the directories
// the journal says changed since the last clean scan of dir, else the whole tree.
func (a *Agent) scanUnsupported(ctx context.Context, dir string, opt dataplane.ScanOptions) (*dataplane.Unsupported, error) {
	c := &a.changes
	j := a.journal(ctx)
	if j == nil {
		c.count(false)
		return dataplane.ScanUnsupported(ctx, dir, opt)
	}
	// The next point is taken before this scan looks: what changes while it looks is in the
	// next scan's changes.
	next, nerr := j.Begin(dir)
	c.mu.Lock()
	base, ok := c.clean[dir]
	delete(c.clean, dir) // a scan that fails or finds something leaves no point
	c.holdLocked(&next)
	if ok {
		c.holdLocked(&base)
	}
	c.mu.Unlock()
	defer c.forget(j, &next, &base)
	var u *dataplane.Unsupported
	var err error
	if ok && nerr == nil {
		ch, gap := j.Since(base)
		if gap == nil {
			c.count(true)
			u, err = dataplane.ScanChangedUnsupported(ctx, dir, ch.Dirs, ch.Trees, ch.Names, opt)
			if activity.IsActivity(ctx) {
				activity.GetLogger(ctx).Info("preflight scanned the directories changed since its last scan", "dir", dir, "dirs", len(ch.Dirs), "new_trees", len(ch.Trees))
			}
		} else if activity.IsActivity(ctx) {
			activity.GetLogger(ctx).Info("preflight scans the whole tree", "dir", dir, "reason", gap)
		}
	}
	if u == nil && err == nil {
		c.count(false)
		u, err = dataplane.ScanUnsupported(ctx, dir, opt)
	}
	if err == nil && nerr == nil && u.Empty() && !u.Partial {
		c.mu.Lock()
		if c.clean == nil {
			c.clean = map[string]fsjournal.Point{}
		}
		c.clean[dir] = next
		c.mu.Unlock()
	}
	return u, err
}

// holdLocked keeps p from Forget while a scan or push that uses it runs (c.mu held).
func (c *changeJournal) holdLocked(p *fsjournal.Point) {
	if c.looking == nil {
		c.looking = map[*fsjournal.Point]bool{}
	}
	c.looking[p] = true
}

// forget ends the scan whose points are done and lets the journal drop what no point kept
// needs.
func (c *changeJournal) forget(j *fsjournal.Journal, done ...*fsjournal.Point) {
	c.mu.Lock()
	for _, p := range done {
		delete(c.looking, p)
	}
	keep := make([]fsjournal.Point, 0, len(c.clean)+len(c.pushed)+len(c.looking))
	for _, p := range c.clean {
		keep = append(keep, p)
	}
	for _, p := range c.pushed {
		keep = append(keep, p.point)
	}
	for p := range c.looking {
		keep = append(keep, *p)
	}
	c.mu.Unlock()
	j.Forget(keep)
}

func (c *changeJournal) count(changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if changed {
		c.changed++
	} else {
		c.whole++
	}
}

func (c *changeJournal) close() {
	if c.j != nil {
		c.j.Close()
	}
}

// pushedImage is the journal's point before a push and the image that push made, and
// when the last push that listed the whole tree began.
type pushedImage struct {
	point fsjournal.Point
	image string
	whole time.Time
}

// DefaultJournalRescan is how often a push that follows the journal lists the whole tree
// all the same: what the journal cannot see (a write through a mapping of a process the
// agent cannot examine, or through a hard link outside the dataset) reaches
// an image within it.
const DefaultJournalRescan = 24 * time.Hour

// pushChanges is what a push of dir (job, dataset) may take from the journal (nil: the
// push lists the whole tree) and the function to call when the push is over, with the
// image it made ("" when it failed). Only with JournalPush. The next point is taken now,
// before the push lists: what changes while it does is in the next push's changes. A push
// that fails leaves no point, so the next is whole; so is a new agent's first, and one
// JournalRescan after the last whole one.
func (a *Agent) pushChanges(ctx context.Context, job, dataset, dir string) (*dataplane.ChangedSince, func(image string)) {
	if a.ChangeJournal != JournalPush {
		return nil, func(string) {}
	}
	j := a.journal(ctx)
	if j == nil {
		return nil, func(string) {}
	}
	c := &a.changes
	key := job + "\x00" + dataset + "\x00" + dir
	next, nerr := j.Begin(dir)
	c.mu.Lock()
	base, ok := c.pushed[key]
	delete(c.pushed, key)
	c.holdLocked(&next)
	if ok {
		c.holdLocked(&base.point)
	}
	c.mu.Unlock()
	whole := time.Now() // when this push began, if it lists the whole tree
	done := func(image string) {
		if image != "" && nerr == nil {
			c.mu.Lock()
			if c.pushed == nil {
				c.pushed = map[string]pushedImage{}
			}
			c.pushed[key] = pushedImage{point: next, image: image, whole: whole}
			c.mu.Unlock()
		}
		c.forget(j, &next, &base.point)
	}
	if !ok || nerr != nil {
		return nil, done
	}
	if time.Since(base.whole) >= cmp.Or(a.JournalRescan, DefaultJournalRescan) {
		if activity.IsActivity(ctx) {
			activity.GetLogger(ctx).Info("push lists the whole tree", "dir", dir, "reason", "the last whole listing is older than the rescan interval")
		}
		return nil, done
	}
	// The files held for writing now, before Since: a mapping still held at this look is
	// found by it, and one dropped before it was closed before Since, so its close is among
	// the changes Since returns (the other order would miss one dropped in between).
	held, unseen, why := heldIn(dir)
	if unseen != "" && activity.IsActivity(ctx) {
		activity.GetLogger(ctx).Info("push cannot see the writes through mappings of processes it may not examine", "dir", dir, "unseen", unseen)
	}
	if why != "" {
		if activity.IsActivity(ctx) {
			activity.GetLogger(ctx).Info("push lists the whole tree", "dir", dir, "reason", why)
		}
		return nil, done
	}
	ch, gap := j.Since(base.point)
	if gap != nil {
		if activity.IsActivity(ctx) {
			activity.GetLogger(ctx).Info("push lists the whole tree", "dir", dir, "reason", gap)
		}
		return nil, done
	}
	ch.AddEntries(held...)
	whole = base.whole
	return &dataplane.ChangedSince{Image: base.image, Dirs: ch.Dirs, Trees: ch.Trees, Names: ch.Names}, done
}

// heldIn returns the entries of tree dir (relative paths) that a process maps shared and
// writable or holds open for writing: writes through a mapping are not in the journal
// until the file is closed, so the push looks at these as changed. It also says which
// processes it could not examine (for the log: the opt-in gives up their mappings), and
// returns a reason to list the whole tree instead when it cannot place a held file, or one
// has several links and one outside the tree (another may be inside).
func heldIn(dir string) (rels []string, unseen, whole string) {
	h, rels, outside, err := fsjournal.HeldIn(dir)
	switch {
	case err != nil:
		return nil, "", err.Error()
	case h.Unknown != "":
		return nil, "", "cannot tell which files are written through a mapping: " + h.Unknown
	}
	if h.OwnNamespace {
		unseen = "every process outside the agent's PID namespace; "
	}
	if len(h.Unseen) > 0 {
		unseen += fmt.Sprintf("%d processes: %s", len(h.Unseen), strings.Join(h.Unseen[:min(len(h.Unseen), 5)], ", "))
	}
	if outside != "" {
		return nil, unseen, fmt.Sprintf("%s is held for writing and has a link that may be in the tree", outside)
	}
	return rels, unseen, ""
}
