package config

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/replctl/replctl/internal/secret"
)

// SecretFile is a file of the config that holds a secret, with the field naming it.
type SecretFile struct {
	Path string // field path, e.g. hosts[1].connect.ssh.key
	What string // what the file holds, for messages
	File string // the resolved file name
}

// SecretFiles lists every secret file the config names: TLS client key, API key, codec
// key, SSH private keys and repository password files. Certificates and known_hosts files
// are public and not listed.
func (c *Config) SecretFiles() []SecretFile {
	var out []SecretFile
	add := func(path, what, file string) {
		if file != "" {
			out = append(out, SecretFile{Path: path, What: what, File: file})
		}
	}
	if c.Temporal.TLS != nil {
		add("temporal.tls.key", "TLS client key", c.Temporal.TLS.Key)
	}
	add("temporal.api_key_file", "Temporal API key file", c.Temporal.APIKeyFile)
	add("temporal.codec_key_file", "payload codec key file", c.Temporal.CodecKeyFile)
	for i, h := range c.Hosts {
		if h.Connect.SSH != nil {
			add(fmt.Sprintf("hosts[%d].connect.ssh.key", i), "SSH private key", h.Connect.SSH.Key)
		}
	}
	for i, j := range c.Jobs {
		add(fmt.Sprintf("jobs[%d].repository.password_file", i), "repository password file", j.Repository.PasswordFile)
	}
	return out
}

// CheckSecretFiles checks the mode and type of every secret file of the config that
// exists on this host (secret.Check): group or others must have no access. Files that
// are not here (they live on other hosts, or an agent creates them) are skipped; each
// file is reported once, at its first field.
func (c *Config) CheckSecretFiles() error {
	var errs ErrorList
	seen := map[string]bool{}
	for _, s := range c.SecretFiles() {
		if seen[s.File] {
			continue
		}
		seen[s.File] = true
		err := secret.Check(s.File, s.What)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			continue
		}
		errs = append(errs, &Error{File: c.File, Path: s.Path, Msg: err.Error()})
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}
