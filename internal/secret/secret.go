// Package secret reads files that hold secrets (private keys, passwords, API keys) and
// refuses those that other users could read or change: a key that group or others can
// read is already disclosed, one they can write can be swapped. OpenSSH's StrictModes
// check of private keys is the model. Public files (certificates, known_hosts) are not
// secrets and are read as usual.
package secret

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Mode is the mode secret files are created with. Any mode without group or other bits is
// accepted (0400, 0600, 0700).
const Mode fs.FileMode = 0o600

// ErrInsecure marks a secret file refused for its mode or type (test with errors.Is).
var ErrInsecure = errors.New("insecure secret file")

// insecureError is an ErrInsecure whose message is only the explanation.
type insecureError struct{ msg string }

func (e *insecureError) Error() string        { return e.msg }
func (e *insecureError) Is(target error) bool { return target == ErrInsecure }

// maxSize bounds what ReadFile reads: every secret replctl uses is a few kilobytes, so a
// larger file is a wrong path (a device, a log), not a key.
const maxSize = 1 << 20

// ReadFile reads the secret file name, what names the secret in errors ("SSH private
// key", "repository password"). It refuses a file that is not a regular file or whose
// mode lets group or others in, with an error that names the file, its mode and the fix.
// A symlink is followed: the file it leads to is what is checked and read.
func ReadFile(name, what string) ([]byte, error) {
	// O_NONBLOCK: a FIFO planted at the path must not hang the open; it is refused below.
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close() //nolint:errcheck
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, name, err)
	}
	if err := checkInfo(name, what, st); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", what, name, err)
	}
	if len(b) > maxSize {
		return nil, fmt.Errorf("%s %s is larger than %d bytes: not a key or password file", what, name, maxSize)
	}
	return b, nil
}

// Check checks the secret file name as ReadFile does, without reading it. A missing file
// is returned as an error wrapping fs.ErrNotExist, so callers that only check files
// present on this host can skip it.
func Check(name, what string) error {
	st, err := os.Stat(name)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return checkInfo(name, what, st)
}

func checkInfo(name, what string, st fs.FileInfo) error {
	if !st.Mode().IsRegular() {
		return &insecureError{fmt.Sprintf("%s %s is not a regular file (%s): give the path of the file itself", what, name, typeName(st.Mode()))}
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return &insecureError{fmt.Sprintf("%s %s has mode %04o: group or others can read or change it; run `chmod 600 %s` (and replace the secret if others may have read it)",
			what, name, perm, name)}
	}
	return nil
}

func typeName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	default:
		return "type " + m.Type().String()
	}
}

// WriteFile writes data to name with Mode, for tests and tools that make secret files:
// the mode is set after the write too, so an existing file with a wider mode is fixed.
func WriteFile(name string, data []byte) error {
	if err := os.WriteFile(name, data, Mode); err != nil {
		return err
	}
	return os.Chmod(name, Mode)
}
