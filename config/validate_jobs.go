package config

import (
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// minCatchupWindow is the smallest catchup window a Temporal schedule honours
// (the server silently raises smaller ones).
const minCatchupWindow = 10 * time.Second

func (k *checker) jobs() {
	jobIdx := map[string]int{}
	for i := range k.c.Jobs {
		k.job(i, jobIdx)
	}
	k.scriptDirs()
	k.crossJob()
	k.sharedMaintenance()
}

func (k *checker) job(i int, jobIdx map[string]int) {
	j := &k.c.Jobs[i]
	p := fmt.Sprintf("jobs[%d]", i)
	k.name("jobs", i, "job", j.Name, jobIdx)
	if prefix, kind := ReservedJobPrefix(j.Name); prefix != "" {
		k.errorf(p+".name", "job name %q begins with %q, which is reserved for %s IDs (its runs' workflow ID \"replctl-%s\" could be one): rename the job", j.Name, prefix, kind, j.Name)
	}

	srcOK := k.endpoint(p+".source", j.Source)
	if len(j.Targets) > 0 {
		// Fan-out: targets replaces target and order.target.
		if j.Target.Storage != "" || j.Target.Dataset != "" || len(j.Target.Datasets) > 0 || k.given(p+".target", true) {
			k.errorf(p+".target", "give either target (with order.target) or targets, not both")
		}
		if len(j.Order.Target) > 0 {
			k.errorf(p+".order.target", "not used with targets: each entry of targets has its own order")
		}
		for ti, t := range j.Targets {
			tp := fmt.Sprintf("%s.targets[%d]", p, ti)
			if first := slices.IndexFunc(j.Targets, func(o Target) bool { return o.Storage == t.Storage }); t.Storage != "" && first < ti {
				k.errorf(tp+".storage", "storage %q is already a target of this job (targets[%d]); one target per storage", t.Storage, first)
			}
			if k.endpoint(tp, t.Endpoint()) && srcOK {
				k.pair(p, tp, j.Source, t.Endpoint())
			}
		}
	} else if k.endpoint(p+".target", j.Target) && srcOK {
		k.pair(p, p+".target", j.Source, j.Target)
	}

	k.application(p+".application", &j.Application)

	if j.OnUnreachableHost == "" && !k.given(p+".on_unreachable_host", true) {
		j.OnUnreachableHost = OnUnreachableFail
	} else if j.OnUnreachableHost != OnUnreachableFail && j.OnUnreachableHost != OnUnreachableContinue {
		k.errorf(p+".on_unreachable_host", "%q is not valid: want %q (default) or %q", j.OnUnreachableHost, OnUnreachableFail, OnUnreachableContinue)
	}

	if j.Verify == "" && !k.given(p+".verify", true) {
		j.Verify = VerifyChanged
	} else if j.Verify != VerifyChanged && j.Verify != VerifyFull {
		k.errorf(p+".verify", "%q is not valid: want %q (default) or %q", j.Verify, VerifyChanged, VerifyFull)
	}

	if j.OnUnsupported == "" && !k.given(p+".on_unsupported", true) {
		j.OnUnsupported = OnUnsupportedFail
	} else if j.OnUnsupported != OnUnsupportedFail && j.OnUnsupported != OnUnsupportedSkip {
		k.errorf(p+".on_unsupported", "%q is not valid: want %q (default: the run fails naming the entries that cannot be replicated) or %q (replicate without them; the replica is marked incomplete)", j.OnUnsupported, OnUnsupportedFail, OnUnsupportedSkip)
	}

	if j.Precopy == "" && !k.given(p+".precopy", true) {
		j.Precopy = PrecopyAuto
	} else if j.Precopy != PrecopyAuto && j.Precopy != PrecopyAlways && j.Precopy != PrecopyNever {
		k.errorf(p+".precopy", "%q is not valid: want %q (default), %q or %q", j.Precopy, PrecopyAuto, PrecopyAlways, PrecopyNever)
	}

	k.bandwidth(p+".bandwidth", j.Bandwidth)
	k.repository(p+".repository", j)
	k.orders(p, j)
	if j.WriteOnce {
		k.writeOnce(p, j)
	}
	k.timeouts(p+".timeouts", &j.Timeouts)
	if j.Schedule != nil {
		k.schedule(p+".schedule", j.Schedule)
	}

	rp := p + ".retention"
	if !k.given(rp+".replicas", j.Retention.Replicas == 0) {
		j.Retention.Replicas = DefaultReplicas
	} else if j.Retention.Replicas < 1 {
		k.errorf(rp+".replicas", "must be at least 1 (default %d), got %d", DefaultReplicas, j.Retention.Replicas)
	}
	if !k.given(rp+".images", j.Retention.Images == 0) {
		j.Retention.Images = DefaultImages
	} else if j.Retention.Images < 1 {
		k.errorf(rp+".images", "must be at least 1 (default %d), got %d", DefaultImages, j.Retention.Images)
	}
	k.keepWithin(rp, &j.Retention)
	if j.Retention.Retire == "" && !k.given(rp+".retire", true) {
		j.Retention.Retire = RetireRecycle
	} else if j.Retention.Retire != RetireRecycle && j.Retention.Retire != RetireAfterPublish {
		k.errorf(rp+".retire", "%q is not valid: want %q (default) or %q", j.Retention.Retire, RetireRecycle, RetireAfterPublish)
	}
}

// keepWithin checks the keep-within durations and fills the per-kind ones
// from keep_within when they are not given.
func (k *checker) keepWithin(rp string, r *Retention) {
	for _, f := range []struct {
		key string
		d   *time.Duration
	}{{"keep_within", &r.KeepWithin}, {"replicas_within", &r.ReplicasWithin}, {"images_within", &r.ImagesWithin}} {
		if *f.d < 0 {
			k.errorf(rp+"."+f.key, "must not be negative (0 = off), got %s", *f.d)
		}
	}
	if !k.given(rp+".replicas_within", r.ReplicasWithin == 0) {
		r.ReplicasWithin = r.KeepWithin
	}
	if !k.given(rp+".images_within", r.ImagesWithin == 0) {
		r.ImagesWithin = r.KeepWithin
	}
}

// endpoint checks a source or target; ok means storage and datasets are usable
// for further checks.
func (k *checker) endpoint(p string, e Endpoint) bool {
	ok := true
	if e.Storage == "" {
		k.errorf(p+".storage", "required: the name of a storage system (storage: %s)", listOrNone(k.c.storageNames()))
		ok = false
	} else if _, def := k.storageIdx[e.Storage]; !def {
		k.errorf(p+".storage", "storage %q is not defined (storage: %s)", e.Storage, listOrNone(k.c.storageNames()))
		ok = false
	}
	if len(e.Datasets) == 0 {
		if k.given(p+".datasets", true) {
			k.errorf(p+".datasets", "a consistency group needs at least one dataset; or give dataset for a single one")
			return false
		}
		if err := checkDataset(e.Dataset); err != nil {
			k.errorf(p+".dataset", "%v", err)
			ok = false
		}
		return ok
	}
	if e.Dataset != "" {
		k.errorf(p+".dataset", "give either dataset or datasets (a consistency group), not both")
		ok = false
	}
	for i, d := range e.Datasets {
		dp := fmt.Sprintf("%s.datasets[%d]", p, i)
		if err := checkDataset(d); err != nil {
			k.errorf(dp, "%v", err)
			ok = false
			continue
		}
		for j := 0; j < i; j++ {
			if overlaps(d, e.Datasets[j]) {
				k.errorf(dp, "dataset %q overlaps %q (datasets[%d]): the datasets of a group are separate directories", d, e.Datasets[j], j)
				ok = false
			}
		}
	}
	return ok
}

// pair checks a source against one target: as many datasets (paired in order), and no
// target dataset equal to, inside or containing a source dataset on the same storage.
func (k *checker) pair(jp, tp string, src, dst Endpoint) {
	s, d := src.List(), dst.List()
	if len(s) != len(d) {
		k.errorf(tp, "target %s has %d dataset(s) but the source %s has %d: the datasets are paired in order", dst, len(d), src, len(s))
		return
	}
	if src.Storage != dst.Storage {
		return
	}
	field := tp + ".dataset"
	if len(dst.Datasets) > 0 {
		field = tp + ".datasets"
	}
	for _, a := range s {
		for _, b := range d {
			switch {
			case a == b:
				k.errorf(tp, "target %s is the same as the source %s; a job copies between two different places", dst.Storage+":"+b, src.Storage+":"+a)
			case within(b, a):
				k.errorf(field, "target %s:%s is inside the source %s:%s", dst.Storage, b, src.Storage, a)
			case within(a, b):
				k.errorf(field, "target %s:%s contains the source %s:%s", dst.Storage, b, src.Storage, a)
			}
		}
	}
}

// checkDataset: a dataset is a relative, slash-separated path of plain names
// that stays inside the storage root; names starting with "." are reserved
// (the repository lives in .replctl by default).
func checkDataset(d string) error {
	if d == "" {
		return fmt.Errorf("required: a directory relative to the storage root, such as orders or apps/orders")
	}
	if strings.HasPrefix(d, "/") {
		return fmt.Errorf("dataset %q is absolute: give a path relative to the storage root", d)
	}
	for c := range strings.SplitSeq(d, "/") {
		switch {
		case c == "":
			return fmt.Errorf("dataset %q has an empty component (no \"//\", no leading or trailing \"/\")", d)
		case c == "." || c == "..":
			return fmt.Errorf("dataset %q cannot escape the storage root: %q is not allowed", d, c)
		case strings.HasPrefix(c, "."):
			return fmt.Errorf("dataset %q: component %q starts with \".\"; hidden names are reserved for replctl", d, c)
		case hasControl(c):
			return fmt.Errorf("dataset %q contains a control character", d)
		}
	}
	return nil
}

// checkRepoPath is checkDataset allowing hidden components (the default is
// .replctl/repository).
func checkRepoPath(d string) error {
	if strings.HasPrefix(d, "/") {
		return fmt.Errorf("path %q is absolute: give a directory relative to the storage root", d)
	}
	for c := range strings.SplitSeq(d, "/") {
		switch {
		case c == "":
			return fmt.Errorf("path %q has an empty component (no \"//\", no leading or trailing \"/\")", d)
		case c == "." || c == "..":
			return fmt.Errorf("path %q cannot escape the storage root: %q is not allowed", d, c)
		case hasControl(c):
			return fmt.Errorf("path %q contains a control character", d)
		}
	}
	return nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// within reports whether dataset a lies strictly inside dataset b.
func within(a, b string) bool { return strings.HasPrefix(a, b+"/") }

// overlaps reports whether two datasets of one storage share files.
func overlaps(a, b string) bool { return a == b || within(a, b) || within(b, a) }

func (k *checker) application(p string, a *Application) {
	if a.Host == "" {
		k.errorf(p+".host", "required: the host the application runs on (hosts: %s)", listOrNone(k.c.hostNames()))
	} else if _, ok := k.hostIdx[a.Host]; !ok {
		k.errorf(p+".host", "host %q is not defined (hosts: %s)", a.Host, listOrNone(k.c.hostNames()))
	}
	for _, s := range []struct{ key, name string }{{"quiesce", a.Quiesce}, {"resume", a.Resume}, {"takeover", a.Takeover}, {"check", a.Check}} {
		if s.name != "" || k.given(p+"."+s.key, true) {
			if err := checkScriptName(s.name); err != nil {
				k.errorf(p+"."+s.key, "%v", err)
			}
		}
	}
	if !k.given(p+".timeout", a.Timeout == 0) {
		a.Timeout = DefaultScriptTimeout
	} else if a.Timeout <= 0 {
		k.errorf(p+".timeout", "must be positive (default %s)", DefaultScriptTimeout)
	}
}

// checkScriptName: scripts are file names inside the host's scripts dir.
func checkScriptName(s string) error {
	const rule = `give a plain file name in the scripts dir (no "/", not "." or "..", not starting with "." or "-")`
	switch {
	case s == "":
		return fmt.Errorf("script name is empty: %s, or leave the key out", rule)
	case strings.Contains(s, "/") || s == "." || s == "..":
		return fmt.Errorf("script %q cannot leave the scripts dir: %s", s, rule)
	case strings.HasPrefix(s, "."), strings.HasPrefix(s, "-"):
		return fmt.Errorf("script %q is not valid: %s", s, rule)
	case strings.ContainsRune(s, 0), hasControl(s):
		return fmt.Errorf("script %q contains a NUL or control character: %s", s, rule)
	}
	return nil
}

func (k *checker) repository(p string, j *Job) {
	r := &j.Repository
	if r.Storage == "" {
		r.Storage = j.AllTargets()[0].Storage
	} else if _, ok := k.storageIdx[r.Storage]; !ok {
		k.errorf(p+".storage", "storage %q is not defined (storage: %s)", r.Storage, listOrNone(k.c.storageNames()))
	}
	if r.Path == "" && !k.given(p+".path", true) {
		r.Path = DefaultRepositoryPath
	} else if r.Path == "" {
		k.errorf(p+".path", "must not be empty (default %s)", DefaultRepositoryPath)
	} else if err := checkRepoPath(r.Path); err != nil {
		k.errorf(p+".path", "%v", err)
	}
	switch {
	case r.PasswordFile == "" && k.given(p+".password_file", true):
		k.errorf(p+".password_file", "must not be empty: a file on each host holding the repository password, or leave the key out (default %s/%s)",
			k.c.SecretsDir, PasswordFileName(r.Storage, r.Path))
	case r.PasswordFile == "":
		r.PasswordFile = filepath.Join(k.c.SecretsDir, PasswordFileName(r.Storage, r.Path))
	default:
		r.PasswordFile = k.resolve(p+".password_file", r.PasswordFile, false)
		k.passwordBesideRepository(p, j)
	}

	mp := p + ".maintenance"
	m := &r.Maintenance
	if !k.given(mp+".cron", m.Cron == "") {
		m.Cron = DefaultMaintenanceCron
	} else if strings.TrimSpace(m.Cron) == "" {
		k.errorf(mp+".cron", `must not be empty: a cron expression such as "@daily", or %q for no maintenance schedule`, MaintenanceOff)
	} else if m.Cron != MaintenanceOff {
		if err := checkCron(m.Cron); err != nil {
			k.errorf(mp+".cron", "%v", err)
		}
	}
	if !k.given(mp+".time_zone", m.TimeZone == "") {
		m.TimeZone = DefaultTimeZone
	} else if _, err := time.LoadLocation(m.TimeZone); err != nil || m.TimeZone == "" || m.TimeZone == "Local" {
		k.errorf(mp+".time_zone", "time zone %q does not load: use an IANA name such as UTC or Europe/Berlin", m.TimeZone)
	}
}

// PasswordFileName is the name of a repository's password file in secrets_dir:
// <storage>-<path>.password, the path's "/" as "-" and its leading dots dropped
// (array-b-replctl-repository.password for the default path). Two repositories whose
// names collide share the password, which is harmless.
func PasswordFileName(storage, repoPath string) string {
	parts := strings.Split(repoPath, "/")
	for i, p := range parts {
		parts[i] = strings.TrimLeft(p, ".")
	}
	return storage + "-" + strings.Join(parts, "-") + ".password"
}

// passwordBesideRepository refuses a password file on the repository's own storage (as a
// host attached to it sees it): whoever can read the repository would get its key too.
func (k *checker) passwordBesideRepository(p string, j *Job) {
	for _, h := range k.c.Hosts {
		root, ok := h.Mount(j.Repository.Storage)
		if !ok || root == "" {
			continue
		}
		if rel, err := filepath.Rel(root, j.Repository.PasswordFile); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			k.errorf(p+".password_file", "%s is on storage %s (mounted at %s on host %s), where the repository is: whoever can read the repository would read its password too; keep it on each host instead (default %s/%s)",
				j.Repository.PasswordFile, j.Repository.Storage, root, h.Name, k.c.SecretsDir, PasswordFileName(j.Repository.Storage, j.Repository.Path))
			return
		}
	}
}

// sharedMaintenance checks that jobs sharing a repository ask for the same maintenance
// schedule: a repository has one maintenance schedule, owned by the first job using it.
func (k *checker) sharedMaintenance() {
	first := map[[2]string]int{}
	for i := range k.c.Jobs {
		r := &k.c.Jobs[i].Repository
		key := [2]string{r.Storage, r.Path}
		o, ok := first[key]
		if !ok {
			first[key] = i
			continue
		}
		if want := k.c.Jobs[o].Repository.Maintenance; r.Maintenance != want {
			k.errorf(fmt.Sprintf("jobs[%d].repository.maintenance", i), "job %s shares repository %s:%s with job %s, whose maintenance is %s; a repository has one maintenance schedule: give both jobs the same (or set it on neither)",
				k.c.Jobs[i].Name, r.Storage, r.Path, k.c.Jobs[o].Name, want)
		}
	}
}

func (k *checker) timeouts(p string, t *Timeouts) {
	if !k.given(p+".heartbeat", t.Heartbeat == 0) {
		t.Heartbeat = DefaultHeartbeat
	} else if t.Heartbeat < MinHeartbeat {
		k.errorf(p+".heartbeat", "%s is too short: at least %s (default %s)", t.Heartbeat, MinHeartbeat, DefaultHeartbeat)
	}
	if !k.given(p+".schedule_to_start", t.ScheduleToStart == 0) {
		t.ScheduleToStart = DefaultScheduleToStart
	} else if t.ScheduleToStart < MinScheduleToStart {
		k.errorf(p+".schedule_to_start", "%s is too short: at least %s (default %s)", t.ScheduleToStart, MinScheduleToStart, DefaultScheduleToStart)
	}
	if !k.given(p+".start_to_close", t.StartToClose == 0) {
		t.StartToClose = DefaultStartToClose
	}
	if t.StartToClose <= t.Heartbeat {
		k.errorf(p+".start_to_close", "%s must be longer than the heartbeat timeout %s", t.StartToClose, t.Heartbeat)
	}
	if t.StorageRetry < 0 || t.StorageRetry > MaxStorageRetry {
		k.errorf(p+".storage_retry", "%s is out of range: 0 (fail at once, the default) to %s", t.StorageRetry, MaxStorageRetry)
	}
}

func (k *checker) schedule(p string, s *Schedule) {
	if strings.TrimSpace(s.Cron) == "" {
		k.errorf(p+".cron", `required with schedule: a cron expression such as "0 2 * * *", "@daily" or "@every 6h"`)
	} else if err := checkCron(s.Cron); err != nil {
		k.errorf(p+".cron", "%v", err)
	}
	if !k.given(p+".time_zone", s.TimeZone == "") {
		s.TimeZone = DefaultTimeZone
	} else if _, err := time.LoadLocation(s.TimeZone); err != nil || s.TimeZone == "" || s.TimeZone == "Local" {
		k.errorf(p+".time_zone", "time zone %q does not load: use an IANA name such as UTC or Europe/Berlin", s.TimeZone)
	}
	if !k.given(p+".overlap", s.Overlap == "") {
		s.Overlap = DefaultOverlap
	} else if !slices.Contains(OverlapPolicies, s.Overlap) {
		k.errorf(p+".overlap", "%q is not valid: want one of %s", s.Overlap, strings.Join(OverlapPolicies, ", "))
	}
	switch {
	case s.CatchupWindow < 0:
		k.errorf(p+".catchup_window", "must not be negative")
	case s.CatchupWindow > 0 && s.CatchupWindow < minCatchupWindow:
		k.errorf(p+".catchup_window", "%s is below Temporal's minimum of %s", s.CatchupWindow, minCatchupWindow)
	}
	if s.Jitter < 0 {
		k.errorf(p+".jitter", "must not be negative")
	}
}

// checkCron is a light syntax check of a Temporal cron string: 5 fields
// (Temporal also takes 6-7: year, seconds), a descriptor such as @daily, or
// @every <duration>[/<offset>]. Temporal checks value ranges when the
// schedule is created.
func checkCron(c string) error {
	c, _, _ = strings.Cut(c, "#") // Temporal takes a trailing "# comment"
	c = strings.TrimSpace(c)
	if strings.HasPrefix(c, "TZ=") || strings.HasPrefix(c, "CRON_TZ=") {
		return fmt.Errorf("cron %q: put the time zone in time_zone, not in the cron string", c)
	}
	if rest, ok := strings.CutPrefix(c, "@every"); ok {
		rest = strings.TrimSpace(rest)
		every, offset, hasOffset := strings.Cut(rest, "/")
		d, err := parseCronDuration(every)
		if err != nil || d <= 0 {
			return fmt.Errorf("cron %q: @every needs a positive duration such as @every 6h or @every 1d/2h", c)
		}
		if hasOffset {
			if o, err := parseCronDuration(offset); err != nil || o < 0 {
				return fmt.Errorf("cron %q: offset after / must be a duration such as 30m", c)
			}
		}
		return nil
	}
	if strings.HasPrefix(c, "@") {
		switch c {
		case "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly":
			return nil
		}
		return fmt.Errorf("cron %q: unknown descriptor (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @every <duration>)", c)
	}
	fields := strings.Fields(c)
	if len(fields) < 5 || len(fields) > 7 {
		return fmt.Errorf("cron %q has %d fields: want 5 (minute hour day-of-month month day-of-week)", c, len(fields))
	}
	for i, f := range fields {
		if !cronRE.MatchString(f) {
			return fmt.Errorf("cron %q: field %d %q has characters cron does not use", c, i+1, f)
		}
	}
	return nil
}

// parseCronDuration is time.ParseDuration plus whole days ("2d"), which
// Temporal accepts after @every.
func parseCronDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return 0, err
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// scriptDirs: a host in the application order of a job that names a script
// runs those scripts, so it needs a scripts dir.
func (k *checker) scriptDirs() {
	reported := map[int]bool{}
	for i, j := range k.c.Jobs {
		if f := j.Failback; f != nil && f.Application != nil && f.Application.HasScripts() {
			if hi, ok := k.hostIdx[f.Application.Host]; ok && !reported[hi] && k.c.Hosts[hi].Scripts == "" {
				reported[hi] = true
				k.errorf(fmt.Sprintf("hosts[%d].scripts", hi), "required: host %q runs the failback scripts of job %q (jobs[%d].failback.application.host); set its scripts dir", f.Application.Host, j.Name, i)
			}
		}
		if !j.Application.HasScripts() {
			continue
		}
		for _, name := range j.Order.Application {
			hi, ok := k.hostIdx[name]
			if !ok || reported[hi] || k.c.Hosts[hi].Scripts != "" {
				continue
			}
			reported[hi] = true
			k.errorf(fmt.Sprintf("hosts[%d].scripts", hi), "required: host %q runs the scripts of job %q (it is in jobs[%d].order.application); set its scripts dir", name, j.Name, i)
		}
	}
}

// crossJob checks what jobs must not share: a target dataset, and the files
// of any dataset with a repository.
func (k *checker) crossJob() {
	jobs := k.c.Jobs
	for i := range jobs {
		for _, a := range jobs[i].AllTargets() {
			for j := 0; j < i; j++ {
				for _, b := range jobs[j].AllTargets() {
					if a.Storage == "" || a.Storage != b.Storage {
						continue
					}
					for _, da := range a.Endpoint().List() {
						for _, db := range b.Endpoint().List() {
							if overlaps(da, db) {
								k.errorf(fmt.Sprintf("jobs[%d].target", i), "target %s:%s overlaps the target %s:%s of job %q (jobs[%d]): two jobs would overwrite each other", a.Storage, da, b.Storage, db, jobs[j].Name, j)
							}
						}
					}
				}
			}
		}
	}
	for i, jb := range jobs {
		r := jb.Repository
		if r.Storage == "" || checkRepoPath(r.Path) != nil {
			continue
		}
		rp := path.Clean(r.Path)
		for j, other := range jobs {
			eps := []struct {
				role string
				ep   Endpoint
			}{{"source", other.Source}}
			for _, t := range other.AllTargets() {
				eps = append(eps, struct {
					role string
					ep   Endpoint
				}{"target", t.Endpoint()})
			}
			for _, e := range eps {
				if e.ep.Storage != r.Storage || !slices.ContainsFunc(e.ep.List(), func(d string) bool { return d != "" && overlaps(rp, d) }) {
					continue
				}
				whose := "its"
				if j != i {
					whose = fmt.Sprintf("job %q's", other.Name)
				}
				k.errorf(fmt.Sprintf("jobs[%d].repository.path", i), "repository %s:%s overlaps %s %s dataset %s; keep the repository apart from datasets", r.Storage, rp, whose, e.role, e.ep)
			}
		}
	}
}

// writeOnce checks that every source host can reach the incoming staging of every target
// host of the job: over SSH (the target host has connect.ssh) or through its own mount of
// the target's storage.
func (k *checker) writeOnce(p string, j *Job) {
	for _, t := range j.AllTargets() {
		for _, th := range t.Order {
			h, err := k.c.Host(th)
			if err != nil || !h.Connect.Local() {
				continue
			}
			for _, sh := range j.Order.Source {
				s, err := k.c.Host(sh)
				if err != nil {
					continue
				}
				if _, ok := s.Mount(t.Storage); !ok {
					k.errorf(p+".write_once", "source host %q cannot write the staging of target host %q: %q has no connect.ssh and %q does not attach storage %q", sh, th, th, sh, t.Storage)
				}
			}
		}
	}
}
