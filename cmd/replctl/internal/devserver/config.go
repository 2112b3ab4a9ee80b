package devserver

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	uiserver "github.com/temporalio/ui-server/v2/server"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	uiserveroptions "github.com/temporalio/ui-server/v2/server/server_options"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/membership/static"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/common/primitives"
	sqliteschema "go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"
)

const (
	clusterName = "active"
	storeName   = "sqlite-default"
	// pgStoreName and pgVisibilityStoreName are PostgreSQL's two databases.
	pgStoreName           = "postgres-default"
	pgVisibilityStoreName = "postgres-visibility"
	// busyTimeoutMS makes SQLite wait for a lock instead of failing at once
	// when another connection (e.g. someone inspecting the file) holds it.
	busyTimeoutMS = "10000"
	// namespaceRefreshInterval is shorter than the server default (2 s) so that
	// newly added search attributes are usable sooner; it costs one small
	// namespace table read per service per interval.
	namespaceRefreshInterval = time.Second
)

// memDBCounter makes in-memory database names unique within the process: the
// SQLite plugin keeps one connection per DSN for the life of the process, so a
// reused name would share state with an earlier server.
var memDBCounter atomic.Int64

// prepareDB returns the SQL config for o.DBFile, creating the directory and the
// schema for a new file and the namespace when it is missing. For a file DB it
// holds the DB lock until release is called.
func prepareDB(o Options) (_ *config.SQL, release func(), err error) {
	release = func() {}
	defer func() {
		if err != nil {
			release()
		}
	}()
	conf := &config.SQL{
		PluginName:        sqliteplugin.PluginName,
		ConnectAttributes: map[string]string{"busy_timeout": busyTimeoutMS},
	}
	if o.DBFile == "" {
		conf.ConnectAttributes["mode"] = "memory"
		conf.ConnectAttributes["cache"] = "shared"
		conf.DatabaseName = fmt.Sprintf("replctl-%d-%d-%d", os.Getpid(), memDBCounter.Add(1), rand.Uint32())
	} else {
		path, err := filepath.Abs(o.DBFile)
		if err != nil {
			return nil, release, fmt.Errorf("DB file %q: %w", o.DBFile, err)
		}
		// The plugin builds a "file:<path>?<params>" URI without escaping.
		if strings.ContainsAny(path, "?#%") {
			return nil, release, fmt.Errorf("DB file %q: path must not contain '?', '#' or '%%'", path)
		}
		conf.DatabaseName = path
		conf.ConnectAttributes["mode"] = "rwc"
		// WAL lets readers (and a second connection) work while the server writes.
		conf.ConnectAttributes["journal_mode"] = "wal"
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, release, fmt.Errorf("create directory for DB file %s: %w", path, err)
		}
		if release, err = lockDB(path); err != nil {
			return nil, func() {}, err
		}
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			if err := sqliteschema.SetupSchema(conf); err != nil {
				// Don't leave a half-initialised file that the next start would trust.
				for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
					_ = os.Remove(path + suffix)
				}
				return nil, release, fmt.Errorf("set up Temporal schema in %s: %w", path, err)
			}
		} else if err != nil {
			return nil, release, fmt.Errorf("DB file %s: %w", path, err)
		}
	}

	ns, err := sqliteschema.NewNamespaceConfig(clusterName, o.Namespace, false, o.SearchAttributes)
	if err != nil {
		return nil, release, fmt.Errorf("namespace %q: %w", o.Namespace, err)
	}
	ns.Detail.Config.Retention = durationpb.New(NamespaceRetention)
	// No-op when the namespace already exists; search attributes of an existing
	// namespace are ensured through the OperatorService after start.
	if err := sqliteschema.CreateNamespaces(conf, ns); err != nil {
		return nil, release, fmt.Errorf("create namespace %q in %s: %w", o.Namespace, dbName(o), err)
	}
	return conf, release, nil
}

func dbName(o Options) string {
	if o.DBFile == "" {
		return "in-memory DB"
	}
	return o.DBFile
}

