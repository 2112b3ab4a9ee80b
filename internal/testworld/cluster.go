package testworld

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strconv"
	"time"
)

// ClusterServices are Temporal's services, one `replctl server` process each in a Cluster.
var ClusterServices = []string{"frontend", "history", "matching", "worker"}

// Cluster is Temporal as four `replctl server --services S` processes on one PostgreSQL
// database, with a cluster CA of its own (internode mutual TLS), listening on 127.0.0.1.
type Cluster struct {
	Procs    map[string]*Proc // by service
	Ports    map[string]int   // gRPC port by service (membership: +100)
	Frontend string           // host:port
	CA       *PKI             // the cluster CA
}

// ClusterOptions shape a Cluster.
type ClusterOptions struct {
	Bin      string // the replctl binary
	Dir      string // logs and the cluster CA go here
	Database string // postgres:// URL of its database
	Shards   int    // history shards of a new database
	LogLevel string // the servers' log level (default error)
}

// StartCluster starts the four processes and waits until the frontend serves.
func StartCluster(ctx context.Context, o ClusterOptions) (*Cluster, error) {
	if o.LogLevel == "" {
		o.LogLevel = "error"
	}
	ca, err := NewPKI(filepath.Join(o.Dir, "cluster-ca"))
	if err != nil {
		return nil, err
	}
	caKey, err := ca.CAKey()
	if err != nil {
		return nil, err
	}
	ports := clusterPorts()
	c := &Cluster{Procs: map[string]*Proc{}, Ports: ports, CA: ca, Frontend: "127.0.0.1:" + strconv.Itoa(ports["frontend"])}
	common := []string{"server", "--db", o.Database, "--history-shards", strconv.Itoa(o.Shards), "--bind-ip", "127.0.0.1",
		"--cluster-ca-cert", ca.CA, "--cluster-ca-key", caKey,
		"--port", strconv.Itoa(ports["frontend"]), "--history-port", strconv.Itoa(ports["history"]),
		"--matching-port", strconv.Itoa(ports["matching"]), "--worker-port", strconv.Itoa(ports["worker"]),
		"--frontend-address", c.Frontend, "--ui-port", "-1", "--server-log-level", o.LogLevel}
	for _, s := range ClusterServices {
		args := append(append([]string{}, common...), "--services", s)
		if s != "frontend" {
			args = append(args, "--db-setup=false")
		}
		p, err := StartProc("server "+s, filepath.Join(o.Dir, "server-"+s+".log"), o.Bin, args...)
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Procs[s] = p
	}
	if err := c.Procs["frontend"].WaitLog(ctx, "Temporal server on", 2*time.Minute); err != nil {
		c.Stop()
		return nil, fmt.Errorf("the cluster's frontend did not come up: %w", err)
	}
	return c, nil
}

// Stop kills every process.
func (c *Cluster) Stop() {
	for _, p := range c.Procs {
		p.Kill()
	}
}

// clusterPorts picks a free gRPC port for each service whose membership port (+100) is free
// as well, below 32667: Temporal's SQL schema keeps membership ports as smallint, so the
// kernel's ephemeral ports (FreePort) will not do.
func clusterPorts() map[string]int {
	ports := map[string]int{}
	used := map[int]bool{}
	for _, s := range ClusterServices {
		for {
			p := 20000 + rand.IntN(12000)
			if !used[p] && !used[p+100] && portFree(p) && portFree(p+100) {
				ports[s], used[p], used[p+100] = p, true, true
				break
			}
		}
	}
	return ports
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	return l.Close() == nil
}
