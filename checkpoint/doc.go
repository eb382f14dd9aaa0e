// Package checkpoint implements [runtime.Saver]: [SQLite], the durable
// default, and [Memory], for tests and throw-away runs. Package
// checkpointtest holds the conformance suite both pass.
//
// # Storage
//
// [SQLite] stores each checkpoint as a row holding its delta (the change
// from its parent, per field: set, append, merge or messages upserts), so
// a step that adds one message stores that message, not the whole list.
// Some rows also hold a snapshot of the whole state, at sizes that grow
// geometrically (see [MinSnapshotBytes]): a thread's storage stays linear
// in its work, and rebuilding any checkpoint reads one snapshot and the
// deltas after it, whose volume is at most about twice the state's. Those
// deltas are folded per field before they are applied, so a long run of
// messages deltas costs one pass over the list, not one per delta. Forks
// are children of older checkpoints and share their chain. Since layout
// version 3 the checkpoints table is keyed by (thread, id) without a
// rowid (a commit writes one b-tree), snapshots of 1 KiB or more are
// stored DEFLATE-compressed, and a chain is read with one range scan of
// the thread's rows, walked through their parent links in memory; the
// scan reads only the columns a chain needs (id, parent, delta, snapshot),
// verified by a checksum of their own (see Integrity). Since layout
// version 4 deltas of 128 bytes or more are stored compressed too, and
// packs (see pack.go) summarise runs of 64 checkpoints of a chain, their
// deltas composed: a chain read goes from pack to pack and reads only the
// rows between them, so the head of a 10,000-step thread reads a snapshot,
// about 80 packs and a few dozen rows instead of 5,000 rows. Packs are
// redundant (every row keeps its delta), and the history walk reads
// through them where Get does.
//
// # History
//
// A thread's history with every checkpoint's values ([SQLite.History],
// [runtime.ReadHistory]) is read in one walk of its checkpoint tree, in
// one read transaction: each row is read once, each snapshot a selected
// checkpoint is built on is decoded once, and each delta is applied once,
// to its parent's values, so the walk costs the stored deltas rather than
// one rebuild of the state per checkpoint. [WalkHistory] is that walk for
// any SQL saver; [Memory] has its own.
//
// # Concurrency
//
// Every commit is one BEGIN IMMEDIATE transaction that moves the thread's
// head only if it is still the expected one (compare-and-swap) and
// inserts the checkpoint:
// several processes may resume one thread, exactly one proceeds and the
// others get [runtime.ErrConflict]. Since layout version 5 a running
// thread's head is its greatest checkpoint, and the steps of a run insert
// their checkpoints without rewriting the thread's row: the writer
// connection compares the expected head with the head it left, which
// PRAGMA data_version shows no other connection has moved since (see
// follow.go). Different threads share only SQLite's
// write lock, held for the length of one commit; readers never wait (WAL).
// A writer waits up to [Options.BusyTimeout] for another process's lock,
// then fails with an error saying the database is locked. Run leases
// ([SQLite.Lock]) are rows of the leases table; a released lease's row
// is deleted by the handle's next write transaction (within
// about a millisecond if none comes, and at Close), and this process treats
// it as free at once.
//
// # Durability
//
// See [Durability]. Whatever the setting, a commit that returned is never
// lost to a crash of the process, and the database is never corrupted by
// one. The WAL is copied into the database file every
// [WALCheckpointPages] pages and when the last connection closes.
//
// # Retention
//
// [SQLite.GC] deletes old threads and old checkpoints (keeping the latest N
// of each thread) without breaking chains: the oldest kept checkpoint of
// each branch is rewritten as a snapshot first. It then reclaims the space.
//
// # Layout versions
//
// The database records its layout version ([SchemaVersion]); an older
// layout is upgraded in place when the database is opened, a database
// written by a newer lgrun is refused with [ErrSchemaVersion], and a file
// that is not an lgrun database (another SQLite database, or not SQLite)
// is refused without being changed. testdata keeps a database of every
// layout version, which the tests load.
//
// # Integrity
//
// Every checkpoint, pending-write and thread row carries a CRC-32C of its
// columns (rows from before layout version 2 carry none and are read
// unverified); a checkpoint row also one of the columns its chain reads
// use, which those reads verify instead (layout version 3), and a pack
// one of its own: a pack that fails it is read round, row by row. A row
// that fails its checksum, is missing from a chain, or
// cannot be decoded or applied is reported as a [runtime.CorruptError]
// naming the checkpoint (or the thread, for its own row); the other
// checkpoints stay readable, and List and Threads return them together
// with the errors.
package checkpoint
