package devserver

import (
	"context"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/server/common/primitives"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// offLevel disables all logging: it is above every zap level.
const offLevel = zapcore.FatalLevel + 1

// normalize validates o, fills in defaults and returns the log level switch.
func normalize(o Options) (Options, zap.AtomicLevel, error) {
	var zero zap.AtomicLevel
	if o.IP == "" || o.IP == "localhost" {
		// The server wants a literal IP for binding and broadcast.
		o.IP = DefaultIP
	}
	if net.ParseIP(o.IP) == nil {
		return o, zero, fmt.Errorf("IP %q is not an IP address", o.IP)
	}
	mutualTLS := o.TLS != nil && o.TLS.RequireClientCert
	if !isLoopback(o.IP) && !mutualTLS && !o.InsecureListen {
		return o, zero, fmt.Errorf("--ip %s is not a loopback address and the frontend does not require client certificates: "+
			"anyone who reaches it would have full access to Temporal; use mutual TLS (--tls-cert, --tls-key, --tls-ca, --tls-require-client-cert) or --insecure-listen", o.IP)
	}
	if o.UI.IP == "" || o.UI.IP == "localhost" {
		o.UI.IP = DefaultIP
	}
	if net.ParseIP(o.UI.IP) == nil {
		return o, zero, fmt.Errorf("UI IP %q is not an IP address", o.UI.IP)
	}
	if !o.runsFrontend() {
		o.UIPort = -1 // the Web UI runs beside the frontend
	}
	if o.UIPort != -1 {
		if err := o.UI.validate(mutualTLS, o.InsecureListen); err != nil {
			return o, zero, err
		}
	}
	o.Access = o.Access.withDefaults()
	if o.Port < 0 || o.Port > 65535 {
		return o, zero, fmt.Errorf("frontend port %d out of range 0..65535", o.Port)
	}
	if o.UIPort < -1 || o.UIPort > 65535 {
		return o, zero, fmt.Errorf("UI port %d out of range -1..65535", o.UIPort)
	}
	if o.Port > 0 && o.Port == o.UIPort {
		return o, zero, fmt.Errorf("frontend and UI both set to port %d", o.Port)
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	for name, typ := range o.SearchAttributes {
		if name == "" {
			return o, zero, errors.New("search attribute with empty name")
		}
		if _, ok := enums.IndexedValueType_name[int32(typ)]; !ok || typ == enums.INDEXED_VALUE_TYPE_UNSPECIFIED {
			return o, zero, fmt.Errorf("search attribute %q has invalid type %d", name, typ)
		}
	}
	if o.LogLevel == "" {
		o.LogLevel = DefaultLogLevel
	}
	lvl, err := parseLevel(o.LogLevel)
	if err != nil {
		return o, zero, err
	}
	if o.Logger == nil {
		enc := zap.NewDevelopmentEncoderConfig()
		enc.EncodeTime = zapcore.ISO8601TimeEncoder
		o.Logger = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.Lock(os.Stderr), zapcore.DebugLevel))
	}
	return o, zap.NewAtomicLevelAt(lvl), nil
}

func parseLevel(s string) (zapcore.Level, error) {
	switch strings.ToLower(s) {
	case "off", "none", "never":
		return offLevel, nil
	case "warning":
		return zapcore.WarnLevel, nil
	}
	lvl, err := zapcore.ParseLevel(s)
	if err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn, error or off", s)
	}
	return lvl, nil
}

// levelCore filters a zap core by a level that can change at run time (Stop
// raises it). zap.IncreaseLevel would complain when the wrapped core is
// already stricter; this just takes the stricter of both.
type levelCore struct {
	zapcore.Core
	level zapcore.LevelEnabler
}

func (c levelCore) Enabled(l zapcore.Level) bool {
	return c.level.Enabled(l) && c.Core.Enabled(l)
}

func (c levelCore) With(fields []zapcore.Field) zapcore.Core {
	return levelCore{Core: c.Core.With(fields), level: c.level}
}

func (c levelCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if !c.level.Enabled(e.Level) || isExpectedWarning(e) {
		return ce
	}
	return c.Core.Check(e, ce)
}

// isExpectedWarning matches warnings the server logs on every start of this
// configuration: they describe a choice, not a problem.
func isExpectedWarning(e zapcore.Entry) bool {
	// We run without the frontend HTTP API (one less port to open); Nexus
	// HTTP endpoints are not used by replctl.
	return e.Level == zapcore.WarnLevel && strings.HasPrefix(e.Message, "HTTP API port has not been set")
}

// portSet holds every port the server will bind.
type portSet struct {
	frontend                  int
	ui                        int // 0 when no UI
	history, matching, worker int // internal services, bound on loopback
}

// internalIP is where the non-frontend services listen: nothing outside this
// process needs them.
const internalIP = "127.0.0.1"

func (p portSet) frontendAddr(ip string) string {
	return net.JoinHostPort(ip, strconv.Itoa(p.frontend))
}

func (p portSet) frontendDialAddr(ip string) string {
	return net.JoinHostPort(dialHost(ip), strconv.Itoa(p.frontend))
}

