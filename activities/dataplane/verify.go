package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"

	kfs "github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
	"golang.org/x/sys/unix"
)

// verifyOptions tune verifyTree.
type verifyOptions struct {
	checkOwner bool
	parallel   int
	// skipContent: the content of entry i of image directory object d at dir
	// is known good (may be nil).
	skipContent func(dir string, d object.ID, i int) bool
	// skipMeta: that file's metadata is known good, only its type is checked
	// (may be nil).
	skipMeta func(dir string, d object.ID, i int) bool
	rp       *reporter // may be nil
	// readDir decodes image directory oid at rel (nil: readImageDir); it must be safe for
	// concurrent use (the walk reads ahead).
	readDir func(ctx context.Context, dr repo.DirectRepository, oid object.ID, rel string) ([]*snapshot.DirEntry, error)
	// aheadDirs: subdirectories read ahead of the walk (verify_ahead.go; 0: none).
	aheadDirs int
	dirRead   func(object.ID) // test hook: as a read ahead of the walk begins (may be nil)
	ahead     *verifyAhead    // the walk's directory reads, set by verifyTree
	// extras: what the image keeps beside its entries (nil: none).
	extras *Extras
	// collect, if set, gets every difference (ErrVerify) and the walk goes on; it must be
	// safe for concurrent use. Without it the first difference ends the verification.
	collect func(error)

	specials   map[string][]string // extras' special entries by directory
	withXattrs map[string]bool     // paths whose xattrs the extras list
	names      diskNames           // image paths of entries with raw names (names.go)
}

// path is where image path rel under dir is on disk.
func (o *verifyOptions) path(dir, rel string) string {
	return filepath.Join(dir, filepath.FromSlash(o.names.disk(rel)))
}

// checkXattrs checks that an entry the extras give no xattrs has none on disk (those they
// list are compared by verifyExtras).
func (o *verifyOptions) checkXattrs(dir, rel string) error {
	if o.withXattrs[rel] {
		return nil
	}
	return noXattrs(o.path(dir, rel), rel)
}

type contentJob struct {
	rel string
	de  *snapshot.DirEntry
}

// verifyTree compares dir with the image rooted at root: same names and
// types, sizes, modes, mtimes, owners (optional), symlink targets and file
// contents. It returns ErrVerify naming the first differing path.
func verifyTree(ctx context.Context, dr repo.DirectRepository, root *snapshot.DirEntry, dir string, o verifyOptions) error {
	h, err := newContentHasher(dr)
	if err != nil {
		return err
	}

	var jobs []contentJob

	if o.readDir == nil {
		o.readDir = func(ctx context.Context, dr repo.DirectRepository, oid object.ID, _ string) ([]*snapshot.DirEntry, error) {
			return readImageDir(ctx, dr, oid)
		}
	}

	if o.rp != nil {
		o.rp.setPhase("verify", 0, 0)
	}

	o.ahead = newVerifyAhead(ctx, dr, &o)
	defer o.ahead.stop()

	o.specials, o.withXattrs, o.names = o.extras.specialsIn(), map[string]bool{}, o.extras.diskNames()
	if o.extras != nil {
		for _, e := range o.extras.Entries {
			if len(e.Xattrs) > 0 {
				o.withXattrs[e.Path] = true
			}
		}
	}

	// A directory's own metadata is checked after its contents, so the most
	// specific difference (e.g. an extra file rather than the changed mtime
	// of its directory) is the one reported.
	if err := walkVerify(ctx, dr, root.ObjectID, dir, ".", &o, &jobs); err != nil {
		return err
	}

	if err := o.diff(verifyMeta(dir, ".", root, o.checkOwner)); err != nil {
		return err
	}

	if err := o.diff(o.checkXattrs(dir, ".")); err != nil {
		return err
	}

	if !o.extras.Empty() {
		rootFd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrVerify, dir, err)
		}
		err = verifyExtras(rootFd, o.extras, o.names, o.checkOwner)
		unix.Close(rootFd) //nolint:errcheck
		if err := o.diff(err); err != nil {
			return err
		}
	}

	var totalBytes int64
	for _, j := range jobs {
		totalBytes += j.de.FileSize
	}

	if o.rp != nil {
		o.rp.bytesTotal.Store(totalBytes)
		o.rp.filesTotal.Store(int64(len(jobs)))
	}

	err = parallelDo(ctx, o.parallel, len(jobs), func(i int) error {
		j := jobs[i]
		if o.rp != nil {
			o.rp.setPath(j.rel)
		}

		err := h.check(ctx, o.path(dir, j.rel), j.de.ObjectID, j.de.FileSize, func(n int64) {
			if o.rp != nil {
				o.rp.addBytes(n)
			}
		})
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, errRepoRead) {
				return fmt.Errorf("verifying %s: %w", j.rel, err)
			}

			return o.diff(fmt.Errorf("%w: %s: %v", ErrVerify, j.rel, err))
		}

		if o.rp != nil {
			o.rp.addFile(0)
		}

		return nil
	})

	return err
}

