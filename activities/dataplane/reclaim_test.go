package dataplane

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A pull removes what older attempts left (staging dirs of older epochs, trash) before it
// writes its first file; the dir it resumes from and a newer epoch's dir are left alone.
func TestPullReclaimsOlderAttemptsBeforeWriting(t *testing.T) {
	e := newEnv(t)
	makeManyFiles(t, e.src, 20, 1000)
	img := e.push().ImageID

	l := newLayout(e.target, e.ds)
	stale, resume, newer := l.stagingDir("old", 3), l.stagingDir("res", 4), l.stagingDir("new", 99)
	trashed := filepath.Join(l.trashDir(), "gone.1")
	for _, d := range []string{stale, resume, newer, trashed} {
		require.NoError(t, os.MkdirAll(filepath.Join(d, "sub"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(d, "sub", "f"), []byte("left behind"), 0o644))
	}

	var atFirstWrite []bool
	e.repos.hooks.afterFileRestored = func(n int64) {
		if n == 1 {
			for _, d := range []string{stale, trashed, resume, newer} {
				_, err := os.Stat(d)
				atFirstWrite = append(atFirstWrite, err == nil)
			}
		}
	}
	req := e.pullReq(img, "r1")
	req.Epoch = 10
	req.ResumeFrom = resume
	_, err := e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	assert.Equal(t, []bool{false, false, true, true}, atFirstWrite, "at the first write: stale and trash gone, resume and newer kept")
	requireSameTree(t, e.src, e.replicaDir())
	assert.NoDirExists(t, resume, "retention removes the resumed dir after the publish")
	assert.DirExists(t, newer, "a newer epoch's dir is not this attempt's to remove")
}

func TestStorageFaultKnowsTheErrnos(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&os.PathError{Op: "write", Path: "/t/x", Err: errnoENOSPC}, true},
		{os.ErrNotExist, false},
		{assert.AnError, false},
	} {
		_, ok := StorageFault(c.err)
		assert.Equal(t, c.want, ok, "%v", c.err)
	}
	// Kopia's blob layer formats some errors into text: the errno's message still tells.
	_, ok := StorageFault(errorString("unable to complete PutBlobInPath despite 2 retries: write /r/p/x.tmp: disk quota exceeded"))
	assert.True(t, ok)
}

type errorString string

func (e errorString) Error() string { return string(e) }

var errnoENOSPC = unix.ENOSPC
