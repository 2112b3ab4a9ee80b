// Package stagingsftp serves SFTP confined to one directory: the incoming staging that a
// source agent writes on a target host for one job and dataset (`replctl serve-staging`,
// design.md "Write once").
//
// The writer is another host, so the server grants it only what writing a tree of file
// contents needs: create and write regular files, make, list, rename and remove files and
// directories, set a file's size and times. It refuses reading, symlinks, hard links,
// readlink, and changing modes or owners (the target agent sets those itself, from the
// record it checks). Every path resolves beneath the root through an os.Root, which also
// refuses a symlink that leads out, and no operation follows a symlink it finds.
package stagingsftp

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/pkg/sftp"
)

// Serve answers SFTP requests on rw until the client closes it, confined to root. It
// returns nil when the client ended the session.
func Serve(rw io.ReadWriteCloser, root *os.Root) error {
	h := &handler{root: root}
	srv := sftp.NewRequestServer(rw, sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h})
	err := srv.Serve()
	if errors.Is(err, io.EOF) {
		err = nil
	}
	if cerr := srv.Close(); err == nil && cerr != nil && !errors.Is(cerr, io.EOF) && !errors.Is(cerr, os.ErrClosed) {
		err = cerr
	}
	return err
}

// handler implements the sftp request server's handlers over one os.Root.
type handler struct {
	root *os.Root
}

// refused is the error the client sees for an operation the server does not grant.
func refused(op, p string) error {
	return fmt.Errorf("replctl serve-staging refuses %s of %q: a source agent only writes file contents into the staging: %w", op, p, sftp.ErrSSHFxPermissionDenied)
}

// rel maps a request path ("/a/b", already cleaned by the sftp server) to a path relative to
// the root. It refuses anything that would still climb.
func rel(p string) (string, error) {
	c := path.Clean("/" + p)
	r := strings.TrimPrefix(c, "/")
	if r == "" {
		return ".", nil
	}
	for part := range strings.SplitSeq(r, "/") {
		if part == ".." {
			return "", refused("a path that leaves the staging", p)
		}
	}
	return r, nil
}

// Fileread refuses every read: the writer has no need to read back what it wrote.
func (h *handler) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	return nil, refused("reading", r.Filepath)
}

// Filewrite opens (or creates) a regular file for writing.
func (h *handler) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	p, err := rel(r.Filepath)
	if err != nil {
		return nil, err
	}
	pf := r.Pflags()
	if pf.Read {
		return nil, refused("reading", r.Filepath)
	}
	flags := 0
	if pf.Creat {
		flags |= os.O_CREATE
	}
	if pf.Trunc {
		flags |= os.O_TRUNC
	}
	if pf.Excl {
		flags |= os.O_EXCL
	}
	if pf.Append {
		flags |= os.O_APPEND
	}
	return h.openRegular(p, flags, "writing", r.Filepath)
}

// openRegular opens p for writing with the extra flags, never through a symlink and without
// blocking on a FIFO, and refuses it unless it is a regular file (op and shown name it).
func (h *handler) openRegular(p string, flags int, op, shown string) (*os.File, error) {
	f, err := h.root.OpenFile(p, flags|os.O_WRONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = refused(op+" a "+st.Mode().Type().String()+" file", shown)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Filecmd makes and removes directories and files, renames within the root and sets a
// file's size or times.
func (h *handler) Filecmd(r *sftp.Request) error {
	p, err := rel(r.Filepath)
	if err != nil {
		return err
	}
	if p == "." && r.Method != "Setstat" {
		return refused(strings.ToLower(r.Method)+" on the staging itself", r.Filepath)
	}
	switch r.Method {
	case "Mkdir":
		return h.root.Mkdir(p, 0o700)
	case "Rmdir":
		if err := h.isDir(p, r.Filepath); err != nil {
			return err
		}
		return h.root.Remove(p)
	case "Remove":
		st, err := h.root.Lstat(p)
		if err != nil {
			return err
		}
		if st.IsDir() {
			return fmt.Errorf("%q is a directory: use rmdir: %w", r.Filepath, sftp.ErrSSHFxFailure)
		}
		return h.root.Remove(p)
	case "Rename", "PosixRename":
		to, err := rel(r.Target)
		if err != nil {
			return err
		}
		if to == "." {
			return refused("renaming onto the staging itself", r.Target)
		}
		return h.root.Rename(p, to)
	case "Setstat":
		return h.setstat(r, p)
	}
	return refused(strings.ToLower(r.Method), r.Filepath)
}

// PosixRename is Rename with POSIX semantics (replace an existing target), which
// os.Root.Rename already has.
func (h *handler) PosixRename(r *sftp.Request) error { return h.Filecmd(r) }

// isDir refuses p unless it is (without following a symlink) a directory.
func (h *handler) isDir(p, shown string) error {
	st, err := h.root.Lstat(p)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%q is not a directory: %w", shown, sftp.ErrSSHFxFailure)
	}
	return nil
}

// setstat sets a regular file's size and times; modes and owners are refused.
func (h *handler) setstat(r *sftp.Request, p string) error {
	fl := r.AttrFlags()
	if fl.Permissions || fl.UidGid {
		return refused("changing the mode or owner", r.Filepath)
	}
	if !fl.Size && !fl.Acmodtime {
		return nil
	}
	f, err := h.openRegular(p, 0, "setting the size or times of", r.Filepath)
	if err != nil {
		return err
	}
	defer f.Close()
	a := r.Attributes()
	if fl.Size {
		if err := f.Truncate(int64(a.Size)); err != nil {
			return err
		}
	}
	if fl.Acmodtime {
		if err := h.root.Chtimes(p, a.AccessTime(), a.ModTime()); err != nil {
			return err
		}
	}
	return nil
}

// Filelist lists a directory or stats one entry, never following a symlink.
func (h *handler) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	p, err := rel(r.Filepath)
	if err != nil {
		return nil, err
	}
	switch r.Method {
	case "List":
		if err := h.isDir(p, r.Filepath); err != nil {
			return nil, err
		}
		d, err := h.root.Open(p)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		ents, err := d.ReadDir(-1)
		if err != nil {
			return nil, err
		}
		out := make(listerAt, 0, len(ents))
		for _, e := range ents {
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed meanwhile
			}
			if err != nil {
				return nil, err
			}
			out = append(out, fi)
		}
		return out, nil
	case "Stat", "Lstat":
		fi, err := h.root.Lstat(p)
		if err != nil {
			return nil, err
		}
		return listerAt{fi}, nil
	}
	return nil, refused(strings.ToLower(r.Method), r.Filepath)
}

// Lstat stats one entry without following a symlink.
func (h *handler) Lstat(r *sftp.Request) (sftp.ListerAt, error) { return h.Filelist(r) }

// RealPath returns the cleaned path; it never resolves symlinks, which the root would not
// follow out anyway.
func (h *handler) RealPath(p string) (string, error) {
	if _, err := rel(p); err != nil {
		return "", err
	}
	return path.Clean("/" + p), nil
}

// listerAt is a fixed list of entries.
type listerAt []os.FileInfo

// ListAt copies entries from offset.
func (l listerAt) ListAt(ls []os.FileInfo, offset int64) (int, error) {
	if offset >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(ls, l[offset:])
	if n < len(ls) {
		return n, io.EOF
	}
	return n, nil
}
