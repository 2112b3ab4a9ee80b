package dataplane

// A repository on storage this agent is not attached to is reached over SFTP
// through the hosts attached to that storage. The blob layout is kopia's
// sharded filesystem layout, so agents that mount the storage and agents that
// come over SFTP share one repository.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/blob/retrying"
	"github.com/kopia/kopia/repo/blob/sharded"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/replctl/replctl/activities/hostexec"
)

// RemoteHost is a host attached to the repository's storage, reached over SSH.
type RemoteHost struct {
	// Name is the host's name in the config, for messages.
	Name string
	// Target is how to reach it: files on this agent's host; the known_hosts file is always
	// enforced, a zero ConnectTimeout means hostexec's default.
	hostexec.Target
	// Dir is the absolute repository directory as this host sees it.
	Dir string
}

// remoteHostJSON is RemoteHost as kopia stores it in the agent's client config
// (remoteOptions): these keys are on disk, keep them.
type remoteHostJSON struct {
	Name           string        `json:"name"`
	Address        string        `json:"address"`
	User           string        `json:"user"`
	KeyFile        string        `json:"keyFile"`
	KnownHostsFile string        `json:"knownHostsFile"`
	ConnectTimeout time.Duration `json:"connectTimeout,omitempty"`
	Dir            string        `json:"dir"`
}

// MarshalJSON writes the stored shape, remoteHostJSON.
func (h RemoteHost) MarshalJSON() ([]byte, error) {
	t := h.Target
	return json.Marshal(remoteHostJSON{Name: h.Name, Address: t.Address, User: t.User, KeyFile: t.KeyFile,
		KnownHostsFile: t.KnownHostsFile, ConnectTimeout: t.ConnectTimeout, Dir: h.Dir})
}

// UnmarshalJSON reads the stored shape, remoteHostJSON.
func (h *RemoteHost) UnmarshalJSON(b []byte) error {
	var j remoteHostJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*h = RemoteHost{Name: j.Name, Dir: j.Dir, Target: hostexec.Target{Address: j.Address, User: j.User,
		KeyFile: j.KeyFile, KnownHostsFile: j.KnownHostsFile, ConnectTimeout: j.ConnectTimeout}}
	return nil
}

// remoteStorageType names the kopia storage provider below in repository configs.
const remoteStorageType = "replctl-sftp"

// remoteOptions is the provider's configuration, stored in the agent's kopia
// client config.
type remoteOptions struct {
	Hosts []RemoteHost `json:"hosts"`
	// Spool is an agent-local directory where packs that are read often are copied whole
	// (pack_spool.go); "" copies none.
	Spool string `json:"spool,omitempty"`
	sharded.Options
}

func init() {
	blob.AddSupportedStorage(remoteStorageType, remoteOptions{}, newRemoteStorage)
}

// remoteKey distinguishes a remote repository from a local one with the same Dir.
func remoteKey(hosts []RemoteHost) string {
	var b strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&b, "\x00%s@%s:%s", h.User, h.Address, h.Dir)
	}
	return b.String()
}

// sftpLink is one SFTP session to the first of hosts that answers; it is
// re-dialled (hosts in order again) after the connection is lost.
type sftpLink struct {
	hosts []RemoteHost

	mu     sync.Mutex
	client *sftp.Client
	ssh    *ssh.Client
	host   int // index in hosts of the connected host
	closed bool
}

func newSFTPLink(hosts []RemoteHost) (*sftpLink, error) {
	if len(hosts) == 0 {
		return nil, fmt.Errorf("%w: remote repository: no hosts to reach it through", ErrBadInput)
	}
	for _, h := range hosts {
		if !path.IsAbs(h.Dir) {
			return nil, fmt.Errorf("%w: remote repository: host %s: Dir %q is not absolute", ErrBadInput, h.Name, h.Dir)
		}
	}
	return &sftpLink{hosts: hosts}, nil
}

