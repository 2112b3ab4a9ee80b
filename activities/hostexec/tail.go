package hostexec

import (
	"strings"
	"sync"
	"unicode/utf8"
)

// truncationMark prefixes OutputTail when earlier output was dropped.
const truncationMark = "…"

// TailBuffer is an io.Writer that keeps only the last size bytes written, in
// a fixed ring, so a chatty script cannot grow the agent's memory. It is safe
// for concurrent use (stdout and stderr are copied by separate goroutines).
type TailBuffer struct {
	mu    sync.Mutex
	ring  []byte // len == size
	pos   int    // next write index
	full  bool   // ring has wrapped at least once
	total int64  // bytes ever written
}

// NewTailBuffer keeps the last size bytes written.
func NewTailBuffer(size int) *TailBuffer {
	return &TailBuffer{ring: make([]byte, size)}
}

// Write never fails; it only remembers the tail.
func (b *TailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	b.total += int64(n)
	size := len(b.ring)
	if size == 0 {
		return n, nil
	}
	if len(p) >= size {
		copy(b.ring, p[len(p)-size:])
		b.pos, b.full = 0, true
		return n, nil
	}
	c := copy(b.ring[b.pos:], p)
	if c < len(p) {
		copy(b.ring, p[c:])
		b.full = true
	}
	b.pos = (b.pos + len(p)) % size
	if b.pos == 0 && len(p) > 0 {
		b.full = true
	}
	return n, nil
}

// String returns the kept tail as valid UTF-8, prefixed with "…" if output
// was dropped. A multi-byte character cut by the truncation is dropped whole.
func (b *TailBuffer) String() string {
	b.mu.Lock()
	var data []byte
	if b.full {
		data = make([]byte, 0, len(b.ring))
		data = append(data, b.ring[b.pos:]...)
		data = append(data, b.ring[:b.pos]...)
	} else {
		data = append([]byte(nil), b.ring[:b.pos]...)
	}
	truncated := b.total > int64(len(data))
	b.mu.Unlock()

	if !truncated {
		return strings.ToValidUTF8(string(data), "\uFFFD")
	}
	// Skip at most UTFMax-1 continuation bytes: the rest of a rune whose
	// first byte was dropped.
	for i := 0; i < utf8.UTFMax-1 && len(data) > 0 && !utf8.RuneStart(data[0]); i++ {
		data = data[1:]
	}
	return truncationMark + strings.ToValidUTF8(string(data), "\uFFFD")
}