// devDynamicConfig tunes the server for one dev box (values after the CLI's
// dev server, plus single task queue partitions).
func devDynamicConfig() dynamicconfig.StaticClient {
	return dynamicconfig.StaticClient{
		// Not ForceSearchAttributesCacheRefreshOnRead (the CLI's dev server sets it): it
		// read the cluster metadata and the namespace from the database on every search
		// attribute use, 13 % of the server's CPU in a loop of empty runs. With SQL
		// visibility an added attribute is a namespace alias, which every service reloads
		// within namespaceRefreshInterval, and ensureSearchAttributes waits that long.
		dynamicconfig.ForceNexusEndpointRefreshOnRead.Key(): true,
		// Bypassing the cache above costs persistence calls; raise the limits.
		dynamicconfig.FrontendPersistenceMaxQPS.Key():                    10000,
		dynamicconfig.HistoryPersistenceMaxQPS.Key():                     45000,
		dynamicconfig.HistoryCacheHostLevelMaxSize.Key():                 8096,
		dynamicconfig.FrontendMaxNamespaceVisibilityRPSPerInstance.Key(): 100,
		// One partition per task queue: a task is matched to any poller at once,
		// and a queue without pollers is noticed by schedule-to-start timeouts
		// without tasks sitting in another partition.
		dynamicconfig.MatchingNumTaskqueueReadPartitions.Key():  1,
		dynamicconfig.MatchingNumTaskqueueWritePartitions.Key(): 1,
		// Every service reloads namespaces (and with them search attribute
		// aliases) this often; Start waits one interval after adding aliases.
		dynamicconfig.NamespaceCacheRefreshInterval.Key(): namespaceRefreshInterval,
		// A frozen agent (SIGSTOP, paused VM or container) keeps its TCP connection and
		// its outstanding workflow-task polls; matching may hand it the very workflow task
		// that would move the step to the next agent, which then waits out the
		// workflow-task timeout. Pinging idle clients every second and dropping those
		// that do not answer cancels a frozen agent's polls before its heartbeat timeout
		// fires (design.md, "Takeover latency").
		dynamicconfig.KeepAliveTime.Key():    FrontendKeepAliveTime,
		dynamicconfig.KeepAliveTimeout.Key(): FrontendKeepAliveTimeout,
		// History moves any new timer due sooner than now+maxTimeShift (default 1 s) to
		// that point. A heartbeat-timeout timer is re-armed each time the previous one
		// fires, at last heartbeat + heartbeat timeout, so with the default a lost agent
		// was detected up to 1 s after its heartbeat timeout (chaos trials: fault → timed
		// out p99 2.93 s at a 2 s heartbeat timeout).
		dynamicconfig.TimerProcessorMaxTimeShift.Key(): TimerMaxTimeShift,
		// History's transfer queue (the tasks that hand workflow and activity tasks to
		// matching) reads at most transferProcessorMaxPollRPS (default 20) times a second
		// per shard. A cluster spreads runs over hundreds of shards; this server has one,
		// so back-to-back runs used up the burst and every dispatch then waited for the
		// next token: ~45 ms between scheduled and started, an empty run 0.65 s instead of
		// 0.22 s (design.md, "Performance").
		dynamicconfig.TransferProcessorMaxPollRPS.Key(): TransferMaxPollRPS,
		// The role authorizer's refusals name the role and the call (roles.go); without
		// this the client sees only "Request unauthorized.".
		dynamicconfig.ExposeAuthorizerErrors.Key(): true,
	}
}

// FrontendKeepAliveTime and FrontendKeepAliveTimeout are the frontend's gRPC keepalive
// settings: after KeepAliveTime without a frame from a client the server pings it, and
// closes the connection when no answer comes within KeepAliveTimeout. gRPC does not allow
// a ping interval under one second.
const (
	FrontendKeepAliveTime    = time.Second
	FrontendKeepAliveTimeout = 500 * time.Millisecond
	// TimerMaxTimeShift is history's timerProcessorMaxTimeShift (see devDynamicConfig).
	TimerMaxTimeShift = 100 * time.Millisecond
	// TransferMaxPollRPS is history's transferProcessorMaxPollRPS for the one shard.
	TransferMaxPollRPS = 1000
)

