// The journal's reader: it reads fanotify's event records and notes the directories
// they name (the package comment in journal.go explains the journal).

package fsjournal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// reader applies events as they come, until Close.
func (j *Journal) reader() {
	defer close(j.done)
	fds := []unix.PollFd{{Fd: int32(j.fd), Events: unix.POLLIN}}
	for {
		j.mu.Lock()
		closed := j.closed
		j.mu.Unlock()
		if closed {
			return
		}
		n, err := unix.Poll(fds, int(pollInterval/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			j.gap()
			time.Sleep(pollInterval)
			continue
		}
		if n > 0 {
			// Let events gather: the kernel merges those of one entry while they are
			// queued (a creation and the attribute changes after it), and one read takes
			// many. Begin and Since drain at once, so they never wait for this.
			time.Sleep(gatherDelay)
			j.drain()
		}
	}
}

// drain reads and applies every queued event.
func (j *Journal) drain() {
	j.rd.Lock()
	defer j.rd.Unlock()
	for {
		n, err := unix.Read(j.fd, j.buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			if err != nil && !errors.Is(err, unix.EAGAIN) {
				j.gap()
			}
			return
		}
		j.apply(j.buf[:n])
	}
}

// gap forgets everything: no Point taken so far can be answered.
func (j *Journal) gap() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.seq++
	j.lost = j.seq
	clear(j.dirs)
	j.nnames = 0
}

// Layout of the kernel's records (linux/fanotify.h).
const (
	metadataLen   = 24 // struct fanotify_event_metadata
	infoHeaderLen = 4  // struct fanotify_event_info_header
	fsidLen       = 8
	handleHeadLen = 8 // struct file_handle: handle_bytes, handle_type
)

// apply records a buffer of events.
func (j *Journal) apply(b []byte) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for len(b) >= metadataLen {
		evLen := int(binary.NativeEndian.Uint32(b[0:4]))
		metaLen := int(binary.NativeEndian.Uint16(b[6:8]))
		mask := binary.NativeEndian.Uint64(b[8:16])
		evFd := int32(binary.NativeEndian.Uint32(b[16:20]))
		if evLen < metadataLen || evLen > len(b) || metaLen > evLen {
			j.lostLocked()
			return
		}
		if evFd >= 0 {
			unix.Close(int(evFd)) //nolint:errcheck // FID groups report none; be safe
		}
		j.seq++
		if mask&unix.FAN_Q_OVERFLOW != 0 {
			j.lostLocked()
		} else {
			j.record(b[metaLen:evLen], mask)
		}
		b = b[evLen:]
	}
}

// outsideLocked reports whether the directory of handle is outside every root, or gone
// (its removal is an event of its parent): its events need not be kept. A directory that
// cannot be placed is kept.
func (j *Journal) outsideLocked(id fsid, htype int32, handle []byte, key string) bool {
	if out, ok := j.outside[key]; ok {
		return out
	}
	m, ok := j.marked[id]
	if !ok {
		return false
	}
	p, ok, err := resolve(m.mount, htype, handle)
	if err != nil {
		return false
	}
	out := !ok
	if ok {
		out = true
		for r := range j.roots {
			if _, in := below(r, p); in {
				out = false
				break
			}
		}
	}
	if len(j.outside) >= maxDirs {
		clear(j.outside)
	}
	j.outside[key] = out
	return out
}

func (j *Journal) lostLocked() {
	j.lost = j.seq
	clear(j.dirs)
	j.nnames = 0
}

// record notes the directory an event's info records name.
func (j *Journal) record(info []byte, mask uint64) {
	for len(info) >= infoHeaderLen {
		typ := info[0]
		l := int(binary.NativeEndian.Uint16(info[2:4]))
		if l < infoHeaderLen || l > len(info) {
			j.lostLocked()
			return
		}
		rec := info[infoHeaderLen:l]
		info = info[l:]
		if typ != unix.FAN_EVENT_INFO_TYPE_DFID_NAME && typ != unix.FAN_EVENT_INFO_TYPE_DFID && typ != unix.FAN_EVENT_INFO_TYPE_FID {
			continue
		}
		if len(rec) < fsidLen+handleHeadLen {
			j.lostLocked()
			return
		}
		var id fsid
		id[0] = int32(binary.NativeEndian.Uint32(rec[0:4]))
		id[1] = int32(binary.NativeEndian.Uint32(rec[4:8]))
		hlen := int(binary.NativeEndian.Uint32(rec[8:12]))
		htype := int32(binary.NativeEndian.Uint32(rec[12:16]))
		if fsidLen+handleHeadLen+hlen > len(rec) {
			j.lostLocked()
			return
		}
		handle := rec[16 : 16+hlen]
		var name string
		if typ == unix.FAN_EVENT_INFO_TYPE_DFID_NAME {
			rest := rec[16+hlen:]
			if i := bytes.IndexByte(rest, 0); i >= 0 {
				name = string(rest[:i])
			}
		}
		key := string(rec[:8]) + string(rec[12:16]) + string(handle)
		if mask&unix.FAN_ONDIR != 0 && mask&(unix.FAN_MOVED_FROM|unix.FAN_MOVED_TO) != 0 {
			clear(j.outside) // a directory moved: what was outside may be inside now
		}
		d := j.dirs[key]
		if d == nil {
			if j.outsideLocked(id, htype, handle, key) {
				return
			}
			if len(j.dirs) >= maxDirs {
				j.lostLocked()
				return
			}
			d = &dirChange{fs: id, htype: htype, handle: bytes.Clone(handle)}
			j.dirs[key] = d
		}
		d.seq = j.seq
		if mask&unix.FAN_ONDIR != 0 && mask&(unix.FAN_CREATE|unix.FAN_MOVED_TO) != 0 && name != "" && name != "." {
			if d.subdirs == nil {
				d.subdirs = map[string]uint64{}
			}
			d.subdirs[name] = j.seq
		}
		switch _, known := d.names[name]; {
		case name == ".":
			d.self = j.seq
		case name == "" || !known && j.nnames >= maxNames:
			d.all = j.seq
		default:
			if d.names == nil {
				d.names = map[string]uint64{}
			}
			if !known {
				j.nnames++
			}
			d.names[name] = j.seq
		}
		return // the first record names the directory
	}
}
