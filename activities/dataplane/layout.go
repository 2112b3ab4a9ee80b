package dataplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	replctlDir   = ".replctl"
	maxComponent = 240 // leaves room for suffixes below NAME_MAX (255)
	dirMode      = 0o755
)

// escapeDataset encodes a dataset path as one safe, reversible path
// component: bytes outside [A-Za-z0-9-_.,+=@] (and a leading '.') become %XX.
func escapeDataset(d string) string {
	var b strings.Builder

	for i := 0; i < len(d); i++ {
		c := d[i]
		safe := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("-_.,+=@", c) >= 0
		if !safe || (i == 0 && c == '.') {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}

		b.WriteByte(c)
	}

	return b.String()
}

// unescapeDataset reverses escapeDataset.
func unescapeDataset(s string) (string, error) {
	var b strings.Builder

	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}

		if i+2 >= len(s) {
			return "", fmt.Errorf("bad escape in %q", s)
		}

		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape in %q: %w", s, err)
		}

		b.WriteByte(byte(v))
		i += 2
	}

	return b.String(), nil
}

// layout names every path a pull uses for one dataset on one target.
type layout struct {
	root     string // T
	dataset  string // D
	esc      string // escaped D
	link     string // T/D
	replicas string // T/.replctl/replicas/<esc>
	meta     string // T/.replctl/meta/<esc>
	staging  string // T/.replctl/staging/<esc>
	incoming string // T/.replctl/incoming/<esc>: written by source agents (write once)
	fence    string // T/.replctl/fence/<esc>.json
}

func newLayout(targetRoot, dataset string) layout {
	esc := escapeDataset(dataset)
	base := filepath.Join(targetRoot, replctlDir)

	return layout{
		root:     targetRoot,
		dataset:  dataset,
		esc:      esc,
		link:     filepath.Join(targetRoot, filepath.FromSlash(dataset)),
		replicas: filepath.Join(base, "replicas", esc),
		meta:     filepath.Join(base, "meta", esc),
		staging:  filepath.Join(base, "staging", esc),
		incoming: filepath.Join(base, incomingKind, esc),
		fence:    filepath.Join(base, "fence", esc+".json"),
	}
}

func (l layout) replicaDir(name string) string { return filepath.Join(l.replicas, name) }
func (l layout) metaFile(name string) string   { return filepath.Join(l.meta, name+".json") }
func (l layout) stagingDir(name string, epoch int64) string {
	return filepath.Join(l.staging, name+".e"+strconv.FormatInt(epoch, 10))
}

// StagingPath returns the staging directory a pull with these parameters
// uses, so a caller can record it (e.g. in heartbeat details) before the pull
// starts and pass it as PullRequest.ResumeFrom to a later attempt.
func StagingPath(targetRoot, dataset, replicaName string, epoch int64) (string, error) {
	if err := checkAbs("TargetRoot", targetRoot); err != nil {
		return "", err
	}

	if err := checkDataset("Dataset", dataset); err != nil {
		return "", err
	}

	if err := checkName("ReplicaName", replicaName); err != nil {
		return "", err
	}

	return newLayout(targetRoot, dataset).stagingDir(replicaName, epoch), nil
}

// stagingNameRE matches staging dir names: <replica>.e<epoch>[.old<nanos>].
var stagingNameRE = regexp.MustCompile(`^(.+)\.e(-?[0-9]+)(\.old[0-9]+)?$`)

func parseStagingName(n string) (replica string, epoch int64, ok bool) {
	m := stagingNameRE.FindStringSubmatch(n)
	if m == nil {
		return "", 0, false
	}

	e, err := strconv.ParseInt(m[2], 10, 64)
	if err != nil {
		return "", 0, false
	}

	return m[1], e, true
}

