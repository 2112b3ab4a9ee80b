package dataplane

import (
	"context"
	"runtime"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/object"
)

// Encryption slots for the push's object writers (issue 16). kopia encrypts each content
// into an 8-MiB buffer from a pool that keeps runtime.NumCPU() of them, and holds that
// buffer until the content is appended to its pack, past a wait for the write lock. The
// push runs pushReaders() readers (8 on 2 CPUs), so most contents found the pool empty and
// got a fresh 8 MiB, which Go zeroes and the collector then reclaims: 1.4 s of a full push
// of B's 26.5 s of CPU (design.md, "Issue 16"). Only NumCPU writers at once may now be
// inside an object writer's Write or Result, where kopia splits, hashes, encrypts and packs;
// the readers read their next bytes outside it. A Write may leave one asynchronous content
// write of its writer running after it returns (kopia's AsyncWrites: 1), so at most twice
// as many buffers are in use, not one per reader.

// encSlots bounds the object writers inside kopia at once; nil leaves them unbounded.
type encSlots chan struct{}

// pushSlots are the process's, runtime.NumCPU() of them as kopia's pool holds: that pool is
// one for the process, whatever pushes run.
var pushSlots = make(encSlots, runtime.NumCPU())

// bound returns w with its object writers held to the slots. Only a direct repository
// writer is wrapped, so that kopia's uploader still finds the DirectRepository it looks for;
// any other writer is returned as it is.
func (s encSlots) bound(w repo.RepositoryWriter) repo.RepositoryWriter {
	dw, ok := w.(repo.DirectRepositoryWriter)
	if s == nil || !ok {
		return w
	}
	return slottedRepo{DirectRepositoryWriter: dw, slots: s}
}

// slottedRepo is a repository writer whose object writers take a slot for each call.
type slottedRepo struct {
	repo.DirectRepositoryWriter
	slots encSlots
}

// NewObjectWriter returns kopia's writer for opt, held to the slots.
func (r slottedRepo) NewObjectWriter(ctx context.Context, opt object.WriterOptions) object.Writer {
	return slottedWriter{Writer: r.DirectRepositoryWriter.NewObjectWriter(ctx, opt), slots: r.slots}
}

// slottedWriter takes a slot around the calls in which kopia writes contents.
type slottedWriter struct {
	object.Writer
	slots encSlots
}

func (w slottedWriter) Write(p []byte) (int, error) {
	w.slots <- struct{}{}
	defer func() { <-w.slots }()
	return w.Writer.Write(p)
}

func (w slottedWriter) Result() (object.ID, error) {
	w.slots <- struct{}{}
	defer func() { <-w.slots }()
	return w.Writer.Result()
}
