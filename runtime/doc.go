// Package runtime executes a checked [spec.Graph] in supersteps.
//
// A superstep runs every node scheduled by the previous step concurrently,
// each on the same snapshot of the state. Their writes are merged through
// the fields' reducers in node-name order (then in each node's own write
// order), so the result never depends on goroutine scheduling. Edges are
// evaluated on the merged state to schedule the next step. Every superstep
// is committed as one [Checkpoint] through a [Saver] in a single atomic
// operation; a failed or interrupted step leaves the thread at its last good
// checkpoint, with the writes of the nodes that did finish kept as pending
// writes so they are not executed again.
//
// The package defines the interfaces it consumes: [Saver] (implemented in
// package checkpoint), and [NodeFunc] for node kinds implemented elsewhere
// (package builtin registers llm and tools). It runs the deterministic
// kinds set, noop and interrupt itself.
//
// Every node execution goes through one invocation path (timeout, retries
// with backoff, events, usage of every attempt, goto): the nodes of a
// superstep and the items of a map node in node form alike.
//
// A runner keeps no process-wide state: checkpoint ids come from its
// [IDClock] ([Runner].IDs), so runners of different engines in one process
// do not affect each other.
//
// # Durability
//
// Every checkpoint is committed before the step after it starts, with one
// exception that no crash can tell apart: a turn's input checkpoint is
// committed in the same transaction as its first superstep's when the
// saver is a [ChainCommitter] and every node of that step is the runtime's
// own set or noop without timeout, retries or goto, with no breakpoint
// before it. Such a step calls nothing outside the process and does not
// wait, so a crash while it runs leaves what a crash just before the input
// commit leaves: no trace of the turn, which a new run starts afresh. If
// the run stops before that commit (a node fails, a limit, a timeout, a
// pause), or the commit fails for another reason than the input's own
// (lease or head), the input is committed alone first and the run goes on
// as it always did. Events of the turn are delivered once the input is
// committed. On a saver that is also a [LockingCommitter], such a run
// takes the thread to be new without reading it; a thread that exists
// makes that commit fail, and the run takes the lease first as for any
// existing thread. Child runs, runs with an [Observer] and savers without
// the interface (the in-memory and Postgres ones) commit the input alone.
//
// # Message ids
//
// The runtime owns the ids of new messages: node kinds write messages
// without an id, and the merge names them "<run><step>.<node>.<n>", where n
// counts the node's new messages in the step and <run> is "" for a thread
// and "<node>@<step>[#<item>]/" per level of child run (subgraph, map item)
// under it, e.g. "research@3/1.agent.0". A name already taken in the field
// is skipped, so a minted id never names an existing message. Ids depend
// only on the graph and the state, never on scheduling or the clock, and are
// unique in a state across parent, child and map-item runs.
package runtime