// checkLinkParents refuses a dataset whose parent directories under the
// target root are symlinks (or not directories): publishing must not follow
// links out of T. Missing parents are fine (publish creates them).
func (l layout) checkLinkParents() error {
	root, err := openRoot(l.root)
	if err != nil {
		return err
	}
	defer unix.Close(root) //nolint:errcheck

	fd, err := l.linkParent(root, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}

	if err != nil {
		return err
	}

	return unix.Close(fd)
}

// currentReplica returns the replica name T/D points to, "" if T/D does not
// exist, or an error if T/D exists and is not a replctl replica link.
func (l layout) currentReplica() (string, error) {
	root, err := openRoot(l.root)
	if err != nil {
		return "", err
	}
	defer unix.Close(root) //nolint:errcheck

	parent, err := l.linkParent(root, false)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}

	if err != nil {
		return "", err
	}
	defer unix.Close(parent) //nolint:errcheck

	return l.currentReplicaAt(parent)
}

// currentReplicaAt is currentReplica with T/D's parent directory already open.
func (l layout) currentReplicaAt(parent int) (string, error) {
	name := filepath.Base(l.link)

	var st unix.Stat_t

	err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return "", nil
	}

	if err != nil {
		return "", fmt.Errorf("checking %s: %w", l.link, err)
	}

	notOurs := fmt.Errorf("%w: %s exists and is not a replctl replica link; move it away", ErrBadInput, l.link)
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return "", notOurs
	}

	target, err := readlinkAt(parent, name)
	if err != nil {
		return "", fmt.Errorf("reading link %s: %w", l.link, err)
	}

	if filepath.IsAbs(target) {
		return "", notOurs
	}

	abs := filepath.Join(filepath.Dir(l.link), target)
	if filepath.Dir(abs) == l.replicas {
		return filepath.Base(abs), nil
	}

	// A consistency group's dataset links through the group's current link
	// (T/.replctl/groups/<job>/current/<D>, see group.go): follow it.
	if !strings.HasPrefix(abs, filepath.Join(l.root, replctlDir, "groups")+string(filepath.Separator)) {
		return "", notOurs
	}

	return l.groupReplica()
}

// replicaMeta is written next to each published replica (meta/<name>.json).
type replicaMeta struct {
	Job       string    `json:"job"`
	Image     string    `json:"image"`
	Root      string    `json:"root"`
	Epoch     int64     `json:"epoch"`
	Agent     string    `json:"agent"`
	Verified  bool      `json:"verified"`
	Published time.Time `json:"published"`
	// Incomplete: the image was pushed with on_unsupported: skip and lacks what Unsupported
	// names; Verified says only that the replica matches that image.
	Incomplete  bool         `json:"incomplete,omitempty"`
	Unsupported *Unsupported `json:"unsupported,omitempty"`
	// Repaired is when this replica replaced Replaced, a damaged replica of the same image
	// (Published is then the damaged one's, so retention ranks it the same).
	Repaired time.Time `json:"repaired,omitzero"`
	Replaced string    `json:"replaced,omitempty"`
}

func readMeta(path string) (*replicaMeta, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}

	var m replicaMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}

	return &m, nil
}

// syncDir fsyncs a directory so renames/creations in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening dir %s for fsync: %w", dir, err)
	}
	defer d.Close()

	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}

	return nil
}

// syncFS flushes all dirty data of the filesystem holding path (syncfs(2)):
// one call instead of an fsync per restored file.
func syncFS(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening %s for syncfs: %w", path, err)
	}
	defer d.Close()

	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", path, err)
	}

	return nil
}

// removeTree removes a tree even when directories in it are read-only
// (replicas keep the image's modes, e.g. 0555 directories), by fds: no symlink
// inside it is followed.
func removeTree(p string) error {
	parent, err := openatRetry(unix.AT_FDCWD, filepath.Dir(p), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("removing %s: %w", p, err)
	}
	defer unix.Close(parent) //nolint:errcheck

	if err := removeAllAt(parent, filepath.Base(p)); err != nil {
		return fmt.Errorf("removing %s: %w", p, err)
	}

	return nil
}

