//go:build !unix

package checkpoint

// processAlive cannot tell on this system: a lease then lasts until it expires.
func processAlive(int) bool { return true }
