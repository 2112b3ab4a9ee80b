package activities

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/replctl/replctl/activities/dataplane"
)

// PublishGroupInput is the input of PublishGroup: the replicas named ReplicaName of every
// dataset of a consistency group on one target, built by deferred pulls.
type PublishGroupInput struct {
	Job         string
	Agent       string
	TargetRoot  string
	ReplicaName string
	Datasets    []string
	// Epoch fences the publish on every dataset of the group.
	Epoch int64
	// Keep and KeepWithin are the replica retention applied per dataset after the publish.
	Keep       int
	KeepWithin time.Duration `json:",omitempty"`
}

// PublishGroupResult says where the group is published.
type PublishGroupResult struct {
	Agent string
	// Current is the group's current link; Dir the group replica it points to.
	Current string
	Dir     string
	Links   []string
	Epoch   int64
}

// PublishGroup makes every dataset of a consistency group show its new replica at once (one
// rename of the group's current link), or none of them.
func (a *Agent) PublishGroup(ctx context.Context, in PublishGroupInput) (PublishGroupResult, error) {
	start := time.Now()
	ctx, l, err := a.begin(ctx, in.Agent, Progress{Step: "publish", Phase: "publish", Epoch: in.Epoch})
	if err != nil {
		return PublishGroupResult{}, err
	}
	defer l.stop()
	if err := a.authorizePublishGroup(ctx, in); err != nil {
		return PublishGroupResult{}, err
	}
	res, err := dataplane.PublishGroup(ctx, dataplane.GroupPublishRequest{
		TargetRoot: in.TargetRoot, Job: in.Job, ReplicaName: in.ReplicaName, Datasets: in.Datasets,
		Epoch: in.Epoch, Agent: a.Host, Keep: in.Keep, KeepWithin: in.KeepWithin,
	})
	observe(ctx, in.Job, "publish", start, err, 0, 0)
	if err != nil {
		return PublishGroupResult{}, classify(ctx, "publish", err, l.progress())
	}
	return PublishGroupResult{Agent: a.Host, Current: res.Current, Dir: res.Dir, Links: res.Links, Epoch: in.Epoch}, nil
}

// replicaBehind resolves a target dataset link to its published replica directory.
func replicaBehind(link string) (string, error) {
	st, err := os.Lstat(link)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s does not exist: the target has no replica to fail back; run a replication first", link)
	}
	if err != nil {
		return "", err
	}
	if st.Mode()&os.ModeSymlink == 0 {
		return "", fmt.Errorf("%s is not a replica link (it is a plain %s): failback copies the target's published replica", link, st.Mode().Type())
	}
	real, err := filepath.EvalSymlinks(link)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s points to no replica: the target has no replica to fail back", link)
	}
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", link, err)
	}
	return real, nil
}

// beforeInPlace prepares a failback pull: a directory at the dataset path (the primary's
// old data) is moved to <root>/.replctl/failback/<dataset>/<replica>.before. done is set
// when an earlier attempt already finished the pull.
func beforeInPlace(in PullInput) (done *PullResult, saved string, err error) {
	dir, meta, err := dataplane.ReplicaPaths(in.TargetRoot, in.Dataset, in.ReplicaName)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", dataplane.ErrBadInput, err)
	}
	link := filepath.Join(in.TargetRoot, filepath.FromSlash(in.Dataset))
	aside := filepath.Join(in.TargetRoot, ".replctl", "failback", url.PathEscape(in.Dataset), in.ReplicaName+".before")
	st, err := os.Lstat(link)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, "", nil
	case err != nil:
		return nil, "", err
	case st.Mode()&os.ModeSymlink != 0:
		return nil, "", nil // an earlier attempt published the replica: the pull finishes it
	case !st.IsDir():
		return nil, "", fmt.Errorf("%w: %s is not a directory; move it away before failing back", dataplane.ErrBadInput, link)
	}
	_, merr := os.Stat(meta)
	if _, derr := os.Lstat(dir); merr == nil && errors.Is(derr, fs.ErrNotExist) {
		// The replica was already turned into the dataset directory by an earlier attempt.
		return &PullResult{Agent: in.Agent, ReplicaName: in.ReplicaName, ReplicaPath: link, LinkPath: link, Verified: true, Epoch: in.Epoch}, "", nil
	}
	if err := os.MkdirAll(filepath.Dir(aside), 0o755); err != nil {
		return nil, "", err
	}
	if err := os.Rename(link, aside); err != nil {
		return nil, "", fmt.Errorf("keeping %s aside: %w", link, err)
	}
	return nil, aside, nil
}

// afterInPlace turns the published replica into the plain dataset directory, so the
// application and the next forward push use it as before; its files share no inode with
// any other replica (the dataset had no replica to link against).
func afterInPlace(replica, link string) error {
	if st, err := os.Lstat(link); err == nil && st.Mode()&os.ModeSymlink != 0 {
		if err := os.Remove(link); err != nil {
			return err
		}
	}
	err := os.Rename(replica, link)
	if errors.Is(err, fs.ErrPermission) {
		// Moving a directory to another parent rewrites its "..": lend it u+w.
		if st, serr := os.Stat(replica); serr == nil {
			_ = os.Chmod(replica, st.Mode().Perm()|0o200)
			if err = os.Rename(replica, link); err == nil {
				_ = os.Chmod(link, st.Mode().Perm())
			}
		}
	}
	if err != nil {
		return fmt.Errorf("moving the failback replica %s to %s: %w", replica, link, err)
	}
	return nil
}
