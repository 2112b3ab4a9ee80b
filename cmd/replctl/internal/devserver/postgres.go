package devserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/log/tag"
	"go.temporal.io/server/common/persistence/sql/sqlplugin/postgresql"
	pgschema "go.temporal.io/server/schema/postgresql/v12"
	"go.temporal.io/server/tools/common/schema"
	sqltool "go.temporal.io/server/tools/sql"
)

// Postgres is a server's PostgreSQL database (Options.Postgres): Temporal's tables in
// Database, its visibility (the runs listed by `replctl list` and the Web UI) in
// Database + "_visibility".
type Postgres struct {
	// URL is postgres://user[:password]@host[:port]/database[?param=value...]; the
	// parameters (sslmode, ...) go to the driver as they are.
	URL string
	// Password, when set, is used instead of one in URL (read from a file by the CLI, so
	// that it is not in the process list).
	Password string
	// SetupSchema creates the databases when missing, sets up the schema of a new one and
	// brings an older one up to the version of this server. A cluster's processes share
	// one database: one of them (the frontend's) sets up, the others wait for the version.
	SetupSchema bool
}

// visibilitySuffix names the visibility database after the main one.
const visibilitySuffix = "_visibility"

// schemaWait bounds how long a process that does not set up the schema waits for the one
// that does.
const schemaWait = 2 * time.Minute

// postgresStores returns the SQL configs of the main and the visibility database for p.
// Every error names what is wrong with the URL.
func postgresStores(p Postgres) (main, visibility *config.SQL, err error) {
	u, err := url.Parse(p.URL)
	if err != nil {
		return nil, nil, fmt.Errorf("database URL: %w", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return nil, nil, fmt.Errorf("database URL %s: scheme %q, want postgres://", u.Redacted(), u.Scheme)
	}
	db := strings.TrimPrefix(u.Path, "/")
	if db == "" || strings.Contains(db, "/") {
		return nil, nil, fmt.Errorf("database URL %s: want one database name as its path (postgres://user@host/temporal)", u.Redacted())
	}
	if u.User == nil || u.User.Username() == "" {
		return nil, nil, fmt.Errorf("database URL %s: no user (postgres://user@host/%s)", u.Redacted(), db)
	}
	host := u.Host
	if host == "" {
		return nil, nil, fmt.Errorf("database URL %s: no host", u.Redacted())
	}
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(strings.Trim(host, "[]"), "5432")
	}
	password, _ := u.User.Password()
	if p.Password != "" {
		password = p.Password
	}
	attrs := map[string]string{}
	for k, v := range u.Query() {
		attrs[k] = v[len(v)-1]
	}
	store := func(name string) *config.SQL {
		a := make(map[string]string, len(attrs))
		for k, v := range attrs {
			a[k] = v
		}
		return &config.SQL{
			PluginName:      postgresql.PluginNamePGX,
			DatabaseName:    name,
			ConnectAddr:     host,
			ConnectProtocol: "tcp",
			User:            u.User.Username(),
			Password:        password,
			// A service holds up to MaxConns per store; four services in one process share
			// the database server's max_connections (100 by default).
			MaxConns:          20,
			MaxIdleConns:      20,
			MaxConnLifetime:   time.Hour,
			ConnectAttributes: a,
		}
	}
	return store(db), store(db + visibilitySuffix), nil
}

// preparePostgres creates the databases and schemas (p.SetupSchema) or waits until
// another process has (schemaWait).
func preparePostgres(p Postgres, logger log.Logger) (main, visibility *config.SQL, err error) {
	main, visibility, err = postgresStores(p)
	if err != nil {
		return nil, nil, err
	}
	if p.SetupSchema {
		if err := waitDatabaseServer(p, schemaWait, logger); err != nil {
			return nil, nil, fmt.Errorf("PostgreSQL: %w", err)
		}
	}
	for _, s := range []struct {
		conf    *config.SQL
		name    string // schema name in Temporal's embedded schema files
		version string
	}{
		{main, "postgresql/v12/temporal", pgschema.Version},
		{visibility, "postgresql/v12/visibility", pgschema.VisibilityVersion},
	} {
		if p.SetupSchema {
			err = setupSchema(s.conf, s.name, s.version, logger)
		} else {
			err = waitSchema(s.conf, s.version)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("PostgreSQL database %s on %s: %w", s.conf.DatabaseName, s.conf.ConnectAddr, err)
		}
	}
	return main, visibility, nil
}

