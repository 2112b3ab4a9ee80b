package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sort"
	"sync"

	"golang.org/x/sys/unix"
)

// Damage never spreads. Replicas share unchanged files through hard links, so
// a write into a published replica changes that inode in every replica that
// links it; size, mtime, mode and owner can all be put back by the writer. The
// inode's ctime cannot: every write, chmod, chown, utimes, link and unlink sets
// it to the current time. A replica's trust record (T/.replctl/meta/<esc>/
// <replica>.trust) lists the inode and ctime of each of its files as this
// package last left them. A pull links a file of the current replica only if
// its inode's ctime still equals the record; any other file is written anew
// from the repository (a new inode) and counted as distrusted. Our own links
// and unlinks change ctimes too, so each of them that meets the recorded ctime
// carries the record forward to the new ctime: a pull for the files it links,
// the trash sweep for the files it unlinks (see removeAllTracked).

// maxDistrustLogs bounds the distrusted files a pull logs one by one (a tool
// that touched every file, e.g. setting an xattr, distrusts them all).
const maxDistrustLogs = 10

// trustExt is the trust record's suffix beside the replica's meta record.
const trustExt = ".trust"

// trustMagic starts a trust record (format version 1).
const trustMagic = "replctl-trust-1\n"

// trustRecord is a replica's (inode, ctime) pairs, sorted by inode.
type trustRecord struct {
	ino   []uint64
	ctime []int64 // ns since the epoch
}

// stamp is one file's inode and ctime; linked: a link to an inode of the
// current replica (its ctime carries the current replica's record forward).
type stamp struct {
	ino    uint64
	ctime  int64
	linked bool
}

func stampOf(st *unix.Stat_t) stamp { return stamp{ino: st.Ino, ctime: st.Ctim.Nano()} }

// newTrustRecord sorts stamps into a record (one entry per inode).
func newTrustRecord(stamps []stamp) *trustRecord {
	slices.SortFunc(stamps, func(a, b stamp) int {
		switch {
		case a.ino < b.ino:
			return -1
		case a.ino > b.ino:
			return 1
		}

		return 0
	})

	r := &trustRecord{ino: make([]uint64, 0, len(stamps)), ctime: make([]int64, 0, len(stamps))}
	for i, s := range stamps {
		if i > 0 && s.ino == stamps[i-1].ino {
			continue
		}

		r.ino = append(r.ino, s.ino)
		r.ctime = append(r.ctime, s.ctime)
	}

	return r
}

// find returns the index of ino in r, or -1.
func (r *trustRecord) find(ino uint64) int {
	if r == nil {
		return -1
	}

	i := sort.Search(len(r.ino), func(i int) bool { return r.ino[i] >= ino })
	if i < len(r.ino) && r.ino[i] == ino {
		return i
	}

	return -1
}

// trusts reports whether st is an inode of r with its recorded ctime.
func (r *trustRecord) trusts(st *unix.Stat_t) bool {
	i := r.find(st.Ino)
	return i >= 0 && r.ctime[i] == st.Ctim.Nano()
}

// carry moves inode ino's recorded ctime from before to after (our own link
// or unlink); it reports whether it did (before was the recorded ctime).
func (r *trustRecord) carry(ino uint64, before, after int64) bool {
	i := r.find(ino)
	if i < 0 || r.ctime[i] != before {
		return false
	}

	r.ctime[i] = after

	return true
}

// encode: magic, count, then per entry the inode's delta to the previous one
// (uvarint) and the ctime's delta to the previous one (varint): ~6-8 bytes a
// file.
func (r *trustRecord) encode() []byte {
	b := make([]byte, 0, len(trustMagic)+binary.MaxVarintLen64+8*len(r.ino))
	b = append(b, trustMagic...)
	b = binary.AppendUvarint(b, uint64(len(r.ino)))

	var pi uint64

	var pc int64

	for i, ino := range r.ino {
		b = binary.AppendUvarint(b, ino-pi)
		b = binary.AppendVarint(b, r.ctime[i]-pc)
		pi, pc = ino, r.ctime[i]
	}

	return b
}

