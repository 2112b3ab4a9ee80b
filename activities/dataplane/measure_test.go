package dataplane

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestMeasurePushPull times push and pull of a generated tree. It is skipped
// unless REPLCTL_MEASURE is set:
//
//	REPLCTL_MEASURE=1 go test ./activities/dataplane -run TestMeasurePushPull -v
//
// Knobs: REPLCTL_MEASURE_FILES (default 20000), REPLCTL_MEASURE_MB (total
// size, default 200), REPLCTL_MEASURE_DIR (where to create data; default a
// temp dir), REPLCTL_MEASURE_VERIFY (verification of the first two pulls,
// default full), REPLCTL_MEASURE_PROFILE (a directory for a CPU profile of each step,
// step1.pprof to step8.pprof in the order logged), REPLCTL_MEASURE_CHANGED (the 1 % pushes
// are told what changed, as by --change-journal=push), REPLCTL_MEASURE_MEMLIMIT_MB (as an
// agent's --memory-limit). Times include the final syncfs of each pull (durable replica).
func TestMeasurePushPull(t *testing.T) {
	if os.Getenv("REPLCTL_MEASURE") == "" {
		t.Skip("set REPLCTL_MEASURE=1 to run")
	}

	files := envInt("REPLCTL_MEASURE_FILES", 20000)
	totalMB := envInt("REPLCTL_MEASURE_MB", 200)
	// REPLCTL_MEASURE_LABEL=1: every file has an xattr, as an SELinux label would (the extras
	// then list every file).
	label := os.Getenv("REPLCTL_MEASURE_LABEL") != ""

	base := os.Getenv("REPLCTL_MEASURE_DIR")
	if base == "" {
		base = t.TempDir()
	} else {
		base = filepath.Join(base, fmt.Sprintf("measure-%d", time.Now().UnixNano()))
		t.Cleanup(func() { _ = removeTree(base) })
	}

	e := &env{
		t:      t,
		repos:  NewRepos(nil),
		cfg:    RepoConfig{Dir: filepath.Join(base, "repo"), PasswordFile: filepath.Join(base, "secrets", "repo.password"), ClientDir: filepath.Join(base, "client")},
		src:    filepath.Join(base, "src"),
		target: filepath.Join(base, "target"),
		job:    "measure",
		ds:     "bench/data",
	}
	t.Cleanup(func() { _ = e.repos.Close() })
	require.NoError(t, os.MkdirAll(e.target, 0o755))
	// REPLCTL_MEASURE_NOCLONE=1: hard links even where the target clones (to compare both).
	e.repos.hooks.noClone = os.Getenv("REPLCTL_MEASURE_NOCLONE") != ""
	// REPLCTL_MEASURE_NOREADAHEAD=1: the pull reads each image directory when its walk gets there.
	e.repos.hooks.noReadAhead = os.Getenv("REPLCTL_MEASURE_NOREADAHEAD") != ""
	// REPLCTL_MEASURE_NOVERIFYAHEAD=1: only verification reads each image directory when its walk gets there.
	e.repos.hooks.noVerifyAhead = os.Getenv("REPLCTL_MEASURE_NOVERIFYAHEAD") != ""
	// REPLCTL_MEASURE_NOLISTEDINO=1: a recycling pull stats each staged file, not its listing.
	e.repos.hooks.noListedInos = os.Getenv("REPLCTL_MEASURE_NOLISTEDINO") != ""
	// REPLCTL_MEASURE_NOWRITEBACK=1: a written file's writeback waits for the syncfs before publish.
	e.repos.hooks.noEarlyWriteback = os.Getenv("REPLCTL_MEASURE_NOWRITEBACK") != ""
	// REPLCTL_MEASURE_PLANWORKERS=N: the pull's plan runs N workers.
	e.repos.hooks.planWorkers = envInt("REPLCTL_MEASURE_PLANWORKERS", 0)
	// REPLCTL_MEASURE_MEMLIMIT_MB=N: the soft memory limit an agent runs with (its default
	// is 256MiB); unset, the test process has none.
	if mb := envInt("REPLCTL_MEASURE_MEMLIMIT_MB", 0); mb > 0 {
		prev := debug.SetMemoryLimit(int64(mb) << 20)
		t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	}

	size := totalMB << 20 / files
	rng := mrand.New(mrand.NewPCG(1, 2))
	buf := make([]byte, size)

	t0 := time.Now()

	for i := range files {
		fillRandom(rng, buf)

		fp := filepath.Join(e.src, fmt.Sprintf("d%03d", i/200), fmt.Sprintf("f%06d", i))
		writeFile(t, fp, buf, 0o644, baseTime)
		if label {
			require.NoError(t, unix.Lsetxattr(fp, "user.label", []byte("system_u:object_r:var_lib_t:s0"), 0))
		}
	}

	t.Logf("generated %d files x %d bytes (%d MiB) in %v", files, size, totalMB, time.Since(t0).Round(time.Millisecond))

	ctx := context.Background()

	// REPLCTL_MEASURE_PROFILE=DIR: a CPU profile of each step, DIR/<step>.pprof.
	profDir := os.Getenv("REPLCTL_MEASURE_PROFILE")
	step := 0
	// REPLCTL_MEASURE_DROP=1: sync and drop the page cache before each step (as root), as
	// the bench does before each run.
	drop := os.Getenv("REPLCTL_MEASURE_DROP") != ""
	timed := func(what string, fn func() string) {
		step++
		if drop {
			unix.Sync()
			require.NoError(t, os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0))
		}
		if profDir != "" {
			f, err := os.Create(filepath.Join(profDir, fmt.Sprintf("step%d.pprof", step)))
			require.NoError(t, err)
			require.NoError(t, pprof.StartCPUProfile(f))
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
		// REPLCTL_MEASURE_HEAP=SECONDS (with REPLCTL_MEASURE_PROFILE): a heap profile of
		// what is live that long into each step, DIR/<step>.heap.
		if secs := envInt("REPLCTL_MEASURE_HEAP", 0); secs > 0 && profDir != "" {
			name := filepath.Join(profDir, fmt.Sprintf("step%d.heap", step))
			tm := time.AfterFunc(time.Duration(secs)*time.Second, func() {
				runtime.GC()
				if f, err := os.Create(name); err == nil {
					_ = pprof.Lookup("heap").WriteTo(f, 0)
					_ = f.Close()
				}
			})
			defer tm.Stop()
		}
		start, cpu0 := time.Now(), cpuTime()
		detail := fn()

		t.Logf("%-34s %8v  cpu=%v %s VmHWM=%s", what, time.Since(start).Round(time.Millisecond), (cpuTime() - cpu0).Round(time.Millisecond), detail, vmHWM())
		resetHWM()
	}

	var img1, img2 string

	// REPLCTL_MEASURE_PUSH_PARALLEL: the pushes' file readers (default pushReaders: four per CPU).
	pushParallel := envInt("REPLCTL_MEASURE_PUSH_PARALLEL", 0)

	timed("push (full)", func() string {
		r, err := e.repos.Push(ctx, PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds, Parallel: pushParallel}, nil)
		require.NoError(t, err)
		img1 = r.ImageID

		return fmt.Sprintf("files=%d bytes=%d reused=%d", r.Files, r.Bytes, r.Reused)
	})

	noRecycle := false
	pull := func(img, name, verify string) string {
		req := e.pullReq(img, name)
		req.Verify = VerifyMode(verify)
		req.NoRecycle = noRecycle
		req.Parallel = envInt("REPLCTL_MEASURE_PARALLEL", 0)
		phaseStart := map[string]time.Time{}
		r, err := e.repos.Pull(ctx, req, func(p Progress) {
			if _, ok := phaseStart[p.Phase]; !ok {
				phaseStart[p.Phase] = time.Now()
			}
		})
		require.NoError(t, err)

		return fmt.Sprintf("linked=%d kept=%d cloned=%d restored=%d verified=%v phases=%v", r.Linked, r.Kept, r.Cloned, r.Restored, r.Verified, phaseOffsets(phaseStart))
	}

	// REPLCTL_MEASURE_VERIFY: verification of the first two pulls (default full).
	verify := os.Getenv("REPLCTL_MEASURE_VERIFY")
	if verify == "" {
		verify = "full"
	}

	timed("pull (full, verify="+verify+")", func() string { return pull(img1, "p1", verify) })

	// change 1% of the files
	for i := 0; i < files; i += 100 {
		writeFile(t, filepath.Join(e.src, fmt.Sprintf("d%03d", i/200), fmt.Sprintf("f%06d", i)), []byte(strconv.Itoa(i)+" changed"), 0o644, baseTime.Add(time.Hour))
	}

	// REPLCTL_MEASURE_CHANGED=1: the 1 % pushes are told what changed, as an agent's journal
	// would (--change-journal=push).
	changed := func(image string, first int) *ChangedSince {
		if os.Getenv("REPLCTL_MEASURE_CHANGED") == "" {
			return nil
		}
		c := &ChangedSince{Image: image, Names: map[string][]string{}}
		for i := first; i < files; i += 100 {
			d := fmt.Sprintf("d%03d", i/200)
			if len(c.Names[d]) == 0 {
				c.Dirs = append(c.Dirs, d)
			}
			c.Names[d] = append(c.Names[d], fmt.Sprintf("f%06d", i))
		}
		return c
	}

	timed("push (1% changed)", func() string {
		r, err := e.repos.Push(ctx, PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds, Parallel: pushParallel, Changed: changed(img1, 0)}, nil)
		require.NoError(t, err)
		img2 = r.ImageID

		return fmt.Sprintf("files=%d reused=%d dirs reused=%d partial=%d", r.Files, r.Reused, r.ReusedDirs, r.PartialDirs)
	})

	timed("pull (1% changed, verify="+verify+")", func() string { return pull(img2, "p2", verify) })
	timed("pull (same image, verify=changed)", func() string { return pull(img2, "p3", "changed") })

	// Another 1 %: retention (keep 3) now retires p1, which the pull recycles
	// (REPLCTL_MEASURE_NORECYCLE=1: a new tree, p1 to the trash). The sweep of what went to
	// the trash is timed apart: it runs in the background, but on the same cores.
	noRecycle = os.Getenv("REPLCTL_MEASURE_NORECYCLE") != ""
	for i := 1; i < files; i += 100 {
		writeFile(t, filepath.Join(e.src, fmt.Sprintf("d%03d", i/200), fmt.Sprintf("f%06d", i)), []byte(strconv.Itoa(i)+" changed"), 0o644, baseTime.Add(time.Hour))
	}

	var r PushResult
	var err error
	timed("push (another 1 %)", func() string {
		r, err = e.repos.Push(ctx, PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds, Parallel: pushParallel, Changed: changed(img2, 1)}, nil)
		require.NoError(t, err)
		return fmt.Sprintf("files=%d reused=%d dirs reused=%d partial=%d", r.Files, r.Reused, r.ReusedDirs, r.PartialDirs)
	})
	timed(fmt.Sprintf("pull (1%% again, recycle=%v)", !noRecycle), func() string { return pull(r.ImageID, "p4", "changed") })
	timed("trash sweep after it", func() string { WaitTrash(); return "" })

	require.NoError(t, e.repos.VerifyReplica(ctx, e.cfg, e.job, e.ds, r.ImageID, e.replicaDir(), 0))
}

