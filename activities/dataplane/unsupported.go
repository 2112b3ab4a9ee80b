package dataplane

// What an image cannot hold. The data plane keeps regular files, directories and symlinks with
// their owner, mode and mtime. kopia skips other entry types without a word (its policy
// IgnoreUnknownTypes defaults to true), and an image keeps neither hard links nor extended
// attributes. ScanUnsupported finds such entries so the push can refuse them, or report them,
// instead of dropping them silently.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/kopia/kopia/snapshot"
	"golang.org/x/sys/unix"
)

// Kinds of entries that cannot be replicated (Unsupported.ByKind). Everything else a tree
// holds beyond kopia's entries (special files, hard links, extended attributes) is kept
// beside the image (extras.go).
const (
	// KindName: a name that is not valid UTF-8 whose image name (names.go) is the real name
	// of a sibling: the two cannot both be in the image. (Other such names are kept: the
	// image holds them escaped, the extras their raw bytes.)
	KindName = "name"
	// KindXattrName: an extended attribute whose name is not valid UTF-8.
	KindXattrName = "xattr-name"
)

// Values of PushRequest.OnUnsupported.
const (
	OnUnsupportedFail = "fail"
	OnUnsupportedSkip = "skip"
)

// UnsupportedFirst is how many entries an Unsupported summary names.
const UnsupportedFirst = 20

// ErrUnsupported means the source holds entries an image cannot hold and the job's policy
// (on_unsupported: fail) refuses to replicate without them. Every agent would find the same.
var ErrUnsupported = errors.New("entries cannot be replicated")

// Unsupported summarises the entries of a tree an image cannot hold.
type Unsupported struct {
	// Count is the number of entries with anything that cannot be replicated.
	Count int `json:"count"`
	// ByKind counts them by kind (an entry may count under several kinds).
	ByKind map[string]int `json:"by_kind,omitempty"`
	// First names the first UnsupportedFirst entries in path order, each as
	// "dataset/path (what)".
	First []string `json:"first,omitempty"`
	// Partial: the scan stopped at its bound before the end of the tree (preflight).
	Partial bool `json:"partial,omitempty"`
}

// Empty reports whether nothing unsupported was found.
func (u *Unsupported) Empty() bool { return u == nil || u.Count == 0 }

// Merge adds o to u (the datasets of a consistency group).
func (u *Unsupported) Merge(o *Unsupported) {
	if o.Empty() {
		return
	}
	u.Count += o.Count
	if u.ByKind == nil {
		u.ByKind = map[string]int{}
	}
	for k, n := range o.ByKind {
		u.ByKind[k] += n
	}
	u.First = append(u.First, o.First...)
	sort.Strings(u.First)
	if len(u.First) > UnsupportedFirst {
		u.First = u.First[:UnsupportedFirst]
	}
	u.Partial = u.Partial || o.Partial
}

// Kinds is "name 2, xattr-name 1", in kind order.
func (u *Unsupported) Kinds() string {
	if u.Empty() {
		return ""
	}
	kinds := make([]string, 0, len(u.ByKind))
	for k := range u.ByKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for i, k := range kinds {
		kinds[i] = fmt.Sprintf("%s %d", k, u.ByKind[k])
	}
	return strings.Join(kinds, ", ")
}

// String is a one-line summary: "3 entries cannot be replicated (name 3): ...".
func (u *Unsupported) String() string {
	if u.Empty() {
		return "nothing unsupported"
	}
	what := "entries cannot"
	if u.Count == 1 {
		what = "entry cannot"
	}
	s := fmt.Sprintf("%d %s be replicated (%s): %s", u.Count, what, u.Kinds(), strings.Join(u.First, ", "))
	if u.Count > len(u.First) {
		s += fmt.Sprintf(" and %d more", u.Count-len(u.First))
	}
	return s
}

// UnsupportedError is ErrUnsupported with what was found.
type UnsupportedError struct {
	Job     string
	Summary Unsupported
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("push: %s; set on_unsupported: skip on job %s to replicate without them", e.Summary.String(), e.Job)
}

// Unwrap makes errors.Is(err, ErrUnsupported) true.
func (e *UnsupportedError) Unwrap() error { return ErrUnsupported }

