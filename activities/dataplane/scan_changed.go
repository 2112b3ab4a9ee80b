package dataplane

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"

	"golang.org/x/sys/unix"
)

// ScanChangedUnsupported is ScanUnsupported limited to what changed since a complete scan of
// dir that found nothing (the agent's change journal, internal/fsjournal, tells what): the
// entries of each directory of dirs, not below them, with each directory's own attributes,
// and every entry below each of trees (created or moved in since). A name that cannot be
// replicated (KindName) is a matter of one directory's entries, an attribute name (KindXattrName)
// of one entry's attributes: both change only with an event the journal records in that
// directory. A directory of dirs or trees that is gone or no longer a directory is passed
// over: its removal changed its parent, which is listed. Every directory is opened beneath
// dir with no symlink on the way. Of a directory that names holds, only the entries named
// are examined, unless a name is or could be the image name of a name that is not UTF-8
// (a clash is a matter of two names, one of which may not be named).
func ScanChangedUnsupported(ctx context.Context, dir string, dirs, trees []string, names map[string][]string, opt ScanOptions) (*Unsupported, error) {
	rfd, err := openScanRoot(dir, &opt)
	if err != nil {
		return nil, err
	}
	defer unix.Close(rfd) //nolint:errcheck // read only
	s := newScan(ctx, dir, opt, false)
	listed := make(map[string]bool, len(dirs)+len(trees))
	for _, d := range dirs {
		listed[path.Clean(d)] = true
	}
	// open opens rel beneath the root and examines its own attributes unless its parent's
	// listing does; false when it is gone.
	open := func(rel string) (int, string, string, bool) {
		rel = path.Clean(rel)
		fd, err := openBeneath(rfd, rel, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) && !errors.Is(err, unix.ELOOP) {
				s.fail(fmt.Errorf("scanning %s: %w", path.Join(dir, rel), err))
			}
			return -1, "", "", false
		}
		p, name := path.Join(dir, rel), s.name(rel)
		switch {
		case rel == ".":
			s.rootXattrs(fd)
		case !listed[path.Dir(rel)]:
			s.found(name, s.xattrs(fd, ".", p, rel))
		}
		return fd, p, name, true
	}
	look := func(d string) {
		fd, p, name, ok := open(d)
		switch ns, known := names[d]; {
		case !ok:
		case known && !slices.ContainsFunc(ns, escaped):
			for _, n := range ns {
				s.entry(fd, path.Join(p, n), path.Join(name, n), n, nil)
			}
			unix.Close(fd) //nolint:errcheck // read only
		default:
			s.shallow(fd, p, name)
		}
	}
	for _, d := range dirs {
		if s.stop() {
			break
		}
		// On a free walker, else here: on a cold cache each directory waits for its reads.
		select {
		case s.sem <- struct{}{}:
			s.wg.Add(1)
			go func() {
				defer func() { <-s.sem; s.wg.Done() }()
				look(d)
			}()
		default:
			look(d)
		}
	}
	for _, t := range trees {
		if s.stop() {
			break
		}
		if fd, p, name, ok := open(t); ok {
			s.wg.Add(1)
			s.dir(fd, p, name)
		}
	}
	s.wg.Wait()
	u, _, err := s.result()
	return u, err
}

// shallow examines the entries of the open directory fd (full path p, summary name name),
// not descending, and closes it.
func (s *scan) shallow(fd int, p, name string) {
	s.list(fd, p, func(e dirent) bool {
		return s.entry(fd, path.Join(p, e.name), path.Join(name, e.name), e.name, nil)
	})
}
