package testworld

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
)

// MountTmpfs mounts a tmpfs of size bytes at dir (made if missing; root only) and returns
// how to unmount it. Tests use one for a filesystem of their own: a small one to fill, or
// one that no other test's files share (what an agent sees of its source's filesystem, such
// as the files held open for writing on it, is then the test's alone).
func MountTmpfs(dir string, size int64) (unmount func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(size, 10), "replctl-test", dir).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("mount tmpfs at %s: %w: %s", dir, err, out)
	}
	return func() { _ = exec.Command("umount", "-l", dir).Run() }, nil
}