// setupSchema creates the database conf names when it is missing, sets up a new one at
// version and applies the updates an older one lacks (Temporal's own versioned files).
func setupSchema(conf *config.SQL, name, version string, logger log.Logger) error {
	if err := createDatabase(conf, logger); err != nil {
		return err
	}
	conn, err := sqltool.NewConnection(conf, logger)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	current, err := conn.ReadSchemaVersion()
	if err != nil || current == "" {
		// A new database: no schema_version table (or no row) yet.
		if err := schema.NewSetupSchemaTask(conn, &schema.SetupConfig{SchemaName: name, InitialVersion: version}, logger).Run(); err != nil {
			return fmt.Errorf("set up schema %s: %w", name, err)
		}
		return nil
	}
	if err := schema.NewUpdateSchemaTask(conn, &schema.UpdateConfig{DBName: conf.DatabaseName, SchemaName: name}, logger).Run(); err != nil {
		return fmt.Errorf("update schema %s from version %s: %w", name, current, err)
	}
	return nil
}

// waitDatabaseServer waits, for up to wait, until the database server of p accepts a
// connection to its maintenance database "postgres". A server started beside its database
// (compose, systemd) comes up first; refused, unresolved and starting-up connections are
// waited out, any other error (authentication, pg_hba, TLS) ends the wait. pgconn, not
// Temporal's SQL handle, so that the cause is told: the handle says "no usable database
// connection" for all of them.
func waitDatabaseServer(p Postgres, wait time.Duration, logger log.Logger) error {
	u, err := url.Parse(p.URL)
	if err != nil {
		return fmt.Errorf("database URL: %w", err)
	}
	u.Path = "/postgres"
	if p.Password != "" {
		u.User = url.UserPassword(u.User.Username(), p.Password)
	}
	cfg, err := pgconn.ParseConfig(u.String())
	if err != nil {
		return fmt.Errorf("database URL %s: %w", u.Redacted(), err)
	}
	began := time.Now()
	var said time.Time
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgconn.ConnectConfig(ctx, cfg)
		if err == nil {
			_ = conn.Close(ctx)
		}
		cancel()
		if err == nil {
			if !said.IsZero() {
				logger.Info("PostgreSQL answered", tag.NewStringTag("address", u.Host), tag.NewDurationTag("waited", time.Since(began)))
			}
			return nil
		}
		if !databaseComingUp(err) {
			return fmt.Errorf("connect to %s: %w", u.Redacted(), err)
		}
		if time.Since(began) >= wait {
			return fmt.Errorf("no database server answered at %s in %s: %w", u.Host, wait, err)
		}
		if said.IsZero() || time.Since(said) >= 10*time.Second {
			logger.Info("waiting for PostgreSQL", tag.NewStringTag("address", u.Host), tag.Error(err))
			said = time.Now()
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// databaseComingUp tells the errors of a database server that is not up yet: nothing
// listening or a name not in DNS yet (a container starting), a connection that timed out,
// or PostgreSQL still starting (SQLSTATE 57P03, cannot_connect_now).
func databaseComingUp(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "57P03"
	}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	return errors.As(err, &opErr) || errors.As(err, &dnsErr) || errors.Is(err, context.DeadlineExceeded)
}

// createDatabase creates conf's database through the maintenance database "postgres",
// unless it exists.
func createDatabase(conf *config.SQL, logger log.Logger) error {
	admin := *conf
	admin.DatabaseName = "postgres"
	conn, err := sqltool.NewConnection(&admin, logger)
	if err != nil {
		return fmt.Errorf("connect to the maintenance database postgres: %w", err)
	}
	defer conn.Close()
	err = conn.CreateDatabase(conf.DatabaseName)
	if err == nil || strings.Contains(err.Error(), "already exists") || strings.Contains(err.Error(), "42P04") {
		return nil
	}
	if strings.Contains(err.Error(), "permission denied") || strings.Contains(err.Error(), "42501") {
		return fmt.Errorf("does not exist, and user %s may not create it: create it first (createdb -O %s %s): %w",
			conf.User, conf.User, conf.DatabaseName, err)
	}
	return fmt.Errorf("create: %w", err)
}

// waitSchema waits until the schema is at version or later.
func waitSchema(conf *config.SQL, version string) error {
	deadline := time.Now().Add(schemaWait)
	var last error
	for time.Now().Before(deadline) {
		last = func() error {
			// Quiet: a database that does not exist yet is what this loop waits out.
			conn, err := sqltool.NewConnection(conf, log.NewNoopLogger())
			if err != nil {
				return err
			}
			defer conn.Close()
			current, err := conn.ReadSchemaVersion()
			if err != nil {
				return err
			}
			if schemaBefore(current, version) {
				return fmt.Errorf("schema version %s, want %s", current, version)
			}
			return nil
		}()
		if last == nil {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("no schema at version %s after %s (the process that sets it up is the one without --db-setup=false): %w",
		version, schemaWait, last)
}

// schemaBefore tells whether dotted version a is older than b.
func schemaBefore(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) || i < len(pb); i++ {
		var x, y int
		if i < len(pa) {
			fmt.Sscan(pa[i], &x)
		}
		if i < len(pb) {
			fmt.Sscan(pb[i], &y)
		}
		if x != y {
			return x < y
		}
	}
	return false
}
