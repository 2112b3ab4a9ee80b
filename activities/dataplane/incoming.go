package dataplane

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// incomingKind is the directory under T/.replctl that holds what source agents write for
// write-once pulls: T/.replctl/incoming/<escaped dataset>.
const incomingKind = "incoming"

// OpenIncoming opens T/.replctl/incoming/<escaped dataset> beneath targetRoot, creating what
// is missing (mode 0700), without following any symlink and with every component owned by
// the agent's user and closed to others (as the pull's own staging). It returns the
// directory as an os.Root, which confines whatever is done through it, and its path.
func OpenIncoming(targetRoot, dataset string) (*os.Root, string, error) {
	if err := checkAbs("TargetRoot", targetRoot); err != nil {
		return nil, "", err
	}
	if err := checkDataset("Dataset", dataset); err != nil {
		return nil, "", err
	}
	l := newLayout(targetRoot, dataset)
	root, err := openRoot(l.root)
	if err != nil {
		return nil, "", err
	}
	defer unix.Close(root) //nolint:errcheck
	fd, err := ctlDir(root, l.root, true, 0o700, incomingKind, l.esc)
	if err != nil {
		return nil, "", err
	}
	defer unix.Close(fd) //nolint:errcheck
	// The fd was resolved without following anything; open the root through it, not by
	// name, so nothing can be swapped in between.
	r, err := os.OpenRoot("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return nil, "", fmt.Errorf("opening %s: %w", l.incoming, err)
	}
	return r, l.incoming, nil
}
