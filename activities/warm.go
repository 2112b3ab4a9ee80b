package activities

import (
	"context"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/config"
)

// WarmName is the registered name of WarmReplica: stable, because recorded histories refer
// to it.
const WarmName = "WarmReplica"

// WarmInput asks a target agent to read, ahead of its pull, the metadata of the replicas the
// pull will read (dataplane.WarmReplica). The run starts it beside the push and never waits
// for it; its outcome changes nothing in the run.
type WarmInput struct {
	Job        string
	RunID      string
	Agent      string
	TargetRoot string
	// Datasets are the target's datasets, as the pull will take them.
	Datasets []string
}

// WarmResult is what WarmReplica read, summed over the datasets.
type WarmResult struct {
	Dirs, Entries int64
	Duration      time.Duration
}

// WarmReplica reads the current and the retiring replica of each dataset of in on this
// agent's target storage (dataplane.WarmReplica): paths, retention and the retire setting are
// the job's in this agent's own config. It reads metadata only and writes nothing.
func (a *Agent) WarmReplica(ctx context.Context, in WarmInput) (WarmResult, error) {
	start := time.Now()
	if err := a.checkRoute(in.Agent); err != nil {
		return WarmResult{}, err
	}
	reqs, err := a.authorizeWarm(ctx, in)
	if err != nil {
		return WarmResult{}, err
	}
	var res WarmResult
	if activity.IsActivity(ctx) {
		// Heartbeats carry no details: their answers tell that the run was cancelled or
		// has closed (the SDK then cancels ctx and the walk stops).
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			t := time.NewTicker(max(activity.GetInfo(ctx).HeartbeatTimeout/4, 50*time.Millisecond))
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					activity.RecordHeartbeat(ctx)
				}
			}
		}()
	}
	for _, req := range reqs {
		r, err := a.dataplane().WarmReplica(ctx, req)
		res.Dirs += r.Dirs
		res.Entries += r.Entries
		if err != nil {
			return res, err
		}
	}
	res.Duration = time.Since(start)
	if activity.IsActivity(ctx) {
		activity.GetLogger(ctx).Info("replicas read ahead of the pull", "job", in.Job, "dirs", res.Dirs, "entries", res.Entries, "duration", res.Duration)
	}
	return res, nil
}

// authorizeWarm checks a warm against the agent's own config: the agent must be in the
// order of a target holding each dataset, on the storage root it mounts; it returns the
// data plane's requests built from its own values.
func (a *Agent) authorizeWarm(ctx context.Context, in WarmInput) ([]dataplane.WarmRequest, error) {
	g, err := a.authorize(ctx, WarmName, in.Job)
	if err != nil {
		return nil, err
	}
	if len(in.Datasets) == 0 {
		return nil, g.refuse("Datasets", in.Datasets, nil, "names no dataset")
	}
	p := g.plan
	if !p.ReadAhead {
		return nil, g.refuse("Job", in.Job, nil, "the job does not read ahead (read_ahead) in its own config")
	}
	reqs := make([]dataplane.WarmRequest, 0, len(in.Datasets))
	for _, ds := range in.Datasets {
		t, _, err := g.target(ds)
		if err != nil {
			return nil, err
		}
		if err := g.root("TargetRoot", in.TargetRoot, t.Storage); err != nil {
			return nil, err
		}
		reqs = append(reqs, dataplane.WarmRequest{
			TargetRoot: in.TargetRoot, Dataset: ds,
			Keep:    dataplane.Retention{Last: p.Retention.Replicas, Within: p.Retention.ReplicasWithin},
			Recycle: p.Retention.Retire != config.RetireAfterPublish,
		})
	}
	return reqs, nil
}
