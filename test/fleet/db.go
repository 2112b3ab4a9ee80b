package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver for --pg-dsn
)

// dbSample is the database at one moment: its size and write counters.
type dbSample struct {
	size    int64 // bytes (PostgreSQL: every non-template database; SQLite: file + WAL)
	commits int64 // PostgreSQL xact_commit (0 for SQLite)
	inserts int64 // tup_inserted
	updates int64 // tup_updated
	deletes int64 // tup_deleted
}

// dbProbe reads the server's database: PostgreSQL through a DSN, or the SQLite file of the
// server this simulator started.
type dbProbe struct {
	pg     *sql.DB
	sqlite string
}

func openProbe(dsn, sqlite string) (*dbProbe, error) {
	p := &dbProbe{sqlite: sqlite}
	if dsn == "" {
		return p, nil
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("--pg-dsn: %w", err)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("--pg-dsn: %w", err)
	}
	p.pg = db
	return p, nil
}

// kind names what the probe reads, for the report.
func (p *dbProbe) kind() string {
	switch {
	case p.pg != nil:
		return "PostgreSQL (pg_database_size, pg_stat_database over every non-template database)"
	case p.sqlite != "":
		return "SQLite file " + p.sqlite + " (+ -wal)"
	}
	return ""
}

func (p *dbProbe) sample(ctx context.Context) (dbSample, error) {
	var s dbSample
	if p.pg != nil {
		err := p.pg.QueryRowContext(ctx, `SELECT COALESCE(SUM(pg_database_size(d.datname)),0), COALESCE(SUM(s.xact_commit),0),
			COALESCE(SUM(s.tup_inserted),0), COALESCE(SUM(s.tup_updated),0), COALESCE(SUM(s.tup_deleted),0)
			FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid WHERE NOT d.datistemplate`).
			Scan(&s.size, &s.commits, &s.inserts, &s.updates, &s.deletes)
		return s, err
	}
	for _, f := range []string{p.sqlite, p.sqlite + "-wal"} {
		if st, err := os.Stat(f); err == nil {
			s.size += st.Size()
		}
	}
	return s, nil
}

func (p *dbProbe) close() {
	if p.pg != nil {
		p.pg.Close()
	}
}
