// Package dataplane moves directory trees between storage systems through a
// kopia repository used as a library.
//
// A push takes a point-in-time image of a quiesced source directory into the
// job's repository (a kopia filesystem repository on shared storage: the
// durable meeting point of agents on different hosts). A pull materialises an
// image on a target storage mount as a new replica: it builds the replica in a
// staging directory, verifies it against the image, and publishes it
// atomically by renaming a symlink.
//
// Target layout under the target mount T for dataset D:
//
//	T/D                                          symlink (relative) to the current replica
//	T/.replctl/replicas/<esc(D)>/<replica>/       published replicas
//	T/.replctl/meta/<esc(D)>/<replica>.json       what each replica was built from
//	T/.replctl/meta/<esc(D)>/<replica>.trust      inode and ctime of its files (trust.go)
//	T/.replctl/staging/<esc(D)>/<replica>.e<N>/   a pull in progress (epoch N)
//	T/.replctl/fence/<esc(D)>.json, .lock         highest epoch seen (fencing)
//
// Every directory below T is opened beneath T's fd without following a symlink, and
// T/.replctl must be the agent user's alone (see beneath.go).
//
// Replicas share unchanged files with older replicas through HARD LINKS (like
// rsync --link-dest): a file whose content, size, mode, owner and mtime did not
// change is linked, never copied, and a changed file gets a new inode. Because
// the inodes are shared, replicas MUST be treated as read-only: modifying a
// file of a replica in place would modify the same file in every other replica
// that links it. Nothing in this package writes into an existing inode, and a
// file changed after publish (its ctime differs from the replica's trust
// record) is never linked into a new replica: it is written anew.
//
// The package imports no Temporal package and, of this module, only the leaf
// packages hostexec (SSH to a remote repository host) and internal/secret:
// plain values in, plain values out, progress through callbacks.
//
// Files, by stage:
//
//	source.go, push.go            walking the source beneath its fd; the push
//	push_upload.go                one upload: kopia's uploader over the source
//	extras.go, extras_apply.go    what kopia's entry model has no field for
//	pull.go                       Pull: the stages in order
//	pull_request.go               checking a request, loading its image
//	puller.go                     the puller's state and trust levels
//	pull_resume.go                reusing earlier attempts and the previous replica
//	pull_plan.go                  planning: the image's walk, directory by directory
//	pull_plan_file.go             deciding per file: link, or write
//	pull_write.go                 writing files, symlinks and directory attributes
//	verify.go                     checking a tree against its image
//	publish.go                    fencing, the atomic rename and symlink swap
//	retention.go, trash.go        retiring replicas and discarding leftovers
//	trust.go                      inode and ctime records of published files
package dataplane
