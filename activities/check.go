package activities

// CheckHost is `replctl check` on one agent: a preflight of the host against the agent's OWN
// config. The input only routes the check (Agent) and narrows it to one job; what is checked
// and where comes from the config file the agent reads now, as for every other activity
// (authority.go). It changes nothing on the host: it stats, statfs's, logs in over SSH and
// runs `true` there.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/activities/hostexec"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/storagecheck"
)

// CheckHostName is the registered name of CheckHost.
const CheckHostName = "CheckHost"

// Results of one check.
const (
	CheckOK   = "ok"
	CheckWarn = "warn"
	CheckFail = "FAIL"
)

// Limits of CheckHost's checks (checkLimits holds them; tests pass their own).
const (
	// CheckMinFreePercent: a storage with less free space (of its size) warns.
	CheckMinFreePercent = 5.0
	// CheckMaxSkew: an agent clock further from the server's fails the check; a run's
	// timeouts and the leases' epochs are measured on both clocks.
	CheckMaxSkew = 2 * time.Second
	// CheckSSHTimeout bounds one SSH probe (dial, login and `true`).
	CheckSSHTimeout = 5 * time.Second
)

// CheckHostInput is the input of CheckHost: the agent it is for and, optionally, the one
// job whose hosts are checked ("" = every job of the agent's config).
type CheckHostInput struct {
	Agent string
	Job   string `json:",omitempty"`
}

// CheckItem is one check on one host.
type CheckItem struct {
	Check  string `json:"check"`
	Result string `json:"result"` // CheckOK, CheckWarn or CheckFail
	Detail string `json:"detail,omitempty"`
	// Fix says what to do about a warning or failure.
	Fix string `json:"fix,omitempty"`
}

// CheckHostResult is what an agent found on its host.
type CheckHostResult struct {
	Agent string `json:"agent"`
	// ConfigFile is the agent's config file; Fingerprint the sha256 of its parsed storage,
	// hosts and jobs (ConfigFingerprint): the workflow compares them between agents.
	ConfigFile  string `json:"config_file"`
	Fingerprint string `json:"fingerprint,omitempty"`
	// Skew is the agent's clock minus the server's at the start of the check.
	Skew  time.Duration `json:"skew"`
	Items []CheckItem   `json:"items"`
}

// checkLimits are the thresholds of a check.
type checkLimits struct {
	minFreePercent float64
	maxSkew        time.Duration
	sshTimeout     time.Duration
}

var defaultCheckLimits = checkLimits{minFreePercent: CheckMinFreePercent, maxSkew: CheckMaxSkew, sshTimeout: CheckSSHTimeout}

// CheckHost checks this agent's host: its config, storage and free space, its scripts, SSH to
// the hosts it may take over, the repositories it uses, its clock against the server's (the
// attempt's start time as the server recorded it) and its config's fingerprint. Failures are
// results, not errors; only a job the agent's config does not have, or a host of the config
// that is not in that job, is refused (ErrTypeRefused).
func (a *Agent) CheckHost(ctx context.Context, in CheckHostInput) (CheckHostResult, error) {
	if err := a.checkRoute(in.Agent); err != nil {
		return CheckHostResult{}, err
	}
	server := time.Now()
	if activity.IsActivity(ctx) {
		server = activity.GetInfo(ctx).StartedTime
	}
	return a.checkHost(ctx, in, defaultCheckLimits, server)
}

