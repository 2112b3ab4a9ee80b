// Package codec is replctl's optional payload codec: AES-256-GCM over every payload the
// agents and the CLI hand to Temporal (workflow and activity inputs and results, heartbeat
// details, memos, failure messages), so that Temporal's history holds no dataset paths,
// host paths, script names or script output in clear. The key is 32 random bytes in a
// file of its own (mode 0600), the same file on every agent and CLI host.
//
// Search attributes are not payloads the codec sees (Temporal must index them): replctl's
// are job, phase, agent, storage and host names.
package codec

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/proto"

	"github.com/replctl/replctl/internal/secret"
)

// Encoding is the "encoding" metadata of an encrypted payload.
const Encoding = "binary/replctl-aes256gcm"

// MetaKeyID is the payload metadata that names the key an encrypted payload was sealed
// with (a fingerprint, not the key): a wrong key is then told apart from damaged data.
const MetaKeyID = "replctl-key-id"

// KeySize is the key length: AES-256.
const KeySize = 32

// ErrWrongKey means a payload was encrypted with another key than this codec's.
var ErrWrongKey = errors.New("payload encrypted with another codec key")

// Codec is a converter.PayloadCodec that seals each payload (metadata and data) with
// AES-256-GCM under a random nonce.
type Codec struct {
	aead  cipher.AEAD
	keyID string
}

var _ converter.PayloadCodec = (*Codec)(nil)

// New returns the codec of key (KeySize bytes).
func New(key []byte) (*Codec, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("codec key has %d bytes, want %d (AES-256)", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("replctl codec key id\x00"), key...))
	return &Codec{aead: aead, keyID: hex.EncodeToString(sum[:8])}, nil
}

// Load reads the key file: 64 hex digits or the standard base64 of 32 bytes (surrounding
// white space ignored), in a file that group and others cannot read (secret.ReadFile).
func Load(file string) (*Codec, error) {
	b, err := secret.ReadFile(file, "payload codec key file")
	if err != nil {
		return nil, err
	}
	key, err := parseKey(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("payload codec key file %s: %w", file, err)
	}
	return New(key)
}

func parseKey(s string) ([]byte, error) {
	if k, err := hex.DecodeString(s); err == nil && len(k) == KeySize {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(s); err == nil && len(k) == KeySize {
		return k, nil
	}
	return nil, fmt.Errorf("want a %d-byte key as 64 hex digits or base64 (make one with `openssl rand -hex %d`), got %d characters", KeySize, KeySize, len(s))
}

// NewKey returns a new random key in the key file's format (hex, with a newline).
func NewKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return []byte(hex.EncodeToString(k) + "\n"), nil
}

// KeyID is the fingerprint of the codec's key, as written into each payload.
func (c *Codec) KeyID() string { return c.keyID }

// Encode seals each payload.
func (c *Codec) Encode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		plain, err := proto.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("codec: encoding payload: %w", err)
		}
		nonce := make([]byte, c.aead.NonceSize(), c.aead.NonceSize()+len(plain)+c.aead.Overhead())
		if _, err := rand.Read(nonce); err != nil {
			return nil, fmt.Errorf("codec: nonce: %w", err)
		}
		out[i] = &commonpb.Payload{
			Metadata: map[string][]byte{converter.MetadataEncoding: []byte(Encoding), MetaKeyID: []byte(c.keyID)},
			Data:     c.aead.Seal(nonce, nonce, plain, []byte(Encoding)),
		}
	}
	return out, nil
}

// Decode opens each payload this codec's format sealed; others (written before the codec
// was turned on) are returned as they are. A payload sealed with another key is
// ErrWrongKey, naming both key fingerprints.
func (c *Codec) Decode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		if string(p.GetMetadata()[converter.MetadataEncoding]) != Encoding {
			out[i] = p
			continue
		}
		if id := string(p.GetMetadata()[MetaKeyID]); id != c.keyID {
			return nil, fmt.Errorf("%w: the payload's key is %s, this key (codec_key_file / --codec-key-file) is %s: give every agent and CLI the same key file", ErrWrongKey, id, c.keyID)
		}
		data := p.GetData()
		if len(data) < c.aead.NonceSize() {
			return nil, errors.New("codec: encrypted payload is too short")
		}
		plain, err := c.aead.Open(nil, data[:c.aead.NonceSize()], data[c.aead.NonceSize():], []byte(Encoding))
		if err != nil {
			return nil, fmt.Errorf("codec: encrypted payload does not open with key %s (damaged?): %w", c.keyID, err)
		}
		var dec commonpb.Payload
		if err := proto.Unmarshal(plain, &dec); err != nil {
			return nil, fmt.Errorf("codec: decrypted payload: %w", err)
		}
		out[i] = &dec
	}
	return out, nil
}

// DataConverter is the SDK's default data converter with c applied to every payload.
func (c *Codec) DataConverter() converter.DataConverter {
	return converter.NewCodecDataConverter(converter.GetDefaultDataConverter(), c)
}

// FailureConverter encodes failure messages and stack traces with dc (the codec's data
// converter) too: replctl's error messages name paths and hosts.
func FailureConverter(dc converter.DataConverter) converter.FailureConverter {
	return temporal.NewDefaultFailureConverter(temporal.DefaultFailureConverterOptions{DataConverter: dc, EncodeCommonAttributes: true})
}

// Handler serves the codec to the Temporal Web UI (its "codec server" setting): POST
// /encode and /decode with the SDK's JSON payload format. corsOrigin is the one browser
// origin (the UI's, such as http://127.0.0.1:8233) allowed to call it; "" allows none.
func Handler(c *Codec, corsOrigin string) http.Handler {
	h := converter.NewPayloadCodecHTTPHandler(c)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if corsOrigin != "" && r.Header.Get("Origin") == corsOrigin {
			w.Header().Set("Access-Control-Allow-Origin", corsOrigin)
			w.Header().Set("Access-Control-Allow-Credentials", "true")
			w.Header().Set("Access-Control-Allow-Headers", "Content-Type, X-Namespace, Authorization")
			w.Header().Set("Access-Control-Allow-Methods", "POST, OPTIONS")
			w.Header().Set("Vary", "Origin")
		}
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		h.ServeHTTP(w, r)
	})
}
