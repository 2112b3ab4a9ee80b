package main

import (
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/replctl/replctl/config"
)

// The fleet's shape. Hosts come in cells of four that share two storage systems (a and b,
// both attached to all four hosts, so every order host sees the repository). Host h of a cell
// (position p = h%4) is the application and primary source host of its own jobs; the order
// of a job of h is application [h, h^1], source [h, h^1], target [h^2, h^3] (positions
// XOR-ed inside the cell). Every host is thus primary source of its jobs, backup source of
// its neighbour's, and primary or backup target of the other pair's: the load is even, and a
// dead host is always taken over by a host of its own cell.
const cellSize = 4

// fleetShape is what the config is built from; every process of the simulator builds the
// same config from the same shape (the Plan fake resolves jobs from it).
type fleetShape struct {
	hosts       int // multiple of cellSize
	jobsPerHost int // jobs whose primary source is each host
	// jobCount is how many of the fleet's jobs the config holds and the simulator schedules
	// (0: all). Validating a config is quadratic in its jobs (10,000 take about 45 s), and a
	// compressed run needs only rate x interval of them.
	jobCount  int
	heartbeat time.Duration // the jobs' heartbeat timeout
	s2s       time.Duration // the jobs' schedule-to-start timeout
	address   string        // the Temporal frontend (temporal.address)
}

// hostName is the name of host i.
func hostName(i int) string { return fmt.Sprintf("h%05d", i) }

// jobName is the name of job i: job i belongs to host i%hosts (its index there is i/hosts),
// so the first k jobs of the fleet spread evenly over the hosts (the ramp adds jobs).
func (s fleetShape) jobName(i int) string {
	return fmt.Sprintf("h%05d-j%03d", i%s.hosts, i/s.hosts)
}

// total is the number of jobs of the fleet: hosts x jobs per host.
func (s fleetShape) total() int { return s.hosts * s.jobsPerHost }

// jobs is the number of jobs in the config and on schedules: the first jobCount.
func (s fleetShape) jobs() int {
	if s.jobCount > 0 && s.jobCount < s.total() {
		return s.jobCount
	}
	return s.total()
}

// peer is host h's partner at XOR distance x inside its cell.
func peer(h, x int) int { return h - h%cellSize + (h%cellSize ^ x) }

// cellStorage names storage a or b of host h's cell.
func cellStorage(h int, side string) string { return fmt.Sprintf("c%05d-%s", h/cellSize, side) }

// config builds and validates the fleet's replctl config. The paths are never touched: the
// fakes do not read storage.
func (s fleetShape) config() (*config.Config, error) {
	if s.hosts < cellSize || s.hosts%cellSize != 0 {
		return nil, fmt.Errorf("hosts: %d is not a positive multiple of %d", s.hosts, cellSize)
	}
	if s.jobsPerHost < 1 {
		return nil, fmt.Errorf("jobs per host: %d, want at least 1", s.jobsPerHost)
	}
	c := &config.Config{Temporal: config.Temporal{Address: s.address, Namespace: "default"}, SecretsDir: "/fleet/secrets"}
	for cell := 0; cell < s.hosts/cellSize; cell++ {
		for _, side := range []string{"a", "b"} {
			name := cellStorage(cell*cellSize, side)
			c.Storage = append(c.Storage, config.Storage{Name: name, Path: "/fleet/" + name})
		}
	}
	for h := 0; h < s.hosts; h++ {
		a, b := cellStorage(h, "a"), cellStorage(h, "b")
		c.Hosts = append(c.Hosts, config.Host{
			Name:    hostName(h),
			Attach:  map[string]string{a: "/fleet/" + a, b: "/fleet/" + b},
			Scripts: "/fleet/scripts",
			State:   "/fleet/state/" + hostName(h),
		})
	}
	for i := 0; i < s.jobs(); i++ {
		h := i % s.hosts
		src, dst := cellStorage(h, "a"), cellStorage(h, "b")
		if h%cellSize >= 2 {
			src, dst = dst, src
		}
		name := s.jobName(i)
		c.Jobs = append(c.Jobs, config.Job{
			Name:   name,
			Source: config.Endpoint{Storage: src, Dataset: "data/" + name},
			Target: config.Endpoint{Storage: dst, Dataset: "replicas/" + name},
			Application: config.Application{
				Host: hostName(h), Quiesce: "quiesce.sh", Resume: "resume.sh", Takeover: "takeover.sh", Timeout: time.Minute,
			},
			Order: config.Order{
				Application: []string{hostName(h), hostName(peer(h, 1))},
				Source:      []string{hostName(h), hostName(peer(h, 1))},
				Target:      []string{hostName(peer(h, 2)), hostName(peer(h, 3))},
			},
			Timeouts:   config.Timeouts{Heartbeat: s.heartbeat, ScheduleToStart: s.s2s, StartToClose: time.Hour},
			Precopy:    config.PrecopyNever,
			Repository: config.Repository{Storage: dst, Path: ".replctl/repo-" + name},
			// The schedule's spec is replaced by an interval (schedules.go); the config only
			// needs one for schedsync to build the action.
			Schedule: &config.Schedule{Cron: "*/15 * * * *"},
		})
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("the fleet's config does not validate: %w", err)
	}
	return c, nil
}

// flags defines the shape's flags on fs (the coordinator passes them on to every worker
// process, so all build the same config).
func (s *fleetShape) flags(fs *flag.FlagSet) {
	fs.IntVar(&s.hosts, "hosts", 20, "simulated hosts (a multiple of 4)")
	fs.IntVar(&s.jobsPerHost, "jobs-per-host", 2, "jobs whose primary source is each host")
	fs.IntVar(&s.jobCount, "jobs", 0, "jobs to configure and schedule, the first of the fleet (0: all, hosts x jobs-per-host; with -ramp: what its highest rate needs)")
	fs.DurationVar(&s.heartbeat, "heartbeat", config.DefaultHeartbeat, "the jobs' heartbeat timeout")
	fs.DurationVar(&s.s2s, "schedule-to-start", config.DefaultScheduleToStart, "the jobs' schedule-to-start timeout")
}

// args are the shape's flags for a worker process.
func (s fleetShape) args() []string {
	return []string{"-hosts", strconv.Itoa(s.hosts), "-jobs-per-host", strconv.Itoa(s.jobsPerHost), "-jobs", strconv.Itoa(s.jobCount),
		"-heartbeat", s.heartbeat.String(), "-schedule-to-start", s.s2s.String()}
}