// ScanOptions bound a scan.
type ScanOptions struct {
	// Name prefixes every path in the summary (the dataset).
	Name string
	// MaxEntries stops the scan after this many entries (0 = no bound); the summary is then
	// Partial.
	MaxEntries int64
	// MaxTime stops the scan after this long (0 = no bound); the summary is then Partial.
	MaxTime time.Duration
	// Parallel directory readers (default 4).
	Parallel int
}

// ScanUnsupported walks dir (never following a symlink) and summarises the entries that
// cannot be replicated: names that are not valid UTF-8 (and attribute names that are not).
// A ctx that ends stops the scan with its error. An entry that cannot be read is left to the
// push, which fails on it.
func ScanUnsupported(ctx context.Context, dir string, opt ScanOptions) (*Unsupported, error) {
	u, _, err := scanTree(ctx, dir, opt, false)
	return u, err
}

// ScanTree is ScanUnsupported that also collects what the image keeps beside kopia's
// entries (extras.go): FIFOs, sockets, devices, hard-link groups inside the tree and
// extended attributes (POSIX ACLs and file capabilities included). The Extras are nil when
// the tree has none.
func ScanTree(ctx context.Context, dir string, opt ScanOptions) (*Unsupported, *Extras, error) {
	return scanTree(ctx, dir, opt, true)
}

func scanTree(ctx context.Context, dir string, opt ScanOptions, collect bool) (*Unsupported, *Extras, error) {
	fd, err := openScanRoot(dir, &opt)
	if err != nil {
		return nil, nil, err
	}
	s := newScan(ctx, dir, opt, collect)
	s.rootXattrs(fd)
	s.wg.Add(1)
	s.dir(fd, dir, opt.Name)
	s.wg.Wait()
	return s.result()
}

// openScanRoot checks and opens the root of a scan (never through a symlink in its last
// component) and fills in opt's defaults.
func openScanRoot(dir string, opt *ScanOptions) (int, error) {
	if err := checkAbs("dir", dir); err != nil {
		return -1, err
	}
	if opt.Parallel <= 0 {
		opt.Parallel = 4
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("scanning %s: %w", dir, err)
	}
	return fd, nil
}

// newScan is a scan of the tree at dir, walked by scanTree or fed by a push's listing
// (sourceIter: listed and rootXattrs).
func newScan(ctx context.Context, dir string, opt ScanOptions, collect bool) *scan {
	s := &scan{ctx: ctx, opt: opt, root: dir, start: time.Now(), sem: make(chan struct{}, max(opt.Parallel-1, 0)),
		sum: Unsupported{ByKind: map[string]int{}}}
	if collect {
		s.x = newExtrasCollector()
	}
	return s
}

// rootXattrs examines the root's own attributes (fd: the root, open for reading).
func (s *scan) rootXattrs(fd int) {
	rootName := s.opt.Name
	if rootName == "" {
		rootName = "."
	}
	s.found(rootName, s.xattrs(fd, ".", s.root, "."))
}

// result is what the scan found.
func (s *scan) result() (*Unsupported, *Extras, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, nil, s.err
	}
	sum := s.sum
	if sum.Count == 0 {
		sum.ByKind = nil
	}
	var x *Extras
	if s.x != nil {
		x = s.x.result()
	}
	return &sum, x, nil
}

// listed examines the entry base (stat st, path rel below the root) of the directory dfd,
// which a push has just listed and stat'ed.
func (s *scan) listed(dfd int, rel, base string, st *unix.Stat_t) {
	s.entry(dfd, path.Join(s.root, rel), s.name(rel), base, st)
}

// name is the summary name of the path rel below the root (rel's inverse).
func (s *scan) name(rel string) string {
	if s.opt.Name == "" {
		return rel
	}
	return path.Join(s.opt.Name, rel)
}

// scan is one ScanUnsupported walk.
type scan struct {
	ctx   context.Context
	opt   ScanOptions
	root  string
	start time.Time
	// sem holds a token per extra walker: a directory is walked by a new goroutine when one
	// is free, else by the one that found it.
	sem chan struct{}
	wg  sync.WaitGroup

	mu      sync.Mutex
	err     error
	entries int64
	sum     Unsupported
	// x collects the extras (nil: only the summary is wanted).
	x *extrasCollector
	// onFind, when set, is called after each finding (nil) or failure (its error): a push
	// stops its upload.
	onFind func(error)
}

