package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/replctl/replctl/internal/codec"
)

// CodecServerOptions are the flags of `replctl codec-server` (the key file comes from
// --codec-key-file, REPLCTL_CODEC_KEY_FILE or temporal.codec_key_file, as for every
// command).
type CodecServerOptions struct {
	Listen     string
	CORSOrigin string
	// InsecureListen allows a listen address that is not loopback.
	InsecureListen bool
}

// DefaultCodecListen is where `replctl codec-server` listens by default.
const DefaultCodecListen = "127.0.0.1:8081"

// NewCmdCodecServer is `replctl codec-server`: the payload codec over HTTP, for the
// Temporal Web UI to show encrypted payloads in clear in the operator's browser.
func NewCmdCodecServer(f *Factory, runF func(*CodecServerOptions) error) *cobra.Command {
	o := &CodecServerOptions{}
	cmd := &cobra.Command{
		Use:   "codec-server",
		Short: "Serve the payload codec over HTTP for the Temporal Web UI (decrypts history in the browser)",
		Long: "Serve the payload codec (--codec-key-file) at http://LISTEN/decode and /encode, the protocol of\n" +
			"the Temporal Web UI's codec server setting. Anyone who can reach it can decrypt payloads:\n" +
			"it listens on loopback, and answers browsers only from --cors-origin (the Web UI's origin).",
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(o)
			}
			return runCodecServer(cmd.Context(), f, o)
		},
	}
	cmd.Flags().StringVar(&o.Listen, "listen", DefaultCodecListen, "address to listen on (loopback unless --insecure-listen)")
	cmd.Flags().StringVar(&o.CORSOrigin, "cors-origin", "http://127.0.0.1:8233", "origin of the Web UI allowed to call the codec server from the browser (\"\": none)")
	cmd.Flags().BoolVar(&o.InsecureListen, "insecure-listen", false, "allow a --listen address that is not loopback: whoever reaches it can decrypt payloads")
	return cmd
}

// codecFromFactory loads the codec key file of --codec-key-file, else
// REPLCTL_CODEC_KEY_FILE, else the config's temporal.codec_key_file (the config is read
// only then: an operator's workstation may have none).
func codecFromFactory(f *Factory) (*codec.Codec, string, error) {
	k := setting{f.Conn.CodecKeyFile, "--codec-key-file"}
	if k.value == "" {
		k = setting{os.Getenv(EnvCodecKeyFile), EnvCodecKeyFile}
	}
	if k.value == "" {
		cfg, err := f.Config()
		if err != nil {
			return nil, "", err
		}
		k = setting{cfg.Temporal.CodecKeyFile, "config temporal.codec_key_file"}
	}
	if k.value == "" {
		return nil, "", usageError("codec-server needs the codec key: give --codec-key-file FILE (or %s, or temporal.codec_key_file in the config)", EnvCodecKeyFile)
	}
	c, err := codec.Load(k.value)
	if err != nil {
		return nil, "", &ExitError{Code: ExitUsage, Err: fmt.Errorf("%w (from %s)", err, k.source)}
	}
	return c, k.String(), nil
}

func runCodecServer(ctx context.Context, f *Factory, o *CodecServerOptions) error {
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		return usageError("--listen %q: want host:port", o.Listen)
	}
	if !o.InsecureListen && !loopbackAddress(o.Listen) {
		return usageError("--listen %s is not a loopback address: whoever reaches the codec server can decrypt every payload; listen on 127.0.0.1 (and reach it through SSH port forwarding), or give --insecure-listen", o.Listen)
	}
	c, from, err := codecFromFactory(f)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("codec server: %w", err)
	}
	srv := &http.Server{Handler: codec.Handler(c, o.CORSOrigin), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(f.ErrOut, "codec server on http://%s (key %s, id %s; browser origin %q): set it as the Web UI's codec server\n",
		l.Addr(), from, c.KeyID(), o.CORSOrigin)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("codec server: %w", err)
	}
	return nil
}
