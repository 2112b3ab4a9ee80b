// Package sshtest starts a real OpenSSH sshd on 127.0.0.1 for tests.
//
// Each Server has its own temporary directory with generated ed25519 and
// ECDSA host keys (known_hosts trusts only the ed25519 one, like a client
// that learned one of a real server's keys) and a generated ed25519 user key
// authorized for the current user. sshd runs in the foreground (-D -e) as
// the current user (root allowed, key-only) and is stopped by t.Cleanup.
//
// If sshd or ssh-keygen is not installed the test is skipped, unless the
// environment variable CI is "true": then it fails, so CI cannot silently
// skip SSH coverage. On Debian: apt-get install -y openssh-server.
package sshtest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/replctl/replctl/internal/testworld"
)

// startTimeout bounds how long we wait for sshd to report it is listening.
const startTimeout = 10 * time.Second

// Server is a running sshd.
type Server struct {
	// Addr is "127.0.0.1:PORT".
	Addr string
	// User is the login name of the current user, which sshd accepts.
	User string
	// KeyFile is the unencrypted private key (OpenSSH format) of User.
	KeyFile string
	// KnownHostsFile holds the line "[127.0.0.1]:PORT <host key>".
	KnownHostsFile string
	// HostKeyLine is the host's public key in authorized_keys format.
	HostKeyLine string
	// Dir is the server's temporary directory (config, keys, pid file).
	Dir string

	cmd      *exec.Cmd
	log      *syncBuffer
	stopOnce sync.Once
	exited   chan struct{}
}

// Start starts sshd and registers Stop with t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	sshd := findTool(t, "sshd", "/usr/sbin/sshd")
	keygen := findTool(t, "ssh-keygen", "/usr/bin/ssh-keygen")

	u, err := user.Current()
	if err != nil {
		t.Fatalf("sshtest: current user: %v", err)
	}
	dir := t.TempDir()
	hostKey := filepath.Join(dir, "host_ed25519")
	hostPub := GenerateKey(t, keygen, hostKey)
	// A second host key, as real servers have: a client must pick the
	// algorithm of the key it knows (ed25519), not sshd's first offer.
	ecdsaKey := filepath.Join(dir, "host_ecdsa")
	genKey(t, keygen, "ecdsa", ecdsaKey)
	userKey := filepath.Join(dir, "user_ed25519")
	userPub := GenerateKey(t, keygen, userKey)
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, []byte(userPub+"\n"), 0o600); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	if os.Geteuid() == 0 {
		// sshd running as root insists on its privilege separation
		// directory, normally created by the init system.
		_ = os.MkdirAll("/run/sshd", 0o755)
	}

	s := &Server{User: u.Username, KeyFile: userKey, HostKeyLine: hostPub, Dir: dir}
	// The port is picked by binding :0 and releasing it, so another process
	// can take it in between: retry a few times.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := testworld.FreePort()
		if err != nil {
			t.Fatalf("sshtest: picking a port: %v", err)
		}
		cfg := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(cfg, []byte(config(sshd, port, dir, []string{ecdsaKey, hostKey}, authorized)), 0o600); err != nil {
			t.Fatalf("sshtest: %v", err)
		}
		if lastErr = s.launch(sshd, cfg, port); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("sshtest: starting sshd: %v", lastErr)
	}

	s.KnownHostsFile = filepath.Join(dir, "known_hosts")
	line := fmt.Sprintf("[127.0.0.1]:%s %s\n", portOf(s.Addr), hostPub)
	if err := os.WriteFile(s.KnownHostsFile, []byte(line), 0o600); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("sshtest: sshd log:\n%s", s.Log())
		}
	})
	return s
}

