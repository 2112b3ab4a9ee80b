package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/schedsync"
)

// goldenFraction spreads schedule offsets: the offsets of any first k jobs are spread
// evenly over the interval (a low-discrepancy sequence), so the ramp can add jobs and the
// rate stays smooth.
const goldenFraction = 0.6180339887498949

// offsetOf is job i's offset inside the interval, in whole seconds (the nominal time a
// schedule gives its run's ID is truncated to the second: whole seconds keep it exact).
func offsetOf(i int, interval time.Duration) time.Duration {
	f := math.Mod(float64(i)*goldenFraction, 1)
	return time.Duration(f * float64(interval)).Truncate(time.Second)
}

// scheduleOptions is job i's schedule as `replctl schedule sync` makes it (the same action:
// ScheduledReplication of the job on the shared queue), with the config's cron replaced by an
// interval with a per-job offset: a real fleet spreads its jobs with cron minutes and jitter,
// and an interval spreads them the same way with exact, known fire times.
func scheduleOptions(cfg *config.Config, i int, interval time.Duration) (client.ScheduleOptions, error) {
	w := schedsync.JobSchedule(cfg, &cfg.Jobs[i])
	if w.Err != nil || w.Options == nil {
		return client.ScheduleOptions{}, fmt.Errorf("job %s: no schedule: %v", cfg.Jobs[i].Name, w.Err)
	}
	o := *w.Options
	o.Spec = client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: interval, Offset: offsetOf(i, interval)}}}
	return o, nil
}

// fires counts the fire times of job i in [from, to).
func fires(i int, interval time.Duration, from, to time.Time) []time.Time {
	off := offsetOf(i, interval)
	n := (from.UnixNano() - int64(off)) / int64(interval)
	var out []time.Time
	for t := time.Unix(0, n*int64(interval)+int64(off)); t.Before(to); t = t.Add(interval) {
		if !t.Before(from) {
			out = append(out, t)
		}
	}
	return out
}

// schedules creates and deletes the fleet's schedules.
type schedules struct {
	c        client.Client
	cfg      *config.Config
	interval time.Duration
	mu       sync.Mutex
	created  []int // job indices
}

// create makes the schedules of jobs [from, to).
func (s *schedules) create(ctx context.Context, from, to int) error {
	var ids []int
	for i := from; i < to; i++ {
		ids = append(ids, i)
	}
	return parallel(ids, func(i int) error {
		o, err := scheduleOptions(s.cfg, i, s.interval)
		if err == nil {
			_, err = s.c.ScheduleClient().Create(ctx, o)
		}
		if err != nil {
			return fmt.Errorf("schedule of job %s: %w", s.cfg.Jobs[i].Name, err)
		}
		s.mu.Lock()
		s.created = append(s.created, i)
		s.mu.Unlock()
		return nil
	})
}

// deleteAll deletes every schedule create made.
func (s *schedules) deleteAll(ctx context.Context) error {
	s.mu.Lock()
	ids := s.created
	s.created = nil
	s.mu.Unlock()
	return parallel(ids, func(i int) error {
		o, err := scheduleOptions(s.cfg, i, s.interval)
		if err == nil {
			err = s.c.ScheduleClient().GetHandle(ctx, o.ID).Delete(ctx)
		}
		return err
	})
}

// parallel calls fn for each of ids, 16 at a time, and returns the first few errors.
func parallel(ids []int, fn func(int) error) error {
	idx := make(chan int)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				if err := fn(i); err != nil {
					mu.Lock()
					if len(errs) < 5 {
						errs = append(errs, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, i := range ids {
		idx <- i
	}
	close(idx)
	wg.Wait()
	return errors.Join(errs...)
}
