package dataplane

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
)

// readImageDir returns the entries of an image directory exactly as stored.
// (kopia's snapshotfs replaces a directory's mtime with the newest mtime of
// its subtree when it loads it; replicas must carry the real one.)
func readImageDir(ctx context.Context, rep repo.Repository, oid object.ID) ([]*snapshot.DirEntry, error) {
	r, err := rep.OpenObject(ctx, oid)
	if err != nil {
		return nil, fmt.Errorf("opening image directory object %v: %w", oid, err)
	}
	defer r.Close()

	var dm snapshot.DirManifest
	if err := decodeDirManifest(r, &dm); err != nil {
		return nil, fmt.Errorf("parsing image directory object %v: %w", oid, err)
	}

	if dm.StreamType != "kopia:directory" {
		return nil, fmt.Errorf("image object %v is not a directory (stream %q)", oid, dm.StreamType)
	}

	// Names become paths under staging: never let one escape it.
	for _, e := range dm.Entries {
		if e == nil || e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\x00") {
			return nil, fmt.Errorf("image directory object %v has an invalid entry name", oid)
		}
	}

	return dm.Entries, nil
}

// readImageSymlink returns a symlink's target.
func readImageSymlink(ctx context.Context, rep repo.Repository, de *snapshot.DirEntry) (string, error) {
	r, err := rep.OpenObject(ctx, de.ObjectID)
	if err != nil {
		return "", fmt.Errorf("opening symlink object %v: %w", de.ObjectID, err)
	}
	defer r.Close()

	b, err := io.ReadAll(r)
	if err != nil {
		return "", fmt.Errorf("reading symlink object %v: %w", de.ObjectID, err)
	}

	return string(b), nil
}
