// Package postgres is the checkpoint saver on PostgreSQL (pgx v5, one
// pgxpool per saver): what [checkpoint.SQLite] is for one machine, for any
// number of processes on any number of machines sharing one database.
//
// # Layout and guarantees
//
// The threads, writes and leases tables are SQLite's, with the same
// encodings, written and read through checkpoint's row codec
// (checkpoint.Row, checkpoint.Rebuild). Checkpoints (schema version 3) are
// stored in blocks: a run of up to 32 consecutive checkpoints of one
// chain, their rows encoded as records and DEFLATE-compressed together
// (about 35 bytes a checkpoint on a messages thread, where a row of its
// own took 290). A thread's open block, the run its commits extend, is its
// row in open_blocks, rewritten by each commit (the row stays inline and
// its update is HOT); a commit seals it into the insert-only blocks table
// (keyed by thread and last checkpoint id) when it is full or when the new
// checkpoint does not extend it (a fork). Append and messages fields are
// stored as deltas, a full snapshot only when the deltas since the last
// one reach max(2 × its size, [checkpoint.MinSnapshotBytes]); a checkpoint
// with a snapshot ends its block, which stores the snapshot beside the
// records. So storage is linear in the work, and loading any checkpoint
// reads one snapshot and the blocks back to it, in one recursive query
// (the block holding an id is the first whose last id is at or after it;
// a walk that finds otherwise, on ids of clocks that disagree, reads every
// block whose range holds the id). Every record carries its checkpoint's
// CRC-32C row checksum and every block one of its own: a block that fails
// is a [runtime.CorruptError] naming its first checkpoint and its range.
// The checkpoints rows of schema version 2 stay as they were and read as
// before; new checkpoints go into blocks, whose chains may continue into
// those rows. Ids are COLLATE "C", so child runs ("<id>/…") are found by
// a bytewise range on the primary key, and ids grow along a chain (a
// commit whose id does not sort after its parent's is refused). The
// threads table has no index but its primary key, so the update of a
// thread's row at each commit is a HOT update too.
//
// A commit is one transaction in two round trips: BEGIN and the move of
// the thread's head by compare-and-swap (UPDATE … WHERE head = the
// expected head, or INSERT … ON CONFLICT DO NOTHING for a new thread; the
// row lock lets exactly one of concurrent commits through and the others
// get [runtime.ErrConflict]) with the reads of the open block, of the
// blocks whose ranges hold the parent or the new id and of version 2
// rows in one pipelined batch; the block statements (the seal, the open
// block's rewrite), the pending writes and COMMIT in the next. A commit that fails or whose context ends leaves nothing: the last
// good checkpoint stays the head.
//
// # Leases
//
// [Postgres.Lock] takes a thread's run lease with one upsert that only
// replaces an expired row, by the database's clock (now()), so clocks of
// different machines do not matter. The holder renews it every third of
// the TTL ([Options].LeaseTTL, 30 s by default; lgrun serve and lgrun
// worker make it their --claim-ttl, 5 s); a holder that died loses it
// when the TTL runs out, whatever host it was on (there is no
// host-local process check, as SQLite's saver has). A holder that lost its
// lease cannot overwrite another's work: the head's compare-and-swap is
// the fence.
//
// # Fences
//
// A run queue beside these tables (server/pgstore: claims with FOR UPDATE
// SKIP LOCKED, a token per claim) fences a worker's writes by its claim: a
// [Fence] in the context of Commit, Mark or DeleteThread is checked in the
// write's own transaction (in the compare-and-swap's round trip for a
// commit), and a write whose claim is lost fails with a
// [runtime.FencedError], writing nothing.
//
// # Schema and migrations
//
// Open connects to a postgres:// URL (or key=value string). The tables go
// in [Options].Schema, else in the one schema the URL's search_path names,
// else in the server's default; a named schema is created if missing.
// Migrations are versioned in lgrun_migrations and applied on open in one
// transaction under pg_advisory_xact_lock keyed on the schema, so
// processes starting together on a fresh schema wait for each other and
// the later ones find the work done; a schema of a newer version is
// refused. [Postgres.GC] prunes as SQLite's GC does (deleting the blocks
// whose checkpoints all go and rewriting those it keeps some of), then VACUUMs (which
// makes space reusable but rarely gives it back to the system).
//
// Tests run against a real server (see package pgtest): each uses a schema
// of its own, dropped at the end.
package postgres
