package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// The sparse dataset: one file of a large apparent size with three 1 MiB pieces of data
// (at the start, an odd offset in the middle and the end) and holes between them. A copy
// must keep the holes: the row compares replctl with `cp -a --sparse=always` and
// `rsync -aS` in time and in the bytes the copy allocates on the target.

// sparseApparent is the sparse file's size per mode.
func sparseApparent(mode string) int64 {
	if mode == "full" {
		return 3 << 30
	}
	return 256 << 20 // CI: the row costs about a minute of fixed overhead either way
}

const sparseFile = "disk.img"

// prepareSparse (re)creates dir holding the sparse file (random data: never cached from an
// earlier run with other content) and returns it as a dataset.
func prepareSparse(dir string, size int64) (*Dataset, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(dir, sparseFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return nil, err
	}
	piece := make([]byte, 1<<20)
	for _, at := range []int64{0, size/2 + 12345, size - int64(len(piece))} {
		if _, err := rand.Read(piece); err != nil {
			return nil, err
		}
		if _, err := f.WriteAt(piece, at); err != nil {
			return nil, err
		}
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	mt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(dir, sparseFile), mt, mt); err != nil {
		return nil, err
	}
	alloc, err := allocatedBytes(dir)
	if err != nil {
		return nil, err
	}
	if alloc > 64<<20 {
		return nil, fmt.Errorf("the file system of %s keeps no holes (%s allocated for %s of data): no sparse row possible", dir, human(alloc), human(3<<20))
	}
	return &Dataset{Spec: Spec{Name: "sparse", Files: 1, MinSize: int(size), MaxSize: int(size)}, Dir: dir}, nil
}

// allocatedBytes sums the blocks allocated to the regular files under root (root itself
// may be a symlink, as T/D is).
func allocatedBytes(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root+"/", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		}
		return nil
	})
	return n, err
}

// sparsePhase measures full copies of the sparse dataset by replctl, rsync -aS and cp -a
// --sparse=always: time and allocated bytes of each copy.
func (b *bench) sparsePhase(ctx context.Context) error {
	ds := b.datasets["sparse"]
	job := b.job("bench-sparse")
	err := b.fullRounds(ctx, job, ds, func(tool string, s *Sample) error {
		if tool == toolRead { // writes nothing
			return nil
		}
		dst := b.peerDir(tool, ds.Spec.Name)
		if tool == "replctl" {
			dst = filepath.Join(b.h.targetRoot(job), job.Dataset)
		}
		var err error
		s.Allocated, err = allocatedBytes(dst)
		return err
	})
	if err != nil {
		return err
	}
	delete(b.srcDigest, ds.Spec.Name)
	for _, tool := range []string{"rsync", "cp"} {
		if err := removeAll(ctx, b.peerDir(tool, ds.Spec.Name)); err != nil {
			return err
		}
	}
	return b.h.wipeTarget(ctx, job)
}