// get returns the session and the connected host, dialling in order if needed.
func (l *sftpLink) get(ctx context.Context) (*sftp.Client, RemoteHost, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, RemoteHost{}, errors.New("remote repository: connection closed")
	}
	if l.client != nil {
		return l.client, l.hosts[l.host], nil
	}
	var tried []string
	for i, h := range l.hosts {
		if err := ctx.Err(); err != nil {
			return nil, RemoteHost{}, err
		}
		c, sc, err := dialSFTP(ctx, h)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s (%v)", h.Name, err))
			continue
		}
		l.client, l.ssh, l.host = c, sc, i
		return c, h, nil
	}
	return nil, RemoteHost{}, fmt.Errorf("remote repository %s: no host attached to its storage could be reached over SSH; tried in order: %s",
		l.hosts[0].Dir, strings.Join(tried, "; "))
}

func dialSFTP(ctx context.Context, h RemoteHost) (*sftp.Client, *ssh.Client, error) {
	sc, err := hostexec.Dial(ctx, &h.Target)
	if err != nil {
		return nil, nil, err
	}
	c, err := sftp.NewClient(sc,
		sftp.UseConcurrentReads(true),
		sftp.UseConcurrentWrites(true),
		sftp.MaxConcurrentRequestsPerFile(64),
		sftp.MaxPacketUnchecked(1<<18-1024),
	)
	if err != nil {
		sc.Close()
		return nil, nil, fmt.Errorf("starting sftp on %s: %w", h.Address, err)
	}
	return c, sc, nil
}

// do runs fn with the session. An error that means the connection is gone
// drops the session, so the next call (kopia retries blob operations) dials
// again, trying the hosts in order.
func (l *sftpLink) do(ctx context.Context, fn func(c *sftp.Client, h RemoteHost) error) error {
	c, h, err := l.get(ctx)
	if err != nil {
		return err
	}
	err = fn(c, h)
	if err != nil && connectionLost(err) {
		l.drop(c)
		return fmt.Errorf("host %s: connection lost: %w", h.Name, err)
	}
	return err
}

func (l *sftpLink) drop(c *sftp.Client) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.client == c && c != nil {
		l.client.Close()
		l.ssh.Close()
		l.client, l.ssh = nil, nil
	}
}

