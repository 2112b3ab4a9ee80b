package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/replctl/replctl/activities"
)

// profilePhase takes CPU profiles of a full push (a1) and pull (b1) of dataset B, then of a
// 1 % incremental one, outside the timed runs, and keeps `go tool pprof -top` of each.
func (b *bench) profilePhase(ctx context.Context) error {
	ds := b.datasets["b"]
	job := b.job("bench-b")
	if err := b.digestSource(ds); err != nil {
		return err
	}
	if err := b.h.wipeTarget(ctx, job); err != nil {
		return err
	}
	if err := b.h.restartAgents(ctx, true); err != nil {
		return err
	}
	for _, mode := range []string{"full", "incremental"} {
		if mode == "incremental" {
			if _, err := ds.Mutate(); err != nil {
				return err
			}
			if err := b.digestSource(ds); err != nil {
				return err
			}
		}
		est := median(b.report.values("b", mode, "replctl", func(s Sample) float64 { return s.Seconds }))
		if est == 0 {
			est = 60
		}
		p, err := b.profiledRun(ctx, job, ds, mode, int(math.Min(900, math.Ceil(est*1.5+5))))
		if err != nil {
			return err
		}
		b.report.Profiles = append(b.report.Profiles, *p)
	}
	if err := ds.Revert(); err != nil {
		return err
	}
	delete(b.srcDigest, ds.Spec.Name)
	return nil
}

// profiledRun runs one replication of job while a1 and b1 record CPU profiles of secs.
func (b *bench) profiledRun(ctx context.Context, job benchJob, ds *Dataset, mode string, secs int) (*ProfileRun, error) {
	dir := filepath.Join(b.o.dir, "profiles", b.o.mode)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	dropCaches()
	type result struct {
		host string
		err  error
	}
	file := func(host string) string {
		return filepath.Join(dir, fmt.Sprintf("cpu-%s-%s-%s.pb.gz", ds.Spec.Name, mode, host))
	}
	done := make(chan result, 2)
	for _, host := range []string{"a1", "b1"} {
		go func() { done <- result{host, fetchProfile(ctx, b.h.pprof[host], secs, file(host))} }()
	}
	time.Sleep(300 * time.Millisecond) // let both profiles start before the run
	b.logf("profile: %ds CPU profiles of a1 (push) and b1 (pull) during the %s replication of dataset %s", secs, mode, ds.Spec.Name)
	t0 := time.Now()
	r, err := b.h.run(ctx, job.Name, b.o.step)
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(t0)
	steps := r.History.steps()
	b.logf("profile: profiled run took %.2fs (push %.2fs, pull %.2fs); waiting for the profiles", elapsed.Seconds(), steps[string(activities.StepPush)], steps[string(activities.StepPull)])
	if err := b.verify(ds, filepath.Join(b.h.targetRoot(job), job.Dataset), "replctl (profiled)"); err != nil {
		return nil, err
	}
	p := &ProfileRun{Dataset: ds.Spec.Name, Mode: mode, RunSeconds: elapsed.Seconds(), PushSeconds: steps[string(activities.StepPush)], PullSeconds: steps[string(activities.StepPull)], Top: map[string]string{}}
	for range 2 {
		res := <-done
		if res.err != nil {
			return nil, fmt.Errorf("CPU profile of %s: %w", res.host, res.err)
		}
		f := file(res.host)
		top, err := runCmd(ctx, 2*time.Minute, "go", "tool", "pprof", "-top", "-nodecount=30", f)
		if err != nil {
			return nil, err
		}
		cum, err := runCmd(ctx, 2*time.Minute, "go", "tool", "pprof", "-top", "-cum", "-nodecount=50", f)
		if err != nil {
			return nil, err
		}
		txt := strings.TrimSuffix(f, ".pb.gz") + ".top.txt"
		if err := os.WriteFile(txt, []byte(top+"\n--- by cumulative time ---\n"+cum), 0o644); err != nil {
			return nil, err
		}
		p.Top[res.host] = top
		p.Files = append(p.Files, f, txt)
	}
	sort.Strings(p.Files)
	return p, nil
}

// fetchProfile fetches a CPU profile of secs seconds from a net/http/pprof endpoint.
func fetchProfile(ctx context.Context, addr string, secs int, file string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+60)*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 2000))
		return fmt.Errorf("GET %s: %s: %s", req.URL, resp.Status, body)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("profile from %s: %w", addr, err)
	}
	return f.Close()
}
