package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kopia/kopia/repo/format"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/activities/hostexec/sshtest"
)

func TestRetentionAndPrune(t *testing.T) {
	e := newEnv(t)

	var images []string

	for i := range 4 {
		writeFile(t, filepath.Join(e.src, "f.txt"), []byte(fmt.Sprintf("v%d", i)), 0o644, baseTime.Add(time.Duration(i)*time.Second))
		img := e.push().ImageID
		images = append(images, img)

		req := e.pullReq(img, fmt.Sprintf("r%d", i))
		req.Keep.Last = 2
		_, err := e.repos.Pull(context.Background(), req, nil)
		require.NoError(t, err)
	}

	reps, err := ListReplicas(e.target, e.ds)
	require.NoError(t, err)
	require.Len(t, reps, 2)
	require.Equal(t, "r3", reps[0].Name)
	require.True(t, reps[0].Current)
	require.Equal(t, "r2", reps[1].Name)

	stagingLeft, err := os.ReadDir(newLayout(e.target, e.ds).staging)
	require.NoError(t, err)
	require.Empty(t, stagingLeft)

	metas, err := os.ReadDir(newLayout(e.target, e.ds).meta)
	require.NoError(t, err)
	var metaNames []string
	for _, m := range metas {
		metaNames = append(metaNames, m.Name())
	}
	require.ElementsMatch(t, []string{"r2.json", "r2.trust", "r3.json", "r3.trust"}, metaNames, "a meta and a trust record per replica")

	// The retired replicas left the replicas dir in one rename and are deleted in the
	// background; a crash's leftovers are swept by the next pull.
	WaitTrash()
	trashDir := newLayout(e.target, e.ds).trashDir()
	require.Empty(t, must(os.ReadDir(trashDir)))
	leftover := filepath.Join(trashDir, "r9.123", "d")
	require.NoError(t, os.MkdirAll(leftover, 0o755))
	writeFile(t, filepath.Join(leftover, "f"), []byte("x"), 0o444, baseTime)
	require.NoError(t, os.Chmod(leftover, 0o500))

	n, err := e.repos.PruneImages(context.Background(), e.cfg, e.job, e.ds, Retention{Last: 2})
	require.NoError(t, err)
	require.Equal(t, 2, n)

	_, err = e.repos.Pull(context.Background(), e.pullReq(images[0], "old"), nil)
	require.ErrorIs(t, err, ErrNotFound)

	// The newest images remain pullable.
	e.pull(images[3], "again")
	WaitTrash()
	require.Empty(t, must(os.ReadDir(trashDir)), "the leftover was swept")
	require.Equal(t, "v3", string(must(os.ReadFile(filepath.Join(e.link(), "f.txt")))))

	n, err = e.repos.PruneImages(context.Background(), e.cfg, e.job, e.ds, Retention{Last: 2})
	require.NoError(t, err)
	require.Zero(t, n)

	// Maintenance runs (it deletes nothing yet: kopia's safety margins are 24h+).
	require.NoError(t, e.repos.Maintain(context.Background(), e.cfg, false))
	require.NoError(t, e.repos.Maintain(context.Background(), e.cfg, true))
	require.NoError(t, e.repos.VerifyReplica(context.Background(), e.cfg, e.job, e.ds, images[3], e.replicaDir(), 0))
}

