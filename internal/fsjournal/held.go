package fsjournal

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// What the journal cannot see is a write through a shared mapping: fanotify reports it only
// at the close of the file, once every mapping of it is gone too. HeldForWrite finds the
// files whose writes may still be unreported: those some process maps shared and writable
// (/proc/PID/maps) or holds open for writing (/proc/PID/fd, and the file table of any
// thread that has one of its own; a mapping may be gone while the file stays open, its
// close not yet reported). Together with the events before it,
// that covers every write to a file of the filesystem by the processes it can examine.

// HeldFile is a file of the filesystem asked about that a process maps shared and writable
// or holds open for writing.
type HeldFile struct {
	Path  string // as this process names it (lstat gives the same inode)
	Links uint32
}

// Held is what HeldForWrite found.
type Held struct {
	Files []HeldFile
	// Unseen are the processes that could not be examined (their /proc directories, with
	// their names): reading their maps or open files was refused.
	Unseen []string
	// OwnNamespace is set when this process is not in the host's PID namespace: it sees
	// only the processes of its own.
	OwnNamespace bool
	// Unknown says why the files found may not be all those of the processes examined (""
	// when they are): a held file with no name this process sees.
	Unknown string
}

// procRoot is where HeldForWrite looks for processes.
const procRoot = "/proc"

// initPIDNamespace is the inode of the host's PID namespace (PROC_PID_INIT_INO).
const initPIDNamespace = 0xEFFFFFFC

// HeldForWrite returns the files of filesystem dev (st_dev) that some process it can
// examine, this one included, maps shared and writable or holds open for writing, and the
// processes it could not examine. A deleted file is left out.
func HeldForWrite(dev uint64) Held {
	var st unix.Stat_t
	if err := unix.Stat(procRoot+"/self/ns/pid", &st); err != nil {
		return Held{Unknown: fmt.Sprintf("cannot tell this process's PID namespace: %v", err)}
	}
	pids, err := os.ReadDir(procRoot)
	if err != nil {
		return Held{Unknown: fmt.Sprintf("listing processes: %v", err)}
	}
	h := heldScan{dev: dev, seen: map[uint64]bool{}}
	for _, e := range pids {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		h.process(procRoot + "/" + e.Name())
		if h.unknown != "" {
			return Held{Unknown: h.unknown}
		}
	}
	return Held{Files: h.files, Unseen: h.unseen, OwnNamespace: st.Ino != initPIDNamespace}
}

// HeldIn is HeldForWrite for the filesystem of tree root, the root named as Begin and Since
// name it: rels are the held files inside the tree, relative to its root, and outside is a
// held file outside it with several links ("" when none), one of whose other names may be
// inside.
func HeldIn(root string) (h Held, rels []string, outside string, err error) {
	r, err := openTreeRoot(root)
	if err != nil {
		return Held{}, nil, "", err
	}
	unix.Close(r.fd) //nolint:errcheck // only its identity and path are needed
	h = HeldForWrite(r.st.Dev)
	for _, f := range h.Files {
		if rel, ok := below(r.real, f.Path); ok {
			if rel != "." {
				rels = append(rels, rel)
			}
		} else if f.Links > 1 && outside == "" {
			outside = f.Path
		}
	}
	return h, rels, outside, nil
}

// heldScan gathers the held files of one filesystem, each inode once.
type heldScan struct {
	dev     uint64
	seen    map[uint64]bool
	files   []HeldFile
	unseen  []string
	unknown string
}

// process examines one process: its shared writable mappings, then its files open for
// writing. A process that ends meanwhile is skipped; one that cannot be read is unseen.
func (h *heldScan) process(dir string) {
	err := h.maps(dir)
	if h.unknown != "" {
		return
	}
	if err == nil {
		err = h.fds(dir + "/fd")
	}
	if err == nil && h.unknown == "" {
		// /proc/PID/fd is the thread group leader's file table: a thread with one of its
		// own (cloned without CLONE_FILES, or unshared since) is read on its own.
		for _, fdDir := range ownFileTables(dir) {
			if err = h.fds(fdDir); gone(err) {
				err = nil // the thread ended meanwhile
			}
			if err != nil || h.unknown != "" {
				break
			}
		}
	}
	if err != nil {
		if !gone(err) && h.unknown == "" {
			comm, _ := os.ReadFile(dir + "/comm")
			h.unseen = append(h.unseen, fmt.Sprintf("%s (%s)", strings.TrimPrefix(dir, procRoot+"/"), strings.TrimSpace(string(comm))))
		}
	}
}

