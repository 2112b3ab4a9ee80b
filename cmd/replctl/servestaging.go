package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/stagingsftp"
)

// ServeStagingOptions are the flags of `replctl serve-staging` and what it serves on.
type ServeStagingOptions struct {
	// Host is this (the target) host's name in its own config.
	Host string
	// From is the source host whose key authorized_keys binds to this command.
	From string
	// Command is the SSH command the client sent (SSH_ORIGINAL_COMMAND).
	Command string
	// Conn is the SFTP session: stdin and stdout under sshd.
	Conn io.ReadWriteCloser
}

// NewCmdServeStaging is `replctl serve-staging --host NAME --from NAME`: the forced command
// of the key a source host uses to write one job's incoming staging on this target host.
func NewCmdServeStaging(f *Factory, runF func(*ServeStagingOptions) error) *cobra.Command {
	o := &ServeStagingOptions{}
	cmd := &cobra.Command{
		Use:   "serve-staging --host NAME --from NAME",
		Short: "Serve a target's incoming staging over SFTP to a source agent (an SSH forced command)",
		Long: "Run by sshd as the forced command of the key a source host's agent uses, in this target host's\n" +
			"authorized_keys:\n" +
			"  command=\"replctl serve-staging --config /etc/replctl/config.yaml --host B --from A\",restrict KEY\n" +
			"It reads the request from SSH_ORIGINAL_COMMAND (" + activities.StagingCommand + " {\"job\":…,\"storage\":…,\"dataset\":…}),\n" +
			"grants it only when this host's own config has the job with write_once: true, A in its source\n" +
			"order and B in the order of its target on that storage, and then serves SFTP on stdin and stdout\n" +
			"confined to T/.replctl/incoming/<dataset> of that storage: files and directories may be created,\n" +
			"written, renamed and removed there; reading, links and changes of mode or owner are refused.",
		Args: exactArgs(0, "no arguments (the request comes from SSH_ORIGINAL_COMMAND)"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Host == "" || o.From == "" {
				return usageError("serve-staging needs --host (this host) and --from (the source host the key belongs to)")
			}
			o.Command = os.Getenv("SSH_ORIGINAL_COMMAND")
			o.Conn = stdio{}
			if runF != nil {
				return runF(o)
			}
			return runServeStaging(f, o)
		},
	}
	cmd.Flags().StringVar(&o.Host, "host", "", "this host's name in its config")
	cmd.Flags().StringVar(&o.From, "from", "", "the source host whose key runs this command")
	return cmd
}

// runServeStaging grants the request from this host's own config, then serves it. Every
// grant, refusal and end is appended to serve-staging.log in the host's state dir.
func runServeStaging(f *Factory, o *ServeStagingOptions) error {
	cfg, err := f.Config()
	if err != nil {
		return fmt.Errorf("host %s refuses source host %s: its own config: %w", o.Host, o.From, err)
	}
	audit := stagingAudit(cfg, o.Host, o.From, o.Command)
	req, err := activities.ParseStagingCommand(o.Command)
	if err != nil {
		err = fmt.Errorf("host %s refuses source host %s: %w", o.Host, o.From, err)
		audit("refused", err)
		return err
	}
	root, err := activities.StagingGrant(cfg, o.Host, o.From, req)
	if err != nil {
		audit("refused", err)
		return err
	}
	r, dir, err := dataplane.OpenIncoming(root, req.Dataset)
	if err != nil {
		err = fmt.Errorf("host %s: the incoming staging of job %q: %w", o.Host, req.Job, err)
		audit("failed", err)
		return err
	}
	defer r.Close()
	audit("granted "+dir, nil)
	if err := stagingsftp.Serve(o.Conn, r); err != nil {
		err = fmt.Errorf("host %s: serving %s to source host %s: %w", o.Host, dir, o.From, err)
		audit("ended", err)
		return err
	}
	audit("ended", nil)
	return nil
}

// stagingAudit returns what appends one line to serve-staging.log in host's state dir
// (none when the config gives it no state dir): the time, both hosts, what happened, the
// request as sent and the error. A log that cannot be written does not stop the session.
func stagingAudit(cfg *config.Config, host, from, command string) func(event string, err error) {
	h, herr := cfg.Host(host)
	return func(event string, err error) {
		if herr != nil || h.State == "" {
			return
		}
		if os.MkdirAll(h.State, 0o700) != nil {
			return
		}
		lf, oerr := os.OpenFile(filepath.Join(h.State, "serve-staging.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
		if oerr != nil {
			return
		}
		defer lf.Close()
		line := fmt.Sprintf("%s host=%s from=%s event=%q request=%q", time.Now().UTC().Format(time.RFC3339Nano), host, from, event, command)
		if err != nil {
			line += fmt.Sprintf(" error=%q", err.Error())
		}
		fmt.Fprintln(lf, line)
	}
}

// stdio is stdin and stdout as one connection.
type stdio struct{}

func (stdio) Read(p []byte) (int, error)  { return os.Stdin.Read(p) }
func (stdio) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
func (stdio) Close() error                { return errors.Join(os.Stdin.Close(), os.Stdout.Close()) }