// Keep-within on a real repository and target: everything inside the window survives a
// keep-last of 1; a window too short to reach the older ones falls back to keep-last.
func TestRetentionKeepWithin(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	var images []string

	for i := range 3 {
		writeFile(t, filepath.Join(e.src, "f.txt"), []byte(fmt.Sprintf("v%d", i)), 0o644, baseTime.Add(time.Duration(i)*time.Second))
		img := e.push().ImageID
		images = append(images, img)

		req := e.pullReq(img, fmt.Sprintf("r%d", i))
		req.Keep = Retention{Last: 1, Within: time.Hour}
		_, err := e.repos.Pull(ctx, req, nil)
		require.NoError(t, err)
	}

	reps, err := ListReplicas(e.target, e.ds)
	require.NoError(t, err)
	require.Len(t, reps, 3, "all replicas are younger than keep_within")

	n, err := e.repos.PruneImages(ctx, e.cfg, e.job, e.ds, Retention{Last: 1, Within: time.Hour})
	require.NoError(t, err)
	require.Zero(t, n, "all images are younger than keep_within")

	// The images were taken at least a few milliseconds apart: a 1 ns window holds only the newest.
	n, err = e.repos.PruneImages(ctx, e.cfg, e.job, e.ds, Retention{Last: 1, Within: time.Nanosecond})
	require.NoError(t, err)
	require.Equal(t, 2, n)
	_, err = e.repos.Pull(ctx, e.pullReq(images[0], "gone"), nil)
	require.ErrorIs(t, err, ErrNotFound)

	req := e.pullReq(images[2], "r3")
	req.Keep = Retention{Last: 1, Within: time.Nanosecond}
	_, err = e.repos.Pull(ctx, req, nil)
	require.NoError(t, err)
	reps, err = ListReplicas(e.target, e.ds)
	require.NoError(t, err)
	require.Len(t, reps, 1)
	require.Equal(t, "r3", reps[0].Name)
	require.True(t, reps[0].Current)
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	makeTree(t, e.src)
	img := e.push().ImageID
	ctx := context.Background()

	linkSrc := filepath.Join(filepath.Dir(e.src), "srclink")
	require.NoError(t, os.Symlink(e.src, linkSrc))

	pushCases := map[string]func(r *PushRequest){
		"SourceDir": func(r *PushRequest) { r.SourceDir = "relative/dir" },
		"symlink":   func(r *PushRequest) { r.SourceDir = linkSrc },
		"not a dir": func(r *PushRequest) { r.SourceDir = filepath.Join(e.src, "top.txt") },
		"Dataset":   func(r *PushRequest) { r.Dataset = "a/../b" },
		"Dataset ":  func(r *PushRequest) { r.Dataset = "/abs" },
		"reserved":  func(r *PushRequest) { r.Dataset = ".replctl/x" },
		"Job":       func(r *PushRequest) { r.Job = "" },
		"Repo.Dir":  func(r *PushRequest) { r.Repo.Dir = "repo" },
		"Tags":      func(r *PushRequest) { r.Tags = map[string]string{"path": "x"} },
	}

	for want, mod := range pushCases {
		req := PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds}
		mod(&req)
		_, err := e.repos.Push(ctx, req, nil)
		require.ErrorIs(t, err, ErrBadInput, want)
		require.Contains(t, err.Error(), strings.TrimSpace(want))
	}

	pullCases := map[string]func(r *PullRequest){
		"TargetRoot":  func(r *PullRequest) { r.TargetRoot = "target" },
		"Dataset":     func(r *PullRequest) { r.Dataset = "../escape" },
		"ReplicaName": func(r *PullRequest) { r.ReplicaName = "a/b" },
		"Verify":      func(r *PullRequest) { r.Verify = "some" },
		"Keep":        func(r *PullRequest) { r.Keep.Last = -1 },
		"ResumeFrom":  func(r *PullRequest) { r.ResumeFrom = "/elsewhere/x.e1" },
		"ImageID":     func(r *PullRequest) { r.ImageID = "" },
		"job":         func(r *PullRequest) { r.Job = "otherjob" },
	}

	for want, mod := range pullCases {
		req := e.pullReq(img, "r1")
		mod(&req)
		_, err := e.repos.Pull(ctx, req, nil)
		require.ErrorIs(t, err, ErrBadInput, want)
		require.Contains(t, err.Error(), want)
	}

	_, err := e.repos.Pull(ctx, e.pullReq("0123456789abcdef0123456789abcdef", "r1"), nil)
	require.ErrorIs(t, err, ErrNotFound)

	missing := e.pullReq(img, "r1")
	missing.Repo.Dir = filepath.Join(t.TempDir(), "norepo")
	_, err = e.repos.Pull(ctx, missing, nil)
	require.ErrorIs(t, err, ErrNotFound)

	// Never clobber user data at T/D.
	require.NoError(t, os.MkdirAll(e.link(), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(e.link(), "precious"), []byte("x"), 0o644))
	_, err = e.repos.Pull(ctx, e.pullReq(img, "r1"), nil)
	require.ErrorIs(t, err, ErrBadInput)
	require.Contains(t, err.Error(), "is not a replctl replica link; move it away")
	require.FileExists(t, filepath.Join(e.link(), "precious"))

	// Fence and ListReplicas validate too.
	require.ErrorIs(t, OpenFence("rel", e.ds).Advance(1, "a"), ErrBadInput)
	_, err = ListReplicas(e.target, "..")
	require.ErrorIs(t, err, ErrBadInput)
}

