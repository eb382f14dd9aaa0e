// Package postgres is the checkpoint saver on PostgreSQL (pgx v5, one
// pgxpool per saver): what [checkpoint.SQLite] is for one machine, for any
// number of processes on any number of machines sharing one database.
//
// # Layout and guarantees
//
// The tables are SQLite's (graphs, threads, checkpoints, writes, leases),
// with the same encodings, written and read through checkpoint's row codec
// (checkpoint.Row, checkpoint.Rebuild): append and messages fields stored
// as deltas, a full snapshot only when the deltas since the last one reach
// max(2 × its size, [checkpoint.MinSnapshotBytes]), so storage is linear in
// the work and loading any checkpoint reads one snapshot and a bounded run
// of deltas, in one recursive query; every row carries the same CRC-32C
// checksum and a row that fails it is a [runtime.CorruptError] naming it.
// JSON columns are text, not jsonb, so the bytes the checksums cover
// round-trip exactly. Ids are COLLATE "C", so child runs ("<id>/…") are
// found by a bytewise range on the primary key. Snapshots of 1 KiB or
// more are stored DEFLATE-compressed behind a marker byte, as SQLite
// stores them, and so are deltas of 128 bytes or more (PostgreSQL's own
// TOAST compression only starts at rows of about 2 KB, which a step's
// delta rarely is); the checksums cover the JSON, and rows stored plain
// read as they are. The threads table has no index but its primary key,
// so the update of a thread's row at each commit is a HOT update.
//
// A commit is one transaction in two round trips: BEGIN and the move of
// the thread's head by compare-and-swap (UPDATE … WHERE head = the
// expected head, or INSERT … ON CONFLICT DO NOTHING for a new thread; the
// row lock lets exactly one of concurrent commits through and the others
// get [runtime.ErrConflict]) in one pipelined batch, the inserts of the
// checkpoint and its pending writes and COMMIT in the next. A commit that fails or whose context ends leaves nothing: the last
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
// refused. [Postgres.GC] prunes as SQLite's GC does, then VACUUMs (which
// makes space reusable but rarely gives it back to the system).
//
// Tests run against a real server (see package pgtest): each uses a schema
// of its own, dropped at the end.
package postgres
