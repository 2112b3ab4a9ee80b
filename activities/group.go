package activities

import (
	"context"
	"time"

	"github.com/replctl/replctl/activities/dataplane"
)

// PublishGroupName publishes every dataset of a consistency group at once: stable, because
// recorded histories refer to it.
const PublishGroupName = "PublishGroup"

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
	ctx, l, err := a.begin(ctx, in.Agent, Progress{Step: StepPublish, Phase: "publish", Epoch: in.Epoch})
	if err != nil {
		return PublishGroupResult{}, err
	}
	defer l.stop()
	if err := a.authorizePublishGroup(ctx, in); err != nil {
		return PublishGroupResult{}, err
	}
	res, err := dataplane.PublishGroup(ctx, dataplane.GroupPublishRequest{
		TargetRoot: in.TargetRoot, Job: in.Job, ReplicaName: in.ReplicaName, Datasets: in.Datasets,
		Epoch: in.Epoch, Agent: a.Host, Keep: dataplane.Retention{Last: in.Keep, Within: in.KeepWithin},
	})
	observe(ctx, in.Job, string(StepPublish), start, err, 0, 0)
	if err != nil {
		return PublishGroupResult{}, a.fault(ctx, in.Job, StepPublish, err, l.progress())
	}
	return PublishGroupResult{Agent: a.Host, Current: res.Current, Dir: res.Dir, Links: res.Links, Epoch: in.Epoch}, nil
}