// kcmpFiles is kcmp(2)'s KCMP_FILES (linux/kcmp.h): do two tasks share one file table?
const kcmpFiles = 2

// ownFileTables are the fd directories of dir's threads whose file table is not the
// leader's. kcmp tells; where it cannot (not permitted, or a kernel without it), the
// thread's table is read anyway.
func ownFileTables(dir string) []string {
	pid, err := strconv.Atoi(strings.TrimPrefix(dir, procRoot+"/"))
	if err != nil {
		return nil
	}
	tasks, err := os.ReadDir(dir + "/task")
	if err != nil {
		return nil
	}
	var out []string
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil || tid == pid {
			continue
		}
		same, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(tid), kcmpFiles, 0, 0, 0)
		if errno == 0 && same == 0 {
			continue
		}
		out = append(out, dir+"/task/"+t.Name()+"/fd")
	}
	return out
}

// fds adds the files of one file table (an fd directory) open for writing on the
// filesystem.
func (h *heldScan) fds(fdDir string) error {
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return err
	}
	for _, e := range fds {
		link := fdDir + "/" + e.Name()
		// The magic link's own mode has the owner's write bit where the file is open for
		// writing (fs/proc/fd.c).
		var lst unix.Stat_t
		if err := unix.Lstat(link, &lst); err != nil || lst.Mode&unix.S_IWUSR == 0 {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(link, &st); err != nil || st.Dev != h.dev || st.Mode&unix.S_IFMT != unix.S_IFREG || h.seen[st.Ino] {
			continue
		}
		h.place(link, "", st.Ino)
		if h.unknown != "" {
			return nil
		}
	}
	return nil
}

// maps adds the files dir's process maps shared and writable on the filesystem.
func (h *heldScan) maps(dir string) error {
	f, err := os.Open(dir + "/maps")
	if err != nil {
		return err
	}
	defer f.Close() //nolint:errcheck
	major, minor := unix.Major(h.dev), unix.Minor(h.dev)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// address perms offset dev inode pathname
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || len(fields[1]) < 4 || fields[1][1] != 'w' || fields[1][3] != 's' {
			continue
		}
		maj, min, ok := strings.Cut(fields[3], ":")
		if !ok {
			continue
		}
		ma, err1 := strconv.ParseUint(maj, 16, 32)
		mi, err2 := strconv.ParseUint(min, 16, 32)
		ino, err3 := strconv.ParseUint(fields[4], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || uint32(ma) != major || uint32(mi) != minor || ino == 0 || h.seen[ino] {
			continue
		}
		// The path as the process names it, which may differ from ours: map_files names it
		// for us.
		name := strings.Join(fields[5:], " ")
		h.place(dir+"/map_files/"+fields[0], name, ino)
		if h.unknown != "" {
			return nil
		}
	}
	return sc.Err()
}

// place finds the name of held inode ino through magic link link (or guess, the name the
// holder gives it) and adds it; a deleted file is left out.
func (h *heldScan) place(link, guess string, ino uint64) {
	h.seen[ino] = true
	var st unix.Stat_t
	if guess != "" && strings.HasPrefix(guess, "/") && unix.Lstat(guess, &st) == nil && st.Dev == h.dev && st.Ino == ino {
		h.files = append(h.files, HeldFile{Path: guess, Links: uint32(st.Nlink)})
		return
	}
	fd, err := unix.Open(link, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		if gone(err) {
			return
		}
		h.unknown = fmt.Sprintf("opening %s: %v", link, err)
		return
	}
	defer unix.Close(fd) //nolint:errcheck
	if err := unix.Fstat(fd, &st); err != nil {
		h.unknown = fmt.Sprintf("%s: %v", link, err)
		return
	}
	if st.Nlink == 0 {
		return // deleted: no tree holds it
	}
	p, err := os.Readlink(procRoot + "/self/fd/" + strconv.Itoa(fd))
	var named unix.Stat_t
	if err != nil || !strings.HasPrefix(p, "/") || unix.Lstat(p, &named) != nil || named.Dev != st.Dev || named.Ino != st.Ino {
		h.unknown = fmt.Sprintf("a file held open for writing (%s, inode %d) has no name here", link, ino)
		return
	}
	h.files = append(h.files, HeldFile{Path: p, Links: uint32(st.Nlink)})
}

// gone reports whether err means the process or its file went away meanwhile.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH)
}