// stores are the server's databases: Temporal's tables and its visibility store.
type stores struct {
	main, visibility *config.SQL
	shards           int32
}

// DefaultPostgresShards is the history shard count of a new PostgreSQL database when
// Options.HistoryShards is 0 (docs/scale.md: how to choose it).
const DefaultPostgresShards = 16

// prepareStores prepares SQLite (prepareDB) or PostgreSQL (preparePostgres).
func prepareStores(o Options, logger *zap.Logger) (stores, func(), error) {
	if o.Postgres == nil {
		if o.HistoryShards > 1 {
			return stores{}, func() {}, fmt.Errorf("%d history shards: SQLite has one writer and one shard; use PostgreSQL (--db postgres://...) for more", o.HistoryShards)
		}
		conf, release, err := prepareDB(o)
		return stores{main: conf, visibility: conf, shards: 1}, release, err
	}
	shards := o.HistoryShards
	if shards == 0 {
		shards = DefaultPostgresShards
	}
	if shards < 1 || shards > 16384 {
		return stores{}, func() {}, fmt.Errorf("%d history shards: want 1..16384", shards)
	}
	main, vis, err := preparePostgres(*o.Postgres, log.NewZapLogger(logger.Named("schema")))
	return stores{main: main, visibility: vis, shards: int32(shards)}, func() {}, err
}

// serverOptions builds the temporal.NewServer options for o.
func serverOptions(o Options, cl *Cluster, p portSet, st stores, tlsConf *serverTLS, clusterCA *internalCA, zl *zap.Logger) ([]temporal.ServerOption, error) {
	frontendDial := p.frontendDialAddr(o.IP)
	internal, broadcast := internalIP, internalIP
	if cl != nil {
		frontendDial = cl.frontendAddr(p, o.IP)
		internal, broadcast = cl.BindIP, cl.BroadcastIP
	}
	conf := &config.Config{}
	conf.Global.Membership.MaxJoinDuration = 30 * time.Second
	conf.Global.Membership.BroadcastAddress = broadcast
	conf.Persistence.DefaultStore = storeName
	conf.Persistence.VisibilityStore = storeName
	conf.Persistence.NumHistoryShards = st.shards
	conf.Persistence.DataStores = map[string]config.DataStore{storeName: {SQL: st.main}}
	if st.visibility != st.main {
		conf.Persistence.DefaultStore, conf.Persistence.VisibilityStore = pgStoreName, pgVisibilityStoreName
		conf.Persistence.DataStores = map[string]config.DataStore{pgStoreName: {SQL: st.main}, pgVisibilityStoreName: {SQL: st.visibility}}
	}
	conf.ClusterMetadata = &cluster.Config{
		EnableGlobalNamespace:    false,
		FailoverVersionIncrement: 10,
		MasterClusterName:        clusterName,
		CurrentClusterName:       clusterName,
		ClusterInformation: map[string]cluster.ClusterInformation{
			// ClusterID empty: the server generates one and keeps the persisted one.
			clusterName: {Enabled: true, InitialFailoverVersion: 1, RPCAddress: frontendDial},
		},
	}
	conf.DCRedirectionPolicy.Policy = "noop"
	service := func(ip string, port int) config.Service {
		var s config.Service
		s.RPC.GRPCPort = port
		s.RPC.BindOnIP = ip
		if cl != nil {
			s.RPC.MembershipPort = port + MembershipOffset
		}
		return s
	}
	conf.Services = map[string]config.Service{
		string(primitives.FrontendService): service(o.IP, p.frontend),
		string(primitives.HistoryService):  service(internal, p.history),
		string(primitives.MatchingService): service(internal, p.matching),
		string(primitives.WorkerService):   service(internal, p.worker),
	}
	conf.Archival.History.State = "disabled"
	conf.Archival.Visibility.State = "disabled"
	conf.NamespaceDefaults.Archival.History.State = "disabled"
	conf.NamespaceDefaults.Archival.Visibility.State = "disabled"
	// The server's own system workers dial the frontend through this.
	conf.PublicClient.HostPort = frontendDial
	tlsConf.apply(conf) // no-op without TLS
	if clusterCA != nil && cl != nil {
		if err := clusterCA.internode(conf, cl.BroadcastIP); err != nil {
			return nil, err
		}
	}

	logger := log.NewZapLogger(zl)
	authorizer, claimMapper, err := accessControl(o, conf, tlsConf, logger)
	if err != nil {
		return nil, err
	}
	local := func(port int) static.Hosts {
		return static.SingleLocalHost(net.JoinHostPort(internalIP, strconv.Itoa(port)))
	}
	opts := []temporal.ServerOption{
		temporal.WithConfig(conf),
		temporal.WithLogger(logger),
		temporal.WithAuthorizer(authorizer),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
		temporal.WithDynamicConfigClient(devDynamicConfig()),
	}
	if cl != nil {
		// Membership (ringpop) finds the other processes through the database.
		return append(opts, temporal.ForServices(cl.Services)), nil
	}
	return append(opts,
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithStaticHosts(map[primitives.ServiceName]static.Hosts{
			primitives.FrontendService: static.SingleLocalHost(frontendDial),
			primitives.HistoryService:  local(p.history),
			primitives.MatchingService: local(p.matching),
			primitives.WorkerService:   local(p.worker),
		})), nil
}

