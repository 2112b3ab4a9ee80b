package dataplane

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
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
