// Package devserver runs a real Temporal server and, optionally, the Temporal Web UI. It
// backs `replctl server` and `replctl dev`: SQLite, one history shard and all four services
// in this process by default; on PostgreSQL any number of shards, and any of the services
// per process, joined into one cluster (cluster.go).
//
// The shape follows the dev server of the public Temporal CLI: the server
// config is built by hand instead of loaded from YAML, services on SQLite find each other
// through static hosts (no ringpop), and the UI server runs in a goroutine.
package devserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	uiserver "github.com/temporalio/ui-server/v2/server"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/server/common/primitives"
	"go.temporal.io/server/temporal"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
)

// Defaults. Start applies DefaultIP, DefaultNamespace and DefaultLogLevel to
// empty fields; a zero Port or UIPort means "pick a free port", so DefaultPort
// and DefaultUIPort are for the caller's flags.
const (
	DefaultIP        = "127.0.0.1"
	DefaultPort      = 7233
	DefaultUIPort    = 8233
	DefaultNamespace = "default"
	DefaultLogLevel  = "warn"
	// NamespaceRetention is the workflow retention of a namespace created by Start.
	NamespaceRetention = 7 * 24 * time.Hour
)

// readyTimeout bounds how long Start waits for the frontend, the namespace and
// the search attributes when the caller's context has no earlier deadline.
const readyTimeout = 60 * time.Second

// Options configures Start. The zero value is an in-memory server with UI on
// free loopback ports.
type Options struct {
	DBFile string // SQLite file; "" = in-memory (tests)
	// Postgres, when set, is the PostgreSQL database instead of SQLite (DBFile unused).
	Postgres *Postgres
	// HistoryShards is the number of history shards of a new PostgreSQL database (default
	// DefaultPostgresShards); it is fixed when the database is created. SQLite has one.
	HistoryShards int
	// Cluster runs some of the services of a cluster on PostgreSQL in this process; nil:
	// all of them (cluster.go).
	Cluster *Cluster
	// ClusterCA, shared by a cluster's processes, secures the traffic between its
	// services (internode mutual TLS) and lets their own clients through a frontend with
	// mutual TLS (internode.go).
	ClusterCA        *ClusterCA
	IP               string                            // default "127.0.0.1"
	Port             int                               // frontend gRPC, default 7233; 0 = pick a free port
	UIPort           int                               // default 8233; -1 = no UI; 0 = pick free
	Namespace        string                            // default "default"; created if missing, retention 7 days
	SearchAttributes map[string]enums.IndexedValueType // ensured (added if missing) on every start
	Logger           *zap.Logger                       // server logs go here at LogLevel and above; nil = stderr
	LogLevel         string                            // default "warn"; debug|info|warn|error|off
	TLS              *TLSOptions                       // TLS or mutual TLS on the frontend; nil = plain gRPC
	// Access is what hosts and operators may use when the frontend requires client
	// certificates (TLS.RequireClientCert): then every client certificate names a role
	// (roles.go). Without mutual TLS there are no roles.
	Access Access
	// InsecureListen allows listening on a non-loopback address without authentication:
	// the frontend without mutual TLS, the Web UI without its own login and HTTPS.
	InsecureListen bool
	UI             UIOptions // the Web UI (UIPort -1: none)
}

// Server is a running Temporal server plus optional Web UI. Stop it with Stop.
type Server struct {
	server       temporal.Server
	ui           *uiserver.Server
	conn         *grpc.ClientConn
	unlockDB     func()
	level        zap.AtomicLevel
	frontendAddr string
	uiAddr       string
	tls          *serverTLS // nil = plain gRPC
	cluster      *Cluster   // nil = SQLite, all services here on static hosts
	roles        bool       // client certificates name roles (mutual TLS)

	stopOnce sync.Once
	stopErr  error
}