// launch runs sshd on port and waits until it reports it is listening.
func (s *Server) launch(sshd, cfg string, port int) error {
	s.log = &syncBuffer{}
	cmd := exec.Command(sshd, "-D", "-e", "-f", cfg)
	// A plain pipe rather than StderrPipe: sshd's per-connection children
	// inherit stderr, and Wait must not depend on them closing it.
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		return err
	}
	listening := make(chan struct{})
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			_, _ = s.log.Write([]byte(line + "\n"))
			if !signalled && strings.Contains(line, "Server listening on 127.0.0.1 port "+strconv.Itoa(port)) {
				signalled = true
				close(listening)
			}
		}
	}()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	// logTail gives the log after sshd died, once its last lines are read.
	logTail := func() string {
		select {
		case <-logDone:
		case <-time.After(time.Second):
		}
		return s.log.String()
	}

	select {
	case <-listening:
		s.cmd, s.exited = cmd, exited
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		return nil
	case <-exited:
		return fmt.Errorf("sshd exited early: %s", logTail())
	case <-time.After(startTimeout):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("sshd did not listen within %s: %s", startTimeout, logTail())
	}
}

// Stop terminates sshd; connections already open end with their clients.
// It is safe to call more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.cmd == nil {
			return
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	})
}

// Pid is the process id of the listening sshd; connections are handled by
// its child processes.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Log returns what sshd logged so far.
func (s *Server) Log() string { return s.log.String() }

// GenerateKey creates an unencrypted ed25519 key pair at path (and
// path+".pub") with ssh-keygen and returns the public key line.
// keygen is the ssh-keygen binary; "" finds it in PATH.
func GenerateKey(t testing.TB, keygen, path string) string {
	t.Helper()
	return genKey(t, keygen, "ed25519", path)
}

// genKey runs ssh-keygen for a key of type typ.
func genKey(t testing.TB, keygen, typ, path string) string {
	t.Helper()
	if keygen == "" {
		keygen = findTool(t, "ssh-keygen", "/usr/bin/ssh-keygen")
	}
	out, err := exec.Command(keygen, "-q", "-t", typ, "-N", "", "-C", "sshtest", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("sshtest: ssh-keygen %s: %v: %s", path, err, out)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	return strings.TrimSpace(string(pub))
}

// config renders a minimal sshd_config: key-only login for the current user
// (root included), no PAM, files in dir, and an sftp subsystem for tests of
// sftp-based storage.
func config(sshd string, port int, dir string, hostKeys []string, authorized string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Port %d\nListenAddress 127.0.0.1\n", port)
	for _, k := range hostKeys {
		fmt.Fprintf(&b, "HostKey %s\n", k)
	}
	fmt.Fprintf(&b, "PidFile %s\nAuthorizedKeysFile %s\n", filepath.Join(dir, "sshd.pid"), authorized)
	b.WriteString(`StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PrintMotd no
UseDNS no
LogLevel INFO
Subsystem sftp internal-sftp
`)
	// OpenSSH 9.8 added per-source penalties, which would lock 127.0.0.1
	// out after the failed logins that tests provoke on purpose.
	if major, minor, ok := version(sshd); ok && (major > 9 || major == 9 && minor >= 8) {
		b.WriteString("PerSourcePenalties no\n")
	}
	return b.String()
}

var versionRE = regexp.MustCompile(`OpenSSH_(\d+)\.(\d+)`)

// version asks sshd for its version (`sshd -V` prints it on stderr).
func version(sshd string) (major, minor int, ok bool) {
	out, _ := exec.Command(sshd, "-V").CombinedOutput()
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return 0, 0, false
	}
	major, _ = strconv.Atoi(string(m[1]))
	minor, _ = strconv.Atoi(string(m[2]))
	return major, minor, true
}

// findTool locates a binary or skips/fails the test as the package doc says.
func findTool(t testing.TB, name, usual string) string {
	t.Helper()
	if _, err := os.Stat(usual); err == nil {
		return usual
	}
	if p, err := exec.LookPath(name); err == nil {
		// sshd must be run by absolute path to re-exec itself.
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
		return p
	}
	msg := fmt.Sprintf("sshtest: %s not found (install openssh-server)", name)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
