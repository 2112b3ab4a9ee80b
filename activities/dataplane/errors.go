package dataplane

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Sentinel errors. Returned errors wrap them with details; test with errors.Is.
var (
	// ErrFenced means a newer epoch took over the target (or the write
	// deadline passed): this attempt must stop writing and must not publish.
	ErrFenced = errors.New("fenced")
	// ErrVerify means a staged replica differs from its image; the staging
	// directory is kept for inspection and nothing is published.
	ErrVerify = errors.New("verification failed")
	// ErrNotFound means a repository or an image does not exist.
	ErrNotFound = errors.New("not found")
	// ErrBadInput means a request field is invalid; the message names the field.
	ErrBadInput = errors.New("bad input")
)

func badInput(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrBadInput, field, fmt.Sprintf(format, args...))
}

// checkAbs validates that p is an absolute, clean path.
func checkAbs(field, p string) error {
	if p == "" {
		return badInput(field, "must not be empty")
	}

	if !filepath.IsAbs(p) {
		return badInput(field, "%q is not an absolute path", p)
	}

	if strings.IndexByte(p, 0) >= 0 {
		return badInput(field, "%q contains a NUL byte", p)
	}

	if filepath.Clean(p) != p {
		return badInput(field, "%q is not a clean path (want %q)", p, filepath.Clean(p))
	}

	return nil
}

// checkDataset validates a dataset path: relative, clean, no "..", not inside
// our own .replctl directory.
func checkDataset(field, d string) error {
	if d == "" {
		return badInput(field, "must not be empty")
	}

	if strings.IndexByte(d, 0) >= 0 {
		return badInput(field, "%q contains a NUL byte", d)
	}

	if filepath.IsAbs(d) || strings.HasPrefix(d, "/") {
		return badInput(field, "%q must be a relative path", d)
	}

	if filepath.Clean(d) != d || d == "." {
		return badInput(field, "%q is not a clean relative path", d)
	}

	for _, c := range strings.Split(d, "/") {
		if c == ".." || c == "." || c == "" {
			return badInput(field, "%q must not contain %q components", d, c)
		}
	}

	if first := strings.Split(d, "/")[0]; first == replctlDir {
		return badInput(field, "%q must not be inside %s (reserved)", d, replctlDir)
	}

	if len(escapeDataset(d)) > maxComponent {
		return badInput(field, "%q is too long once escaped (max %d bytes)", d, maxComponent)
	}

	return nil
}

// checkName validates a name used as a single path component.
// CheckName checks n as one replica name: a single path component of replctl's own.
func CheckName(field, n string) error { return checkName(field, n) }

func checkName(field, n string) error {
	switch {
	case n == "":
		return badInput(field, "must not be empty")
	case strings.ContainsAny(n, "/\x00"):
		return badInput(field, "%q must not contain '/' or NUL", n)
	case strings.HasPrefix(n, "."):
		return badInput(field, "%q must not start with '.'", n)
	case len(n) > maxComponent-40:
		return badInput(field, "%q is too long (max %d bytes)", n, maxComponent-40)
	}

	return nil
}

// storageErrnos are the errors a storage system returns whoever asks: full, over quota,
// read-only, failing. Another agent of the same storage would meet them too.
var storageErrnos = []unix.Errno{unix.ENOSPC, unix.EDQUOT, unix.EROFS, unix.EIO}

// StorageFault tells whether err is a fault of the storage itself (ENOSPC, EDQUOT, EROFS,
// EIO) rather than of this agent, and returns the errno. Errors that lost their errno on the
// way (kopia's blob layer formats some of them into text) are recognised by the errno's
// message, which the C library fixes.
func StorageFault(err error) (unix.Errno, bool) {
	if err == nil {
		return 0, false
	}
	for _, e := range storageErrnos {
		if errors.Is(err, e) {
			return e, true
		}
	}
	msg := err.Error()
	for _, e := range storageErrnos {
		if strings.Contains(msg, e.Error()) {
			return e, true
		}
	}
	return 0, false
}
