package stagingsftp

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/sys/unix"
)

// pipeConn joins the server's ends of two pipes.
type pipeConn struct {
	io.Reader
	io.WriteCloser
}

// start serves a fresh root beside an "outside" directory the writer must never reach, and
// returns a client of it.
func start(t *testing.T) (c *sftp.Client, root, outside string) {
	t.Helper()
	dir := t.TempDir()
	root, outside = filepath.Join(dir, "staging"), filepath.Join(dir, "outside")
	for _, d := range []string{root, outside} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	cr, sw := io.Pipe()
	sr, cw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- Serve(pipeConn{sr, sw}, r) }()
	c, err = sftp.NewClientPipe(cr, cw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return c, root, outside
}

func put(c *sftp.Client, p, content string) error {
	f, err := c.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte(content)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func TestServeWritesATree(t *testing.T) {
	c, root, _ := start(t)
	if err := c.Mkdir("/d"); err != nil {
		t.Fatal(err)
	}
	if err := put(c, "/d/f.tmp", "hello world"); err != nil {
		t.Fatal(err)
	}
	if err := c.PosixRename("/d/f.tmp", "/d/f"); err != nil {
		t.Fatal(err)
	}
	if err := c.Truncate("/d/f", 5); err != nil {
		t.Fatal(err)
	}
	mt := time.Unix(1_600_000_000, 0)
	if err := c.Chtimes("/d/f", mt, mt); err != nil {
		t.Fatal(err)
	}
	if err := put(c, "/gone", "x"); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove("/gone"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mkdir("/e"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveDirectory("/e"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "d", "f"))
	if err != nil || string(b) != "hello" {
		t.Fatalf("staged file: %q, %v; want \"hello\"", b, err)
	}
	st, err := os.Stat(filepath.Join(root, "d", "f"))
	if err != nil || !st.ModTime().Equal(mt) || st.Mode().Perm() != 0o600 {
		t.Fatalf("staged file: %v, %v; want mtime %v and mode 0600", st, err, mt)
	}
	ents, err := c.ReadDir("/")
	if err != nil || len(ents) != 1 || ents[0].Name() != "d" || !ents[0].IsDir() {
		t.Fatalf("listing: %v, %v; want only d/", ents, err)
	}
	for _, gone := range []string{"gone", "e"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: want removed, got %v", gone, err)
		}
	}
}

// permissionDenied reports whether err is the server's refusal.
func permissionDenied(err error) bool {
	return errors.Is(err, fs.ErrPermission)
}

func TestServeRefusesWhatIsNotWriting(t *testing.T) {
	c, root, outside := start(t)
	if err := put(c, "/f", "data"); err != nil {
		t.Fatal(err)
	}
	refusals := map[string]error{
		"symlink":       c.Symlink(filepath.Join(outside, "secret"), "/l"),
		"link":          c.Link("/f", "/h"),
		"chmod":         c.Chmod("/f", 0o4755),
		"chown":         c.Chown("/f", 0, 0),
		"mkdir /":       c.Mkdir("/"),
		"rmdir /":       c.RemoveDirectory("/"),
		"rename / ":     c.Rename("/", "/x"),
		"rename onto /": c.PosixRename("/f", "/"),
	}
	if f, err := c.Open("/f"); err == nil {
		_, rerr := io.ReadAll(f)
		f.Close()
		refusals["read"] = rerr
	} else {
		refusals["read"] = err
	}
	if _, err := c.ReadLink("/f"); err != nil {
		refusals["readlink"] = err
	}
	for op, err := range refusals {
		if err == nil {
			t.Errorf("%s: want refused, got nil", op)
		}
	}
	for _, op := range []string{"symlink", "link", "chmod", "chown", "read", "readlink"} {
		if !permissionDenied(refusals[op]) {
			t.Errorf("%s: want permission denied, got %v", op, refusals[op])
		}
	}
	for _, p := range []string{"l", "h"} {
		if _, err := os.Lstat(filepath.Join(root, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after a refused request: %v", p, err)
		}
	}
	if st, err := os.Stat(filepath.Join(root, "f")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("f after refused chmod: %v, %v; want mode 0600", st, err)
	}
}

// TestServeStaysBeneathItsRoot is the hostile-input test: paths that climb, symlinks placed
// in the staging by someone else, and special files never take the writer out of the root.
func TestServeStaysBeneathItsRoot(t *testing.T) {
	c, root, outside := start(t)
	secret := filepath.Join(outside, "secret")
	if err := os.Symlink(outside, filepath.Join(root, "dirlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(root, "filelink")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(root, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Climbing paths are cleaned to paths inside the root.
	if err := c.Mkdir("/../outside"); err != nil {
		t.Fatalf("mkdir ../outside: %v", err)
	}
	if err := put(c, "/../outside/secret", "climbed"); err != nil {
		t.Fatalf("put ../outside/secret: %v", err)
	}
	if err := put(c, "../../x", "x"); err != nil {
		t.Fatalf("put ../../x: %v", err)
	}
	if err := c.Rename("/x", "/../../../outside/moved"); err != nil {
		t.Fatalf("rename out: %v", err)
	}
	for _, p := range []string{"outside/secret", "outside/moved"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
			t.Errorf("%s: want it inside the root, got %v", p, err)
		}
	}

	// Symlinks someone else left in the staging are never followed.
	tries := map[string]error{
		"write through a dir symlink":  put(c, "/dirlink/secret", "owned"),
		"write a file symlink":         put(c, "/filelink", "owned"),
		"truncate a file symlink":      c.Truncate("/filelink", 0),
		"times of a file symlink":      c.Chtimes("/filelink", time.Unix(0, 0), time.Unix(0, 0)),
		"mkdir through a dir symlink":  c.Mkdir("/dirlink/d"),
		"list through a dir symlink":   func() error { _, err := c.ReadDir("/dirlink"); return err }(),
		"rename into a dir symlink":    c.Rename("/outside/moved", "/dirlink/moved"),
		"remove through a dir symlink": c.Remove("/dirlink/secret"),
	}
	for what, err := range tries {
		if err == nil {
			t.Errorf("%s: want refused, got nil", what)
		}
	}
	st, err := c.Lstat("/filelink")
	if err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("stat of a symlink: %v, %v; want the link itself", st, err)
	}

	// A FIFO is refused at once rather than blocking the session.
	if err := put(c, "/fifo", "x"); err == nil {
		t.Error("writing a FIFO: want refused, got nil")
	}

	ents, err := os.ReadDir(outside)
	if err != nil || len(ents) != 1 {
		t.Fatalf("outside holds %v (%v); want only secret", ents, err)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "keep" {
		t.Errorf("outside/secret is %q (%v); want it untouched", b, err)
	}
	if _, err := os.Lstat(filepath.Join(root, "filelink")); err != nil {
		t.Errorf("filelink: %v", err)
	}
}
