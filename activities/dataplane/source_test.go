package dataplane

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A source entry swapped between kopia's listing and the push's open (the class of rsync's
// CVE-2024-12747) is refused, never followed: a file swapped for a symlink to a file outside
// the dataset, a directory swapped for a symlink to a directory outside it, a file swapped
// for a FIFO (which must not hang the push), a file written after the listing. No image is
// kept.
func TestPushRefusesSwappedSourceEntries(t *testing.T) {
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	require.NoError(t, os.WriteFile(secret, []byte("root-only secret"), 0o600))
	require.NoError(t, os.MkdirAll(filepath.Join(outside, "d"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "d", "f"), []byte("root-only secret"), 0o600))

	for _, c := range []struct {
		name, at string
		swap     func(src string) error
		want     string
	}{
		{"file to symlink", "a", func(src string) error {
			if err := os.Remove(filepath.Join(src, "a")); err != nil {
				return err
			}
			return os.Symlink(secret, filepath.Join(src, "a"))
		}, "a is reached through a symlink now"},
		{"dir to symlink", "d/f", func(src string) error {
			if err := os.Rename(filepath.Join(src, "d"), filepath.Join(src, "d.old")); err != nil {
				return err
			}
			return os.Symlink(filepath.Join(outside, "d"), filepath.Join(src, "d"))
		}, "d/f is reached through a symlink now"},
		{"file grown", "a", func(src string) error {
			f, err := os.OpenFile(filepath.Join(src, "a"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteString(" and more")
			return err
		}, "a changed since it was listed"},
		{"file to fifo", "a", func(src string) error {
			if err := os.Remove(filepath.Join(src, "a")); err != nil {
				return err
			}
			return unix.Mkfifo(filepath.Join(src, "a"), 0o644)
		}, "a is no longer a regular file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			writeFile(t, filepath.Join(e.src, "a"), []byte("public a"), 0o644, baseTime)
			require.NoError(t, os.MkdirAll(filepath.Join(e.src, "d"), 0o755))
			writeFile(t, filepath.Join(e.src, "d", "f"), []byte("public f"), 0o644, baseTime)
			swapped := false
			e.repos.hooks.beforeSourceOpen = func(rel string) {
				if rel == c.at && !swapped {
					swapped = true
					require.NoError(t, c.swap(e.src))
				}
			}
			_, err := e.repos.Push(context.Background(), PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds}, nil)
			require.True(t, swapped, "the hook ran")
			require.Error(t, err)
			require.ErrorContains(t, err, c.want)
			t.Logf("refused: %v", err)
			require.Zero(t, e.manifests(sourceInfo(e.job, e.ds)), "no image is kept")
		})
	}
}

// TestPushListsDirectoriesFromTheirFd: a directory swapped for a symlink to outside the
// dataset once the push has opened it is still listed as it was (from its fd, not its
// path): the push meets the original directory's file, and refuses it because its path
// now leads through the symlink; no name from outside is ever listed. kopia's localfs
// listed by path after the push's own check, so a swap in between listed the outside's names.
func TestPushListsDirectoriesFromTheirFd(t *testing.T) {
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "leaked-name"), []byte("x"), 0o600, baseTime)
	e := newEnv(t)
	require.NoError(t, os.MkdirAll(filepath.Join(e.src, "d"), 0o755))
	writeFile(t, filepath.Join(e.src, "d", "f"), []byte("public f"), 0o644, baseTime)
	swapped := false
	e.repos.hooks.afterSourceList = func(rel string) {
		if rel == "d" && !swapped {
			swapped = true
			require.NoError(t, os.Rename(filepath.Join(e.src, "d"), filepath.Join(e.src, "d.old")))
			require.NoError(t, os.Symlink(outside, filepath.Join(e.src, "d")))
		}
	}
	_, err := e.repos.Push(context.Background(), PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds}, nil)
	require.True(t, swapped, "the hook ran")
	require.ErrorContains(t, err, "d/f is reached through a symlink now")
	require.NotContains(t, err.Error(), "leaked")
	require.Zero(t, e.manifests(sourceInfo(e.job, e.ds)), "no image is kept")
}

// TestKopiaPlaceholderNamesArePushed: names kopia's localfs took for its shallow
// placeholders (".kopia-entry") are ordinary names to a push.
func TestKopiaPlaceholderNamesArePushed(t *testing.T) {
	e := newEnv(t)
	writeFile(t, filepath.Join(e.src, "a.kopia-entry"), []byte("not a placeholder"), 0o640, baseTime)
	writeFile(t, filepath.Join(e.src, "a"), []byte("a itself"), 0o644, baseTime)
	writeFile(t, filepath.Join(e.src, "d.kopia-entry", ".kopia-entry"), []byte("{}"), 0o600, baseTime)
	setTimesDeepestFirst(t, e.src, baseTime)
	res := e.push()
	e.pull(res.ImageID, "r1")
	requireSameTree(t, e.src, e.replicaDir())
}