// rel is the path relative to the scanned root of summary name name.
func (s *scan) rel(name string) string {
	if s.opt.Name == "" {
		return name
	}
	if name == s.opt.Name {
		return "."
	}
	return strings.TrimPrefix(name, s.opt.Name+"/")
}

// stop reports whether the walk must end (error, ctx or bound).
func (s *scan) stop() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil && s.ctx.Err() != nil {
		s.err = fmt.Errorf("scan of %s stopped: %w", s.root, context.Cause(s.ctx))
	}
	if s.opt.MaxTime > 0 && time.Since(s.start) > s.opt.MaxTime {
		s.sum.Partial = true
	}
	return s.err != nil || s.sum.Partial
}

func (s *scan) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	if s.onFind != nil {
		s.onFind(err)
	}
}

// dir walks the open directory fd (full path p, summary name name) and closes it.
func (s *scan) dir(fd int, p, name string) {
	defer s.wg.Done()
	s.list(fd, p, func(e dirent) bool {
		s.child(fd, path.Join(p, e.name), path.Join(name, e.name), e.name, e.typ)
		return true
	})
}

// list hands each entry of the open directory fd (full path p) to each until it returns
// false, the walk must end or the listing fails, and closes fd.
func (s *scan) list(fd int, p string, each func(dirent) bool) {
	defer unix.Close(fd) //nolint:errcheck // read only
	r := newDirentReader(fd)
	var ents []dirent
	for !s.stop() {
		var more bool
		var err error
		if ents, more, err = r.next(ents[:0]); err != nil {
			s.fail(fmt.Errorf("scanning %s: %w", p, err))
			return
		}
		for _, e := range ents {
			if !each(e) {
				return
			}
		}
		if !more {
			return
		}
	}
}

// child examines one entry of the directory dfd (its d_type typ) and descends into a
// subdirectory. A scan that only summarises (no extras) needs an entry's name, attribute
// names and whether it is a directory, which the listing's d_type tells: it stats only
// where the filesystem gives no type (issue 16: the stat was about half of the preflight's
// scan). The descent opens the directory beneath dfd, never through a symlink, so an entry
// swapped since the listing is not followed.
func (s *scan) child(dfd int, p, name, base string, typ uint8) {
	var st *unix.Stat_t
	isDir := typ == unix.DT_DIR
	if s.x != nil || typ == unix.DT_UNKNOWN {
		st = new(unix.Stat_t)
		if err := unix.Fstatat(dfd, base, st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if !errors.Is(err, unix.ENOENT) {
				s.fail(fmt.Errorf("scanning %s: %w", p, err))
			}
			return
		}
		isDir = st.Mode&unix.S_IFMT == unix.S_IFDIR
	}
	if !s.entry(dfd, p, name, base, st) || !isDir {
		return
	}
	cfd, err := unix.Openat(dfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if !errors.Is(err, unix.ENOENT) {
			s.fail(fmt.Errorf("scanning %s: %w", p, err))
		}
		return
	}
	s.wg.Add(1)
	select {
	case s.sem <- struct{}{}:
		go func() {
			defer func() { <-s.sem }()
			s.dir(cfd, p, name)
		}()
	default:
		s.dir(cfd, p, name)
	}
}

// entry examines one entry (base in the directory dfd, shown as p, summary name name, stat
// st): its name, type, links and attributes. st is nil in a scan that collects no extras
// and listed the entry's type. It reports false once the scan's bound on entries is passed.
func (s *scan) entry(dfd int, p, name, base string, st *unix.Stat_t) bool {
	s.mu.Lock()
	s.entries++
	over := s.opt.MaxEntries > 0 && s.entries > s.opt.MaxEntries
	s.sum.Partial = s.sum.Partial || over
	s.mu.Unlock()
	if over {
		return false
	}
	var what []string
	rel := imagePath(s.rel(name)) // extras name entries as the image does
	if img := imageName(base); img != base {
		var sib unix.Stat_t
		if unix.Fstatat(dfd, img, &sib, unix.AT_SYMLINK_NOFOLLOW) == nil {
			what = append(what, KindName+":name not valid UTF-8, and its image name is a sibling's")
		} else if s.x != nil {
			s.mu.Lock()
			s.x.entry(rel).Name = []byte(base)
			s.mu.Unlock()
		}
	}
	if s.x != nil && st != nil { // a scan that collects extras stats every entry
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFCHR, unix.S_IFBLK:
			sp := &Special{Type: specialType(st.Mode), Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Nano()}
			if sp.Type == SpecialChar || sp.Type == SpecialBlock {
				sp.Rdev = st.Rdev
			}
			s.mu.Lock()
			s.x.entry(rel).Special = sp
			s.mu.Unlock()
		case unix.S_IFREG:
			if st.Nlink > 1 {
				key := [2]uint64{st.Dev, st.Ino}
				s.mu.Lock()
				s.x.links[key] = append(s.x.links[key], rel)
				s.x.nlink[key] = st.Nlink
				s.mu.Unlock()
			}
		}
	}
	// Through the directory fd: a path could have been swapped for a symlink since.
	s.found(name, append(what, s.xattrs(dfd, base, p, rel)...))
	return true
}

