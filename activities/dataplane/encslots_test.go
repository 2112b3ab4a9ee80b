package dataplane

import (
	"bytes"
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/object"
	"github.com/stretchr/testify/require"
)

// busyWriter is an object writer that counts how many of its kind are inside a call.
type busyWriter struct {
	in, most *atomic.Int32
	calls    *atomic.Int32
}

func (b busyWriter) enter() {
	n := b.in.Add(1)
	for {
		m := b.most.Load()
		if n <= m || b.most.CompareAndSwap(m, n) {
			break
		}
	}
	b.calls.Add(1)
	time.Sleep(2 * time.Millisecond)
	b.in.Add(-1)
}

func (b busyWriter) Write(p []byte) (int, error)    { b.enter(); return len(p), nil }
func (b busyWriter) Result() (object.ID, error)     { b.enter(); return object.EmptyID, nil }
func (b busyWriter) Checkpoint() (object.ID, error) { return object.EmptyID, nil }
func (b busyWriter) Close() error                   { return nil }

// Eight writers at once, as the push's readers are, are let into kopia two at a time when
// there are two slots, and every call is made.
func TestEncSlotsBoundWriters(t *testing.T) {
	var in, most, calls atomic.Int32
	slots := make(encSlots, 2)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			w := slottedWriter{Writer: busyWriter{in: &in, most: &most, calls: &calls}, slots: slots}
			for range 10 {
				_, err := w.Write([]byte("x"))
				require.NoError(t, err)
			}
			_, err := w.Result()
			require.NoError(t, err)
		})
	}
	wg.Wait()
	require.Equal(t, int32(88), calls.Load())
	require.Equal(t, int32(2), most.Load(), "two writers at once, never more, and the slots are used")
}

// A push's writer is bounded only where kopia's uploader still sees a direct repository, and
// an object written through the slots reads back as written.
func TestEncSlotsWrapDirectWriter(t *testing.T) {
	e := newEnv(t)
	e.push() // creates the repository
	ctx := context.Background()
	rep, _ := e.image(e.push().ImageID)
	wctx, w, err := rep.NewWriter(ctx, repo.WriteSessionOptions{Purpose: "test"})
	require.NoError(t, err)
	defer w.Close(ctx) //nolint:errcheck

	var none encSlots
	require.Equal(t, w, none.bound(w), "no slots, no wrapper")
	bw := make(encSlots, 2).bound(w)
	_, ok := bw.(repo.DirectRepository)
	require.True(t, ok, "kopia's uploader looks for a DirectRepository")

	data := randBytes(t, 3<<20)
	ow := bw.NewObjectWriter(wctx, object.WriterOptions{Description: "test"})
	_, isSlotted := ow.(slottedWriter)
	require.True(t, isSlotted)
	_, err = io.Copy(ow, bytes.NewReader(data))
	require.NoError(t, err)
	oid, err := ow.Result()
	require.NoError(t, err)
	require.NoError(t, ow.Close())
	require.NoError(t, bw.Flush(wctx))

	r, err := bw.OpenObject(wctx, oid)
	require.NoError(t, err)
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "the object reads back as written")
}
