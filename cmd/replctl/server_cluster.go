//go:build !noserver

package main

import (
	"strings"

	"github.com/spf13/pflag"

	"github.com/replctl/replctl/cmd/replctl/internal/devserver"
)

// ClusterFlags place a `replctl server` on PostgreSQL in a cluster of server processes
// (devserver.Cluster): which services it runs and where the others reach them.
type ClusterFlags struct {
	Services                              []string
	BroadcastIP, BindIP, FrontendAddress  string
	HistoryPort, MatchingPort, WorkerPort int
	// CACert and CAKey are the cluster CA's files (devserver.ClusterCA).
	CACert, CAKey string
}

// AddFlags registers the cluster flags on fs.
func (c *ClusterFlags) AddFlags(fs *pflag.FlagSet) {
	fs.StringSliceVar(&c.Services, "services", nil, "PostgreSQL: the services this process runs, of "+strings.Join(devserver.ServiceNames, ",")+" (default all); processes on one database form one cluster")
	fs.StringVar(&c.BroadcastIP, "broadcast-ip", "", "PostgreSQL: the address other server processes reach this one's services at (default: --ip, or this host's first address when --bind-ip is not loopback)")
	fs.StringVar(&c.BindIP, "bind-ip", "", "PostgreSQL: where history, matching and worker listen (default 127.0.0.1 with all services, else 0.0.0.0, which needs --insecure-listen)")
	fs.StringVar(&c.FrontendAddress, "frontend-address", "", "PostgreSQL: the frontend's host:port, for a process that runs no frontend")
	fs.IntVar(&c.HistoryPort, "history-port", 7234, "history's gRPC port (membership: +100)")
	fs.IntVar(&c.MatchingPort, "matching-port", 7235, "matching's gRPC port (membership: +100)")
	fs.IntVar(&c.WorkerPort, "worker-port", 7239, "worker service's gRPC port (membership: +100)")
	fs.StringVar(&c.CACert, "cluster-ca-cert", "", "PostgreSQL: the CA certificate (PEM) every server process of the cluster shares: mutual TLS between the services, and the processes' own clients through a frontend with mutual TLS")
	fs.StringVar(&c.CAKey, "cluster-ca-key", "", "the private key (PEM, ECDSA, mode 0600) of --cluster-ca-cert: each process signs its own certificates with it")
}

// ca is the cluster CA of the flags, or nil.
func (c *ClusterFlags) ca() *devserver.ClusterCA {
	if c.CACert == "" && c.CAKey == "" {
		return nil
	}
	return &devserver.ClusterCA{CertFile: c.CACert, KeyFile: c.CAKey}
}

// options is the devserver's cluster.
func (c *ClusterFlags) options() *devserver.Cluster {
	return &devserver.Cluster{
		Services: c.Services, BroadcastIP: c.BroadcastIP, BindIP: c.BindIP, Frontend: c.FrontendAddress,
		HistoryPort: c.HistoryPort, MatchingPort: c.MatchingPort, WorkerPort: c.WorkerPort,
	}
}
