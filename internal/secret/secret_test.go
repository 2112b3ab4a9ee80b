package secret

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReadFileModes(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "key")
	require.NoError(t, WriteFile(f, []byte("s3cret\n")))

	b, err := ReadFile(f, "test key")
	require.NoError(t, err)
	require.Equal(t, "s3cret\n", string(b))

	// Owner-only modes pass, including read-only and owner-execute.
	for _, m := range []fs.FileMode{0o400, 0o600, 0o700} {
		require.NoError(t, os.Chmod(f, m))
		_, err := ReadFile(f, "test key")
		require.NoError(t, err, "mode %04o", m)
	}

	// Anything for group or others is refused, with the file, its mode and the fix.
	for _, m := range []fs.FileMode{0o640, 0o604, 0o620, 0o602, 0o644, 0o666, 0o610} {
		require.NoError(t, os.Chmod(f, m))
		_, err := ReadFile(f, "test key")
		require.ErrorIs(t, err, ErrInsecure, "mode %04o", m)
		require.ErrorContains(t, err, "test key "+f+" has mode ")
		require.ErrorContains(t, err, "chmod 600 "+f)
		require.Error(t, Check(f, "test key"))
	}

	// A symlink to a private file is fine: the target is what is checked.
	require.NoError(t, os.Chmod(f, 0o600))
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(f, link))
	_, err = ReadFile(link, "test key")
	require.NoError(t, err)
	require.NoError(t, Check(link, "test key"))
}

func TestReadFileNotRegular(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "d")
	require.NoError(t, os.Mkdir(sub, 0o700))
	_, err := ReadFile(sub, "password")
	require.ErrorIs(t, err, ErrInsecure)
	require.ErrorContains(t, err, "is not a regular file (a directory)")

	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	_, err = ReadFile(fifo, "password")
	require.ErrorContains(t, err, "is not a regular file (a FIFO)", "the open must not hang")

	_, err = ReadFile(filepath.Join(dir, "missing"), "password")
	require.True(t, errors.Is(err, fs.ErrNotExist), "a missing file stays recognisable: %v", err)
	require.ErrorIs(t, Check(filepath.Join(dir, "missing"), "password"), fs.ErrNotExist)
}

func TestWriteFileFixesMode(t *testing.T) {
	f := filepath.Join(t.TempDir(), "k")
	require.NoError(t, os.WriteFile(f, []byte("old"), 0o644))
	require.NoError(t, WriteFile(f, []byte("new")))
	st, err := os.Stat(f)
	require.NoError(t, err)
	require.Equal(t, Mode, st.Mode().Perm())
}
