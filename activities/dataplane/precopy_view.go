package dataplane

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/manifest"
	"github.com/kopia/kopia/snapshot"
	"golang.org/x/sys/unix"
)

// The precopy's view (issue 16). A precopy reads the live source; the quiesced push that
// follows used to trust only the job's previous image, so every file changed since then was
// read again while the application was frozen, and a job's first copy (no image) skipped
// the precopy and was read, encrypted and stored in full while frozen. Now a first copy's
// precopy keeps the tree it listed as a view (a manifest under precopySourceInfo, never an
// image), and the quiesced push takes a file's content from it when kopia finds the file's
// size, mtime, mode and owner unchanged, as it does against an image. Beside an image a view
// is neither kept nor used (push.go says why).
//
// That is safe only for a file that no write could have changed without changing its mtime
// after the precopy read it. A write stamps the file with the kernel's clock at that moment,
// at the filesystem's granularity (a tick, up to 2 s on vfat), so any write after the
// precopy started gives an mtime at or after the start less that granularity. A file listed
// with an mtime that recent is racy: the precopy records it with racyMtime, which no file on
// a Linux filesystem has (1677), so the quiesced push never matches it and reads the file.
// The rule stands on the kernel stamping times from the clock the agent reads, so it holds
// only on filesystems of localTimeFS, and for entries on the root's device (a network
// filesystem stamps with its server's clock); elsewhere the precopy keeps no view and the
// first copy skips it as before. What it shares with any incremental push: a writer that
// sets a file's mtime back to the old value with utimes(2) hides its change.

// racyMargin is the largest timestamp granularity of a local filesystem (vfat's 2 s).
const racyMargin = 2 * time.Second

// racyMtime is the mtime a precopy's view records for a racy file.
var racyMtime = int64(math.MinInt64)

// viewTag marks a precopy's view and its checkpoints as listed with racy files marked; its
// value is the precopy's read tag (bytes read from the source), "" on a checkpoint.
const viewTag = "precopy-view"

// localTimeFS are the filesystems whose times the kernel stamps from its own clock.
var localTimeFS = map[int64]bool{
	unix.EXT4_SUPER_MAGIC:  true, // also ext2 and ext3
	unix.XFS_SUPER_MAGIC:   true,
	unix.BTRFS_SUPER_MAGIC: true,
	unix.TMPFS_MAGIC:       true,
	unix.F2FS_SUPER_MAGIC:  true,
	0x2fc12fc1:             true, // zfs
	0xca451a4e:             true, // bcachefs
}

// localTimes reports whether the filesystem of fd (or of path, when fd < 0) stamps its
// times from this host's clock.
func localTimes(fd int, path string) bool {
	var fs unix.Statfs_t
	var err error
	if fd >= 0 {
		err = unix.Fstatfs(fd, &fs)
	} else {
		err = unix.Statfs(path, &fs)
	}
	return err == nil && localTimeFS[int64(fs.Type)]
}

// racy reports whether an entry with stat st must not be trusted from the precopy's view.
func (s *sourceRoot) racy(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFREG && (st.Dev != s.dev || st.Mtim.Nano() >= s.racyFrom || st.Ctim.Nano() >= s.racyFrom)
}

// precopyViews are the job's precopy views and their checkpoints that a quiesced push may
// take contents from (none where the source's times are not this host's).
func precopyViews(ctx context.Context, rep repo.Repository, req PushRequest) ([]*snapshot.Manifest, error) {
	if !localTimes(-1, req.SourceDir) {
		return nil, nil
	}
	all, err := snapshot.FindPreviousManifests(ctx, rep, precopySourceInfo(req.Job, req.Dataset), nil)
	if err != nil {
		return nil, fmt.Errorf("finding precopy views of job %s: %w", req.Job, err)
	}
	var views []*snapshot.Manifest
	for _, m := range all {
		if _, ok := m.Tags[viewTag]; ok {
			views = append(views, m)
		}
	}
	return views, nil
}

// viewRead is the bytes the precopies of views read from the source.
func viewRead(views []*snapshot.Manifest) int64 {
	var n int64
	for _, m := range views {
		if v, err := strconv.ParseInt(m.Tags[viewTag], 10, 64); err == nil && v > 0 {
			n += v
		}
	}
	return n
}

// manifestIDs are the IDs of manifests.
func manifestIDs(ms []*snapshot.Manifest) []manifest.ID {
	ids := make([]manifest.ID, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}

// deleteManifests deletes the precopy manifests ids (what names them in an error); the
// caller flushes.
func deleteManifests(ctx context.Context, w repo.RepositoryWriter, ids []manifest.ID, what string) error {
	for _, id := range ids {
		if err := w.DeleteManifest(ctx, id); err != nil {
			return fmt.Errorf("deleting %s %s: %w", what, id, err)
		}
	}
	return nil
}
