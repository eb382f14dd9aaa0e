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
