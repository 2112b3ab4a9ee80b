package dataplane

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/activities/hostexec/sshtest"
	"github.com/replctl/replctl/internal/testworld"
)

// TestMeasureSSHPath compares the repository-over-SFTP path with `rsync -e ssh`
// on the same data and the same sshd (loopback, so client and server share the
// machine's CPUs). Skipped unless REPLCTL_MEASURE is set:
//
//	REPLCTL_MEASURE=1 go test ./activities/dataplane -run TestMeasureSSHPath -v
//
// Knobs: REPLCTL_MEASURE_SSH_MB (total, default 512), REPLCTL_MEASURE_SSH_FILES
// (default 128), REPLCTL_MEASURE_DIR (where to create data; default a temp dir),
// REPLCTL_MEASURE_SSH_DELAY_MS (default 0: both tools reach sshd through a proxy that
// delays each direction by this much, a link with twice that round trip).
// Push = source → repository over SFTP (chunking, compression check,
// encryption, upload); pull = repository over SFTP → verified replica. rsync
// copies the plain files in each direction (--whole-file, no delta).
func TestMeasureSSHPath(t *testing.T) {
	if os.Getenv("REPLCTL_MEASURE") == "" {
		t.Skip("set REPLCTL_MEASURE=1 to run")
	}
	rsync, err := exec.LookPath("rsync")
	require.NoError(t, err, "rsync is needed for the comparison")

	totalMB := envInt("REPLCTL_MEASURE_SSH_MB", 512)
	files := envInt("REPLCTL_MEASURE_SSH_FILES", 128)
	base := os.Getenv("REPLCTL_MEASURE_DIR")
	if base == "" {
		base = t.TempDir()
	} else {
		base = filepath.Join(base, fmt.Sprintf("sshpath-%d", time.Now().UnixNano()))
		t.Cleanup(func() { _ = removeTree(base) })
	}
	s := sshtest.Start(t)
	addr, knownHosts := s.Addr, s.KnownHostsFile
	if ms := envInt("REPLCTL_MEASURE_SSH_DELAY_MS", 0); ms > 0 {
		addr, knownHosts = delayedSSH(t, s, ms)
	}

	src := filepath.Join(base, "src")
	size := totalMB << 20 / files
	rng := mrand.New(mrand.NewPCG(3, 4))
	buf := make([]byte, size)
	for i := range files {
		fillRandom(rng, buf)
		writeFile(t, filepath.Join(src, fmt.Sprintf("d%02d", i%16), fmt.Sprintf("f%04d.bin", i)), buf, 0o644, baseTime)
	}
	mib := float64(files*size) / (1 << 20)

	cfg := RepoConfig{Dir: filepath.Join(base, "repo"), PasswordFile: filepath.Join(base, "secrets", "repo.password"), ClientDir: filepath.Join(base, "client"),
		Remote: []RemoteHost{remoteHost("b1", s, filepath.Join(base, "repo"))}}
	cfg.Remote[0].Address, cfg.Remote[0].KnownHostsFile = addr, knownHosts
	repos := NewRepos(nil)
	t.Cleanup(func() { _ = repos.Close() })
	target := filepath.Join(base, "target")
	require.NoError(t, os.MkdirAll(target, 0o755))

	// Page caches are left warm for every step: the comparison is of the transfer paths.
	timeIt := func(fn func()) float64 {
		t0 := time.Now()
		fn()
		return mib / time.Since(t0).Seconds()
	}

	var image string
	pushRate := timeIt(func() {
		res, err := repos.Push(context.Background(), PushRequest{Repo: cfg, Job: "m", SourceDir: src, Dataset: "ds"}, nil)
		require.NoError(t, err)
		image = res.ImageID
	})
	pullRate := timeIt(func() {
		res, err := repos.Pull(context.Background(), PullRequest{Repo: cfg, Job: "m", ImageID: image, TargetRoot: target,
			Dataset: "ds", ReplicaName: "r1", Epoch: 1, Agent: "m", Verify: VerifyFull}, nil)
		require.NoError(t, err)
		require.True(t, res.Verified)
	})

	// The same push and pull on a local repository, to separate kopia's own cost
	// (chunking, hashing, encryption, verification) from the transport.
	local := RepoConfig{Dir: filepath.Join(base, "local-repo"), PasswordFile: filepath.Join(base, "secrets", "local.password"), ClientDir: filepath.Join(base, "client")}
	localTarget := filepath.Join(base, "local-target")
	require.NoError(t, os.MkdirAll(localTarget, 0o755))
	localPush := timeIt(func() {
		res, err := repos.Push(context.Background(), PushRequest{Repo: local, Job: "m", SourceDir: src, Dataset: "ds"}, nil)
		require.NoError(t, err)
		image = res.ImageID
	})
	localPull := timeIt(func() {
		_, err := repos.Pull(context.Background(), PullRequest{Repo: local, Job: "m", ImageID: image, TargetRoot: localTarget,
			Dataset: "ds", ReplicaName: "r1", Epoch: 1, Agent: "m", Verify: VerifyFull}, nil)
		require.NoError(t, err)
	})

	_, port, _ := net.SplitHostPort(addr)
	sshCmd := fmt.Sprintf("ssh -i %s -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes -p %s", s.KeyFile, knownHosts, port)
	runRsync := func(from, to string) {
		out, err := exec.Command(rsync, "-a", "--whole-file", "-e", sshCmd, from, to).CombinedOutput()
		require.NoError(t, err, "rsync: %s", out)
	}
	remote := s.User + "@127.0.0.1:"
	rsyncUp := timeIt(func() { runRsync(src+"/", remote+filepath.Join(base, "rsync-up")+"/") })
	rsyncDown := timeIt(func() { runRsync(remote+filepath.Join(base, "rsync-up")+"/", filepath.Join(base, "rsync-down")+"/") })

	replica, err := filepath.EvalSymlinks(filepath.Join(target, "ds"))
	require.NoError(t, err)
	requireSameTree(t, src, replica)
	requireSameTree(t, src, filepath.Join(base, "rsync-down"))

	t.Logf("SSH path vs rsync -e ssh, %d files, %.0f MiB of random data, loopback sshd:", files, mib)
	t.Logf("  to the far side:   replctl push over SFTP %7.1f MiB/s   rsync %7.1f MiB/s   ratio %.2f", pushRate, rsyncUp, pushRate/rsyncUp)
	t.Logf("  from the far side: replctl pull over SFTP %7.1f MiB/s   rsync %7.1f MiB/s   ratio %.2f", pullRate, rsyncDown, pullRate/rsyncDown)
	t.Logf("  reference, local repository (no SSH): push %7.1f MiB/s   pull %7.1f MiB/s", localPush, localPull)
}

