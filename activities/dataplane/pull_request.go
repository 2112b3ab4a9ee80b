package dataplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/manifest"
	"github.com/kopia/kopia/snapshot"
)

// VerifyMode is how much of a pulled replica is read back and checked against its image
// before it is published (config job.verify; a job's plan and pull inputs carry it).
type VerifyMode string

// Verify modes. The values are config values and are recorded in run histories.
const (
	// VerifyChanged (the config's default) checks every file written for this replica;
	// files hard-linked from the verified current replica with an unchanged object ID keep
	// their checked content and metadata.
	VerifyChanged VerifyMode = "changed"
	// VerifyFull checks the content of every file.
	VerifyFull VerifyMode = "full"
)

func validatePull(req *PullRequest) error {
	if err := req.Repo.validate(); err != nil {
		return err
	}

	if err := checkJob(req.Job); err != nil {
		return err
	}

	if req.ImageID == "" {
		return badInput("ImageID", "must not be empty")
	}

	if err := checkAbs("TargetRoot", req.TargetRoot); err != nil {
		return err
	}

	if st, err := os.Stat(req.TargetRoot); err != nil || !st.IsDir() {
		return badInput("TargetRoot", "%s is not an existing directory", req.TargetRoot)
	}

	if req.SourceDataset != "" {
		if err := checkDataset("SourceDataset", req.SourceDataset); err != nil {
			return err
		}
	}
	if err := checkDataset("Dataset", req.Dataset); err != nil {
		return err
	}

	if err := checkName("ReplicaName", req.ReplicaName); err != nil {
		return err
	}

	if req.Replaces != "" {
		if err := checkName("Replaces", req.Replaces); err != nil {
			return err
		}
		if req.Replaces == req.ReplicaName {
			return badInput("Replaces", "a repair needs a new replica name, not %s", req.Replaces)
		}
		// A repair reads every reused file: nothing is trusted unread.
		req.Verify = VerifyFull
	}

	if req.ResumeFrom != "" {
		if err := checkAbs("ResumeFrom", req.ResumeFrom); err != nil {
			return err
		}
	}

	switch {
	case req.Keep.Last == 0:
		req.Keep.Last = 3
	case req.Keep.Last < 0:
		return badInput("Keep", "%d must be at least 1", req.Keep.Last)
	}

	switch req.Verify {
	case "":
		req.Verify = VerifyChanged
	case VerifyFull, VerifyChanged:
	default:
		return badInput("Verify", "%q must be %q or %q", req.Verify, VerifyChanged, VerifyFull)
	}

	switch req.OnUnsupported {
	case "", OnUnsupportedFail, OnUnsupportedSkip:
	default:
		return badInput("OnUnsupported", "%q must be %q or %q", req.OnUnsupported, OnUnsupportedFail, OnUnsupportedSkip)
	}

	if req.Parallel <= 0 {
		req.Parallel = runtime.NumCPU()
		if len(req.Repo.Remote) > 0 {
			// Over SFTP a writer mostly waits for its content's round trip.
			req.Parallel = max(req.Parallel, remotePullWriters)
		}
	}

	return nil
}

// remotePullWriters is the least number of writers of a pull from a repository reached over
// SFTP. TestMeasureSSHPath with 4,000 4-KiB files behind a 2-ms round trip: 1.6 MiB/s with
// one writer per CPU (2), 4.9 with 8, 6-7 with 16. 16 is not taken: a writer holds its
// content's bytes more than once while it reads them (as read, decrypted, decompressed),
// which for large chunks weighs against the agent's 256-MiB memory limit.
const remotePullWriters = 8

// loadImage loads a complete image of the job's dataset.
func loadImage(ctx context.Context, rep repo.Repository, id, job, dataset string) (*snapshot.Manifest, error) {
	man, err := snapshot.LoadSnapshot(ctx, rep, manifest.ID(id))
	if errors.Is(err, snapshot.ErrSnapshotNotFound) {
		return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
	}

	if err != nil {
		return nil, fmt.Errorf("loading image %s: %w", id, err)
	}

	if want := sourceInfo(job, dataset); man.Source != want {
		return nil, badInput("ImageID", "image %s is of %v, not of job %s dataset %s", id, man.Source, job, dataset)
	}

	if man.IncompleteReason != "" {
		return nil, badInput("ImageID", "image %s is incomplete (%s)", id, man.IncompleteReason)
	}

	if man.RootEntry == nil || man.RootEntry.Type != snapshot.EntryTypeDirectory {
		return nil, badInput("ImageID", "image %s has no root directory", id)
	}

	return man, nil
}
