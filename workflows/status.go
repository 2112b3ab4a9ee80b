package workflows

import (
	"time"

	"github.com/replctl/replctl/activities"
)

// Phases of a run, in order; a run ends in completed, failed or cancelled.
const (
	PhasePlanning = "planning"
	// PhaseChecking: a failback runs the primary application's check script.
	PhaseChecking = "checking"
	// PhasePrecopying: the source is copied while the application still runs (config precopy).
	PhasePrecopying = "precopying"
	PhaseQuiescing  = "quiescing"
	PhasePushing    = "pushing"
	PhaseResuming   = "resuming"
	PhasePulling    = "pulling"
	PhaseCompleted  = "completed"
	PhaseFailed     = "failed"
	PhaseCancelled  = "cancelled"
)

// Roles of a job; each has its own takeover order (the agents check the same names).
const (
	RoleApplication = activities.RoleApplication
	RoleSource      = activities.RoleSource
	RoleTarget      = activities.RoleTarget
)

// ReplicationInput is the one input of the replication workflow, so the Temporal UI's start
// form can start a run with {"job": "NAME"}.
type ReplicationInput struct {
	Job string `json:"job"`
	// Direction is "replicate" (the default, also "") or "failback": copy the target's
	// current replica back to the source (replctl failback).
	Direction string `json:"direction,omitempty"`
	// From is the target storage a failback copies from ("" = the job's first target).
	From string `json:"from,omitempty"`
	// Confirm is a failback's typed confirmation: it must be the job's name, or the run is
	// refused before anything runs (`replctl failback --yes` sends it).
	Confirm string `json:"confirm,omitempty"`
	// PrimaryDown lets a failback go on when the primary application host cannot be reached
	// to run its check script (`replctl failback --primary-down`); the run notes it.
	PrimaryDown bool `json:"primary_down,omitempty"`
}

// Directions of a run.
const (
	DirectionReplicate = "replicate"
	DirectionFailback  = "failback"
)

// Status is what the status query returns while a run goes on, and the run's result.
type Status struct {
	Job        string     `json:"job"`
	RunID      string     `json:"run_id"`
	Phase      string     `json:"phase"`
	Agents     RoleAgents `json:"agents"`
	Takeovers  []Takeover `json:"takeovers"`
	Progress   Progress   `json:"progress"`
	SourcePath string     `json:"source_path,omitempty"`
	Image      string     `json:"image,omitempty"`
	Replica    *Replica   `json:"replica,omitempty"`
	// Unsupported is what the source held that the image lacks, and what a target refused
	// (kind "target"), under on_unsupported: skip: the run's replicas are incomplete.
	Unsupported *activities.Unsupported `json:"unsupported,omitempty"`
	// Direction is set for a failback run.
	Direction string `json:"direction,omitempty"`
	// PrimaryCheck is what a failback knew about the primary application before replacing
	// its dataset: the check script's answer, the operator's word, or "unreachable" with
	// primary_down.
	PrimaryCheck string `json:"primary_check,omitempty"`
	// Images are the images of every dataset of a consistency group, in config order.
	Images []string `json:"images,omitempty"`
	// Targets is the result per target (every target of a fan-out; the one target of a
	// consistency group).
	Targets []TargetStatus `json:"targets,omitempty"`
	// QuiescedHost names the application host while it is quiesced; a run that ends with it
	// set left the application frozen.
	QuiescedHost string                    `json:"quiesced_host,omitempty"`
	Scripts      []activities.ScriptResult `json:"scripts,omitempty"`
	// Precopy is what the precopy (before quiesce) stored, if one ran.
	Precopy *Precopy `json:"precopy,omitempty"`
	// CrashConsistent is set when the run went on without the application's scripts.
	CrashConsistent bool      `json:"crash_consistent,omitempty"`
	Notes           []string  `json:"notes,omitempty"`
	Error           string    `json:"error,omitempty"`
	StartedAt       time.Time `json:"started_at"`
	FinishedAt      time.Time `json:"finished_at,omitzero"`
}

