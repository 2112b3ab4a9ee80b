package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	_ "time/tzdata" // time_zone must load on hosts without tzdata (scratch containers)
)

// NamePattern is the pattern of storage, host and job names: they become parts
// of Temporal task queues, workflow IDs and file names, so they stay plain.
const NamePattern = `^[a-z0-9][a-z0-9_-]{0,62}$`

// Reserved job names. A job's runs have workflow ID "replctl-<job>", and replctl's other
// workflows have IDs "replctl-<kind>..." in the same space (workflows/ids.go). A job named
// "test-failover-orders-x" would share its ID with test failover "x" of job "orders", so one
// would refuse to start while the other runs. "schedule-" is reserved too, so that no job's
// run ID reads as another job's schedule ID. The other kinds (verify., images., restore.)
// contain ".", which no name has. workflows' tests check this list against every ID kind.
var reservedJobPrefixes = []struct{ prefix, kind string }{
	{"maintenance-", "repository maintenance"},
	{"schedule-", "job schedule"},
	{"test-failover-", "test failover"},
}

// ReservedJobPrefix is the reserved prefix a job name begins with and the kind of ID it is
// reserved for; prefix is "" when name is free to use.
func ReservedJobPrefix(name string) (prefix, kind string) {
	for _, r := range reservedJobPrefixes {
		if strings.HasPrefix(name, r.prefix) {
			return r.prefix, r.kind
		}
	}
	return "", ""
}

// ReservedTaskQueuePrefix begins each host's own activity queue ("replctl-host-<host>",
// workflows.HostQueue); the shared queue (temporal.task_queue) must not, or every agent's
// workflow worker would poll that host's activities. workflows' tests check it against
// HostQueue (config is below every package that builds IDs, so it holds this as data).
const ReservedTaskQueuePrefix = "replctl-host-"

var (
	nameRE    = regexp.MustCompile(NamePattern)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	cronRE    = regexp.MustCompile(`^[0-9A-Za-z*?/,-]+$`)
)

// Validate does for a Config built in Go what Parse does after decoding: it
// fills defaults (for zero values), expands ${NAME} in path fields, resolves
// relative paths against the directory of c.File (the working directory when
// c.File is empty) and checks every rule. Call it once: expansion is not
// idempotent for values that contain "${" after expansion.
func (c *Config) Validate() error {
	src := &source{file: c.File, lines: map[string]int{}, set: map[string]bool{}, byLine: map[int]string{}}
	if errs := check(c, src); len(errs) > 0 {
		return errs
	}
	return nil
}

// checker fills defaults, resolves paths and validates one Config, collecting
// every problem with its field path.
type checker struct {
	c    *Config
	src  *source
	dir  string // base of relative paths
	errs ErrorList
	// hostIdx and storageIdx map names to their first index.
	hostIdx    map[string]int
	storageIdx map[string]int
}

func check(c *Config, src *source) ErrorList {
	k := &checker{c: c, src: src, hostIdx: map[string]int{}, storageIdx: map[string]int{}}
	if c.File != "" {
		k.dir = filepath.Dir(c.File)
	} else if wd, err := os.Getwd(); err == nil {
		k.dir = wd
	}
	k.temporal()
	k.secretsDir()
	k.storage()
	k.hosts()
	k.jobs()
	return k.errs.sorted()
}

func (k *checker) errorf(p, format string, args ...any) {
	k.errs = append(k.errs, k.src.errAt(k.line(p), p, fmt.Sprintf(format, args...)))
}

// line finds the line of p or, for a field that was not written, of its
// nearest written ancestor.
func (k *checker) line(p string) int {
	for {
		if l, ok := k.src.lines[p]; ok {
			return l
		}
		if p == "" {
			return 0
		}
		p = parentPath(p)
	}
}

// given reports whether the field at p was written (YAML) or is non-zero (Go).
func (k *checker) given(p string, zero bool) bool {
	if k.src.yaml {
		return k.src.set[p]
	}
	return !zero
}

// resolve expands ${NAME} in a path field and makes it absolute and clean.
func (k *checker) resolve(p, value string, required bool) string {
	v, err := expandEnv(value)
	if err != nil {
		k.errorf(p, "%v", err)
		return value
	}
	switch {
	case v == "":
		if required {
			k.errorf(p, "required: a path")
		}
		return ""
	case strings.HasPrefix(v, "~"):
		k.errorf(p, "path %q: ~ is not expanded; use ${HOME} or an absolute path", v)
		return v
	case strings.ContainsRune(v, 0):
		k.errorf(p, "path %q contains a NUL byte", v)
		return v
	}
	if !filepath.IsAbs(v) {
		v = filepath.Join(k.dir, v)
	}
	return filepath.Clean(v)
}

