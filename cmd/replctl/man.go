package main

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// version is the release this binary was built as (-ldflags "-X main.version=..."; `make
// package` sets it).
var version = "dev"

// newCmdMan is `replctl man --dir DIR` (hidden): one gzipped man page per command, made
// from the commands' own help, for the package (`make package`).
func newCmdMan(root *cobra.Command) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:    "man --dir DIR",
		Short:  "Write a man page per command into DIR (for packaging)",
		Hidden: true,
		Args:   exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usageError("--dir is required")
			}
			return writeManPages(root, dir)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory to write the pages to (created)")
	return cmd
}

// writeManPages writes replctl.1.gz, replctl-agent.1.gz, ... into dir.
func writeManPages(root *cobra.Command, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root.DisableAutoGenTag = true // reproducible pages: no generation date
	hdr := &doc.GenManHeader{Title: "REPLCTL", Section: "1", Source: "replctl " + version, Manual: "replctl manual"}
	if err := doc.GenManTree(root, hdr, dir); err != nil {
		return fmt.Errorf("writing man pages: %w", err)
	}
	pages, err := filepath.Glob(filepath.Join(dir, "*.1"))
	if err != nil {
		return err
	}
	for _, p := range pages {
		if err := gzipFile(p); err != nil {
			return err
		}
	}
	return nil
}

// gzipFile replaces p by p.gz.
func gzipFile(p string) error {
	in, err := os.Open(p)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(p + ".gz")
	if err != nil {
		return err
	}
	zw, _ := gzip.NewWriterLevel(out, gzip.BestCompression)
	if _, err := io.Copy(zw, in); err != nil {
		out.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Remove(p)
}