func (l *sftpLink) Close() {
	l.mu.Lock()
	c := l.client
	l.mu.Unlock()
	l.drop(c)
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

func connectionLost(err error) bool {
	var ne net.Error
	return errors.Is(err, sftp.ErrSSHFxConnectionLost) || errors.Is(err, sftp.ErrSSHFxNoConnection) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.As(err, &ne)
}

func notExist(err error) bool { return err != nil && errors.Is(err, fs.ErrNotExist) }

// remoteStorage is a kopia blob.Storage over SFTP. The sharded layer works on
// paths under "/", which each host maps onto its own repository directory.
type remoteStorage struct {
	sharded.Storage
	blob.DefaultProviderImplementation
	opts remoteOptions
	link *sftpLink
	// borrowed: the link is its caller's, who closes it (newRemoteStorageOn).
	borrowed bool
}

func newRemoteStorage(ctx context.Context, opts *remoteOptions, isCreate bool) (blob.Storage, error) {
	st, err := dialRemoteStorage(ctx, opts, isCreate)
	if err != nil {
		return nil, err
	}
	return st.withPackReads(), nil
}

// newRemoteStorageOn is newRemoteStorage over a link the caller already has (and closes),
// for the short-lived storages of opening a repository: an SSH login is about ten round
// trips. link must be of opts.Hosts, and the caller has found the repository directory
// through it (remoteInitialized), so it is not looked at again.
func newRemoteStorageOn(link *sftpLink, opts *remoteOptions) blob.Storage {
	st := &remoteStorage{opts: *opts, link: link, borrowed: true}
	st.Storage = sharded.New(st, "/", opts.Options, false)
	return st.withPackReads()
}

// withPackReads is the storage kopia uses: pack reads through open remote files (and their
// local copies), every operation retried as kopia's own storages are.
func (s *remoteStorage) withPackReads() blob.Storage {
	return retrying.NewWrapper(withPackFiles(s, s.openPack, ""))
}

// dialRemoteStorage connects the storage: a repository nobody can reach fails here, with
// every host's reason.
func dialRemoteStorage(ctx context.Context, opts *remoteOptions, isCreate bool) (*remoteStorage, error) {
	link, err := newSFTPLink(opts.Hosts)
	if err != nil {
		return nil, err
	}
	st := &remoteStorage{opts: *opts, link: link}
	st.Storage = sharded.New(st, "/", opts.Options, isCreate)
	if err := link.do(ctx, func(c *sftp.Client, h RemoteHost) error {
		if _, err := c.Stat(h.Dir); err != nil {
			if notExist(err) && isCreate {
				return c.MkdirAll(h.Dir)
			}
			return fmt.Errorf("repository directory %s on host %s: %w", h.Dir, h.Name, err)
		}
		return nil
	}); err != nil {
		link.Close()
		return nil, err
	}
	return st, nil
}

// openPack opens pack blob id on the connected host, for packFiles: kopia reads one content
// at a time, and an open, read and close each is three round trips where one will do.
func (s *remoteStorage) openPack(ctx context.Context, id blob.ID) (packHandle, error) {
	_, p, err := s.GetShardedPathAndFilePath(ctx, id)
	if err != nil {
		return nil, err
	}
	c, h, err := s.link.get(ctx)
	if err != nil {
		return nil, err
	}
	f, err := c.Open(hostPath(h, p))
	if err != nil {
		if connectionLost(err) {
			s.link.drop(c)
		}
		return nil, err
	}
	return &sftpPack{f: f, spool: newPackSpool(f, s.opts.Spool), client: c, link: s.link}, nil
}

// sftpPack is a pack blob open on a remote host. pkg/sftp lets reads share the file (ReadAt
// holds a read lock) and makes Close wait for them.
type sftpPack struct {
	f      *sftp.File
	spool  *packSpool // the pack's local copy, once it is read often (pack_spool.go)
	client *sftp.Client
	link   *sftpLink
}

// readRange reads the range from the pack's local copy if there is one, else in one ReadAt,
// which pkg/sftp splits into concurrent requests; a lost connection is dropped, so the read
// through kopia that follows dials again.
func (p *sftpPack) readRange(offset, length int64, out blob.OutputBuffer) error {
	if ok, err := p.spool.spooledRange(offset, length, out); ok {
		return err
	}
	short, err := readSFTPRange(p.f, offset, length, out)
	if short {
		return fmt.Errorf("%w: %d bytes at offset %d", blob.ErrInvalidRange, length, offset)
	}
	if err != nil && connectionLost(err) {
		p.link.drop(p.client)
	}
	return err
}

// readSFTPRange writes length bytes of f at offset to out in one ReadAt. short: the file
// ends before the range does; err: the read failed.
func readSFTPRange(f *sftp.File, offset, length int64, out blob.OutputBuffer) (short bool, err error) {
	out.Reset()
	buf := make([]byte, length)
	n, err := f.ReadAt(buf, offset)
	if int64(n) < length {
		return err == nil || errors.Is(err, io.EOF), err
	}
	_, err = out.Write(buf)
	return false, err
}

// Close closes the local copy, then the remote file.
func (p *sftpPack) Close() error {
	p.spool.Close()
	return p.f.Close()
}

func hostPath(h RemoteHost, p string) string { return path.Join(h.Dir, p) }

// GetBlobFromPath implements sharded.Impl.
func (s *remoteStorage) GetBlobFromPath(ctx context.Context, _, p string, offset, length int64, output blob.OutputBuffer) error {
	return s.link.do(ctx, func(c *sftp.Client, h RemoteHost) error {
		f, err := c.Open(hostPath(h, p))
		if notExist(err) {
			return blob.ErrBlobNotFound
		}
		if err != nil {
			return fmt.Errorf("opening %s on host %s: %w", hostPath(h, p), h.Name, err)
		}
		defer f.Close() //nolint:errcheck
		if length < 0 {
			output.Reset()
			if _, err := f.WriteTo(output); err != nil {
				return fmt.Errorf("reading %s on host %s: %w", hostPath(h, p), h.Name, err)
			}
			return nil
		}
		short, err := readSFTPRange(f, offset, length, output)
		if short {
			return fmt.Errorf("%w: %s has no %d bytes at offset %d", blob.ErrInvalidRange, p, length, offset)
		}
		if err != nil {
			return fmt.Errorf("reading %s on host %s: %w", hostPath(h, p), h.Name, err)
		}
		return nil
	})
}

// GetMetadataFromPath implements sharded.Impl.
func (s *remoteStorage) GetMetadataFromPath(ctx context.Context, _, p string) (blob.Metadata, error) {
	var md blob.Metadata
	err := s.link.do(ctx, func(c *sftp.Client, h RemoteHost) error {
		fi, err := c.Stat(hostPath(h, p))
		if notExist(err) {
			return blob.ErrBlobNotFound
		}
		if err != nil {
			return fmt.Errorf("stat %s on host %s: %w", hostPath(h, p), h.Name, err)
		}
		md = blob.Metadata{Length: fi.Size(), Timestamp: fi.ModTime()}
		return nil
	})
	return md, err
}

// PutBlobInPath implements sharded.Impl: a temp file renamed over the name, so
// readers never see a partial blob.
func (s *remoteStorage) PutBlobInPath(ctx context.Context, _, p string, data blob.Bytes, opts blob.PutOptions) error {
	if opts.HasRetentionOptions() {
		return fmt.Errorf("%w: blob retention", blob.ErrUnsupportedPutBlobOption)
	}
	if opts.DoNotRecreate {
		return fmt.Errorf("%w: do-not-recreate", blob.ErrUnsupportedPutBlobOption)
	}
	return s.link.do(ctx, func(c *sftp.Client, h RemoteHost) error {
		full := hostPath(h, p)
		tmp := full + ".tmp." + randomHex(8)
		f, err := c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		if notExist(err) {
			if err := mkdirShard(c, path.Dir(full)); err != nil {
				return fmt.Errorf("creating %s on host %s: %w", path.Dir(full), h.Name, err)
			}
			f, err = c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		}
		if err != nil {
			return fmt.Errorf("creating %s on host %s: %w", tmp, h.Name, err)
		}
		r := data.Reader()
		_, err = f.ReadFromWithConcurrency(r, 0)
		r.Close() //nolint:errcheck
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = c.PosixRename(tmp, full)
		}
		if err != nil {
			_ = c.Remove(tmp)
			return fmt.Errorf("writing %s on host %s: %w", full, h.Name, err)
		}
		if t := opts.SetModTime; !t.IsZero() {
			if err := c.Chtimes(full, t, t); err != nil {
				return fmt.Errorf("setting times of %s on host %s: %w", full, h.Name, err)
			}
		}
		if opts.GetModTime != nil {
			fi, err := c.Stat(full)
			if err != nil {
				return fmt.Errorf("stat %s on host %s: %w", full, h.Name, err)
			}
			*opts.GetModTime = fi.ModTime()
		}
		return nil
	})
}