// Precopy is what a run's precopy did: copied the live source into the repository before
// quiesce, so the push made while quiesced re-read only the files changed meanwhile.
type Precopy struct {
	Agent   string  `json:"agent"`
	Bytes   int64   `json:"bytes"`
	Files   int64   `json:"files"`
	Reused  int64   `json:"reused"`
	Seconds float64 `json:"seconds"`
	// Skipped: precopy auto skipped every dataset (precopySkipReason in cmd/replctl); the push
	// copies everything while quiesced.
	Skipped bool `json:"skipped,omitempty"`
	// SkippedDatasets counts the datasets of a consistency group the precopy skipped; when
	// it is under the group's size, the others were copied.
	SkippedDatasets int `json:"skipped_datasets,omitempty"`
}

// RoleAgents is the active agent of each role.
type RoleAgents struct {
	Application string `json:"application,omitempty"`
	Source      string `json:"source,omitempty"`
	Target      string `json:"target,omitempty"`
}

// Takeover records one move of a step from an agent to the next one in the role's order.
type Takeover struct {
	Role   string          `json:"role"`
	Step   activities.Step `json:"step"`
	From   string          `json:"from"`
	To     string          `json:"to,omitempty"`
	Reason string          `json:"reason"`
	Time   time.Time       `json:"time"`
	// Target is the target storage of a fan-out pull's takeover.
	Target string `json:"target,omitempty"`
}

// Phases of one target of a run (TargetStatus.Phase).
const (
	TargetPending    = "pending"
	TargetPulling    = "pulling"
	TargetPublishing = "publishing"
	TargetCompleted  = "completed"
	TargetFailed     = "failed"
)

// TargetStatus is one target's part of a run: its own pull step and takeover order.
type TargetStatus struct {
	Storage string `json:"storage"`
	Phase   string `json:"phase"`
	Agent   string `json:"agent,omitempty"`
	Error   string `json:"error,omitempty"`
	// Replicas holds one replica per dataset (a consistency group has several).
	Replicas []Replica `json:"replicas,omitempty"`
	// Group is the group's current link once a consistency group is published.
	Group string `json:"group,omitempty"`
}

// Progress of the data steps as last reported to the workflow (at the end of each step;
// `replctl status` adds the live heartbeat of the running step).
type Progress struct {
	Step       activities.Step `json:"step,omitempty"`
	BytesDone  int64           `json:"bytes_done"`
	BytesTotal int64           `json:"bytes_total"`
	FilesDone  int64           `json:"files_done"`
	FilesTotal int64           `json:"files_total"`
}

// Replica is the replica a run published.
type Replica struct {
	// Dataset is the target dataset (set for runs with per-target results).
	Dataset  string `json:"dataset,omitempty"`
	Name     string `json:"name"`
	Path     string `json:"path"`
	Link     string `json:"link"`
	Agent    string `json:"agent"`
	Epoch    int64  `json:"epoch"`
	Verified bool   `json:"verified"`
	// Incomplete: the image lacks entries the data plane cannot replicate (Status.Unsupported);
	// Verified says only that the replica matches the image.
	Incomplete bool  `json:"incomplete,omitempty"`
	Linked     int64 `json:"linked_files"`
	Restored   int64 `json:"restored_files"`
	// Cloned: unchanged files copied by FICLONE (independent inodes) where the target can.
	Cloned int64 `json:"cloned_files,omitempty"`
	// Distrusted: files of the replica before it that had been changed on the target since
	// their publish; written anew from the image, never carried over.
	Distrusted int64 `json:"distrusted_files,omitempty"`
	// Recycled: the replica retention retired, brought up to date as this one instead of a
	// new tree; Kept: its files that were already right (counted in Linked too).
	Recycled string `json:"recycled,omitempty"`
	Kept     int64  `json:"kept_files,omitempty"`
	// ResumedFrom is the staging dir of a failed attempt the publishing pull continued.
	ResumedFrom string `json:"resumed_from,omitempty"`
}