// dialHost turns a bind IP into one a local client can connect to.
func dialHost(ip string) string {
	parsed := net.ParseIP(ip)
	switch {
	case parsed == nil || !parsed.IsUnspecified():
		return ip
	case parsed.To4() != nil:
		return "127.0.0.1"
	default:
		return "::1"
	}
}

// allocatePorts checks the requested ports are free and picks the free ones.
// Listeners are held until every port is chosen so that none is picked twice.
func allocatePorts(o Options, cl *Cluster) (portSet, error) {
	var p portSet
	if cl != nil {
		return clusterPorts(o, cl)
	}
	if o.Port > 0 {
		if err := checkPortFree(o.IP, o.Port, "--port"); err != nil {
			return p, err
		}
		p.frontend = o.Port
	}
	if o.UIPort > 0 {
		if err := checkPortFree(o.UI.IP, o.UIPort, "--ui-port"); err != nil {
			return p, err
		}
		p.ui = o.UIPort
	}

	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	pick := func(ip string) (int, error) {
		l, err := listenBelowEphemeral(ip)
		if err != nil {
			return 0, fmt.Errorf("pick a free port on %s: %w", ip, err)
		}
		held = append(held, l)
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	var err error
	if p.frontend == 0 {
		if p.frontend, err = pick(o.IP); err != nil {
			return p, err
		}
	}
	if o.UIPort == 0 {
		if p.ui, err = pick(o.UI.IP); err != nil {
			return p, err
		}
	}
	for _, dst := range []*int{&p.history, &p.matching, &p.worker} {
		if *dst, err = pick(internalIP); err != nil {
			return p, err
		}
	}
	return p, nil
}

// checkPortFree fails when ip:port cannot be bound. flag names the option the
// user can change.
func checkPortFree(ip string, port int, flag string) error {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("port %d on %s is in use (is another replctl server running? use %s)", port, ip, flag)
		}
		return fmt.Errorf("cannot listen on port %d on %s (use %s): %w", port, ip, flag, err)
	}
	return l.Close()
}

// waitTCP waits until addr accepts TCP connections.
func waitTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", addr, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// clusterPorts checks the ports of the services cl runs here (fixed: the other processes
// find them through membership, so a port cannot be picked at random).
func clusterPorts(o Options, cl *Cluster) (portSet, error) {
	p := portSet{frontend: o.Port, ui: o.UIPort, history: cl.HistoryPort, matching: cl.MatchingPort, worker: cl.WorkerPort}
	if p.ui == -1 {
		p.ui = 0
	}
	check := []struct {
		service primitives.ServiceName
		ip      string
		port    int
		flag    string
	}{
		{primitives.FrontendService, o.IP, p.frontend, "--port"}, {primitives.HistoryService, cl.BindIP, p.history, "--history-port"},
		{primitives.MatchingService, cl.BindIP, p.matching, "--matching-port"}, {primitives.WorkerService, cl.BindIP, p.worker, "--worker-port"},
	}
	for _, c := range check {
		if !cl.runs(c.service) {
			continue
		}
		if c.port <= 0 || c.port+MembershipOffset > maxMembershipPort {
			return p, fmt.Errorf("%s: a cluster's services need fixed ports of 1..%d (%s %d; membership ports are smallint in Temporal's SQL schema)",
				c.service, maxMembershipPort-MembershipOffset, c.flag, c.port)
		}
		for _, port := range []int{c.port, c.port + MembershipOffset} {
			if err := checkPortFree(c.ip, port, c.flag); err != nil {
				return p, fmt.Errorf("%s: %w", c.service, err)
			}
		}
	}
	if cl.runs(primitives.FrontendService) {
		switch {
		case o.UIPort > 0:
			if err := checkPortFree(o.UI.IP, o.UIPort, "--ui-port"); err != nil {
				return p, err
			}
		case o.UIPort == 0:
			l, err := net.Listen("tcp", net.JoinHostPort(o.UI.IP, "0"))
			if err != nil {
				return p, fmt.Errorf("pick a free port on %s: %w", o.UI.IP, err)
			}
			p.ui = l.Addr().(*net.TCPAddr).Port
			l.Close()
		}
	}
	return p, nil
}

// runsFrontend tells whether this process runs the frontend (Cluster.Services).
func (o Options) runsFrontend() bool {
	return o.Cluster == nil || len(o.Cluster.Services) == 0 || slices.Contains(o.Cluster.Services, string(primitives.FrontendService))
}

// listenBelowEphemeral listens on a free port of ip below Linux's ephemeral range (32768 and
// up), falling back to any free port. The ports are released before the server binds them:
// a port the kernel hands out for ":0" is one it also gives to outgoing connections, and a
// CI run with many parallel servers lost a service's port to one in between ("bind: address
// already in use" is fatal to the Temporal server).
func listenBelowEphemeral(ip string) (net.Listener, error) {
	for range 50 {
		port := 20000 + mathrand.IntN(12000)
		if l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port))); err == nil {
			return l, nil
		}
	}
	return net.Listen("tcp", net.JoinHostPort(ip, "0"))
}
