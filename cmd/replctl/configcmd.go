package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/storagecheck"
)

// NewCmdConfig is `replctl config` and its subcommands.
func NewCmdConfig(f *Factory) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with replctl config files"}
	cmd.AddCommand(NewCmdConfigValidate(f, nil))
	return cmd
}

// ValidateOptions are the flags of `replctl config validate`.
type ValidateOptions struct {
	File string
	// Online also checks the hosts' storage on this machine's disks.
	Online bool
	// Host limits --online to this host, checked even when its storage is missing here.
	Host string
}

// NewCmdConfigValidate is `replctl config validate [FILE]`.
func NewCmdConfigValidate(f *Factory, runF func(o *ValidateOptions) error) *cobra.Command {
	o := &ValidateOptions{}
	cmd := &cobra.Command{
		Use:   "validate [FILE]",
		Short: "Check a config file strictly; every error names the file, line and field",
		Long: "Check a config file strictly; every error names the file, line and field.\n" +
			"With --online, also check on this machine's disks the storage of each host whose storage is here\n" +
			"(or of the --host given): every attached path must be a real directory, not a symlink, and no two\n" +
			"storage systems may be one directory or one inside the other.",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageError("config validate wants at most one file (got %d)", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.File = f.ConfigFile
			if len(args) == 1 {
				o.File = args[0]
			}
			if o.Host != "" && !o.Online {
				return usageError("--host needs --online (it selects the host whose storage is checked)")
			}
			if runF != nil {
				return runF(o)
			}
			return runValidate(f, o)
		},
	}
	cmd.Flags().BoolVar(&o.Online, "online", false, "also check the hosts' storage on this machine's disks (real directories, no two storages one directory)")
	cmd.Flags().StringVar(&o.Host, "host", "", "with --online: check this host's storage only (also when it is missing here)")
	return cmd
}

func runValidate(f *Factory, o *ValidateOptions) error {
	if err := f.ensureStateEnv(); err != nil {
		return err
	}
	cfg, err := config.Load(o.File)
	if err != nil {
		return &ExitError{Code: ExitUsage, Err: err}
	}
	// Secret files present on this host must be private; the others are checked
	// where they are used.
	if err := cfg.CheckSecretFiles(); err != nil {
		return &ExitError{Code: ExitUsage, Err: err}
	}
	if o.Online {
		if err := validateOnline(f, cfg, o.Host); err != nil {
			return &ExitError{Code: ExitUsage, Err: err}
		}
	}
	fmt.Fprintf(f.Out, "%s: ok (%d storage systems, %d hosts, %d jobs)\n", cfg.File, len(cfg.Storage), len(cfg.Hosts), len(cfg.Jobs))
	return nil
}

// validateOnline checks the storage of host (or, when host is "", of every host whose
// attached paths all exist on this machine) and prints which hosts it checked and which not.
// Hosts are checked one by one: two hosts may be two machines that mount different storage
// at the same path.
func validateOnline(f *Factory, cfg *config.Config, host string) error {
	hosts := cfg.Hosts
	if host != "" {
		h, err := cfg.Host(host)
		if err != nil {
			return err
		}
		hosts = []config.Host{*h}
	}
	var errs []error
	checked := 0
	for i := range hosts {
		roots := storagecheck.HostRoots(&hosts[i])
		if len(roots) == 0 {
			fmt.Fprintf(f.Out, "host %s: attaches no storage\n", hosts[i].Name)
			continue
		}
		if host == "" {
			if missing := missingRoots(roots); missing != "" {
				fmt.Fprintf(f.Out, "host %s: not checked: not all its storage is on this machine (%s); give --host %s to check it here\n", hosts[i].Name, missing, hosts[i].Name)
				continue
			}
		}
		checked++
		if err := storagecheck.Check(roots); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(f.Out, "host %s: storage ok (%s)\n", hosts[i].Name, describeRoots(roots))
	}
	if checked == 0 {
		errs = append(errs, errors.New("--online checked no host: no host has all its storage on this machine; give --host NAME to check one"))
	}
	return errors.Join(errs...)
}

// missingRoots names the roots that do not exist here ("" when all do).
func missingRoots(roots []storagecheck.Root) string {
	var missing []string
	for _, r := range roots {
		if _, err := os.Lstat(r.Path); err != nil {
			missing = append(missing, fmt.Sprintf("%s at %s: %v", r.Storage, r.Path, errors.Unwrap(err)))
		}
	}
	return strings.Join(missing, "; ")
}

func describeRoots(roots []storagecheck.Root) string {
	s := make([]string, len(roots))
	for i, r := range roots {
		s[i] = r.Storage + " at " + r.Path
	}
	return strings.Join(s, ", ")
}
