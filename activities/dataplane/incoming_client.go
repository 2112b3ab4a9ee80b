package dataplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/replctl/replctl/activities/hostexec"
	"github.com/replctl/replctl/internal/worecord"
)

// IncomingLink is a source agent's SFTP session to a target host's `replctl serve-staging`:
// the incoming staging of one job and dataset there, as that host's own config grants it.
type IncomingLink struct {
	*sftp.Client
	ssh     *ssh.Client
	session *ssh.Session
	stderr  *hostexec.TailBuffer
}

// DialIncoming reaches host over SSH and asks its forced command for the staging named by
// command (activities.StagingRequest.Command). A refusal by the target host comes back as
// an error carrying the message it wrote.
func DialIncoming(ctx context.Context, host string, t hostexec.Target, command string) (*IncomingLink, error) {
	sc, err := hostexec.Dial(ctx, &t)
	if err != nil {
		return nil, fmt.Errorf("incoming staging on host %s: %w", host, err)
	}
	stderr := hostexec.NewTailBuffer(16 << 10)
	l := &IncomingLink{ssh: sc, stderr: stderr}
	fail := func(err error) (*IncomingLink, error) {
		l.close()
		return nil, err
	}
	if l.session, err = sc.NewSession(); err != nil {
		return fail(fmt.Errorf("incoming staging on host %s: %w", host, err))
	}
	l.session.Stderr = stderr
	w, err := l.session.StdinPipe()
	if err != nil {
		return fail(err)
	}
	r, err := l.session.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	if err := l.session.Start(command); err != nil {
		return fail(fmt.Errorf("incoming staging on host %s: %w", host, err))
	}
	if l.Client, err = sftp.NewClientPipe(r, w, sftp.UseConcurrentWrites(true), sftp.MaxConcurrentRequestsPerFile(64),
		sftp.MaxPacketUnchecked(1<<18-1024)); err != nil {
		// The far end ended before SFTP started: the refusal is on its stderr.
		werr := l.session.Wait()
		if msg := strings.TrimSpace(l.stderr.String()); msg != "" {
			return fail(fmt.Errorf("incoming staging on host %s: %s", host, msg))
		}
		return fail(fmt.Errorf("incoming staging on host %s: %w", host, errors.Join(err, werr)))
	}
	return l, nil
}

// Stderr is what the far end wrote on its stderr so far.
func (l *IncomingLink) Stderr() string { return l.stderr.String() }

// Staging is the link as the destination of a write-once copy, beneath dir of the
// incoming staging.
func (l *IncomingLink) Staging(dir string) worecord.Staging {
	return sftpStaging{c: l.Client, dir: path.Join("/", dir)}
}

// sftpStaging writes through serve-staging, which opens files for writing only.
type sftpStaging struct {
	c   *sftp.Client
	dir string
}

func (s sftpStaging) Mkdir(p string) error { return s.c.Mkdir(path.Join(s.dir, p)) }

func (s sftpStaging) Create(p string) (worecord.StagedFile, error) {
	return s.c.OpenFile(path.Join(s.dir, p), os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
}

// Close ends the session and the connection.
func (l *IncomingLink) Close() error {
	var err error
	if l.Client != nil {
		err = l.Client.Close()
	}
	l.close()
	return err
}

func (l *IncomingLink) close() {
	if l.session != nil {
		l.session.Close()
	}
	l.ssh.Close()
}