// delayedSSH puts a proxy in front of s that delays each direction by ms milliseconds, and
// returns its address and a known_hosts file naming s's key at that address.
func delayedSSH(t *testing.T, s *sshtest.Server, ms int) (addr, knownHosts string) {
	t.Helper()
	line, err := os.ReadFile(s.KnownHostsFile)
	require.NoError(t, err)
	_, sshdPort, err := net.SplitHostPort(s.Addr)
	require.NoError(t, err)
	p, err := testworld.FreePort()
	require.NoError(t, err)
	port := strconv.Itoa(p)
	addr = net.JoinHostPort("127.0.0.1", port)

	px := toxiproxy.NewProxy(toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop()), "sshd", addr, s.Addr)
	require.NoError(t, px.Start())
	t.Cleanup(px.Stop)
	for _, stream := range []string{"upstream", "downstream"} {
		_, err := px.Toxics.AddToxicJson(strings.NewReader(fmt.Sprintf(
			`{"name":"delay-%s","type":"latency","stream":%q,"attributes":{"latency":%d}}`, stream, stream, ms)))
		require.NoError(t, err)
	}
	knownHosts = filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(knownHosts, []byte(strings.Replace(string(line), "]:"+sshdPort+" ", "]:"+port+" ", 1)), 0o600))
	t.Logf("sshd through a proxy at %s: %d ms each way", addr, ms)
	return addr, knownHosts
}
