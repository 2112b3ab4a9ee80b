package activities

import (
	"errors"
	"fmt"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
)

// A storage fault names the storage whose path the error mentions, the deepest first (the
// repository lies inside a storage), and says how to reclaim a push's partial data.
func TestStorageFaultNamesTheStorage(t *testing.T) {
	storages := []storageAt{
		{Use: "repository", Name: "array-b", Dir: "/mnt/b/.replctl/repository"},
		{Use: "source", Name: "array-a", Dir: "/mnt/a"},
		{Use: "target", Name: "array-b", Dir: "/mnt/b"},
	}
	for _, c := range []struct {
		step      Step
		msg, want string
	}{
		{StepPull, "writing staging dir /mnt/b/.replctl/staging/orders/x.e1: write f: no space left on device", "storage array-b (target, at /mnt/b)"},
		{StepPush, "flushing repository /mnt/b/.replctl/repository: write /mnt/b/.replctl/repository/p/x: no space left on device", "storage array-b (the job's repository at /mnt/b/.replctl/repository)"},
		{StepPush, "reading /mnt/a/orders/f: input/output error", "storage array-a (source, at /mnt/a)"},
		{StepPull, "write f: read-only file system", "one of storage array-b (the job's repository"},
	} {
		err := storageFault(c.step, "orders", "b1", storages, "x", errors.New(c.msg), Progress{BytesDone: 42})
		var appErr *temporal.ApplicationError
		require.ErrorAs(t, err, &appErr)
		assert.Equal(t, ErrTypeStorageFault, appErr.Type())
		assert.True(t, appErr.NonRetryable())
		assert.Contains(t, err.Error(), fmt.Sprintf("%s: storage fault on %s", c.step, c.want))
		assert.Contains(t, err.Error(), "seen by agent b1")
	}
	err := storageFault("push", "orders", "a1", storages, "no space left on device", errors.New("write /mnt/b/.replctl/repository/p/x: no space left on device"), Progress{BytesDone: 42})
	assert.Contains(t, err.Error(), "it had read 42 bytes")
	assert.Contains(t, err.Error(), "`replctl maintain orders --full`")
}

// A failure message must be valid UTF-8 to reach the server (protobuf strings): an error
// about a name with invalid bytes is sent quoted, and still classifies as what it is.
func TestFailureMessagesAreValidUTF8(t *testing.T) {
	bad := fmt.Errorf("restoring names/x-\xff: %w", errors.New("boom"))
	err := classify(t.Context(), "pull", bad, Progress{})
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	assert.True(t, utf8.ValidString(appErr.Error()), appErr.Error())
	for c := errors.Unwrap(err); c != nil; c = errors.Unwrap(c) {
		assert.True(t, utf8.ValidString(c.Error()), "cause %q", c.Error())
	}
	assert.Contains(t, appErr.Error(), `x-\xff`)
}
