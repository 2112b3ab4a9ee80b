package dataplane

import (
	"context"
	"time"

	"github.com/kopia/kopia/repo"
)

// Index epochs (issue 16). kopia writes an index blob for every write session (about two a
// run) into the current epoch, and every refresh of a repository lists the blobs of the
// epochs not yet compacted: a ReadDir and an lstat per blob on a filesystem storage. An
// epoch closes only after kopia's MinEpochDuration (24 h by default) and is compacted only
// after that, so a job that ran every minute listed up to a day or two of blobs at every
// step: after about 550 runs that listing was half of the agents' CPU, and maintenance
// removed nothing.
//
// replctl gives its repositories kopia's shortest epoch and keeps the epochs up to date
// itself, after each pull (tidyIndexes): close the current epoch once it holds enough blobs
// across its minimum duration, compact each epoch that has settled into one blob, and merge
// compacted epochs into range checkpoints, as kopia's own maintenance does. Each of these is
// idempotent (an epoch marker has a fixed name; a compaction that two agents run at once
// leaves two equivalent blobs), so agents need no lock for them. Superseded index blobs are
// no longer listed once their epoch is compacted; full maintenance deletes them after kopia's
// safety margin.
const (
	// indexEpoch is kopia's least MinEpochDuration.
	indexEpoch = 10 * time.Minute
	// indexEpochRefresh is how long a loaded epoch state is trusted: kopia requires at most
	// a third of the epoch.
	indexEpochRefresh = 3 * time.Minute
)

// shortenEpochs gives the repository the short index epoch, once: a repository created by
// kopia's defaults (or by an older replctl) changes at its next tidy. kopia's Initialize
// resets the epoch parameters it is given, so this is done on the open repository.
func shortenEpochs(ctx context.Context, dr repo.DirectRepository) (bool, error) {
	fm := dr.FormatManager()
	mp, err := fm.GetMutableParameters(ctx)
	if err != nil {
		return false, err
	}
	ep := &mp.EpochParameters
	if !ep.Enabled || (ep.MinEpochDuration <= indexEpoch && ep.EpochRefreshFrequency <= indexEpochRefresh) {
		return false, nil
	}
	blobCfg, err := fm.BlobCfgBlob(ctx)
	if err != nil {
		return false, err
	}
	features, err := fm.RequiredFeatures(ctx)
	if err != nil {
		return false, err
	}
	ep.MinEpochDuration, ep.EpochRefreshFrequency = indexEpoch, indexEpochRefresh
	return true, fm.SetParameters(ctx, mp, blobCfg, features)
}

// tidyIndexes keeps the repository's index epochs short (above). It is housekeeping after a
// published replica: a failure is logged and left to the next run or to maintenance.
func (r *Repos) tidyIndexes(ctx context.Context, dr repo.DirectRepository, dir string) {
	changed, err := shortenEpochs(ctx, dr)
	if err != nil {
		r.log("index epochs: setting the short epoch failed", "repo", dir, "err", err)
		return
	}
	if changed {
		r.log("index epochs: set to the short epoch", "repo", dir, "min_epoch", indexEpoch)
	}
	em, ok, err := dr.ContentReader().EpochManager(ctx)
	if err != nil || !ok {
		if err != nil {
			r.log("index epochs: no epoch manager", "repo", dir, "err", err)
		}
		return
	}
	if st, err := em.MaybeCompactSingleEpoch(ctx); err != nil {
		r.log("index epochs: compaction failed", "repo", dir, "err", err)
	} else if st != nil {
		r.log("index epochs: compacted", "repo", dir, "epoch", st.Epoch, "blobs", st.SupersededIndexBlobCount)
	}
	if st, err := em.MaybeAdvanceWriteEpoch(ctx); err != nil {
		r.log("index epochs: advance failed", "repo", dir, "err", err)
	} else if st != nil && st.WasAdvanced {
		r.log("index epochs: advanced", "repo", dir, "epoch", st.CurrentEpoch)
	}
	if _, err := em.MaybeGenerateRangeCheckpoint(ctx); err != nil {
		r.log("index epochs: range checkpoint failed", "repo", dir, "err", err)
	}
}
