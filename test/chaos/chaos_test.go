package main

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

var smallShape = datasetShape{FilesMin: 10, FilesMax: 20, SizeMin: 100, SizeMax: 8 << 10}

// copyTree copies the regular files of src into dst (a stand-in for a published replica).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	files, err := scanTree(src)
	require.NoError(t, err)
	for rel := range files {
		b, err := os.ReadFile(filepath.Join(src, rel))
		require.NoError(t, err)
		p := filepath.Join(dst, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, b, 0o644))
	}
}

func TestGenerationRoundTrip(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	g1, err := writeGeneration(dir, 1, smallShape, rng)
	require.NoError(t, err)
	got, err := replicaFiles(dir)
	require.NoError(t, err)
	require.Empty(t, g1.Files.Diff(got, 10))
	require.Equal(t, g1.Files.Sum(), got.Sum())

	// The next generation replaces every file; files it does not have are gone.
	g2, err := writeGeneration(dir, 2, datasetShape{FilesMin: 3, FilesMax: 3, SizeMin: 100, SizeMax: 200}, rng)
	require.NoError(t, err)
	files, err := scanTree(dir)
	require.NoError(t, err)
	require.Len(t, files, 3)
	for rel, f := range files {
		require.NoError(t, f.Err, rel)
		require.Equal(t, 2, f.Gen, rel)
	}
	got, err = replicaFiles(dir)
	require.NoError(t, err)
	require.Empty(t, g2.Files.Diff(got, 10))
	require.NotEmpty(t, g1.Files.Diff(got, 10))
	// Emptied directories were removed too.
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 3, "d00, d01, d02 only")
}

func TestHeader(t *testing.T) {
	h := header(12345, "d01/s1/f001.bin")
	require.Len(t, h, headerSize)
	n, err := parseHeader(h)
	require.NoError(t, err)
	require.Equal(t, 12345, n)
	_, err = parseHeader(bytes.Repeat([]byte{'x'}, headerSize))
	require.ErrorContains(t, err, "no generation header")
}

// TestReaderSeesMixedAndPartial checks the reader on real trees behind a real symlink.
func TestReaderSeesMixedAndPartial(t *testing.T) {
	world := t.TempDir()
	src := filepath.Join(world, "src")
	gens := &generations{}
	rng := rand.New(rand.NewPCG(3, 4))
	g1, err := writeGeneration(src, 1, smallShape, rng)
	require.NoError(t, err)
	gens.add(g1)
	rep1 := filepath.Join(world, "replicas", "r1")
	copyTree(t, src, rep1)
	g2, err := writeGeneration(src, 2, smallShape, rng)
	require.NoError(t, err)
	gens.add(g2)

	link := filepath.Join(world, "orders")
	require.NoError(t, os.Symlink("replicas/r1", link))
	r := newReader(link, filepath.Join(world, "fence.json"), gens, 1)
	r.sample(true)
	c, problems := r.takeTrial()
	require.Equal(t, readerCounts{Samples: 1, Full: 1}, c, problems)

	// One file of generation 2 in the replica: mixed.
	rel := filePath(0)
	b, err := os.ReadFile(filepath.Join(src, rel))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(rep1, rel), b, 0o644))
	r.sample(false)
	c, problems = r.takeTrial()
	require.Equal(t, 1, c.Mixed, problems)

	// A complete generation 2 replica missing one file: partial.
	rep2 := filepath.Join(world, "replicas", "r2")
	copyTree(t, src, rep2)
	require.NoError(t, os.Remove(filepath.Join(rep2, filePath(1))))
	require.NoError(t, os.Remove(link))
	require.NoError(t, os.Symlink("replicas/r2", link))
	r.sample(false)
	c, problems = r.takeTrial()
	require.Equal(t, 1, c.Partial, problems)
	require.Contains(t, strings.Join(problems, "\n"), "missing "+filePath(1))

	// Right size, wrong bytes: only the content check sees it.
	copyTree(t, src, rep2)
	p := filepath.Join(rep2, filePath(2))
	b, err = os.ReadFile(p)
	require.NoError(t, err)
	b[len(b)-1] ^= 0xff
	require.NoError(t, os.WriteFile(p, b, 0o644))
	r.sample(true)
	c, problems = r.takeTrial()
	require.Equal(t, 1, c.Bad, problems)
}

func TestReaderRecordsFence(t *testing.T) {
	dir := t.TempDir()
	fence := filepath.Join(dir, "fence.json")
	r := newReader(filepath.Join(dir, "none"), fence, &generations{}, 1)
	require.NoError(t, os.WriteFile(fence, []byte(`{"epoch":5,"agent":"b1","time":"2026-01-01T00:00:00Z"}`), 0o644))
	r.pollFence()
	require.NoError(t, os.WriteFile(fence, []byte(`{"epoch":9,"agent":"b2","time":"2026-01-01T00:00:01Z"}`), 0o644))
	fs := r.fenceRecords()
	require.Len(t, fs, 2)
	require.Equal(t, int64(5), fs[0].Epoch)
	require.Equal(t, "b2", fs[1].Agent)
	require.Equal(t, time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC), fs[1].Recorded)
}

func TestLastMarkers(t *testing.T) {
	p := filepath.Join(t.TempDir(), "markers.log")
	log := "t step=quiesce host=a1 agent=a1 failed= run=R1\n" +
		"t step=quiesce host=a1 agent=a2 failed= run=R2\n" +
		"t step=takeover host=a1 agent=a2 failed=a1 run=R2\n" +
		"t step=resume host=a1 agent=a2 failed= run=R2\n" +
		"t step=quiesce host=a1 agent=a2 failed= run=R2\n"
	require.NoError(t, os.WriteFile(p, []byte(log), 0o644))
	q, r, err := lastMarkers(p, "R2")
	require.NoError(t, err)
	require.Equal(t, 4, q)
	require.Equal(t, 3, r, "the last quiesce of R2 has no resume after it")
	q, r, err = lastMarkers(p, "R1")
	require.NoError(t, err)
	require.Equal(t, 0, q)
	require.Equal(t, -1, r)
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Second)
	}
	require.Equal(t, "50.00s", pct(ds, 0.5))
	require.Equal(t, "99.00s", pct(ds, 0.99))
	require.Equal(t, "100.00s", pct(ds, 1))
	require.Equal(t, "2.00s", pct([]time.Duration{3 * time.Second, time.Second, 2 * time.Second}, 0.5))
	require.Equal(t, "n/a", pct(nil, 0.5))
}

// TestProxyCut checks the cut the harness relies on: a stopped proxy drops live connections
// and refuses new ones; a restarted one accepts again on the same address.
func TestProxyCut(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer up.Close()
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.New(io.Discard))
	px := toxiproxy.NewProxy(srv, "t", "127.0.0.1:0", up.Addr().String())
	require.NoError(t, px.Start())
	addr := px.Listen

	echo := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		b := make([]byte, 4)
		_, err := io.ReadFull(c, b)
		return err
	}
	live, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	require.NoError(t, echo(live))

	px.Stop()
	require.Error(t, echo(live), "a live connection must be dropped by the cut")
	_, err = net.DialTimeout("tcp", addr, time.Second)
	require.Error(t, err, "new connections must be refused during the cut")

	require.NoError(t, px.Start())
	defer px.Stop()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, echo(c))
}