func decodeTrust(b []byte) (*trustRecord, error) {
	if len(b) < len(trustMagic) || string(b[:len(trustMagic)]) != trustMagic {
		return nil, errors.New("not a trust record (bad magic)")
	}

	b = b[len(trustMagic):]

	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, errors.New("trust record: bad count")
	}

	b = b[k:]
	r := &trustRecord{ino: make([]uint64, n), ctime: make([]int64, n)}

	var pi uint64

	var pc int64

	for i := range n {
		d, k := binary.Uvarint(b)
		if k <= 0 || (i > 0 && d == 0) {
			return nil, fmt.Errorf("trust record: bad inode at entry %d", i)
		}

		b = b[k:]

		c, k := binary.Varint(b)
		if k <= 0 {
			return nil, fmt.Errorf("trust record: bad ctime at entry %d", i)
		}

		b = b[k:]
		pi, pc = pi+d, pc+c
		r.ino[i], r.ctime[i] = pi, pc
	}

	if len(b) != 0 {
		return nil, errors.New("trust record: trailing bytes")
	}

	return r, nil
}

// readTrust reads replica name's trust record from the meta dir (fd metaFd).
func readTrust(metaFd int, name string) (*trustRecord, error) {
	fd, err := openatRetry(metaFd, name+trustExt, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return nil, err
	}

	f := os.NewFile(uintptr(fd), name+trustExt)
	defer f.Close()

	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}

	return decodeTrust(b)
}

// writeTrust replaces replica name's trust record atomically.
func writeTrust(metaFd int, metaDir, name string, r *trustRecord) error {
	return writeFileAt(metaFd, metaDir, name+trustExt, r.encode(), 0o644)
}

// trustStamps collects the stamps of every file of the staging tree that
// build recorded.
func (p *puller) trustStamps() []stamp {
	var out []stamp

	for _, dt := range p.trusted {
		for _, s := range dt.stamps {
			if s.ino != 0 {
				out = append(out, s)
			}
		}
	}

	return out
}

// carryCurrent carries the current replica's record forward over the links
// this pull made to its inodes, so a later attempt still trusts them.
func (p *puller) carryCurrent(stamps []stamp) {
	if p.curTrust == nil || p.cur == "" {
		return
	}

	var cs []carry

	for _, s := range stamps {
		if i := p.curTrust.find(s.ino); s.linked && i >= 0 {
			cs = append(cs, carry{ino: s.ino, before: p.curTrust.ctime[i], after: s.ctime})
		}
	}

	if len(cs) > 0 {
		p.lay.carryTrust(p.cur, cs, p.log)
	}
}

// lstatStamp is the stamp of the file at p (zero if it cannot be read: no
// record entry, so the file is not trusted later).
func lstatStamp(p string) stamp {
	var st unix.Stat_t
	if unix.Lstat(p, &st) != nil {
		return stamp{}
	}

	return stampOf(&st)
}

// carry is one change of an inode's ctime made by this package.
type carry struct {
	ino           uint64
	before, after int64
}

// unlinkJournal notes the ctime changes of removals (one goroutine).
type unlinkJournal struct{ carries []carry }

// unlinkShared removes name in dirFd if it is a regular file linked
// elsewhere too (done), noting its inode's ctime before and after. The
// inode is held open (O_PATH) across the unlink to read the new ctime.
func (j *unlinkJournal) unlinkShared(dirFd int, name string) (bool, error) {
	var st unix.Stat_t
	if unix.Fstatat(dirFd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink < 2 {
		return false, nil
	}

	fd, err := openatRetry(dirFd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return false, nil
	}
	defer unix.Close(fd) //nolint:errcheck

	if err := unix.Unlinkat(dirFd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return true, fmt.Errorf("removing %s: %w", name, err)
	}

	var after unix.Stat_t
	if unix.Fstat(fd, &after) == nil && after.Ino == st.Ino {
		j.carries = append(j.carries, carry{ino: st.Ino, before: st.Ctim.Nano(), after: after.Ctim.Nano()})
	}

	return true, nil
}

// trustMu serialises read-modify-write of trust records in this process.
var trustMu sync.Mutex

// carryTrust applies carries, in order, to replica name's trust record: an
// inode whose recorded ctime is a carry's before gets its after. A carry
// that meets another ctime (the file was changed in between) is not applied,
// so that file stays distrusted.
func (l layout) carryTrust(name string, carries []carry, log func(string, ...any)) {
	trustMu.Lock()
	defer trustMu.Unlock()

	dirs, err := l.openDirs()
	if err != nil {
		log("trust record: opening the dataset's directories failed", "err", err)
		return
	}
	defer dirs.close()

	r, err := readTrust(dirs.meta, name)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log("trust record unreadable", "replica", name, "err", err)
		}

		return
	}

	changed := false
	for _, c := range carries {
		if r.carry(c.ino, c.before, c.after) {
			changed = true
		}
	}

	if changed {
		if err := writeTrust(dirs.meta, l.meta, name, r); err != nil {
			log("updating a trust record failed (its files will be written anew)", "replica", name, "err", err)
		}
	}
}