// walkVerify checks image directory d at rel against dir/rel and recurses:
// extra entries first, then every entry in image order, a subdirectory's own
// metadata after its contents.
//
// It shares no walker with plan (pull_plan.go) on purpose: it consumes the
// directory cache plan fills, lists the disk directory before the entries,
// checks every entry in order and descends only into directories that checked
// out, skips a directory it cannot list (collect mode), and checks a
// directory's own metadata after its contents. That order decides which
// difference is reported first; a walker serving both would need more hooks
// than the few lines the two walks have in common.
func walkVerify(ctx context.Context, dr repo.DirectRepository, d object.ID, dir, rel string, o *verifyOptions, jobs *[]contentJob) error {
	if err := ctx.Err(); err != nil {
		return err
	}

	ents, err := o.ahead.get(ctx, d, rel)
	if err != nil {
		return fmt.Errorf("image directory %s: %w", rel, err)
	}

	have, err := os.ReadDir(o.path(dir, rel))
	if err != nil {
		return o.diff(fmt.Errorf("%w: %s: %v", ErrVerify, rel, err))
	}

	want := make(map[string]bool, len(ents))
	for _, e := range ents {
		want[e.Name] = true
	}

	for _, n := range o.specials[rel] {
		want[n] = true // checked by verifyExtras
	}

	var extra []string

	haveType := make(map[string]fs.FileMode, len(have))

	for _, e := range have {
		n := imageName(e.Name()) // as the image names it
		haveType[n] = e.Type()

		if !want[n] {
			extra = append(extra, n)
		}
	}

	sort.Strings(extra)

	for _, x := range extra {
		if err := o.diff(fmt.Errorf("%w: %s: unexpected entry not in the image", ErrVerify, path.Join(rel, x))); err != nil {
			return err
		}
	}

	reached := o.ahead.subdirs(ents, rel)

	diffs, err := o.entryDiffs(ctx, dir, rel, d, ents, haveType)
	if err != nil {
		return err
	}

	for i, de := range ents {
		crel := path.Join(rel, de.Name)
		reached(de)

		// The entry's type and metadata differ from the image: a collected difference
		// moves on to the next entry.
		if diffs[i] != nil {
			if err := o.diff(diffs[i]); err != nil {
				return err
			}

			if de.Type == snapshot.EntryTypeDirectory {
				o.ahead.take(crel) // not descended into: its read is not kept
			}

			continue
		}

		switch de.Type {
		case snapshot.EntryTypeDirectory:
			if err := walkVerify(ctx, dr, de.ObjectID, dir, crel, o, jobs); err != nil {
				return err
			}

			if err := o.diff(verifyMeta(o.path(dir, crel), crel, de, o.checkOwner)); err != nil {
				return err
			}

			if err := o.diff(o.checkXattrs(dir, crel)); err != nil {
				return err
			}

		case snapshot.EntryTypeSymlink:
			want, err := readImageSymlink(ctx, dr, de)
			if err != nil {
				return fmt.Errorf("image symlink %s: %w", crel, err)
			}

			got, err := os.Readlink(o.path(dir, crel))
			if err != nil {
				err = fmt.Errorf("%w: %s: %v", ErrVerify, crel, err)
			} else if got != want {
				err = fmt.Errorf("%w: %s: symlink target %q, image has %q", ErrVerify, crel, got, want)
			}

			if err := o.diff(err); err != nil {
				return err
			}

		case snapshot.EntryTypeFile:
			if o.skipContent == nil || !o.skipContent(rel, d, i) {
				*jobs = append(*jobs, contentJob{rel: crel, de: de})
			}

		default:
			return fmt.Errorf("image entry %s has unsupported type %q", crel, de.Type)
		}
	}

	return nil
}

// checkChunk is how many entries of a directory one verifier checks at a time.
const checkChunk = 64

