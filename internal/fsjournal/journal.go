// Package fsjournal keeps a journal of the directories that changed on the filesystems an
// agent reads, through fanotify (a filesystem mark reporting the parent directory's handle
// and the entry's name, FAN_REPORT_DFID_NAME), so that a look at a tree that found it clean
// need not be repeated where nothing changed since (issue 16: the preflight's scan of a
// source for entries an image cannot hold walked the whole tree before every quiesce).
//
// The journal records names and attributes: creations, deletions, renames and attribute
// changes (owner, mode, times, extended attributes, link counts) of any entry, reported as a
// change of the directory holding it; with Options.Writes, writes of a file's data too
// (write, truncate, fallocate, and the close of a file open for writing, which is when a
// write through a shared mapping shows: fanotify never reports the write itself, and the
// close comes only once the mapping is gone too), reported on the directory the writer
// opened the file through. A Point is a position in the
// journal, taken before a complete look at one tree; Since tells which of that tree's
// directories changed after it, or ErrGap when the journal cannot tell: another journal
// (the agent restarted), events lost, the tree's root replaced, or a filesystem mounted
// inside the tree (its changes are not on the marked filesystem).
//
// Marking a filesystem needs CAP_SYS_ADMIN; resolving a directory's handle to its path,
// CAP_DAC_READ_SEARCH. Without them Open fails and the caller looks at whole trees.
package fsjournal

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrGap means the journal cannot tell what changed after a Point: the tree must be looked
// at whole.
var ErrGap = errors.New("change journal has a gap")

// events are the changes recorded: every change of a directory's entries and of any entry's
// attributes, on directories too (FAN_ONDIR). Data writes (FAN_MODIFY) only with
// Options.Writes: they are most of a busy filesystem's events, and a look at names and
// attributes does not need them.
const events = unix.FAN_CREATE | unix.FAN_DELETE | unix.FAN_MOVED_FROM | unix.FAN_MOVED_TO |
	unix.FAN_ATTRIB | unix.FAN_DELETE_SELF | unix.FAN_MOVE_SELF | unix.FAN_ONDIR

// maxDirs bounds the directories the journal remembers; past it the journal forgets them
// all and every Point taken before is answered with ErrGap (about 100 bytes a directory).
// maxNames bounds the entry names it remembers; past it a directory with a new name is
// remembered as changed in every entry.
const (
	maxDirs  = 1 << 20
	maxNames = 1 << 20
)

// pollInterval is how often the reader checks that the journal was not closed;
// gatherDelay how long it lets events queue before it reads them.
const (
	pollInterval = 500 * time.Millisecond
	gatherDelay  = 100 * time.Millisecond
)

// Journal is one fanotify group and what it has read.
type Journal struct {
	fd     int
	id     uint64 // random per journal: a Point of another journal is a gap
	events uint64 // the mark's mask

	// rd serialises reading and applying events, so that Since sees every event queued
	// before it was called.
	rd  sync.Mutex
	buf []byte

	mu     sync.Mutex
	seq    uint64 // events applied
	lost   uint64 // a Point at or before this seq has a gap (events lost, memory bound)
	marked map[fsid]*fsMark
	dirs   map[string]*dirChange // by fsid and handle
	nnames int                   // names held by dirs
	// roots are the trees given to Begin (as the kernel names them); outside holds the
	// directories found outside all of them, whose events are not kept (a filesystem mark
	// sees every writer of the filesystem: a target on the same filesystem writes
	// millions of names). A directory moved in arrives as a new tree, and any directory
	// move empties outside.
	roots   map[string]bool
	outside map[string]bool
	closed  bool
	done    chan struct{}
}

type fsid [2]int32

// fsMark is a marked filesystem: since when, and a directory on it to open handles from.
type fsMark struct {
	seq   uint64
	mount int // open for reading: open_by_handle_at takes no O_PATH descriptor
}

// dirChange is a directory with changes: its handle and the last change's seq, the
// directories created in it or moved into it (their subtrees are new to a tree's look), and
// the seq of the last change of each entry named, of the directory itself (name "."), and
// of a change that named no entry or past maxNames (every entry may have changed).
type dirChange struct {
	fs      fsid
	htype   int32
	handle  []byte
	seq     uint64
	subdirs map[string]uint64
	names   map[string]uint64
	self    uint64
	all     uint64
}

