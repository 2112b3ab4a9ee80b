// Package ids holds the one replctl name that packages below workflows need: a host's
// activity task queue. Every other Temporal ID lives in workflows/ids.go, which also
// re-exports these; read that file for the whole list.
//
// Why a leaf package: activities builds each HostPlan's queue and must not import
// workflows (imports flow cmd → workers → workflows → activities), and the embedded
// server (cmd/replctl/internal/devserver) authorizes polls by this prefix. Both import
// this package, so the format is written down once.
package ids

import "strings"

// hostQueuePrefix begins every host's own activity task queue.
const hostQueuePrefix = "replctl-host-"

// HostQueue is the task queue an agent polls for the activities of its host.
// HostQueue("") is the prefix of every host queue.
func HostQueue(host string) string { return hostQueuePrefix + host }

// HostOfQueue reverses HostQueue: the host whose queue q is, ok false if q is no host's
// queue (the shared workflow queue, say).
func HostOfQueue(q string) (host string, ok bool) {
	host, ok = strings.CutPrefix(q, hostQueuePrefix)
	return host, ok && host != ""
}