// ReplicaInfo describes one published replica of a dataset.
type ReplicaInfo struct {
	Name    string
	Path    string
	Current bool      // T/D points to it
	ModTime time.Time // publish time (from its meta record; directory mtime if none)
	// Job and Image are from its meta record ("" without one).
	Job, Image string
	// Repaired is when a repair rebuilt it from its image in place of a damaged replica.
	Repaired time.Time
}

// ListReplicas lists the published replicas of dataset under targetRoot,
// newest first.
func ListReplicas(targetRoot, dataset string) ([]ReplicaInfo, error) {
	if err := checkAbs("TargetRoot", targetRoot); err != nil {
		return nil, err
	}

	if err := checkDataset("Dataset", dataset); err != nil {
		return nil, err
	}

	return newLayout(targetRoot, dataset).listReplicas()
}

func (l layout) listReplicas() ([]ReplicaInfo, error) {
	ents, err := os.ReadDir(l.replicas)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}

	if err != nil {
		return nil, fmt.Errorf("listing replicas in %s: %w", l.replicas, err)
	}

	cur, err := l.currentReplica()
	if err != nil {
		return nil, err
	}

	var out []ReplicaInfo

	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}

		ri := ReplicaInfo{Name: e.Name(), Path: l.replicaDir(e.Name()), Current: e.Name() == cur}

		if m, err := readMeta(l.metaFile(e.Name())); err == nil {
			ri.ModTime, ri.Job, ri.Image, ri.Repaired = m.Published, m.Job, m.Image, m.Repaired
		} else if info, err := e.Info(); err == nil {
			ri.ModTime = info.ModTime()
		}

		out = append(out, ri)
	}

	sort.Slice(out, func(i, j int) bool {
		if !out[i].ModTime.Equal(out[j].ModTime) {
			return out[i].ModTime.After(out[j].ModTime)
		}

		return out[i].Name > out[j].Name
	})

	return out, nil
}

// replacedMeta checks that req.Replaces is a published replica of the same job and image
// (a repair rebuilds a replica from its own image) and returns its meta record.
func (l layout) replacedMeta(dirs *targetDirs, req PullRequest) (*replicaMeta, error) {
	if !isDirAt(dirs.replicas, req.Replaces) {
		return nil, badInput("Replaces", "no replica %s of dataset %s", req.Replaces, l.dataset)
	}

	m, err := readMeta(l.metaFile(req.Replaces))
	if err != nil {
		return nil, badInput("Replaces", "replica %s has no usable meta record: %v", req.Replaces, err)
	}

	if m.Job != req.Job || m.Image != req.ImageID {
		return nil, badInput("Replaces", "replica %s is image %s of job %s, not image %s of job %s", req.Replaces, m.Image, m.Job, req.ImageID, req.Job)
	}

	return m, nil
}

// retireReplaced removes the damaged replica a repair replaced, with its records, unless T/D
// still points at it (then the repair has not taken its place yet: nothing is removed).
// Called under the fence lock after the repaired replica is in place.
func (l layout) retireReplaced(name string, log func(string, ...any)) error {
	dirs, err := l.openDirs()
	if err != nil {
		return err
	}
	defer dirs.close()

	if cur, err := l.currentReplica(); err != nil || cur == name {
		return fmt.Errorf("replica %s is still current (T/D %s): not removing it: %v", name, l.link, err)
	}

	if err := moveToTrash(dirs.replicas, name, dirs.trash); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing damaged replica %s: %w", l.replicaDir(name), err)
	}

	_ = unix.Unlinkat(dirs.meta, name+".json", 0)
	_ = unix.Unlinkat(dirs.meta, name+trustExt, 0)
	log("damaged replica replaced", "replica", name)
	trash.sweep(l, log)

	return nil
}
