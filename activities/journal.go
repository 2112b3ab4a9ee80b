package activities

import (
	"context"
	"sync"

	"go.temporal.io/sdk/activity"

	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/internal/fsjournal"
)

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
		if !a.ChangeJournal {
			return
		}
		j, err := fsjournal.Open()
		if err != nil {
			if activity.IsActivity(ctx) {
				activity.GetLogger(ctx).Warn("no change journal on this agent: every preflight scans whole trees", "error", err)
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
	if c.looking == nil {
		c.looking = map[*fsjournal.Point]bool{}
	}
	c.looking[&next] = true
	if ok {
		c.looking[&base] = true
	}
	c.mu.Unlock()
	defer c.forget(j, &next, &base)
	var u *dataplane.Unsupported
	var err error
	if ok && nerr == nil {
		ch, gap := j.Since(base)
		if gap == nil {
			c.count(true)
			u, err = dataplane.ScanChangedUnsupported(ctx, dir, ch.Dirs, ch.Trees, opt)
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

// forget ends the scan whose points are done and lets the journal drop what no point kept
// needs.
func (c *changeJournal) forget(j *fsjournal.Journal, done ...*fsjournal.Point) {
	c.mu.Lock()
	for _, p := range done {
		delete(c.looking, p)
	}
	keep := make([]fsjournal.Point, 0, len(c.clean)+len(c.looking))
	for _, p := range c.clean {
		keep = append(keep, p)
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
