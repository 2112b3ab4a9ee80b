package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/config"
)

// ReplicasOptions are the arguments and flags of `replctl replicas`.
type ReplicasOptions struct {
	Job string
	// NoSize skips walking the replicas to measure them (fast on huge datasets).
	NoSize bool
	Output string
}

// NewCmdReplicas is `replctl replicas JOB`: the published replicas on the job's target.
func NewCmdReplicas(f *Factory, runF func(*ReplicasOptions) error) *cobra.Command {
	o := &ReplicasOptions{}
	cmd := &cobra.Command{
		Use:   "replicas JOB",
		Short: "List the published replicas of a job on its target storage: time, size, current, verified",
		Long: "List the replicas of JOB under the target storage's path from the config (storage[].path), newest\n" +
			"first. It reads the target's files directly, so run it where that path is mounted. SIZE is the\n" +
			"replica's apparent size; ADDED is the disk space it takes beyond the older replicas (unchanged\n" +
			"files are hard links shared between replicas).",
		Args:              exactArgs(1, "one job name"),
		ValidArgsFunction: completeJobs(f, false),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Job = args[0]
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return runReplicas(f, o)
		},
	}
	cmd.Flags().BoolVar(&o.NoSize, "no-size", false, "do not measure the replicas (no walk of their trees)")
	addOutputFlag(cmd, &o.Output)
	return cmd
}

// replicaRow is one replica in `replctl replicas`.
type replicaRow struct {
	Name      string    `json:"name"`
	Path      string    `json:"path"`
	Current   bool      `json:"current"`
	Published time.Time `json:"published"`
	Age       string    `json:"age"`
	Files     int64     `json:"files"`
	Bytes     int64     `json:"bytes"`
	// AddedBytes is the disk space of files first seen in this replica (older replicas
	// share unchanged files as hard links).
	AddedBytes int64 `json:"added_bytes"`
	// Verified is nil when the replica has no meta record.
	Verified *bool `json:"verified,omitempty"`
	// Incomplete: the replica lacks entries the data plane cannot replicate (the job's
	// on_unsupported is skip); Unsupported says which.
	Incomplete  bool                   `json:"incomplete,omitempty"`
	Unsupported *dataplane.Unsupported `json:"unsupported,omitempty"`
	Agent       string                 `json:"agent,omitempty"`
	Epoch       int64                  `json:"epoch,omitempty"`
	Image       string                 `json:"image,omitempty"`
	Note        string                 `json:"note,omitempty"`
}

// replicasView is the output of `replctl replicas`.
type replicasView struct {
	Job        string       `json:"job"`
	TargetRoot string       `json:"target_root"`
	Dataset    string       `json:"dataset"`
	Link       string       `json:"link"`
	Replicas   []replicaRow `json:"replicas"`
}

func runReplicas(f *Factory, o *ReplicasOptions) error {
	cfg, j, err := f.Job(o.Job)
	if err != nil {
		return err
	}
	v, err := listJobReplicas(cfg, j, !o.NoSize, time.Now())
	if err != nil {
		return err
	}
	return f.Render(o.Output, v, func(w io.Writer) { printReplicas(w, v) })
}

