package codec

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/proto"

	"github.com/replctl/replctl/internal/secret"
)

func newCodec(t *testing.T) (*Codec, string) {
	t.Helper()
	k, err := NewKey()
	require.NoError(t, err)
	f := filepath.Join(t.TempDir(), "key")
	require.NoError(t, secret.WriteFile(f, k))
	c, err := Load(f)
	require.NoError(t, err)
	return c, f
}

func TestRoundTripAndOpacity(t *testing.T) {
	c, _ := newCodec(t)
	dc := c.DataConverter()
	in := map[string]string{"SourceDir": "/srv/array-a/orders", "Script": "freeze.sh"}
	p, err := dc.ToPayload(in)
	require.NoError(t, err)
	require.Equal(t, Encoding, string(p.GetMetadata()[converter.MetadataEncoding]))
	require.Equal(t, c.KeyID(), string(p.GetMetadata()[MetaKeyID]))
	b, err := proto.Marshal(p)
	require.NoError(t, err)
	for _, s := range []string{"/srv/array-a", "freeze.sh", "json/plain"} {
		require.False(t, bytes.Contains(b, []byte(s)), "%q in clear", s)
	}
	var out map[string]string
	require.NoError(t, dc.FromPayload(p, &out))
	require.Equal(t, in, out)

	// The same value twice encrypts differently (random nonce).
	p2, err := dc.ToPayload(in)
	require.NoError(t, err)
	require.NotEqual(t, p.GetData(), p2.GetData())

	// Payloads written before the codec was on still decode.
	clear, err := converter.GetDefaultDataConverter().ToPayload("old")
	require.NoError(t, err)
	var s string
	require.NoError(t, dc.FromPayload(clear, &s))
	require.Equal(t, "old", s)

	// Tampering is detected.
	bad := proto.Clone(p).(*commonpb.Payload)
	bad.Data[len(bad.Data)-1] ^= 1
	_, err = c.Decode([]*commonpb.Payload{bad})
	require.ErrorContains(t, err, "does not open with key "+c.KeyID())
}

func TestWrongKey(t *testing.T) {
	a, _ := newCodec(t)
	b, _ := newCodec(t)
	p, err := a.Encode([]*commonpb.Payload{{Data: []byte("x")}})
	require.NoError(t, err)
	_, err = b.Decode(p)
	require.ErrorIs(t, err, ErrWrongKey)
	require.ErrorContains(t, err, "the payload's key is "+a.KeyID()+", this key (codec_key_file / --codec-key-file) is "+b.KeyID())
}

func TestLoadKeyFile(t *testing.T) {
	raw := bytes.Repeat([]byte{7}, KeySize)
	dir := t.TempDir()
	for name, text := range map[string]string{"hex": hex.EncodeToString(raw) + "\n", "base64": "  " + base64.StdEncoding.EncodeToString(raw) + "\n"} {
		f := filepath.Join(dir, name)
		require.NoError(t, secret.WriteFile(f, []byte(text)))
		c, err := Load(f)
		require.NoError(t, err, name)
		ref, err := New(raw)
		require.NoError(t, err)
		require.Equal(t, ref.KeyID(), c.KeyID(), name)
	}
	short := filepath.Join(dir, "short")
	require.NoError(t, secret.WriteFile(short, []byte("abcd\n")))
	_, err := Load(short)
	require.ErrorContains(t, err, "payload codec key file "+short+": want a 32-byte key as 64 hex digits or base64")

	loose := filepath.Join(dir, "loose")
	require.NoError(t, os.WriteFile(loose, []byte(hex.EncodeToString(raw)), 0o644))
	require.NoError(t, os.Chmod(loose, 0o644))
	_, err = Load(loose)
	require.ErrorContains(t, err, "payload codec key file "+loose+" has mode 0644")
}

// The HTTP handler speaks the SDK's remote codec protocol, and answers CORS only for the
// configured origin.
func TestHandler(t *testing.T) {
	c, _ := newCodec(t)
	srv := httptest.NewServer(Handler(c, "http://127.0.0.1:8233"))
	defer srv.Close()
	remote := converter.NewRemotePayloadCodec(converter.RemotePayloadCodecOptions{Endpoint: srv.URL})
	in := []*commonpb.Payload{{Metadata: map[string][]byte{"encoding": []byte("json/plain")}, Data: []byte(`"/srv/x"`)}}
	enc, err := remote.Encode(in)
	require.NoError(t, err)
	require.Equal(t, Encoding, string(enc[0].GetMetadata()["encoding"]))
	dec, err := c.Decode(enc)
	require.NoError(t, err)
	require.True(t, proto.Equal(in[0], dec[0]))

	pre := func(origin string) *http.Response {
		req, err := http.NewRequest(http.MethodOptions, srv.URL+"/decode", nil)
		require.NoError(t, err)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	ok := pre("http://127.0.0.1:8233")
	require.Equal(t, "http://127.0.0.1:8233", ok.Header.Get("Access-Control-Allow-Origin"))
	require.True(t, strings.Contains(ok.Header.Get("Access-Control-Allow-Headers"), "X-Namespace"))
	other := pre("http://evil.example")
	require.Empty(t, other.Header.Get("Access-Control-Allow-Origin"), "another site's page may not read decoded payloads")
}
