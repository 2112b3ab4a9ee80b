package testworld

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Postgres is a PostgreSQL server of Debian's packages (postgresql-15 or later) started
// for a test in a directory of its own, listening on 127.0.0.1 only, with trust
// authentication for its one user "temporal".
type Postgres struct {
	Port int
	dir  string
	bin  string
}

// PostgresBin is the directory of Debian's newest PostgreSQL server programs, or "" when
// none is installed (`make test-deps` installs postgresql).
func PostgresBin() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestVersion := "", 0
	for _, d := range dirs {
		v, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if err == nil && v > bestVersion {
			if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
				best, bestVersion = d, v
			}
		}
	}
	return best
}

// StartPostgres creates a database cluster in a new directory and starts its server on a
// free port; Stop stops it and removes the directory. PostgreSQL refuses to run as root:
// as root, the cluster belongs to and runs as the package's user "postgres" (so the
// directory is not under a test's TempDir, which that user may not enter).
func StartPostgres() (*Postgres, error) {
	bin := PostgresBin()
	if bin == "" {
		return nil, errors.New("PostgreSQL is not installed (apt-get install postgresql; make test-deps does)")
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "replctl-postgres-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{Port: port, dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, PostgreSQL needs the user postgres: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	if out, err := p.run("initdb", "-D", p.data(), "-A", "trust", "-U", "temporal", "--no-sync"); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	return p, p.Start()
}

func (p *Postgres) data() string { return filepath.Join(p.dir, "data") }

// run runs a PostgreSQL program as the cluster's owner.
func (p *Postgres) run(prog string, args ...string) (string, error) {
	path := filepath.Join(p.bin, prog)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Start starts the server and waits until it accepts connections. fsync is off: a test's
// database need not survive a power cut, and it saves the disk for the data plane.
func (p *Postgres) Start() error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300", p.Port, p.dir)
	if out, err := p.run("pg_ctl", "-D", p.data(), "-o", opts, "-l", filepath.Join(p.dir, "server.log"), "-w", "-t", "60", "start"); err != nil {
		return fmt.Errorf("pg_ctl start: %w: %s", err, out)
	}
	return nil
}

// Restart stops the server (fast: open connections are cut, as a database crash or
// failover would) and starts it again.
func (p *Postgres) Restart() error {
	if err := p.Halt(); err != nil {
		return err
	}
	return p.Start()
}

// Halt stops the server (fast) and keeps its directory, for a later Start.
func (p *Postgres) Halt() error {
	if out, err := p.run("pg_ctl", "-D", p.data(), "-m", "fast", "-w", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop: %w: %s", err, out)
	}
	return nil
}

// Stop stops the server and removes its directory.
func (p *Postgres) Stop() error {
	out, err := p.run("pg_ctl", "-D", p.data(), "-m", "immediate", "-w", "stop")
	if err != nil {
		err = fmt.Errorf("pg_ctl stop: %w: %s", err, out)
	}
	return errors.Join(err, os.RemoveAll(p.dir))
}

// URL is the connection URL of database name as the user temporal.
func (p *Postgres) URL(name string) string {
	return fmt.Sprintf("postgres://temporal@127.0.0.1:%d/%s?sslmode=disable", p.Port, name)
}

// Log is the server's log, for a failed test.
func (p *Postgres) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "server.log"))
	return string(b)
}

// StartPostgresFor starts a PostgreSQL for test t and stops it when t ends, logging the
// server's log when t failed. Without Debian's PostgreSQL it skips t, or fails it under CI
// (env CI set), where `make test-deps` installs it.
func StartPostgresFor(t testing.TB) *Postgres {
	t.Helper()
	if PostgresBin() == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("PostgreSQL is not installed: make test-deps installs it")
		}
		t.Skip("PostgreSQL is not installed (apt-get install postgresql)")
	}
	pg, err := StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postgres log:\n%s", Tail(pg.Log(), 3000))
		}
		_ = pg.Stop()
	})
	return pg
}
