package dataplane

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// clash makes in dir a name that cannot be replicated: not valid UTF-8, with a sibling
// holding its image name.
func clash(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	writeFile(t, filepath.Join(dir, "clash-\xff"), []byte("n"), 0o644, baseTime)
	writeFile(t, filepath.Join(dir, "clash-\uf7ff"), []byte("its image name"), 0o644, baseTime)
}

func TestScanChangedLooksOnlyWhereTold(t *testing.T) {
	root := t.TempDir()
	clash(t, filepath.Join(root, "unlisted"))        // not named: not looked at
	clash(t, filepath.Join(root, "a"))               // a listed directory's entries
	clash(t, filepath.Join(root, "a", "below"))      // below a listed directory: not looked at
	clash(t, filepath.Join(root, "t", "u", "v"))     // deep in a tree
	clash(t, filepath.Join(root, "elsewhere", "in")) // reached only through a symlink
	require.NoError(t, os.Symlink("elsewhere", filepath.Join(root, "link")))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "p", "attr"), 0o755))
	require.NoError(t, unix.Setxattr(filepath.Join(root, "p", "attr"), "user.\xff", []byte("v"), 0),
		"the test filesystem must take an attribute name that is not UTF-8")

	u, err := ScanChangedUnsupported(context.Background(), root,
		[]string{"a", "gone", "link/in", "p/attr"}, []string{"t", "link", "gone-tree"}, nil, ScanOptions{Name: "orders"})
	require.NoError(t, err)
	require.Equal(t, map[string]int{KindName: 2, KindXattrName: 1}, u.ByKind, u.String())
	require.Equal(t, []string{
		`"orders/a/clash-\xff" (name not valid UTF-8, and its image name is a sibling's)`,
		`"orders/t/u/v/clash-\xff" (name not valid UTF-8, and its image name is a sibling's)`,
		`orders/p/attr (xattr name "user.\xff")`,
	}, u.First)

	u, err = ScanChangedUnsupported(context.Background(), root, nil, nil, nil, ScanOptions{})
	require.NoError(t, err)
	require.True(t, u.Empty(), "nothing changed: nothing looked at")

	full, err := ScanUnsupported(context.Background(), root, ScanOptions{})
	require.NoError(t, err)
	require.Equal(t, 6, full.Count, "the whole tree holds them all (the symlink not followed)")

	// With the names the journal gives: only those entries, unless a name could be an
	// image name (then the directory's every entry).
	require.NoError(t, unix.Setxattr(filepath.Join(root, "a", "below"), "user.\xfe", []byte("v"), 0))
	u, err = ScanChangedUnsupported(context.Background(), root, []string{"a"}, nil,
		map[string][]string{"a": {"below", "gone"}}, ScanOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{`a/below (xattr name "user.\xfe")`}, u.First, "the named entries only, not a's clash")
	u, err = ScanChangedUnsupported(context.Background(), root, []string{"a"}, nil,
		map[string][]string{"a": {"clash-\uf7ff"}}, ScanOptions{})
	require.NoError(t, err)
	require.Equal(t, 2, u.Count, "the clash of a named image name with an entry not named is found")
}