// expandEnv replaces each ${NAME} with the environment variable NAME; an unset
// or empty variable is an error, so a path never silently becomes "/storage".
func expandEnv(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); {
		if !strings.HasPrefix(s[i:], "${") {
			b.WriteByte(s[i])
			i++
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", fmt.Errorf("%q: unterminated ${ (write ${NAME})", s)
		}
		name := s[i+2 : i+2+end]
		if !envNameRE.MatchString(name) {
			return "", fmt.Errorf("%q: ${%s} is not a valid environment variable reference", s, name)
		}
		val, ok := os.LookupEnv(name)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set (used in %q)", name, s)
		}
		if val == "" {
			return "", fmt.Errorf("environment variable %s is empty (used in %q)", name, s)
		}
		b.WriteString(val)
		i += end + 3
	}
	return b.String(), nil
}

// name checks the name of item idx of listPath (a storage system, host or
// job) and that it is unique among seen (name -> first index).
func (k *checker) name(listPath string, idx int, kind, name string, seen map[string]int) {
	np := fmt.Sprintf("%s[%d].name", listPath, idx)
	switch {
	case name == "":
		k.errorf(np, "required: a %s name", kind)
		return
	case !nameRE.MatchString(name):
		k.errorf(np, "%s name %q is not valid: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit (%s)", kind, name, NamePattern)
	}
	if first, dup := seen[name]; dup {
		k.errorf(np, "%s %q is defined twice (first at %s[%d], line %d)", kind, name, listPath, first, k.line(fmt.Sprintf("%s[%d]", listPath, first)))
		return
	}
	seen[name] = idx
}

func (k *checker) temporal() {
	t := &k.c.Temporal
	const tp = "temporal"
	if !k.given(tp+".address", t.Address == "") {
		t.Address = DefaultTemporalAddress
	} else if err := checkHostPort(t.Address, false); err != nil {
		k.errorf(tp+".address", "%v", err)
	}
	if !k.given(tp+".namespace", t.Namespace == "") {
		t.Namespace = DefaultTemporalNamespace
	} else if strings.TrimSpace(t.Namespace) == "" {
		k.errorf(tp+".namespace", "must not be empty (default %q)", DefaultTemporalNamespace)
	}
	if !k.given(tp+".task_queue", t.TaskQueue == "") {
		t.TaskQueue = DefaultTaskQueue
	} else if strings.TrimSpace(t.TaskQueue) == "" {
		k.errorf(tp+".task_queue", "must not be empty (default %q)", DefaultTaskQueue)
	} else if strings.HasPrefix(t.TaskQueue, ReservedTaskQueuePrefix) {
		k.errorf(tp+".task_queue", "%q begins with %q, the prefix of each host's own activity queue: choose another name (default %q)", t.TaskQueue, ReservedTaskQueuePrefix, DefaultTaskQueue)
	}
	if tls := t.TLS; tls != nil {
		tls.CA = k.resolve(tp+".tls.ca", tls.CA, false)
		tls.Cert = k.resolve(tp+".tls.cert", tls.Cert, false)
		tls.Key = k.resolve(tp+".tls.key", tls.Key, false)
		switch {
		case tls.Cert != "" && tls.Key == "":
			k.errorf(tp+".tls.key", "required with tls.cert: the client certificate's private key")
		case tls.Key != "" && tls.Cert == "":
			k.errorf(tp+".tls.cert", "required with tls.key: the client certificate")
		}
	}
	t.APIKeyFile = k.resolve(tp+".api_key_file", t.APIKeyFile, false)
	if t.Plaintext && t.TLS != nil {
		k.errorf(tp+".plaintext", "plaintext: true and a tls section contradict each other: drop plaintext to use TLS, or the tls section for plain gRPC")
	}
	if t.CodecKeyFile == "" && k.given(tp+".codec_key_file", true) {
		k.errorf(tp+".codec_key_file", "must not be empty: the file holding the payload codec key, or leave the key out (no codec)")
	}
	t.CodecKeyFile = k.resolve(tp+".codec_key_file", t.CodecKeyFile, false)
}

// secretsDir resolves secrets_dir; default: "secrets" beside the config file, a place on
// the host itself, never on the repository storage.
func (k *checker) secretsDir() {
	if k.c.SecretsDir == "" && !k.given("secrets_dir", true) {
		k.c.SecretsDir = filepath.Join(k.dir, "secrets")
		return
	}
	k.c.SecretsDir = k.resolve("secrets_dir", k.c.SecretsDir, true)
}

