package dataplane

import (
	"os"
	"path"
	"path/filepath"
	"syscall"

	kfs "github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/snapshot"
	"golang.org/x/sys/unix"
)

// linkedFromCur is planFile's answer for a file it linked.
const linkedFromCur = "\x00linked"

// planFile links file de of image directory dir from the current replica if
// provably unchanged (returns linkedFromCur, the file's trust and its stamp
// after the link), returns a resume candidate's path to check, or "" (write it).
func (p *puller) planFile(dir string, de, prev *snapshot.DirEntry, srcFd, dstFd int, staged *stagedInos) (from string, t trust, s stamp) {
	rel := path.Join(dir, de.Name)

	// A reused staging dir (recycle.go) may hold an entry of this name: it stays only if it
	// is the current replica's inode that would be linked; otherwise it goes before the
	// link, clone or write.
	var dst *unix.Stat_t

	// clearDst removes that entry, once; false if it could not (the write then fails on it).
	clearDst := func() bool {
		if dst == nil {
			return true
		}

		dst = nil
		if err := p.recycling.remove(dstFd, de.Name); err != nil {
			p.log("removing a file of the recycled replica failed", "path", rel, "err", err)
			return false
		}

		return true
	}

	if p.recycling != nil {
		// The listing's inode number where it is the stat's (recycle_ino.go): one cold
		// lookup a kept file fewer.
		if staged != nil {
			if ino, ok := staged.inos[de.Name]; ok {
				dst = &unix.Stat_t{Dev: staged.dev, Ino: ino}
			}
		} else if st := new(unix.Stat_t); unix.Fstatat(dstFd, de.Name, st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			dst = st
		}

		defer func() {
			if from == "" {
				clearDst()
			}
		}()
	}

	resume := p.resume
	if p.noResume[rel] {
		resume = nil
	}

	for _, rs := range resume {
		src := filepath.Join(rs, filepath.FromSlash(dir), de.Name)
		if st, err := os.Lstat(src); err == nil && p.exactMeta(st, de) {
			return src, 0, stamp{}
		}
	}

	// Same object ID in the image the current replica was verified against,
	// identical metadata on disk and the inode's ctime as recorded (nothing
	// written since): the content is the image's content.
	if srcFd >= 0 && prev != nil && prev.Type == snapshot.EntryTypeFile && prev.ObjectID == de.ObjectID && !p.noLink[rel] {
		var st unix.Stat_t
		if err := unix.Fstatat(srcFd, de.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && p.exactStat(&st, de) {
			if !p.curTrust.trusts(&st) {
				// The first few by name; the pull's final log line has the count.
				if p.distrusted.Add(1) <= maxDistrustLogs {
					p.log("file of the current replica changed since it was published; writing it anew", "replica", p.cur, "path", path.Join(dir, de.Name), LogWarn, true)
				}

				return "", 0, stamp{}
			}

			if dst != nil {
				if dst.Dev == st.Dev && dst.Ino == st.Ino {
					// Already the inode a link would give, its ctime as the record has it.
					p.kept.Add(1)

					t := trustMeta
					if p.trustCur {
						t |= trustContent
					}

					return linkedFromCur, t, stampOf(&st)
				}

				if !clearDst() {
					return "", 0, stamp{}
				}
			}

			t := trust(0)
			if p.trustCur {
				t = trustContent
			}

			// A clone where the filesystem can: an independent copy of the verified bytes.
			if ok, err := p.cloneFile(srcFd, dstFd, rel, de, &st); err != nil {
				p.log("cloning a file of the current replica failed; writing it anew", "path", rel, "err", err)
				return "", 0, stamp{}
			} else if ok {
				p.cloned.Add(1)

				var after unix.Stat_t
				if err := unix.Fstatat(dstFd, de.Name, &after, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					return linkedFromCur, t, stamp{}
				}

				return linkedFromCur, t, stampOf(&after)
			}

			if err := unix.Linkat(srcFd, de.Name, dstFd, de.Name, 0); err == nil {
				p.linked.Add(1)

				t := trustMeta
				if p.trustCur {
					t |= trustContent
				}

				// The link changed the inode's ctime: the new one is recorded.
				var after unix.Stat_t
				if err := unix.Fstatat(dstFd, de.Name, &after, unix.AT_SYMLINK_NOFOLLOW); err != nil || after.Ino != st.Ino {
					return linkedFromCur, t, stamp{}
				}

				s := stampOf(&after)
				s.linked = true

				return linkedFromCur, t, s
			}
		}
	}

	return "", 0, stamp{}
}

// exactMeta reports whether st matches de exactly (type, size, mtime to the
// nanosecond, mode, and owner when we can set owners). Stricter than kopia's
// incremental restore, which skips files whose size matches and mtime is
// within 2 s and never re-applies mode/owner to skipped files.
func (p *puller) exactMeta(st os.FileInfo, de *snapshot.DirEntry) bool {
	if !st.Mode().IsRegular() || st.Size() != de.FileSize ||
		st.ModTime().UnixNano() != de.ModTime.ToTime().UnixNano() ||
		st.Mode()&kfs.ModBits != os.FileMode(de.Permissions)&kfs.ModBits {
		return false
	}

	if p.isRoot {
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok || sys.Uid != de.UserID || sys.Gid != de.GroupID {
			return false
		}
	}

	return true
}

// exactStat is exactMeta for a raw stat result.
func (p *puller) exactStat(st *unix.Stat_t, de *snapshot.DirEntry) bool {
	return statIsEntry(st, de, p.isRoot)
}

// statIsEntry reports whether raw stat result st is the regular file de describes: size,
// mtime to the nanosecond, mode with its setuid/setgid/sticky bits, and with owner its
// owner too.
func statIsEntry(st *unix.Stat_t, de *snapshot.DirEntry, owner bool) bool {
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != de.FileSize ||
		st.Mtim.Nano() != de.ModTime.ToTime().UnixNano() ||
		os.FileMode(st.Mode)&os.ModePerm != os.FileMode(de.Permissions)&os.ModePerm ||
		modeExtra(st.Mode) != os.FileMode(de.Permissions)&kfs.ModBits&^os.ModePerm {
		return false
	}

	return !owner || (st.Uid == de.UserID && st.Gid == de.GroupID)
}

// extraBits pairs the setuid/setgid/sticky bits of a raw mode with Go's FileMode bits.
var extraBits = [...]struct {
	raw uint32
	fm  os.FileMode
}{{unix.S_ISUID, os.ModeSetuid}, {unix.S_ISGID, os.ModeSetgid}, {unix.S_ISVTX, os.ModeSticky}}

// modeExtra converts setuid/setgid/sticky bits of a raw mode to Go's FileMode bits.
func modeExtra(m uint32) os.FileMode {
	var fm os.FileMode

	for _, b := range extraBits {
		if m&b.raw != 0 {
			fm |= b.fm
		}
	}

	return fm
}

// unixModeExtra converts Go's setuid/setgid/sticky FileMode bits to raw mode bits.
func unixModeExtra(m os.FileMode) uint32 {
	var r uint32

	for _, b := range extraBits {
		if m&b.fm != 0 {
			r |= b.raw
		}
	}

	return r
}