// entryDiffs checks the entries of image directory d at rel before their contents
// (entryDiff), on up to o.parallel goroutines: an lstat and a listxattr each, 1.7 s on one
// core in a full pull of 200,000 files. The differences come back by entry, and the walk
// reports them in image order, so the first difference named is the one a sequential walk
// names.
func (o *verifyOptions) entryDiffs(ctx context.Context, dir, rel string, d object.ID, ents []*snapshot.DirEntry, haveType map[string]fs.FileMode) ([]error, error) {
	// The directory, for the files' checks relative to it (fileAsImage); -1: by path only.
	dfd, err := unix.Open(o.path(dir, rel), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		dfd = -1
	} else {
		defer unix.Close(dfd) //nolint:errcheck
	}

	diffs := make([]error, len(ents))
	check := func(c int) error {
		for i := c * checkChunk; i < min((c+1)*checkChunk, len(ents)); i++ {
			de := ents[i]
			diffs[i] = o.entryDiff(dir, rel, path.Join(rel, de.Name), dfd, d, i, de, haveType)
		}

		return nil
	}

	chunks := (len(ents) + checkChunk - 1) / checkChunk
	if chunks <= 1 || o.parallel <= 1 {
		for c := range chunks {
			_ = check(c)
		}

		return diffs, ctx.Err()
	}

	return diffs, parallelDo(ctx, min(o.parallel, chunks), chunks, check)
}

// entryDiff checks entry i (de, at crel) of image directory d at rel before its contents:
// its type and, unless skipMeta, its metadata and xattrs (a directory's own metadata after
// its contents). A regular file is looked at relative to dfd, the directory (fileAsImage),
// and by path only when that finds a difference or dfd is -1. It returns the difference
// found (ErrVerify), nil when the entry is as the image says. It is safe for concurrent use.
func (o *verifyOptions) entryDiff(dir, rel, crel string, dfd int, d object.ID, i int, de *snapshot.DirEntry, haveType map[string]fs.FileMode) error {
	var err error

	switch {
	case de.Type == snapshot.EntryTypeDirectory:
		if st, serr := os.Lstat(o.path(dir, crel)); serr != nil || !st.IsDir() {
			err = verifyMeta(o.path(dir, crel), crel, de, o.checkOwner) // reports the type/existence difference
		}
	case de.Type == snapshot.EntryTypeFile && o.skipMeta != nil && o.skipMeta(rel, d, i):
		// The entry must still be the regular file that was checked.
		if t, ok := haveType[de.Name]; !ok || t != 0 {
			err = verifyMeta(o.path(dir, crel), crel, de, o.checkOwner) // names the difference
		}
	default:
		if dfd >= 0 && de.Type == snapshot.EntryTypeFile && o.fileAsImage(dfd, o.names.base(crel, de.Name), crel, de) {
			return nil
		}
		if err = verifyMeta(o.path(dir, crel), crel, de, o.checkOwner); err == nil {
			err = o.checkXattrs(dir, crel)
		}
	}

	return err
}

// fileAsImage reports whether regular file base of directory dfd (image path crel) is as
// de says on every point entryDiff checks: type, size, mode, mtime, owner (with checkOwner)
// and no xattrs beyond the extras' and the target's labels. It checks relative to the
// directory, an fstatat and a listxattrat, where entryDiff's paths cost a lookup of every
// component; an entry it does not find as the image says goes to entryDiff, which names
// the difference.
func (o *verifyOptions) fileAsImage(dfd int, base, crel string, de *snapshot.DirEntry) bool {
	var st unix.Stat_t
	if unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || !statIsEntry(&st, de, o.checkOwner) {
		return false
	}

	if o.withXattrs[crel] {
		return true // compared by verifyExtras
	}

	names, err := listXattrsAt(dfd, base)
	if err != nil {
		return false
	}

	for _, n := range names {
		if !targetLabel(n) {
			return false
		}
	}

	return true
}

// diff passes a verification difference to collect and carries on (nil), or ends the walk
// with it; any other error (or nil) is returned as it is.
func (o *verifyOptions) diff(err error) error {
	if err == nil || o.collect == nil || !errors.Is(err, ErrVerify) {
		return err
	}

	o.collect(err)

	return nil
}

// verifyMeta compares the on-disk entry at p (image path rel) with de (type,
// size, mode, mtime, owner).
func verifyMeta(p, rel string, de *snapshot.DirEntry, checkOwner bool) error {
	st, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrVerify, rel, err)
	}

	if got := entryType(st.Mode()); got != de.Type {
		return fmt.Errorf("%w: %s: type %q, image has %q", ErrVerify, rel, got, de.Type)
	}

	if de.Type == snapshot.EntryTypeFile && st.Size() != de.FileSize {
		return fmt.Errorf("%w: %s: size %d, image has %d", ErrVerify, rel, st.Size(), de.FileSize)
	}

	// Linux symlinks have no mode of their own.
	if de.Type != snapshot.EntryTypeSymlink {
		if got, want := st.Mode()&kfs.ModBits, os.FileMode(de.Permissions)&kfs.ModBits; got != want {
			return fmt.Errorf("%w: %s: mode %v, image has %v", ErrVerify, rel, got, want)
		}
	}

	if got, want := st.ModTime().UnixNano(), de.ModTime.ToTime().UnixNano(); got != want {
		return fmt.Errorf("%w: %s: mtime %v, image has %v", ErrVerify, rel, st.ModTime().UTC(), de.ModTime.ToTime().UTC())
	}

	if checkOwner {
		sys, _ := st.Sys().(*syscall.Stat_t)
		if sys != nil && (sys.Uid != de.UserID || sys.Gid != de.GroupID) {
			return fmt.Errorf("%w: %s: owner %d:%d, image has %d:%d", ErrVerify, rel, sys.Uid, sys.Gid, de.UserID, de.GroupID)
		}
	}

	return nil
}

