package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/replctl/replctl/internal/testworld"
)

// world is what the coordinator runs: the server (unless -address), the worker processes,
// a client, the event collector.
type world struct {
	o       options
	dir     string
	address string
	server  *testworld.Proc
	sqlite  string
	// pg and cluster are the PostgreSQL cluster of -postgres.
	pg      *testworld.Postgres
	cluster *testworld.Cluster
	wf      []*testworld.Proc
	hosts   []*testworld.Proc
	victim  *testworld.Proc
	victims map[string]bool
	col     *collector
	c       client.Client
	sdkLog  *os.File
	watched []watched
	// beatsPS is the heartbeat rate of the last measured window.
	beatsPS float64
}

// newWorld starts everything. On error the caller still calls teardown.
func newWorld(ctx context.Context, o options, dir string) (*world, error) {
	w := &world{o: o, dir: dir, address: o.address, col: newCollector(), victims: map[string]bool{}}
	if o.postgres {
		if err := w.startCluster(ctx); err != nil {
			return w, err
		}
	} else if w.address == "" {
		bin, err := filepath.Abs(o.bin)
		if err != nil {
			return w, err
		}
		port, err := testworld.FreePort()
		if err != nil {
			return w, err
		}
		w.address = "127.0.0.1:" + strconv.Itoa(port)
		w.sqlite = filepath.Join(dir, "temporal.db")
		w.server = &testworld.Proc{Name: "server", Bin: bin, LogPath: filepath.Join(dir, "server.log"), Args: []string{
			"server", "--db", w.sqlite, "--port", strconv.Itoa(port), "--ui-port", "-1",
			"--server-namespace", "default", "--log-level", "warn", "--server-log-level", "error",
		}}
		if err := w.server.Start(); err != nil {
			return w, err
		}
		if err := w.server.WaitLog(ctx, "Temporal server on ", 90*time.Second); err != nil {
			return w, err
		}
		w.watched = append(w.watched, watched{name: "server (SQLite, all services)", pid: w.server.Pid(), server: true})
	} else {
		w.watched = append(w.watched, o.serverPIDs...)
		if o.serverMatch != nil {
			w.watched = append(w.watched, matchProcs(o.serverMatch)...)
		}
	}
	var err error
	if w.sdkLog, err = os.Create(filepath.Join(dir, "coordinator-sdk.log")); err != nil {
		return w, err
	}
	w.c, err = client.DialContext(ctx, client.Options{HostPort: w.address, Namespace: "default",
		Logger: sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(w.sdkLog, &slog.HandlerOptions{Level: slog.LevelWarn})))})
	if err != nil {
		return w, fmt.Errorf("connecting to %s: %w", w.address, err)
	}

	self, err := os.Executable()
	if err != nil {
		return w, err
	}
	common := append([]string{"agent", "-address", w.address, "-step-time", o.stepTime.String(), "-script-time", o.scriptTime.String(),
		"-pollers", strconv.Itoa(o.pollers), "-wf-pollers", strconv.Itoa(o.wfPollers)}, o.shape.args()...)
	newProc := func(name string, extra ...string) *testworld.Proc {
		return &testworld.Proc{Name: name, Bin: self, LogPath: filepath.Join(dir, name+".log"),
			Args: append(append([]string(nil), common...), extra...), Lines: func(l string) { w.col.line(name, l) }}
	}
	var all []*testworld.Proc
	for i := 0; i < o.wfProcs; i++ {
		p := newProc(fmt.Sprintf("workflows-%d", i), "-workflow")
		w.wf = append(w.wf, p)
		all = append(all, p)
	}
	vict := victimHosts(o.shape.hosts, o.victims)
	for i, part := range splitHosts(o.shape.hosts, vict, o.procs) {
		p := newProc(fmt.Sprintf("hosts-%d", i), "-run-hosts", formatHostList(part))
		w.hosts = append(w.hosts, p)
		all = append(all, p)
	}
	if len(vict) > 0 {
		w.victim = newProc("victims", "-run-hosts", formatHostList(vict))
		for _, h := range vict {
			w.victims[hostName(h)] = true
		}
		all = append(all, w.victim)
	}
	for _, p := range all {
		ready := w.col.readyChan(p.Name)
		if err := p.Start(); err != nil {
			return w, err
		}
		select {
		case <-ready:
		case <-time.After(5 * time.Minute):
			return w, fmt.Errorf("%s not ready after 5 minutes; see %s", p.Name, p.LogPath)
		case <-ctx.Done():
			return w, ctx.Err()
		}
		w.watched = append(w.watched, watched{name: p.Name, pid: p.Pid()})
	}
	return w, nil
}

// teardown stops everything; safe on a half-built world.
func (w *world) teardown() {
	for _, p := range append(append(append([]*testworld.Proc(nil), w.hosts...), w.wf...), w.victim) {
		if p != nil {
			p.Stop(10 * time.Second)
		}
	}
	if w.c != nil {
		w.c.Close()
	}
	if w.server != nil {
		w.server.Stop(15 * time.Second)
	}
	if w.cluster != nil {
		w.cluster.Stop()
	}
	if w.pg != nil {
		_ = w.pg.Stop()
	}
	if w.sdkLog != nil {
		w.sdkLog.Close()
	}
}

// measured waits d while metering the watched processes, the database and the heartbeats.
func (w *world) measured(ctx context.Context, db *dbProbe, d time.Duration) (use []usage, db0, db1 dbSample, err error) {
	m := newMeter(w.watched)
	beats := w.col.heartbeats()
	defer func() { w.beatsPS = float64(w.col.heartbeats()-beats) / d.Seconds() }()
	if db0, err = db.sample(ctx); err != nil {
		return nil, db0, db1, err
	}
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return nil, db0, db1, ctx.Err()
		case <-time.After(min(5*time.Second, time.Until(end))):
		}
		m.sample()
	}
	use = m.stop()
	db1, err = db.sample(ctx)
	return use, db0, db1, err
}

// startCluster starts PostgreSQL and the four-process Temporal cluster on it, and measures
// each service's process and the database.
func (w *world) startCluster(ctx context.Context) error {
	bin, err := filepath.Abs(w.o.bin)
	if err != nil {
		return err
	}
	if w.pg, err = testworld.StartPostgres(); err != nil {
		return err
	}
	w.cluster, err = testworld.StartCluster(ctx, testworld.ClusterOptions{Bin: bin, Dir: w.dir, Database: w.pg.URL("temporal"), Shards: w.o.shards})
	if err != nil {
		return err
	}
	w.address = w.cluster.Frontend
	if w.o.pgDSN == "" {
		w.o.pgDSN = w.pg.URL("temporal")
	}
	for _, s := range testworld.ClusterServices {
		w.watched = append(w.watched, watched{name: "server: " + s, pid: w.cluster.Procs[s].Pid(), server: true})
	}
	return nil
}
