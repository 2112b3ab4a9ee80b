package hostexec

import (
	"bytes"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTailBufferMatchesLastBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1, 7, 64, 4096} {
		b := NewTailBuffer(size)
		var all bytes.Buffer
		for i := 0; i < 500; i++ {
			chunk := make([]byte, rng.IntN(3*size+1))
			for j := range chunk {
				chunk[j] = 'a' + byte(rng.IntN(26))
			}
			n, err := b.Write(chunk)
			require.NoError(t, err)
			require.Equal(t, len(chunk), n)
			all.Write(chunk)

			want := all.Bytes()
			prefix := ""
			if len(want) > size {
				want, prefix = want[len(want)-size:], truncationMark
			}
			require.Equal(t, prefix+string(want), b.String(), "size %d after %d writes", size, i+1)
		}
	}
}

func TestTailBufferInvalidUTF8(t *testing.T) {
	b := NewTailBuffer(16)
	_, _ = b.Write([]byte("ok\xffok"))
	require.Equal(t, "ok\uFFFDok", b.String())
}

// TestShellQuoteRoundTrip passes tricky strings through a real /bin/sh.
func TestShellQuoteRoundTrip(t *testing.T) {
	for _, s := range []string{"", "plain", "a b", "it's", `"dq" $HOME ${X} $(id) ` + "`id`", "new\nline", `back\slash`, "*?[a]", "-n", "K=V with space", "é ü"} {
		out, err := exec.Command("/bin/sh", "-c", "printf '%s' "+shellQuote(s)).Output()
		require.NoError(t, err, "quoting %q as %s", s, shellQuote(s))
		require.Equal(t, s, string(out))
	}
	cmd := runCommand(&Request{ScriptsDir: "/srv/app", Script: "quiesce", Env: []string{"A=x y", "B=1"}})
	require.True(t, strings.HasPrefix(cmd, "cd /srv/app || exit 126\n"), cmd)
	require.Contains(t, cmd, "\nenv 'A=x y' B=1 ./quiesce 3<&- &\n")
	cmd = runCommand(&Request{ScriptsDir: "/a b", Script: "s"})
	require.True(t, strings.HasPrefix(cmd, "cd '/a b' || exit 126\n"), cmd)
	require.Contains(t, cmd, "\n./s 3<&- &\n")
}