// Start starts the Temporal server (and the UI unless UIPort is -1). It returns
// once the frontend answers, the namespace exists and every requested search
// attribute is defined and visible to the services. Both ports are checked
// before anything is created or started, so a busy port gives a clear error
// and no side effects. A file DB is locked (DBFile + ".lock") while the server
// runs, so a second server on the same file is refused.
func Start(ctx context.Context, o Options) (*Server, error) {
	o, level, err := normalize(o)
	if err != nil {
		return nil, err
	}
	clusterCA, err := loadClusterCA(o.ClusterCA)
	if err != nil {
		return nil, err
	}
	tlsConf, err := loadServerTLS(o.TLS, o.UI.role(), clusterCA)
	if err != nil {
		return nil, err
	}
	if o.UIPort != -1 {
		// The UI server exits the process when its login provider does not answer.
		if err := checkOIDC(ctx, o.UI.OIDC); err != nil {
			return nil, err
		}
	}
	cl, err := normalizeCluster(o)
	if err != nil {
		return nil, err
	}
	ports, err := allocatePorts(o, cl)
	if err != nil {
		return nil, err
	}
	logger := o.Logger.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return levelCore{Core: c, level: level}
	})).Named("temporal")
	stores, unlockDB, err := prepareStores(o, logger)
	if err != nil {
		return nil, err
	}
	opts, err := serverOptions(o, cl, ports, stores, tlsConf, clusterCA, logger)
	if err != nil {
		unlockDB()
		return nil, err
	}
	ts, err := temporal.NewServer(opts...)
	if err != nil {
		unlockDB()
		return nil, fmt.Errorf("create temporal server: %w", err)
	}
	if err := ts.Start(); err != nil {
		// Start may have brought up some services before failing.
		level.SetLevel(quietLevel(level.Level()))
		_ = ts.Stop()
		unlockDB()
		return nil, fmt.Errorf("start temporal server (frontend %s): %w", ports.frontendAddr(o.IP), err)
	}

	s := &Server{
		server:       ts,
		unlockDB:     unlockDB,
		level:        level,
		frontendAddr: ports.frontendDialAddr(o.IP),
		cluster:      cl,
		tls:          tlsConf,
		roles:        tlsConf != nil && tlsConf.requireClient,
	}
	if o.UIPort != -1 {
		s.ui = buildUI(o, ports, tlsConf)
		s.uiAddr = o.UI.scheme() + "://" + net.JoinHostPort(dialHost(o.UI.IP), strconv.Itoa(ports.ui))
		ui := s.ui
		// Start blocks until Stop; it exits the process on a bind error, which is
		// why the port was checked up front.
		go func() { _ = ui.Start() }()
	}

	if cl != nil && !cl.runs(primitives.FrontendService) {
		// Namespace and search attributes are the frontend process's to ensure.
		s.frontendAddr = cl.Frontend
		return s, nil
	}
	readyCtx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := s.ready(readyCtx, o); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// ready waits for the frontend, ensures namespace and search attributes, and
// waits for the UI port to accept connections.
func (s *Server) ready(ctx context.Context, o Options) error {
	conn, err := dialFrontend(s.frontendAddr, s.tls.transportCredentials())
	if err != nil {
		return err
	}
	s.conn = conn
	if err := waitFrontend(ctx, conn, s.frontendAddr); err != nil {
		return err
	}
	if err := ensureNamespace(ctx, conn, o.Namespace); err != nil {
		return err
	}
	if err := ensureSearchAttributes(ctx, conn, o.Namespace, o.SearchAttributes); err != nil {
		return err
	}
	if s.ui != nil {
		if err := waitTCP(ctx, strings.SplitN(s.uiAddr, "://", 2)[1]); err != nil {
			return fmt.Errorf("web UI at %s did not come up: %w", s.uiAddr, err)
		}
	}
	return nil
}

// FrontendAddress returns the host:port clients dial for the frontend gRPC API.
// When the server listens on all interfaces, this is the loopback address.
func (s *Server) FrontendAddress() string { return s.frontendAddr }

// TLSServerName returns the name a client must check in the frontend's certificate (the
// first name of the certificate), or "" when the frontend is plain gRPC.
func (s *Server) TLSServerName() string {
	if s.tls == nil {
		return ""
	}
	return s.tls.serverName
}

// RolesEnforced tells whether the frontend maps client certificates to roles and refuses
// what a role may not do (mutual TLS).
func (s *Server) RolesEnforced() bool { return s.roles }

// UIAddress returns the Web UI base URL (http://host:port, https with UI TLS), or "" without UI.
func (s *Server) UIAddress() string { return s.uiAddr }

// Stop stops the UI and the server and waits for them. Server logs are muted
// while shutting down: services cancelled mid-call log errors such as
// "context canceled" that mean nothing. A failed shutdown is reported through
// the returned error instead. Calling Stop again returns the first result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.level.SetLevel(quietLevel(s.level.Level()))
		if s.ui != nil {
			s.ui.Stop()
		}
		var errs []error
		if s.conn != nil {
			if err := s.conn.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close admin connection: %w", err))
			}
		}
		if err := s.server.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop temporal server: %w", err))
		}
		s.unlockDB()
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}

// quietLevel is the level used while shutting down: only panics and fatal
// errors still get through.
func quietLevel(cur zapcore.Level) zapcore.Level {
	return max(cur, zapcore.DPanicLevel)
}