// xattrs collects the extended attributes of the entry base in directory dfd (shown as p;
// relative path rel) into the extras and returns, as findings, the names that cannot be
// kept (not valid UTF-8).
func (s *scan) xattrs(dfd int, base, p, rel string) []string {
	var out []string
	if s.x == nil {
		names, _ := listXattrsAt(dfd, base) // ENOTSUP: the filesystem has none; a vanished entry has none either
		for _, n := range names {
			if !utf8.ValidString(n) {
				out = append(out, KindXattrName+":xattr name "+strconv.Quote(n))
			}
		}
		return out
	}
	xs, err := readXattrsAt(dfd, base)
	if err != nil {
		if !errors.Is(err, unix.ENOENT) {
			s.fail(fmt.Errorf("scanning %s: %w", ShowPath(p), err))
		}
		return nil
	}
	keep := xs[:0]
	for _, a := range xs {
		if !utf8.ValidString(a.Name) {
			out = append(out, KindXattrName+":xattr name "+strconv.Quote(a.Name))
			continue
		}
		keep = append(keep, a)
	}
	if len(keep) > 0 {
		s.mu.Lock()
		s.x.entry(rel).Xattrs = keep
		s.mu.Unlock()
	}
	return out
}

// found records entry name with its findings, each "kind:detail".
func (s *scan) found(name string, what []string) {
	if len(what) == 0 {
		return
	}
	s.mu.Lock()
	s.sum.add(name, what)
	s.mu.Unlock()
	if s.onFind != nil {
		s.onFind(nil)
	}
}

// add counts entry name with its findings, each "kind:detail", and keeps the first
// UnsupportedFirst in path order, whatever order they were met in.
func (u *Unsupported) add(name string, what []string) {
	if u.ByKind == nil {
		u.ByKind = map[string]int{}
	}
	details := make([]string, len(what))
	u.Count++
	for i, w := range what {
		kind, detail := splitKind(w)
		u.ByKind[kind]++
		details[i] = detail
	}
	line := fmt.Sprintf("%s (%s)", ShowPath(name), strings.Join(details, "; "))
	f := u.First
	j := sort.SearchStrings(f, line)
	if j >= UnsupportedFirst {
		return
	}
	f = append(f, "")
	copy(f[j+1:], f[j:])
	f[j] = line
	if len(f) > UnsupportedFirst {
		f = f[:UnsupportedFirst]
	}
	u.First = f
}

// splitKind splits "kind:detail".
func splitKind(w string) (kind, detail string) {
	kind, detail, ok := strings.Cut(w, ":")
	if !ok {
		detail = kind
	}
	return kind, detail
}

// imageUnsupported is what an image pushed with OnUnsupported "skip" lacks (its tag).
func imageUnsupported(man *snapshot.Manifest) (*Unsupported, bool) {
	v, ok := man.Tags[unsupportedTag]
	if !ok {
		return nil, false
	}
	var u Unsupported
	if err := json.Unmarshal([]byte(v), &u); err != nil {
		// Still incomplete: the tag says so even if its summary is unreadable.
		return &Unsupported{First: []string{"(unreadable summary: " + err.Error() + ")"}}, true
	}
	return &u, true
}

// ShowPath is a path as messages, statuses and histories can carry it: Temporal's payloads
// and failures are protobuf strings, which must be valid UTF-8 (a failure that is not never
// reaches the server, and the step times out). A name that is not valid UTF-8 is shown
// quoted, its bytes escaped (\xff).
func ShowPath(p string) string {
	if utf8.ValidString(p) {
		return p
	}
	return strconv.Quote(p)
}