// checkHost is CheckHost with its limits and the server's time.
func (a *Agent) checkHost(ctx context.Context, in CheckHostInput, lim checkLimits, server time.Time) (CheckHostResult, error) {
	now := time.Now()
	res := CheckHostResult{Agent: a.Host, ConfigFile: a.ConfigFile, Skew: now.Sub(server)}
	add := func(it CheckItem) { res.Items = append(res.Items, it) }
	cfg, err := a.loadConfig()
	if err != nil {
		add(CheckItem{Check: "config", Result: CheckFail, Detail: err.Error(),
			Fix: "correct the config file (replctl config validate -c " + a.ConfigFile + ")"})
		add(clockItem(res.Skew, lim.maxSkew))
		return res, nil
	}
	res.Fingerprint = ConfigFingerprint(cfg)
	// The job filter is the only thing the input chooses: refused like any activity's job
	// when the agent's own config lacks it or leaves this host out of it.
	var plans []Plan
	if in.Job != "" {
		g, err := a.authorize(ctx, CheckHostName, in.Job)
		if err != nil {
			return CheckHostResult{}, err
		}
		if _, err := g.plan.Host(a.Host); err != nil {
			return CheckHostResult{}, g.refuse("Agent", a.Host, nil, fmt.Sprintf("host %q has no role in job %q in its own config", a.Host, in.Job))
		}
		plans = []Plan{g.plan}
	}
	host, err := cfg.Host(a.Host)
	if err != nil {
		add(CheckItem{Check: "config", Result: CheckFail, Detail: err.Error(),
			Fix: "add host " + a.Host + " to the config, or start the agent with the --host the config names"})
		add(clockItem(res.Skew, lim.maxSkew))
		return res, nil
	}
	add(CheckItem{Check: "config", Result: CheckOK, Detail: "loads; fingerprint " + res.Fingerprint[:12]})
	if in.Job == "" {
		for _, j := range cfg.Jobs {
			p, err := NewPlan(cfg, j.Name)
			if err != nil {
				add(CheckItem{Check: "job " + j.Name, Result: CheckFail, Detail: err.Error(), Fix: "correct job " + j.Name + " in the config"})
				continue
			}
			if _, err := p.Host(a.Host); err == nil {
				plans = append(plans, p)
			}
		}
	}
	storageOK := checkStorage(host, add)
	checkFreeSpace(host, lim.minFreePercent, storageOK, add)
	for _, p := range plans {
		checkScripts(a.Host, p, add)
	}
	checkSSH(ctx, a.Host, plans, lim.sshTimeout, add)
	for _, p := range plans {
		checkRepository(a.Host, p, add)
	}
	add(clockItem(res.Skew, lim.maxSkew))
	return res, nil
}