// Point is a position in the journal and the identity of the tree it was taken for.
type Point struct {
	Root     string // the tree's path as given to Begin
	id, seq  uint64
	dev, ino uint64
}

// Changes are the directories of a tree changed after a Point, relative to its root
// ("." is the root), sorted.
type Changes struct {
	// Dirs changed: an entry was created, deleted or renamed in each, or an attribute of an
	// entry (or of the directory itself) changed.
	Dirs []string
	// Trees were created or moved into the tree after the Point: every entry below each is
	// new. No tree is inside another, and no directory of Dirs is inside a tree.
	Trees []string
	// Names holds, for a directory of Dirs whose changed entries are known, their names
	// (raw, sorted; none when only the directory's own attributes changed). A directory of
	// Dirs that it does not hold may have changed in any entry. A directory whose own
	// attributes changed is named in its parent's names when the parent is in Dirs.
	Names map[string][]string
}

// AddEntries records entries (paths relative to the tree's root) as changed: each one's
// directory joins Dirs with the entry among its Names, unless the directory is in Dirs
// already with every entry changed or is at or below a Tree.
func (c *Changes) AddEntries(rels ...string) {
	for _, rel := range rels {
		if rel == "." || inAny(c.Trees, rel) {
			continue
		}
		d, n := filepath.Dir(rel), filepath.Base(rel)
		i, found := slices.BinarySearch(c.Dirs, d)
		if !found {
			c.Dirs = slices.Insert(c.Dirs, i, d)
			if c.Names == nil {
				c.Names = map[string][]string{}
			}
			c.Names[d] = []string{n}
			continue
		}
		names, ok := c.Names[d]
		if !ok {
			continue // every entry of d may have changed
		}
		if j, has := slices.BinarySearch(names, n); !has {
			c.Names[d] = slices.Insert(names, j, n)
		}
	}
}

// Options are what a journal records beyond names and attributes.
type Options struct {
	// Writes records writes of file data (FAN_MODIFY) and closes of files open for
	// writing (FAN_CLOSE_WRITE) as changes of the directory the file was opened through.
	Writes bool
}

// Open starts a journal. Its reader runs until Close.
func Open(opt Options) (*Journal, error) {
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_REPORT_DFID_NAME|unix.FAN_UNLIMITED_QUEUE|
		unix.FAN_NONBLOCK|unix.FAN_CLOEXEC, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("change journal: fanotify_init: %w", err)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		unix.Close(fd) //nolint:errcheck
		return nil, err
	}
	j := &Journal{fd: fd, id: binary.LittleEndian.Uint64(b[:]), events: events, buf: make([]byte, 256<<10),
		marked: map[fsid]*fsMark{}, dirs: map[string]*dirChange{}, roots: map[string]bool{}, outside: map[string]bool{},
		done: make(chan struct{})}
	if opt.Writes {
		j.events |= unix.FAN_MODIFY | unix.FAN_CLOSE_WRITE
	}
	go j.reader()
	return j, nil
}

// Close stops the journal.
func (j *Journal) Close() {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return
	}
	j.closed = true
	j.mu.Unlock()
	<-j.done
	j.rd.Lock()
	defer j.rd.Unlock()
	unix.Close(j.fd) //nolint:errcheck
	for _, m := range j.marked {
		unix.Close(m.mount) //nolint:errcheck
	}
}

// Begin marks root's filesystem (once per filesystem) and returns the journal's position,
// to be taken before a complete look at root.
func (j *Journal) Begin(root string) (Point, error) {
	r, err := openTreeRoot(root)
	if err != nil {
		return Point{}, err
	}
	defer unix.Close(r.fd) //nolint:errcheck
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(r.fd, &sfs); err != nil {
		return Point{}, fmt.Errorf("change journal: %s: %w", root, err)
	}
	if err := j.mark(r.fd, fsid(sfs.Fsid.Val), root, r.real); err != nil {
		return Point{}, err
	}
	j.drain()
	j.mu.Lock()
	defer j.mu.Unlock()
	return Point{Root: root, id: j.id, seq: j.seq, dev: r.st.Dev, ino: r.st.Ino}, nil
}

// treeRoot is the open root of a tree (open for reading: fanotify_mark takes no O_PATH
// descriptor), its stat and its path as the kernel names it.
type treeRoot struct {
	fd   int
	st   unix.Stat_t
	real string
}

// openTreeRoot opens root (never through a symlink in its last component); it fails with
// ErrGap when a filesystem is mounted below it.
func openTreeRoot(root string) (treeRoot, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return treeRoot{}, fmt.Errorf("%w: %w", ErrGap, err)
	}
	r := treeRoot{fd: fd}
	if err := unix.Fstat(fd, &r.st); err != nil {
		unix.Close(fd) //nolint:errcheck
		return treeRoot{}, fmt.Errorf("%w: %s: %w", ErrGap, root, err)
	}
	if r.real, err = os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); err != nil {
		unix.Close(fd) //nolint:errcheck
		return treeRoot{}, fmt.Errorf("%w: %s: %w", ErrGap, root, err)
	}
	if err := mountsBelow(r.real, root); err != nil {
		unix.Close(fd) //nolint:errcheck
		return treeRoot{}, err
	}
	return r, nil
}

// mark adds a filesystem mark for the filesystem of fd (root, real as the kernel names it)
// unless it has one, and keeps the events of root's directories from now on.
func (j *Journal) mark(fd int, id fsid, root, real string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return fmt.Errorf("change journal: closed")
	}
	if !j.roots[real] {
		j.roots[real] = true
		clear(j.outside)
	}
	if _, ok := j.marked[id]; ok {
		return nil
	}
	if err := unix.FanotifyMark(j.fd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, j.events, fd, ""); err != nil {
		return fmt.Errorf("change journal: marking the filesystem of %s: %w", root, err)
	}
	mount, err := unix.Dup(fd)
	if err != nil {
		return fmt.Errorf("change journal: %s: %w", root, err)
	}
	j.marked[id] = &fsMark{seq: j.seq, mount: mount}
	return nil
}

// Since returns the directories of p's tree that changed after p, or ErrGap.
func (j *Journal) Since(p Point) (*Changes, error) {
	if p.id != j.id {
		return nil, fmt.Errorf("%w: %s was looked at by another journal (the agent restarted)", ErrGap, p.Root)
	}
	r, err := openTreeRoot(p.Root)
	if err != nil {
		return nil, err
	}
	unix.Close(r.fd) //nolint:errcheck // only its identity and path are needed
	if r.st.Dev != p.dev || r.st.Ino != p.ino {
		return nil, fmt.Errorf("%w: %s is not the directory it was", ErrGap, p.Root)
	}
	real := r.real
	j.drain()
	j.mu.Lock()
	if p.seq < j.lost || p.seq > j.seq {
		j.mu.Unlock()
		return nil, fmt.Errorf("%w: events were lost after %s was looked at", ErrGap, p.Root)
	}
	var changed []*dirChange
	for _, d := range j.dirs {
		if d.seq > p.seq {
			changed = append(changed, d)
		}
	}
	var mounts = make(map[fsid]int, len(j.marked))
	for id, m := range j.marked {
		mounts[id] = m.mount
	}
	// Copy what resolving needs: the reader may change the entries meanwhile.
	type todo struct {
		fs        fsid
		htype     int32
		handle    []byte
		trees     []string
		names     []string
		self, all bool
	}
	work := make([]todo, 0, len(changed))
	for _, d := range changed {
		t := todo{fs: d.fs, htype: d.htype, handle: d.handle, self: d.self > p.seq, all: d.all > p.seq}
		for name, seq := range d.subdirs {
			if seq > p.seq {
				t.trees = append(t.trees, name)
			}
		}
		if !t.all {
			for name, seq := range d.names {
				if seq > p.seq {
					t.names = append(t.names, name)
				}
			}
		}
		work = append(work, t)
	}
	j.mu.Unlock()

	ch := &Changes{Names: map[string][]string{}}
	whole := map[string]bool{} // directories any entry of which may have changed
	for _, t := range work {
		mount, ok := mounts[t.fs]
		if !ok {
			continue
		}
		dir, ok, err := resolve(mount, t.htype, t.handle)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrGap, err)
		}
		if !ok {
			continue // gone: its removal changed its parent
		}
		rel, ok := below(real, dir)
		if !ok {
			continue
		}
		ch.Dirs = append(ch.Dirs, rel)
		for _, name := range t.trees {
			ch.Trees = append(ch.Trees, filepath.Join(rel, name))
		}
		if t.all {
			whole[rel] = true
		}
		ch.Names[rel] = append(ch.Names[rel], t.names...)
		if t.self && rel != "." {
			// Its own attributes are an entry of its parent's (kept below only if the
			// parent changed too: else the parent has no names and is looked at whole).
			parent := filepath.Dir(rel)
			ch.Names[parent] = append(ch.Names[parent], filepath.Base(rel))
		}
	}
	ch.Trees = outermost(ch.Trees)
	ch.Dirs = slices.DeleteFunc(ch.Dirs, func(d string) bool { return inAny(ch.Trees, d) })
	sort.Strings(ch.Dirs)
	ch.Dirs = slices.Compact(ch.Dirs)
	for d, names := range ch.Names {
		if whole[d] || !slices.Contains(ch.Dirs, d) {
			delete(ch.Names, d)
			continue
		}
		sort.Strings(names)
		ch.Names[d] = slices.Compact(names)
	}
	return ch, nil
}

// outermost sorts trees and drops those inside another.
func outermost(trees []string) []string {
	sort.Strings(trees)
	var out []string
	for _, t := range trees {
		if !inAny(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// inAny reports whether p is one of trees or below one.
func inAny(trees []string, p string) bool {
	for _, t := range trees {
		if _, ok := below(t, p); ok {
			return true
		}
	}
	return false
}

// Forget drops what changed at or before the oldest of keep (of this journal), or at or
// before now when keep holds none: only the points kept will be asked about, and an older
// one is answered with ErrGap. It bounds what the journal remembers to the changes since
// the oldest point its user still holds.
func (j *Journal) Forget(keep []Point) {
	j.drain()
	j.mu.Lock()
	defer j.mu.Unlock()
	floor := j.seq
	for _, p := range keep {
		if p.id == j.id && p.seq < floor {
			floor = p.seq
		}
	}
	j.lost = max(j.lost, floor)
	for k, d := range j.dirs {
		if d.seq <= floor {
			j.nnames -= len(d.names)
			delete(j.dirs, k)
			continue
		}
		for n, seq := range d.subdirs {
			if seq <= floor {
				delete(d.subdirs, n)
			}
		}
		for n, seq := range d.names {
			if seq <= floor {
				delete(d.names, n)
				j.nnames--
			}
		}
	}
}

// resolve opens a directory by its handle and returns its path; false when it is gone
// (deleted: its removal changed its parent). Any other failure is an error: a change that
// cannot be placed must not be dropped.
func resolve(mount int, htype int32, handle []byte) (string, bool, error) {
	fd, err := unix.OpenByHandleAt(mount, unix.NewFileHandle(htype, handle), unix.O_PATH|unix.O_CLOEXEC)
	if errors.Is(err, unix.ESTALE) || errors.Is(err, unix.ENOENT) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("opening a changed directory by its handle: %w", err)
	}
	defer unix.Close(fd) //nolint:errcheck
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	switch {
	case err != nil:
		return "", false, fmt.Errorf("the path of a changed directory: %w", err)
	case strings.HasSuffix(p, " (deleted)"):
		return "", false, nil
	case !strings.HasPrefix(p, "/"):
		return "", false, fmt.Errorf("a changed directory has no path (%q)", p)
	}
	return p, true, nil
}

// below is p relative to root, if it is root or below it.
func below(root, p string) (string, bool) {
	if p == root {
		return ".", true
	}
	if root == "/" {
		return p[1:], true
	}
	if rel, ok := strings.CutPrefix(p, root+"/"); ok {
		return rel, true
	}
	return "", false
}

// mountsBelow fails with ErrGap when a filesystem is mounted below root (its path as the
// kernel names it, real): its changes are not on root's filesystem.
func mountsBelow(real, root string) error {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrGap, err)
	}
	for line := range strings.SplitSeq(string(info), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		if rel, ok := below(real, unescapeMount(f[4])); ok && rel != "." {
			return fmt.Errorf("%w: a filesystem is mounted at %s inside %s", ErrGap, rel, root)
		}
	}
	return nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
