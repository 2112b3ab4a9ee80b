package dataplane

import (
	"context"
	"fmt"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/maintenance"
	"github.com/kopia/kopia/snapshot/snapshotmaintenance"
)

// Maintain runs kopia maintenance on the repository: quick (index
// compaction) or full (also garbage collection of contents no image
// references any more, e.g. after PruneImages or an interrupted push). It
// uses kopia's full safety margins, so it is safe while other agents push
// and pull; contents are only deleted after two GC cycles and 24h+.
//
// Kopia serializes maintenance with a lock next to this host's client
// config only, not across hosts: the caller must make sure a single agent
// runs Maintain for a repository at a time (e.g. one scheduled workflow).
func (r *Repos) Maintain(ctx context.Context, cfg RepoConfig, full bool) error {
	dr, err := r.open(ctx, cfg, false)
	if err != nil {
		return err
	}

	mode := maintenance.ModeQuick
	if full {
		mode = maintenance.ModeFull
	}

	err = repo.DirectWriteSession(ctx, dr, repo.WriteSessionOptions{Purpose: "replctl maintenance"},
		func(ctx context.Context, w repo.DirectRepositoryWriter) error {
			// force: kopia's "owner" notion (user@host) does not fit agents that
			// take over for each other; the caller guarantees exclusivity.
			return snapshotmaintenance.Run(ctx, w, mode, true, maintenance.SafetyFull)
		})
	if err != nil {
		return fmt.Errorf("%s maintenance of repository %s: %w", mode, cfg.Dir, err)
	}

	r.log("repository maintenance done", "repo", cfg.Dir, "mode", mode)

	return nil
}
