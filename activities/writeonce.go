package activities

// Write once, step 1 (design.md "Write once: the plan"): who may write a target's incoming
// staging, decided on the target host from its own config. A source agent reaches a
// target host over SSH with the key the target host's authorized_keys binds to
//
//	command="replctl serve-staging --host TARGETHOST --from SOURCEHOST",restrict KEY
//
// and asks, as the SSH command, for one job's staging of one dataset on one storage
// (StagingRequest). serve-staging grants it only what StagingGrant allows and then serves
// SFTP confined to that directory (internal/stagingsftp). The request is only a name to
// look up: every path comes from the target host's config.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/replctl/replctl/config"
)

// StagingCommand is the first word of the SSH command a source agent sends to a target
// host's serve-staging; a JSON StagingRequest follows it.
const StagingCommand = "replctl-staging"

// maxStagingCommand bounds the SSH command serve-staging parses.
const maxStagingCommand = 4096

// StagingRequest names the incoming staging a source agent asks to write: one dataset of
// one target (by storage) of one job.
type StagingRequest struct {
	Job     string `json:"job"`
	Storage string `json:"storage"`
	Dataset string `json:"dataset"`
}

// Command is the SSH command that asks for r.
func (r StagingRequest) Command() string {
	b, _ := json.Marshal(r) // three strings: cannot fail
	return StagingCommand + " " + string(b)
}

// ParseStagingCommand reads the SSH command a client sent (SSH_ORIGINAL_COMMAND). It refuses
// anything but StagingCommand followed by one JSON object with exactly the three fields.
func ParseStagingCommand(cmd string) (StagingRequest, error) {
	var r StagingRequest
	if len(cmd) > maxStagingCommand {
		return r, fmt.Errorf("the SSH command is %d bytes; a staging request is at most %d", len(cmd), maxStagingCommand)
	}
	rest, ok := strings.CutPrefix(cmd, StagingCommand+" ")
	if !ok {
		return r, fmt.Errorf("the SSH command %q is not a staging request (%s {\"job\":…,\"storage\":…,\"dataset\":…}): this key only serves a target's incoming staging", clip(cmd), StagingCommand)
	}
	d := json.NewDecoder(bytes.NewReader([]byte(rest)))
	d.DisallowUnknownFields()
	if err := d.Decode(&r); err != nil {
		return StagingRequest{}, fmt.Errorf("the staging request %q does not parse: %v", clip(rest), err)
	}
	if d.More() {
		return StagingRequest{}, fmt.Errorf("the staging request %q has more than one JSON object", clip(rest))
	}
	for field, v := range map[string]string{"job": r.Job, "storage": r.Storage, "dataset": r.Dataset} {
		if v == "" {
			return StagingRequest{}, fmt.Errorf("the staging request %q has no %s", clip(rest), field)
		}
	}
	return r, nil
}

// clip shortens s for a message.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// StagingGrant decides, from the target host's own config cfg, whether source host from may
// write the incoming staging of req on host. It returns the target storage's mount path on
// host. It refuses, naming the job, both hosts and the reason, unless the job exists and
// sets write_once, from is in its source order, one of its targets is on req.Storage with
// host in that target's order and req.Dataset among its datasets, and host attaches that
// storage.
func StagingGrant(cfg *config.Config, host, from string, req StagingRequest) (string, error) {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("host %s refuses source host %s the staging of job %q (storage %q, dataset %q): %s",
			host, from, req.Job, req.Storage, req.Dataset, fmt.Sprintf(format, args...))
	}
	h, err := cfg.Host(host)
	if err != nil {
		return "", refuse("its own config %s has no host %q (serve-staging --host)", cfg.File, host)
	}
	if _, err := cfg.Host(from); err != nil {
		return "", refuse("its own config %s has no host %q (serve-staging --from)", cfg.File, from)
	}
	j, err := cfg.Job(req.Job)
	if err != nil {
		return "", refuse("its own config %s has no such job", cfg.File)
	}
	if !j.WriteOnce {
		return "", refuse("the job does not set write_once in its own config %s", cfg.File)
	}
	if !slices.Contains(j.Order.Source, from) {
		return "", refuse("%s is not in the job's source order %v", from, j.Order.Source)
	}
	i := slices.IndexFunc(j.AllTargets(), func(t config.Target) bool { return t.Storage == req.Storage })
	if i < 0 {
		return "", refuse("the job has no target on storage %q", req.Storage)
	}
	t := j.AllTargets()[i]
	if !slices.Contains(t.Order, host) {
		return "", refuse("%s is not in the order %v of the job's target on %q", host, t.Order, t.Storage)
	}
	if !slices.Contains(t.Endpoint().List(), req.Dataset) {
		return "", refuse("%q is not a dataset of the job's target on %q (%v)", req.Dataset, t.Storage, t.Endpoint().List())
	}
	root, ok := h.Mount(t.Storage)
	if !ok {
		return "", refuse("%s does not attach storage %q", host, t.Storage)
	}
	return root, nil
}