// mkdirShard makes a blob's missing shard directory. Its parent (the blob kind's directory)
// is there but for the first blob of a kind, so one mkdir does; MkdirAll, which stats each
// level first, costs two round trips more and handles the rest.
func mkdirShard(c *sftp.Client, dir string) error {
	if c.Mkdir(dir) == nil {
		return nil
	}
	return c.MkdirAll(dir)
}

// DeleteBlobInPath implements sharded.Impl; a missing blob is not an error.
func (s *remoteStorage) DeleteBlobInPath(ctx context.Context, _, p string) error {
	return s.link.do(ctx, func(c *sftp.Client, h RemoteHost) error {
		if err := c.Remove(hostPath(h, p)); err != nil && !notExist(err) {
			return fmt.Errorf("removing %s on host %s: %w", hostPath(h, p), h.Name, err)
		}
		return nil
	})
}

// ReadDir implements sharded.Impl.
func (s *remoteStorage) ReadDir(ctx context.Context, dir string) ([]os.FileInfo, error) {
	var out []os.FileInfo
	err := s.link.do(ctx, func(c *sftp.Client, h RemoteHost) error {
		var err error
		out, err = c.ReadDir(hostPath(h, dir))
		return err
	})
	return out, err
}

// ConnectionInfo implements blob.Storage: what kopia stores to reopen us.
func (s *remoteStorage) ConnectionInfo() blob.ConnectionInfo {
	o := s.opts
	return blob.ConnectionInfo{Type: remoteStorageType, Config: &o}
}

// DisplayName implements blob.Storage.
func (s *remoteStorage) DisplayName() string {
	names := make([]string, len(s.opts.Hosts))
	for i, h := range s.opts.Hosts {
		names[i] = h.Name
	}
	return fmt.Sprintf("SFTP %s via %s", s.opts.Hosts[0].Dir, strings.Join(names, ", "))
}

// Close implements blob.Storage.
func (s *remoteStorage) Close(context.Context) error {
	if !s.borrowed {
		s.link.Close()
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
