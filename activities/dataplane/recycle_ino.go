package dataplane

import (
	"fmt"
	"os"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// listedInoFS are the filesystems whose getdents64 d_ino is the st_ino a stat of the entry
// gives (overlayfs, FUSE and network filesystems may differ, so they are left out).
var listedInoFS = map[int64]bool{
	unix.EXT4_SUPER_MAGIC:  true,
	unix.XFS_SUPER_MAGIC:   true,
	unix.BTRFS_SUPER_MAGIC: true,
	unix.TMPFS_MAGIC:       true,
}

// listedInos reports whether a recycling pull may take the inode numbers of staging dir
// fd's files from its listing (pruneDir's) instead of a stat of each: on a filesystem of
// listedInoFS with no mount beneath the dir, where an entry's d_ino is the inode a link
// from the current replica would have put there. A mount over an entry would list the inode
// it covers, not the one it shows, so any mount beneath turns it off; so does any doubt.
func listedInos(fd int) (bool, error) {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return false, fmt.Errorf("statfs of the staging dir: %w", err)
	}

	if !listedInoFS[int64(fs.Type)] {
		return false, nil
	}

	dir, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return false, fmt.Errorf("path of the staging dir: %w", err)
	}

	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return false, fmt.Errorf("listing mounts: %w", err)
	}

	for _, m := range mounts {
		if m.Mountpoint != dir {
			return false, nil
		}
	}

	return true, nil
}

// stagedInos are the inode numbers of a reused staging directory's non-directory entries
// from its listing, and the directory's device: what planFile compares with the current
// replica's file instead of a stat of the staged entry.
type stagedInos struct {
	dev  uint64
	inos map[string]uint64
}
