package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Repository password files default to secrets_dir on the host, never beside the
// repository; secrets_dir defaults to "secrets" beside the config file.
func TestSecretsDirAndPasswordFile(t *testing.T) {
	require.Equal(t, "array-b-replctl-repository.password", PasswordFileName("array-b", ".replctl/repository"))
	require.Equal(t, "vault-backups-orders.password", PasswordFileName("vault", "backups/orders"))

	c := mustParse(t, "secrets_dir: /etc/replctl/private\n"+minimal)
	require.Equal(t, "/etc/replctl/private", c.SecretsDir)
	require.Equal(t, "/etc/replctl/private/dst-replctl-repository.password", c.Jobs[0].Repository.PasswordFile)

	// Relative secrets_dir and password_file resolve against the config's directory.
	c = mustParse(t, "secrets_dir: keys\n"+minimal+"    repository: {path: r/x, password_file: own.pw}\n")
	dir := filepath.Dir(c.File)
	require.Equal(t, filepath.Join(dir, "keys"), c.SecretsDir)
	require.Equal(t, filepath.Join(dir, "own.pw"), c.Jobs[0].Repository.PasswordFile)

	for text, want := range map[string]string{
		minimal + "    repository: {password_file: /mnt/dst/.replctl/repository.password}\n": "jobs[0].repository.password_file: /mnt/dst/.replctl/repository.password is on storage dst (mounted at /mnt/dst on host h1), where the repository is",
		minimal + "    repository: {password_file: \"\"}\n":                                  "jobs[0].repository.password_file: must not be empty",
		"secrets_dir: \"\"\n" + minimal:                                                      "secrets_dir: required: a path",
		"temporal: {plaintext: true, tls: {}}\n" + minimal:                                   "temporal.plaintext: plaintext: true and a tls section contradict each other",
		"temporal: {codec_key_file: \"\"}\n" + minimal:                                       "temporal.codec_key_file: must not be empty",
	} {
		_, err := parse(t, text)
		require.ErrorContains(t, err, want, text)
	}
	// A password file on another storage than the repository's is accepted.
	c = mustParse(t, minimal+"    repository: {password_file: /mnt/src/pw}\n")
	require.Equal(t, "/mnt/src/pw", c.Jobs[0].Repository.PasswordFile)
}

// config validate checks the secret files present on this host, each once, and skips the
// ones that are not here.
func TestCheckSecretFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte("x\n"), 0o600))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	key := write("id_ed25519", 0o600)
	api := write("api-key", 0o644)
	pw := write("pw", 0o640)
	text := "temporal: {api_key_file: " + api + ", codec_key_file: " + filepath.Join(dir, "not-here") + "}\n" +
		strings.Replace(minimal, "    attach: {src: /mnt/src, dst: /mnt/dst}\n",
			"    attach: {src: /mnt/src, dst: /mnt/dst}\n    connect: {ssh: {address: h1, user: root, key: "+key+", known_hosts: "+filepath.Join(dir, "kh")+"}}\n", 1) +
		"    repository: {password_file: " + pw + "}\n"
	c := mustParse(t, text)
	require.Len(t, c.SecretFiles(), 4, "api key, codec key, ssh key, password; known_hosts is public")

	err := c.CheckSecretFiles()
	var list ErrorList
	require.True(t, errors.As(err, &list))
	require.Len(t, list, 2, "%v", err)
	require.ErrorContains(t, err, "temporal.api_key_file: Temporal API key file "+api+" has mode 0644")
	require.ErrorContains(t, err, "jobs[0].repository.password_file: repository password file "+pw+" has mode 0640")
	require.ErrorContains(t, err, "chmod 600 "+pw)

	require.NoError(t, os.Chmod(api, 0o600))
	require.NoError(t, os.Chmod(pw, 0o400))
	require.NoError(t, c.CheckSecretFiles())
}