// vmHWM is this process's peak RSS (since the last resetHWM) from /proc.
func vmHWM() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}

	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			return strings.Join(strings.Fields(v), "")
		}
	}

	return "?"
}

func resetHWM() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func phaseOffsets(m map[string]time.Time) string {
	var first time.Time
	for _, v := range m {
		if first.IsZero() || v.Before(first) {
			first = v
		}
	}

	s := ""
	for _, ph := range []string{"link", "restore", "verify", "publish"} {
		if v, ok := m[ph]; ok {
			s += fmt.Sprintf(" %s@%v", ph, v.Sub(first).Round(time.Millisecond))
		}
	}

	return s
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}

	return def
}

// TestMeasureParallel times a cold push and pull of an existing tree at several numbers of
// parallel workers (page cache dropped before each step when allowed). Skipped unless
// REPLCTL_MEASURE_SRC names the tree:
//
//	REPLCTL_MEASURE_SRC=/tmp/replctl-bench/data/full/b REPLCTL_MEASURE_PARALLEL=2,8 \
//	  go test ./activities/dataplane -run TestMeasureParallel -v -timeout 1h
//
// REPLCTL_MEASURE_NOPULL=1 times the pushes alone.
func TestMeasureParallel(t *testing.T) {
	src := os.Getenv("REPLCTL_MEASURE_SRC")
	if src == "" {
		t.Skip("set REPLCTL_MEASURE_SRC to run")
	}

	// REPLCTL_MEASURE_CHECKPOINTS=5s,1m: the pushes' checkpoint intervals, in turn with the
	// parallel counts (default the push's own).
	checkpoints := strings.Split(envString("REPLCTL_MEASURE_CHECKPOINTS", "0s"), ",")
	noPull := os.Getenv("REPLCTL_MEASURE_NOPULL") != ""
	// REPLCTL_MEASURE_WARMMETA=0,1: in turn with the parallel counts, 1 stats every entry of
	// the tree after the page cache is dropped, so that the push finds its metadata cached
	// and only the files' data cold.
	warmMeta := strings.Split(envString("REPLCTL_MEASURE_WARMMETA", "0"), ",")
	// REPLCTL_MEASURE_ENCSLOTS=1,0: in turn with the parallel counts, 0 lets every reader
	// into kopia's object writers at once (no encryption slots, encslots.go).
	encSlotsOn := strings.Split(envString("REPLCTL_MEASURE_ENCSLOTS", "1"), ",")
	defer func(s encSlots) { pushSlots = s }(pushSlots)
	withSlots := pushSlots
	for i, ps := range strings.Split(envString("REPLCTL_MEASURE_PARALLEL", "2,8"), ",") {
		par, err := strconv.Atoi(ps)
		require.NoError(t, err)
		checkpoint, err := time.ParseDuration(checkpoints[i%len(checkpoints)])
		require.NoError(t, err)

		base := filepath.Join(filepath.Dir(src), fmt.Sprintf("measure-par-%d", time.Now().UnixNano()))
		repos := NewRepos(nil)
		cfg := RepoConfig{Dir: filepath.Join(base, "repo"), PasswordFile: filepath.Join(base, "secrets", "repo.password"), ClientDir: filepath.Join(base, "client")}
		target := filepath.Join(base, "target")
		require.NoError(t, os.MkdirAll(target, 0o755))

		dropped := dropPageCache()
		warm := warmMeta[i%len(warmMeta)] == "1"
		if warm {
			// The entries' metadata read back in (find stats every entry); the files'
			// data stays cold.
			out, err := exec.Command("find", src, "-printf", "%s\n").Output()
			require.NoError(t, err)
			require.NotEmpty(t, out)
		}
		pushSlots = withSlots
		if encSlotsOn[i%len(encSlotsOn)] == "0" {
			pushSlots = nil
		}
		runtime.GC()
		resetHWM()
		gc0, alloc0 := gcCounts()
		t0, cpu0 := time.Now(), cpuTime()
		p, err := repos.Push(context.Background(), PushRequest{Repo: cfg, Job: "measure", SourceDir: src, Dataset: "m", Parallel: par, CheckpointInterval: checkpoint}, nil)
		require.NoError(t, err)
		push, pushCPU, pushHWM := time.Since(t0), cpuTime()-cpu0, vmHWM()
		gc1, alloc1 := gcCounts()

		pull := "skipped"
		if !noPull {
			dropPageCache()
			resetHWM()
			pgc0, palloc0 := gcCounts()
			t0, cpu0 = time.Now(), cpuTime()
			_, err = repos.Pull(context.Background(), PullRequest{Repo: cfg, Job: "measure", ImageID: p.ImageID, TargetRoot: target, Dataset: "m", ReplicaName: "r1", Epoch: 1, Agent: "a", Parallel: par, Verify: VerifyChanged}, nil)
			require.NoError(t, err)
			gc2, alloc2 := gcCounts()
			pull = fmt.Sprintf("%.2fs (CPU %.2fs, VmHWM %s, %d GCs, %.0f MiB allocated)", time.Since(t0).Seconds(), (cpuTime() - cpu0).Seconds(), vmHWM(), gc2-pgc0, float64(alloc2-palloc0)/(1<<20))
		}

		t.Logf("parallel %2d, checkpoint %v, metadata warm %t, encryption slots %t: push %.2fs (CPU %.2fs, VmHWM %s, %d GCs, %.0f MiB allocated) pull %s (%d files, %.0f MiB; page cache dropped: %t)", par, checkpoint, warm, pushSlots != nil, push.Seconds(), pushCPU.Seconds(), pushHWM, gc1-gc0, float64(alloc1-alloc0)/(1<<20), pull, p.Files, float64(p.Bytes)/(1<<20), dropped)
		require.NoError(t, repos.Close())
		require.NoError(t, removeTree(base))
	}
}

func envString(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}

	return def
}

func dropPageCache() bool {
	_, _ = exec.Command("sync").CombinedOutput()

	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0) == nil
}

// gcCounts is the process's finished GC cycles and heap bytes allocated so far.
func gcCounts() (cycles, allocated uint64) {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

// cpuTime is the process's user+system CPU time so far (a measure less
// disturbed than wall time by other work on a shared machine).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)

	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
