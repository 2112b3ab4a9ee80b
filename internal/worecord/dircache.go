package worecord

import (
	"os"
	"path"
	"sync"
)

// maxDirs bounds the directories a dirCache keeps open.
const maxDirs = 4096

// dirCache keeps an os.Root open for each directory of a tree, so that opening a file is one
// lookup in its directory rather than a walk from the top (os.Root resolves a path one
// component at a time).
type dirCache struct {
	root *os.Root
	mu   sync.Mutex
	dirs map[string]*os.Root
}

func newDirCache(root *os.Root) *dirCache { return &dirCache{root: root, dirs: map[string]*os.Root{}} }

// split returns the root of p's directory, p's last name, and what to call once done with
// the root (it closes a root the full cache could not keep).
func (c *dirCache) split(p string) (*os.Root, string, func(), error) {
	dir, name := path.Dir(p), path.Base(p)
	if dir == "." {
		return c.root, name, func() {}, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.dirs[dir]; r != nil {
		return r, name, func() {}, nil
	}
	r, err := c.root.OpenRoot(dir)
	if err != nil {
		return nil, "", nil, err
	}
	if len(c.dirs) >= maxDirs {
		return r, name, func() { r.Close() }, nil
	}
	c.dirs[dir] = r
	return r, name, func() {}, nil
}

// close closes every kept root; nothing may use them any more.
func (c *dirCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.dirs {
		r.Close()
	}
	clear(c.dirs)
}
