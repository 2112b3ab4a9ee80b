package main

import (
	"fmt"
	"time"
)

// rateTracker gives `status --watch` the rate over the latest heartbeats instead of the
// step's average since it started: that average is wrong after a phase change (a pull's
// verify pass starts counting from zero) and for a taker, whose first heartbeat already
// counts the bytes it reused from the lost attempt.
type rateTracker struct {
	key   string
	bytes int64
	at    time.Time
	rate  float64
}

// rateSmoothing weighs the newest sample against the previous rate (exponential average).
const rateSmoothing = 0.5

// update replaces l's rate and ETA. A new step, attempt, agent or phase starts over: until
// its second heartbeat the rate is unknown and none is shown.
func (r *rateTracker) update(l *liveStep) {
	if l == nil || l.Progress == nil {
		*r = rateTracker{}
		return
	}
	p := l.Progress
	key := fmt.Sprintf("%s|%d|%s|%s", l.Activity, l.Attempt, p.Agent, p.Phase)
	if key != r.key {
		*r = rateTracker{key: key, bytes: p.BytesDone, at: l.LastHeartbeat}
	} else if l.LastHeartbeat.After(r.at) && p.BytesDone >= r.bytes {
		sample := float64(p.BytesDone-r.bytes) / l.LastHeartbeat.Sub(r.at).Seconds()
		if r.rate == 0 {
			r.rate = sample
		} else {
			r.rate = rateSmoothing*sample + (1-rateSmoothing)*r.rate
		}
		r.bytes, r.at = p.BytesDone, l.LastHeartbeat
	}
	l.BytesPerSecond, l.ETA = r.rate, ""
	if r.rate > 0 && p.BytesTotal > p.BytesDone {
		l.ETA = time.Duration(float64(p.BytesTotal-p.BytesDone) / r.rate * float64(time.Second)).Round(time.Second).String()
	}
}