func entryType(m fs.FileMode) snapshot.EntryType {
	switch {
	case m.IsDir():
		return snapshot.EntryTypeDirectory
	case m&fs.ModeSymlink != 0:
		return snapshot.EntryTypeSymlink
	case m.IsRegular():
		return snapshot.EntryTypeFile
	default:
		return snapshot.EntryType("other:" + m.Type().String())
	}
}

// parallelDo runs fn(0..n-1) on up to workers goroutines; the first error
// stops the rest (ctx-aware) and is returned.
func parallelDo(ctx context.Context, workers, n int, fn func(i int) error) error {
	if workers < 1 {
		workers = 1
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	var (
		mu       sync.Mutex
		next     int
		firstErr error
		wg       sync.WaitGroup
	)

	for range min(workers, n) {
		wg.Add(1)

		go func() {
			defer wg.Done()

			for {
				mu.Lock()
				if firstErr != nil || next >= n {
					mu.Unlock()
					return
				}

				i := next
				next++
				mu.Unlock()

				if err := ctx.Err(); err != nil {
					return
				}

				if err := fn(i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
						cancel(err)
					}
					mu.Unlock()

					return
				}
			}
		}()
	}

	wg.Wait()

	if firstErr != nil {
		return firstErr
	}

	return ctx.Err()
}

// VerifyReplica checks that dir (e.g. a published replica) is identical to
// image imageID of the job's dataset (same checks as a pull's "full"
// verification). It returns nil, ErrVerify naming the first difference,
// ErrNotFound, or another error.
func (r *Repos) VerifyReplica(ctx context.Context, cfg RepoConfig, job, dataset, imageID, dir string, parallel int) error {
	_, err := r.checkReplica(ctx, cfg, job, dataset, imageID, dir, parallel, nil)
	return err
}

// Differences is what CheckReplica found: the first differences in the order met (at most
// the limit asked for) and how many there were.
type Differences struct {
	First []string `json:"first,omitempty"`
	Count int      `json:"count"`
}

// CheckReplica is VerifyReplica that goes on after a difference: it returns every one (the
// first max of them named) and an error only when it could not check.
func (r *Repos) CheckReplica(ctx context.Context, cfg RepoConfig, job, dataset, imageID, dir string, parallel, max int) (Differences, error) {
	var (
		mu sync.Mutex
		d  Differences
	)
	_, err := r.checkReplica(ctx, cfg, job, dataset, imageID, dir, parallel, func(err error) {
		mu.Lock()
		defer mu.Unlock()
		d.Count++
		if len(d.First) < max {
			d.First = append(d.First, strings.TrimPrefix(err.Error(), ErrVerify.Error()+": "))
		}
	})
	return d, err
}

func (r *Repos) checkReplica(ctx context.Context, cfg RepoConfig, job, dataset, imageID, dir string, parallel int, collect func(error)) (*snapshot.Manifest, error) {
	if err := checkJob(job); err != nil {
		return nil, err
	}

	if err := checkDataset("Dataset", dataset); err != nil {
		return nil, err
	}

	if err := checkAbs("dir", dir); err != nil {
		return nil, err
	}

	if imageID == "" {
		return nil, badInput("ImageID", "must not be empty")
	}

	dr, err := r.open(ctx, cfg, false)
	if err != nil {
		return nil, err
	}

	man, err := loadImage(ctx, dr, imageID, job, dataset)
	if err != nil {
		return nil, err
	}

	if parallel <= 0 {
		parallel = runtime.NumCPU()
	}

	x, err := loadExtras(ctx, dr, man)
	if err != nil {
		return nil, err
	}

	return man, verifyTree(ctx, dr, man.RootEntry, dir, verifyOptions{checkOwner: os.Geteuid() == 0, parallel: parallel, extras: x, collect: collect, aheadDirs: r.hooks.aheadDirs(), dirRead: r.hooks.verifyDirRead})
}