// targetRoot is the job's target storage path as this machine sees it (from the config),
// with a clear error when it is not configured or not reachable.
func targetRoot(cfg *config.Config, j *config.Job) (string, error) {
	st, err := cfg.StorageByName(j.AllTargets()[0].Storage)
	if err != nil {
		return "", err
	}
	if st.Path == "" {
		return "", fmt.Errorf("job %s: target storage %s has no path in the config (storage[].path): set it to where this machine mounts %s", j.Name, st.Name, st.Name)
	}
	fi, err := os.Stat(st.Path)
	if err != nil {
		return "", fmt.Errorf("job %s: target storage %s is not reachable from this machine at %s (storage[].path in the config): %w; run `replctl replicas` on a host that mounts it, or fix the path", j.Name, st.Name, st.Path, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("job %s: target storage %s path %s is not a directory: fix storage[].path in the config", j.Name, st.Name, st.Path)
	}
	return filepath.Abs(st.Path)
}

// listJobReplicas lists a job's replicas with their meta records and, with measure, sizes.
func listJobReplicas(cfg *config.Config, j *config.Job, measure bool, now time.Time) (*replicasView, error) {
	root, err := targetRoot(cfg, j)
	if err != nil {
		return nil, err
	}
	// The first target's first dataset: a group's replicas share their names, so one
	// dataset's list is the group's.
	ds := j.AllTargets()[0].Endpoint().List()[0]
	infos, err := dataplane.ListReplicas(root, ds)
	if err != nil {
		return nil, fmt.Errorf("job %s: list replicas of dataset %s under %s: %w", j.Name, ds, root, err)
	}
	v := &replicasView{Job: j.Name, TargetRoot: root, Dataset: ds, Link: filepath.Join(root, filepath.FromSlash(ds)), Replicas: []replicaRow{}}
	for _, ri := range infos {
		r := replicaRow{Name: ri.Name, Path: ri.Path, Current: ri.Current, Published: ri.ModTime, Age: now.Sub(ri.ModTime).Round(time.Second).String()}
		if m, err := readReplicaMeta(ri.Path); err == nil {
			r.Verified, r.Agent, r.Epoch, r.Image = &m.Verified, m.Agent, m.Epoch, m.Image
			r.Incomplete, r.Unsupported = m.Incomplete, m.Unsupported
			if m.Incomplete {
				r.Note = "INCOMPLETE: " + m.Unsupported.String()
			}
		} else if errors.Is(err, fs.ErrNotExist) {
			r.Note = "no meta record (publish time is the directory's mtime)"
		} else {
			r.Note = err.Error()
		}
		v.Replicas = append(v.Replicas, r)
	}
	if measure {
		// Oldest first, so a replica's added bytes are what it added over older ones.
		seen := map[[2]uint64]bool{}
		for i := len(v.Replicas) - 1; i >= 0; i-- {
			r := &v.Replicas[i]
			if err := measureTree(r, seen); err != nil {
				r.Note = joinNote(r.Note, "size: "+err.Error())
			}
		}
	}
	return v, nil
}

// replicaMeta is the part of the data plane's meta record (T/.replctl/meta/<dataset>/<name>.json)
// that replicas shows.
type replicaMeta struct {
	Job       string    `json:"job"`
	Image     string    `json:"image"`
	Epoch     int64     `json:"epoch"`
	Agent     string    `json:"agent"`
	Verified  bool      `json:"verified"`
	Published time.Time `json:"published"`
	// Incomplete and Unsupported: what the image lacked (on_unsupported: skip).
	Incomplete  bool                   `json:"incomplete"`
	Unsupported *dataplane.Unsupported `json:"unsupported"`
}

// readReplicaMeta reads the meta record of the replica at path
// (T/.replctl/replicas/<dataset>/<name> -> T/.replctl/meta/<dataset>/<name>.json).
func readReplicaMeta(path string) (*replicaMeta, error) {
	datasetDir := filepath.Dir(path)
	base := filepath.Dir(filepath.Dir(datasetDir)) // T/.replctl
	file := filepath.Join(base, "meta", filepath.Base(datasetDir), filepath.Base(path)+".json")
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var m replicaMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("meta record %s: %w", file, err)
	}
	return &m, nil
}

// measureTree counts r's files and bytes (like du --apparent-size) and the disk space of
// the inodes not seen in an older replica.
func measureTree(r *replicaRow, seen map[[2]uint64]bool) error {
	return filepath.WalkDir(r.Path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		r.Files++
		r.Bytes += fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			key := [2]uint64{uint64(st.Dev), st.Ino}
			if !seen[key] {
				seen[key] = true
				r.AddedBytes += st.Blocks * 512
			}
		}
		return nil
	})
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func printReplicas(w io.Writer, v *replicasView) {
	if len(v.Replicas) == 0 {
		fmt.Fprintf(w, "job %s has no replicas under %s yet: `replctl start %s --wait` makes one\n", v.Job, v.TargetRoot, v.Job)
		return
	}
	fmt.Fprintf(w, "job %s: %s -> current replica\n", v.Job, v.Link)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CURRENT\tREPLICA\tPUBLISHED\tAGE\tFILES\tSIZE\tADDED\tVERIFIED\tAGENT")
	for _, r := range v.Replicas {
		cur := ""
		if r.Current {
			cur = "*"
		}
		verified := "unknown"
		if r.Verified != nil {
			verified = "yes"
			if !*r.Verified {
				verified = "NO"
			}
			if r.Incomplete {
				verified += ", INCOMPLETE"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", cur, r.Name, r.Published.Local().Format(time.DateTime), r.Age, r.Files, humanBytes(r.Bytes), humanBytes(r.AddedBytes), verified, dash(r.Agent))
	}
	tw.Flush()
	for _, r := range v.Replicas {
		if r.Note != "" {
			fmt.Fprintf(w, "note: %s: %s\n", r.Name, r.Note)
		}
	}
}
