// Package checkpoint implements [runtime.Saver]: [SQLite], the durable
// default, and [Memory], for tests and throw-away runs. Package
// checkpointtest holds the conformance suite both pass.
package checkpoint
