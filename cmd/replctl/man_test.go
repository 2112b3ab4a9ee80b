package main

import (
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// `replctl man` writes one gzipped page per visible command, made from its help.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	f := &Factory{Out: io.Discard, ErrOut: io.Discard}
	root := NewCmdRoot(f)
	_, err := run(t, root, "man", "--dir", dir)
	require.NoError(t, err)
	for _, n := range []string{"replctl.1.gz", "replctl-agent.1.gz", "replctl-verify.1.gz", "replctl-schedule-sync.1.gz"} {
		fh, err := os.Open(filepath.Join(dir, n))
		require.NoError(t, err, n)
		zr, err := gzip.NewReader(fh)
		require.NoError(t, err)
		b, err := io.ReadAll(zr)
		require.NoError(t, err)
		fh.Close()
		require.True(t, strings.HasPrefix(string(b), ".nh\n.TH \"REPLCTL\" \"1\""), "%s: %.40q", n, b)
	}
	man, err := filepath.Glob(filepath.Join(dir, "replctl-man*"))
	require.NoError(t, err)
	require.Empty(t, man, "the hidden man command has no page")
	_, err = run(t, NewCmdRoot(f), "man")
	require.Error(t, err, "--dir is required")
}
