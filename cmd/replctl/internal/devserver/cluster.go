package devserver

import (
	"fmt"
	"net"
	"slices"
	"strings"

	"go.temporal.io/server/common/primitives"
)

// Cluster places this process in a Temporal cluster of several processes on one
// PostgreSQL database (Options.Cluster): it runs Services, and finds the others through
// Temporal's membership (ringpop, seeded from the database's cluster_membership table).
// Without it a PostgreSQL server runs all four services in this process, also through
// membership, so that a second process on the same database joins instead of fighting
// over the shards.
type Cluster struct {
	// Services this process runs: a subset of frontend, history, matching, worker; empty
	// means all four.
	Services []string
	// BroadcastIP is the address the other processes reach this process's services at
	// (default: Options.IP, or with a non-loopback bind the first address of this host).
	BroadcastIP string
	// BindIP is where history, matching and worker listen (default 127.0.0.1 when all run
	// here, else 0.0.0.0). The frontend listens on Options.IP.
	BindIP string
	// Frontend is the frontend's host:port, for a process without the frontend: the worker
	// service's system workflows and history's callbacks dial it.
	Frontend string
	// Ports of the internal services' gRPC (history, matching, worker); 0: 7234, 7235, 7239,
	// Temporal's defaults. Each service's membership port is its gRPC port + MembershipOffset.
	HistoryPort, MatchingPort, WorkerPort int
}

// MembershipOffset is the distance from a service's gRPC port to its membership (ringpop)
// port: frontend 7233 -> 7333.
const MembershipOffset = 100

// maxMembershipPort is the highest membership port: Temporal's SQL schema stores it in a
// smallint column (cluster_membership.rpc_port).
const maxMembershipPort = 32767

// ServiceNames are the services a server process may run, in Temporal's names.
var ServiceNames = []string{
	string(primitives.FrontendService), string(primitives.HistoryService),
	string(primitives.MatchingService), string(primitives.WorkerService),
}

// normalizeCluster checks c against o and fills in its defaults. It returns nil when o is
// not a PostgreSQL server (SQLite runs all services in this process on static hosts).
func normalizeCluster(o Options) (*Cluster, error) {
	if o.Postgres == nil {
		if o.Cluster != nil && len(o.Cluster.Services) > 0 {
			return nil, fmt.Errorf("running only %s needs a shared PostgreSQL database (--db postgres://...): SQLite is one process's", strings.Join(o.Cluster.Services, ","))
		}
		if o.ClusterCA != nil {
			return nil, fmt.Errorf("a cluster CA is for a cluster on PostgreSQL (--db postgres://...); SQLite's services stay in one process")
		}
		return nil, nil
	}
	c := Cluster{}
	if o.Cluster != nil {
		c = *o.Cluster
	}
	if len(c.Services) == 0 {
		c.Services = slices.Clone(ServiceNames)
	}
	for _, s := range c.Services {
		if !slices.Contains(ServiceNames, s) {
			return nil, fmt.Errorf("service %q: want some of %s", s, strings.Join(ServiceNames, ", "))
		}
	}
	all := len(c.Services) == len(ServiceNames)
	if c.BindIP == "" {
		c.BindIP = internalIP
		if !all {
			c.BindIP = "0.0.0.0"
		}
	}
	if net.ParseIP(c.BindIP) == nil {
		return nil, fmt.Errorf("bind IP %q is not an IP address", c.BindIP)
	}
	if c.BroadcastIP == "" {
		c.BroadcastIP = dialHost(o.IP)
		if !isLoopback(c.BindIP) {
			ip, err := hostIP()
			if err != nil {
				return nil, fmt.Errorf("no broadcast address given and %w", err)
			}
			c.BroadcastIP = ip
		}
	}
	if ip := net.ParseIP(c.BroadcastIP); ip == nil || ip.IsUnspecified() {
		return nil, fmt.Errorf("broadcast IP %q: want the one address other server processes reach this one at", c.BroadcastIP)
	}
	if !isLoopback(c.BindIP) && o.ClusterCA == nil && !o.InsecureListen {
		return nil, fmt.Errorf("history, matching and worker would listen on %s without TLS, accepting every call from whoever reaches them: "+
			"give a cluster CA (--cluster-ca-cert, --cluster-ca-key: internode mutual TLS), or keep them on a private network and pass --insecure-listen", c.BindIP)
	}
	if !all && o.TLS != nil && o.TLS.RequireClientCert && o.ClusterCA == nil {
		return nil, fmt.Errorf("a frontend with mutual TLS lets in the other processes' own clients only with a shared cluster CA (--cluster-ca-cert, --cluster-ca-key)")
	}
	if !c.runs(primitives.FrontendService) && c.Frontend == "" {
		return nil, fmt.Errorf("this process runs no frontend (%s): give the frontend's address (--frontend-address) for the worker service and history", strings.Join(c.Services, ","))
	}
	for _, p := range []struct {
		port *int
		def  int
	}{{&c.HistoryPort, 7234}, {&c.MatchingPort, 7235}, {&c.WorkerPort, 7239}} {
		if *p.port == 0 {
			*p.port = p.def
		}
		if *p.port < 1 || *p.port+MembershipOffset > maxMembershipPort {
			return nil, fmt.Errorf("service port %d out of range 1..%d (membership ports are kept as smallint in Temporal's SQL schema)", *p.port, maxMembershipPort-MembershipOffset)
		}
	}
	return &c, nil
}

// runs tells whether this process runs service s.
func (c *Cluster) runs(s primitives.ServiceName) bool { return slices.Contains(c.Services, string(s)) }

// frontendAddr is where this process's other services and clients reach the frontend.
func (c *Cluster) frontendAddr(p portSet, ip string) string {
	if c.runs(primitives.FrontendService) {
		return p.frontendDialAddr(ip)
	}
	return c.Frontend
}

// hostIP is the first non-loopback IPv4 address of this host's interfaces (a container's
// address on its network).
func hostIP() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("listing this host's addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String(), nil
		}
	}
	return "", fmt.Errorf("this host has no non-loopback IPv4 address (give --broadcast-ip)")
}
