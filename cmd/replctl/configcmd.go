package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/replctl/replctl/config"
)

// NewCmdConfig is `replctl config` and its subcommands.
func NewCmdConfig(f *Factory) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with replctl config files"}
	cmd.AddCommand(NewCmdConfigValidate(f, nil))
	return cmd
}

// NewCmdConfigValidate is `replctl config validate [FILE]`.
func NewCmdConfigValidate(f *Factory, runF func(file string) error) *cobra.Command {
	return &cobra.Command{
		Use:   "validate [FILE]",
		Short: "Check a config file strictly; every error names the file, line and field",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageError("config validate wants at most one file (got %d)", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			file := f.ConfigFile
			if len(args) == 1 {
				file = args[0]
			}
			if runF != nil {
				return runF(file)
			}
			if err := f.ensureStateEnv(); err != nil {
				return err
			}
			cfg, err := config.Load(file)
			if err != nil {
				return &ExitError{Code: ExitUsage, Err: err}
			}
			// Secret files present on this host must be private; the others are checked
			// where they are used.
			if err := cfg.CheckSecretFiles(); err != nil {
				return &ExitError{Code: ExitUsage, Err: err}
			}
			fmt.Fprintf(f.Out, "%s: ok (%d storage systems, %d hosts, %d jobs)\n", cfg.File, len(cfg.Storage), len(cfg.Hosts), len(cfg.Jobs))
			return nil
		},
	}
}