// checkHostPort accepts host:port (or, unless ssh, a gRPC target with a scheme
// such as dns:///host:port).
func checkHostPort(addr string, ssh bool) error {
	if !ssh && strings.Contains(addr, "://") {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q is not host:port", addr)
	}
	if host == "" {
		return fmt.Errorf("address %q has no host", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("address %q: port %q is not a number from 1 to 65535", addr, port)
	}
	return nil
}

func (k *checker) storage() {
	for i := range k.c.Storage {
		s := &k.c.Storage[i]
		p := fmt.Sprintf("storage[%d]", i)
		k.name("storage", i, "storage", s.Name, k.storageIdx)
		s.Path = k.resolve(p+".path", s.Path, false)
	}
}

func (k *checker) hosts() {
	for i := range k.c.Hosts {
		h := &k.c.Hosts[i]
		p := fmt.Sprintf("hosts[%d]", i)
		k.name("hosts", i, "host", h.Name, k.hostIdx)

		storages := make([]string, 0, len(h.Attach))
		for s := range h.Attach {
			storages = append(storages, s)
		}
		sort.Strings(storages)
		mountOf := map[string]string{} // mount path -> storage, to catch two storages on one path
		for _, s := range storages {
			ap := p + ".attach." + s
			if _, ok := k.storageIdx[s]; !ok {
				k.errorf(ap, "storage %q is not defined (storage: %s)", s, listOrNone(k.c.storageNames()))
			}
			if h.Attach[s] == "" {
				k.errorf(ap, "required: the absolute path where storage %q is mounted on host %q", s, h.Name)
				continue
			}
			m := k.resolve(ap, h.Attach[s], true)
			h.Attach[s] = m
			if !filepath.IsAbs(m) {
				continue // resolve reported it
			}
			if other, dup := mountOf[m]; dup {
				k.errorf(ap, "mount path %s is also the mount path of storage %q on this host", m, other)
			}
			mountOf[m] = s
		}
		h.Scripts = k.resolve(p+".scripts", h.Scripts, false)
		h.State = k.resolve(p+".state", h.State, false)
		if h.Connect.SSH != nil {
			k.ssh(p+".connect.ssh", h.Connect.SSH)
		}
		if h.MaxConcurrentSteps < 0 || (h.MaxConcurrentSteps == 0 && k.given(p+".max_concurrent_steps", true)) {
			k.errorf(p+".max_concurrent_steps", "must be at least 1, got %d (remove the key for no limit)", h.MaxConcurrentSteps)
		}
		k.bandwidth(p+".bandwidth", h.Bandwidth)
	}
}

// bandwidth checks a bandwidth key (such as 100MiB/s).
func (k *checker) bandwidth(p, v string) {
	if v == "" && k.given(p, true) {
		k.errorf(p, "must be a rate such as 100MiB/s (remove the key for no limit)")
		return
	}
	if _, err := ParseBandwidth(v); err != nil {
		k.errorf(p, "%v", err)
	}
}

func (k *checker) ssh(p string, s *SSH) {
	switch {
	case s.Address == "":
		k.errorf(p+".address", "required: host or host:port (port default %s)", DefaultSSHPort)
	default:
		if _, _, err := net.SplitHostPort(s.Address); err != nil {
			// No port given: add the default. Brackets of a bare IPv6 literal go first.
			s.Address = net.JoinHostPort(strings.Trim(s.Address, "[]"), DefaultSSHPort)
		}
		if err := checkHostPort(s.Address, true); err != nil {
			k.errorf(p+".address", "%v", err)
		}
	}
	if s.User == "" {
		k.errorf(p+".user", "required: the login name on the host")
	}
	if s.Key == "" {
		k.errorf(p+".key", "required: the private key file for %s", s.Address)
	}
	s.Key = k.resolve(p+".key", s.Key, false)
	if s.KnownHosts == "" {
		k.errorf(p+".known_hosts", "required: a known_hosts file; the host key of %s is always checked", s.Address)
	}
	s.KnownHosts = k.resolve(p+".known_hosts", s.KnownHosts, false)
	if !k.given(p+".timeout", s.Timeout == 0) {
		s.Timeout = DefaultSSHTimeout
	} else if s.Timeout <= 0 {
		k.errorf(p+".timeout", "must be positive (default %s)", DefaultSSHTimeout)
	}
}