func TestConcurrentInit(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "src")
	makeTree(t, src)

	repoDir := filepath.Join(base, "shared", "repo")

	var wg sync.WaitGroup

	errs := make([]error, 3)
	results := make([]PushResult, 3)

	for i := range 3 {
		wg.Add(1)

		go func() {
			defer wg.Done()

			r := NewRepos(nil)
			defer r.Close()

			results[i], errs[i] = r.Push(context.Background(), PushRequest{
				Repo: RepoConfig{Dir: repoDir, PasswordFile: filepath.Join(base, "secrets", "pw"), ClientDir: filepath.Join(base, fmt.Sprintf("client%d", i))},
				Job:  "j", SourceDir: src, Dataset: "d",
			}, nil)
		}()
	}

	wg.Wait()

	for i := range 3 {
		require.NoError(t, errs[i], "agent %d", i)
	}

	// Same content => same root, whoever initialized the repository.
	require.Equal(t, results[0].RootID, results[1].RootID)
	require.Equal(t, results[0].RootID, results[2].RootID)

	leftovers, err := filepath.Glob(filepath.Join(base, "shared", ".repo.init-*"))
	require.NoError(t, err)
	require.Empty(t, leftovers)
}

func TestEscapeDataset(t *testing.T) {
	for _, d := range []string{"a", "a/b", ".hidden/x", "with space/%percent", "ünïcode/ß"} {
		esc := escapeDataset(d)
		require.NotContains(t, esc, "/")
		require.False(t, strings.HasPrefix(esc, "."))

		back, err := unescapeDataset(esc)
		require.NoError(t, err)
		require.Equal(t, d, back)
	}

	require.NotEqual(t, escapeDataset("a/b"), escapeDataset("a%2Fb"))
}

func TestErrorsAreDistinct(t *testing.T) {
	all := []error{ErrFenced, ErrVerify, ErrNotFound, ErrBadInput, ErrUnsupported}
	for i, a := range all {
		for j, b := range all {
			require.Equal(t, i == j, errors.Is(a, b))
		}
	}
}

// A job may publish its source dataset under another name on the target.
func TestPullToDatasetWithAnotherName(t *testing.T) {
	e := newEnv(t)
	makeTree(t, e.src)
	pres := e.push()
	req := e.pullReq(pres.ImageID, "r1")
	req.Dataset, req.SourceDataset = "elsewhere/copy", e.ds
	res, err := e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	require.True(t, res.Verified)
	requireSameTree(t, e.src, res.ReplicaPath)
	resolved, err := filepath.EvalSymlinks(filepath.Join(e.target, "elsewhere/copy"))
	require.NoError(t, err)
	require.Equal(t, res.ReplicaPath, resolved)

	req = e.pullReq(pres.ImageID, "r2")
	req.Dataset = "elsewhere/copy" // without SourceDataset the image is not this dataset's
	_, err = e.repos.Pull(context.Background(), req, nil)
	require.ErrorIs(t, err, ErrBadInput)
}

// New repositories use PBKDF2 (not scrypt's 64 MiB per open) and kopia's
// smallest pack size; both bound an agent's memory. A repository created over SFTP
// is made the same way.
func TestRepositoryFormat(t *testing.T) {
	require.Contains(t, format.SupportedFormatBlobKeyDerivationAlgorithms(), pbkdf2Algorithm)
	for _, remote := range []bool{false, true} {
		t.Run(map[bool]string{false: "local", true: "over SFTP"}[remote], func(t *testing.T) {
			e := newEnv(t)
			if remote {
				e.cfg.Remote = []RemoteHost{remoteHost("b1", sshtest.Start(t), e.cfg.Dir)}
			}
			makeTree(t, e.src)
			e.push()

			var fb struct {
				KeyAlgo string `json:"keyAlgo"`
			}
			require.NoError(t, json.Unmarshal(must(os.ReadFile(filepath.Join(e.cfg.Dir, format.KopiaRepositoryBlobID+".f"))), &fb))
			require.Equal(t, pbkdf2Algorithm, fb.KeyAlgo)

			dr, err := e.repos.open(context.Background(), e.cfg, false)
			require.NoError(t, err)
			mp, err := dr.ContentReader().ContentFormat().GetMutableParameters(context.Background())
			require.NoError(t, err)
			require.Equal(t, 10<<20, mp.MaxPackSize)
		})
	}
}
