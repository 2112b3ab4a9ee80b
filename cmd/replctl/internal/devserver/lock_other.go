//go:build !unix

package devserver

// lockDB is a no-op where flock is unavailable.
func lockDB(string) (func(), error) { return func() {}, nil }