// accessControl returns the frontend's authorizer and claim mapper: with mutual TLS the
// role ones (roles.go), otherwise the server's defaults, which allow every call (the
// frontend then listens on loopback unless --insecure-listen).
func accessControl(o Options, conf *config.Config, tlsConf *serverTLS, logger log.Logger) (authorization.Authorizer, authorization.ClaimMapper, error) {
	if tlsConf != nil && tlsConf.requireClient {
		return &roleAuthorizer{namespace: o.Namespace, access: o.Access, logger: logger},
			&roleClaimMapper{internalCA: tlsConf.internalCA}, nil
	}
	authorizer, err := authorization.GetAuthorizerFromConfig(&conf.Global.Authorization)
	if err != nil {
		return nil, nil, fmt.Errorf("create authorizer: %w", err)
	}
	claimMapper, err := authorization.GetClaimMapperFromConfig(&conf.Global.Authorization, logger)
	if err != nil {
		return nil, nil, fmt.Errorf("create claim mapper: %w", err)
	}
	return authorizer, claimMapper, nil
}

// buildUI configures the Web UI server for the frontend in p.
func buildUI(o Options, p portSet, tlsConf *serverTLS) *uiserver.Server {
	host := o.UI.IP
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // the UI joins host and port with Sprintf
	}
	c := &uiconfig.Config{
		Host:                host,
		Port:                p.ui,
		TemporalGRPCAddress: p.frontendDialAddr(o.IP),
		TLS:                 tlsConf.uiTLS(), // zero (plain gRPC) without TLS
		EnableUI:            true,
		DefaultNamespace:    o.Namespace,
		// Over plain HTTP secure cookies would never be sent back.
		CORS:             uiconfig.CORS{CookieInsecure: o.UI.TLSCertFile == ""},
		HideLogs:         true,
		DisableNewsFetch: true, // no internet on our machines
		// The UI server itself refuses every API call but reads and queries (HTTP 405).
		DisableWriteActions: !o.UI.WriteActions,
		UIServerTLS:         uiconfig.UIServerTLS{CertFile: o.UI.TLSCertFile, KeyFile: o.UI.TLSKeyFile},
	}
	if oi := o.UI.OIDC; oi != nil {
		scopes := oi.Scopes
		if len(scopes) == 0 {
			scopes = []string{"openid", "profile", "email"}
		}
		c.Auth = uiconfig.Auth{Enabled: true, Providers: []uiconfig.AuthProvider{{
			Label: "login", Type: "oidc", ProviderURL: oi.IssuerURL,
			ClientID: oi.ClientID, ClientSecret: oi.ClientSecret, CallbackURL: oi.CallbackURL, Scopes: scopes,
		}}}
	}
	return uiserver.NewServer(uiserveroptions.WithConfigProvider(c))
}