// ConfigFingerprint is the sha256 (hex) of what a config says about storage, hosts and jobs,
// as parsed (comments, layout and key order do not count). The temporal section is left out:
// each host may hold its own client certificate and key.
func ConfigFingerprint(cfg *config.Config) string {
	b, err := json.Marshal(struct {
		SecretsDir string
		Storage    []config.Storage
		Hosts      []config.Host
		Jobs       []config.Job
	}{cfg.SecretsDir, cfg.Storage, cfg.Hosts, cfg.Jobs})
	if err != nil {
		return "unknown: " + err.Error()
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// checkStorage checks the storage the host attaches (storagecheck: real directories, none
// nested in another); it returns which roots exist as directories.
func checkStorage(host *config.Host, add func(CheckItem)) map[string]bool {
	roots := storagecheck.HostRoots(host)
	ok := map[string]bool{}
	if len(roots) == 0 {
		add(CheckItem{Check: "storage", Result: CheckOK, Detail: "no storage attached"})
		return ok
	}
	var names []string
	for _, r := range roots {
		names = append(names, r.Storage+" at "+r.Path)
		if fi, err := os.Stat(r.Path); err == nil && fi.IsDir() {
			ok[r.Storage] = true
		}
	}
	if err := storagecheck.Check(roots); err != nil {
		add(CheckItem{Check: "storage", Result: CheckFail, Detail: oneLine(err.Error()),
			Fix: "mount each storage at its configured path (a real directory, not a symlink), or correct hosts[].attach of " + host.Name})
		return ok
	}
	add(CheckItem{Check: "storage", Result: CheckOK, Detail: strings.Join(names, ", ")})
	return ok
}

// checkFreeSpace warns about attached storage with less than minPercent free.
func checkFreeSpace(host *config.Host, minPercent float64, exists map[string]bool, add func(CheckItem)) {
	for _, r := range storagecheck.HostRoots(host) {
		name := "free space " + r.Storage
		if !exists[r.Storage] {
			continue // the storage check failed for it
		}
		var st unix.Statfs_t
		if err := unix.Statfs(r.Path, &st); err != nil {
			add(CheckItem{Check: name, Result: CheckWarn, Detail: fmt.Sprintf("statfs %s: %v", r.Path, err)})
			continue
		}
		total := uint64(st.Blocks) * uint64(st.Bsize)
		free := uint64(st.Bavail) * uint64(st.Bsize)
		pct := 100.0
		if total > 0 {
			pct = 100 * float64(free) / float64(total)
		}
		it := CheckItem{Check: name, Result: CheckOK, Detail: fmt.Sprintf("%s free of %s (%.1f %%) at %s", config.FormatBytes(int64(free)), config.FormatBytes(int64(total)), pct, r.Path)}
		if pct < minPercent {
			it.Result = CheckWarn
			it.Detail += fmt.Sprintf(", under %.0f %%", minPercent)
			it.Fix = "free space on storage " + r.Storage + " (fewer replicas or images kept: retention) or grow it"
		}
		add(it)
	}
}

// checkScripts checks the scripts of job p this host may run on itself: quiesce, resume and
// takeover when it is in the application order, check on the application host, and the
// failback application's quiesce and resume on its host.
func checkScripts(agent string, p Plan, add func(CheckItem)) {
	h, err := p.Host(agent)
	if err != nil {
		return
	}
	var scripts []string
	if slices.Contains(p.Order.Application, agent) {
		scripts = append(scripts, p.Application.Quiesce, p.Application.Resume, p.Application.Takeover)
		if agent == p.Application.Host {
			scripts = append(scripts, p.Application.Check)
		}
	}
	if fb := p.Failback; fb != nil && fb.Host == agent {
		scripts = append(scripts, fb.Quiesce, fb.Resume)
	}
	var names, problems []string
	fix := ""
	for _, s := range scripts {
		if s == "" || slices.Contains(names, s) {
			continue
		}
		names = append(names, s)
		path, err := hostexec.CheckLocalScript(agent, h.Scripts, s)
		if err == nil {
			continue
		}
		msg := strings.TrimPrefix(err.Error(), fmt.Sprintf("hostexec: host %q: ", agent))
		problems = append(problems, strings.TrimSuffix(msg, ": "+hostexec.ErrNoScript.Error()))
		if path == "" {
			path = filepath.Join(h.Scripts, s)
		}
		if fix != "" {
			fix += "; "
		}
		if fi, serr := os.Stat(path); serr == nil && fi.Mode().IsRegular() {
			fix += "chmod +x " + path
		} else {
			fix += "install " + s + " in " + h.Scripts + " (or correct the job's application scripts)"
		}
	}
	if len(names) == 0 {
		return
	}
	name := "scripts " + p.Job
	if len(problems) > 0 {
		add(CheckItem{Check: name, Result: CheckFail, Detail: strings.Join(problems, "; "), Fix: fix})
		return
	}
	add(CheckItem{Check: name, Result: CheckOK, Detail: strings.Join(names, ", ") + " executable in " + h.Scripts})
}

// sshPeer is a host this agent reaches over SSH, and why.
type sshPeer struct {
	name   string
	target SSH
	why    []string
}

// checkSSH logs into every host this agent may take over (it comes before this agent in one
// of a job's orders) that is reached over SSH, and into the hosts it reaches a repository
// through, and runs `true` there.
func checkSSH(ctx context.Context, agent string, plans []Plan, timeout time.Duration, add func(CheckItem)) {
	var peers []*sshPeer
	peer := func(name string, t SSH, why string) {
		for _, p := range peers {
			if p.name == name {
				if !slices.Contains(p.why, why) {
					p.why = append(p.why, why)
				}
				return
			}
		}
		peers = append(peers, &sshPeer{name: name, target: t, why: []string{why}})
	}
	for _, p := range plans {
		for _, h := range p.Hosts {
			if h.Name != agent && h.SSH != nil && p.mayTakeOver(agent, h.Name) {
				peer(h.Name, *h.SSH, "takeover in "+p.Job)
			}
		}
		if loc, err := p.Repo(agent); err == nil {
			for _, v := range loc.Via {
				if v.Name != agent {
					peer(v.Name, v.SSH, "repository of "+p.Job)
				}
			}
		}
	}
	if len(peers) == 0 {
		add(CheckItem{Check: "ssh", Result: CheckOK, Detail: "no host to reach over SSH"})
		return
	}
	items := make([]CheckItem, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			items[i] = probeItem(ctx, p, timeout)
		}()
	}
	wg.Wait()
	for _, it := range items {
		add(it)
	}
}

// probeItem is the SSH check of one peer.
func probeItem(ctx context.Context, p *sshPeer, timeout time.Duration) CheckItem {
	t := p.target
	if t.ConnectTimeout <= 0 || t.ConnectTimeout > timeout {
		t.ConnectTimeout = timeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	it := CheckItem{Check: "ssh " + p.name, Result: CheckOK, Detail: fmt.Sprintf("%s@%s: login and `true` ok (%s)", t.User, t.Address, strings.Join(p.why, ", "))}
	err := hostexec.Probe(ctx, &t)
	switch {
	case err == nil:
		return it
	case errors.Is(err, hostexec.ErrHostKey):
		it.Fix = fmt.Sprintf("add %s's host key to %s (%s, after checking its fingerprint on the host)", p.name, t.KnownHostsFile, keyscan(t.Address))
	case errors.Is(err, hostexec.ErrUnreachable):
		it.Fix = fmt.Sprintf("check that sshd runs on %s at %s and that key %s may log in as %s (authorized_keys)", p.name, t.Address, t.KeyFile, t.User)
	default:
		it.Fix = fmt.Sprintf("check key %s and known_hosts %s of %s's connect section", t.KeyFile, t.KnownHostsFile, p.name)
	}
	it.Result, it.Detail = CheckFail, oneLine(err.Error())+" ("+strings.Join(p.why, ", ")+")"
	return it
}

// keyscan is the ssh-keyscan command that reads the host key at addr.
func keyscan(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "ssh-keyscan " + addr
	}
	return "ssh-keyscan -p " + port + " " + host
}

// checkRepository checks job p's repository as this host sees it, if the host pushes or
// pulls (source or target order): a directory it can write (or, before the first push, a
// parent it can create it in) and, once the repository exists, the password file. A
// repository reached over SFTP is not checked beyond the SSH login (checkSSH).
func checkRepository(agent string, p Plan, add func(CheckItem)) {
	uses := slices.Contains(p.Order.Source, agent)
	for _, t := range p.AllTargets() {
		uses = uses || slices.Contains(t.Order, agent)
	}
	if !uses {
		return
	}
	name := "repository " + p.Job
	loc, err := p.Repo(agent)
	if err != nil {
		add(CheckItem{Check: name, Result: CheckFail, Detail: err.Error(),
			Fix: "attach host " + agent + " to storage " + p.Repository.Storage + ", or give a host attached to it an SSH connect section"})
		return
	}
	if len(loc.Via) > 0 {
		var via []string
		for _, v := range loc.Via {
			via = append(via, v.Name)
		}
		add(CheckItem{Check: name, Result: CheckOK, Detail: fmt.Sprintf("remote: over SFTP via %s at %s (not checked beyond the SSH login)", strings.Join(via, ", "), loc.Dir)})
		return
	}
	fi, err := os.Stat(loc.Dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		parent := existingParent(loc.Dir)
		if err := unix.Access(parent, unix.W_OK|unix.X_OK); err != nil {
			add(CheckItem{Check: name, Result: CheckFail, Detail: fmt.Sprintf("%s does not exist and %s is not writable: %v", loc.Dir, parent, err),
				Fix: "let the agent's user write " + parent + " (the first push creates the repository)"})
			return
		}
		add(CheckItem{Check: name, Result: CheckOK, Detail: loc.Dir + " not created yet: the first push creates it"})
		return
	case err != nil:
		add(CheckItem{Check: name, Result: CheckFail, Detail: err.Error(), Fix: "make " + loc.Dir + " readable by the agent's user"})
		return
	case !fi.IsDir():
		add(CheckItem{Check: name, Result: CheckFail, Detail: loc.Dir + " is not a directory", Fix: "move what is at " + loc.Dir + " away, or correct the job's repository.path"})
		return
	}
	if err := unix.Access(loc.Dir, unix.W_OK|unix.X_OK); err != nil {
		add(CheckItem{Check: name, Result: CheckFail, Detail: fmt.Sprintf("%s is not writable: %v", loc.Dir, err), Fix: "let the agent's user write " + loc.Dir})
		return
	}
	f, err := os.Open(loc.PasswordFile)
	if err != nil {
		add(CheckItem{Check: name, Result: CheckFail, Detail: fmt.Sprintf("%s exists but its password file cannot be read: %v", loc.Dir, err),
			Fix: "copy the repository's password file from a host that has it to " + loc.PasswordFile + " (mode 0600)"})
		return
	}
	_ = f.Close()
	add(CheckItem{Check: name, Result: CheckOK, Detail: loc.Dir + " writable, password file readable"})
}

// existingParent is the nearest ancestor of dir that exists.
func existingParent(dir string) string {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil || p == filepath.Dir(p) {
			return p
		}
	}
}

// clockItem is the clock check: skew is the agent's clock minus the server's.
func clockItem(skew, max time.Duration) CheckItem {
	abs := skew
	if abs < 0 {
		abs = -abs
	}
	how := "ahead of"
	if skew < 0 {
		how = "behind"
	}
	it := CheckItem{Check: "clock", Result: CheckOK, Detail: fmt.Sprintf("%s %s the server's", abs.Round(time.Millisecond), how)}
	if abs > max {
		it.Result = CheckFail
		it.Detail += fmt.Sprintf(", more than %s", max)
		it.Fix = "synchronise the host's clock (chrony or systemd-timesyncd) with the Temporal server's"
	}
	return it
}

// oneLine joins the lines of a (joined) error message.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }
