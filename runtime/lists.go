package runtime

// Appends that share structure.
//
// State values are never modified once a checkpoint holds them, so a list
// made by appending to another can share its items: the new list is the
// same backing array with a longer length. Every list put in a state is
// capped (capacity = length), so code that appends to a value it reads
// (a node, an expression, a saver) always gets a copy and never writes
// into the array. The spare capacity behind a list belongs to one holder
// only, an [owner]: the merge of one run (a thread's superstep loop), or
// one [Applier]. It records, per field, the whole array it last extended
// (its length is what is used); it appends in place only to the very list
// it made last (same array, same length), so two branches growing from one
// snapshot (a fork and the original, two runs of one thread, a replay)
// never write the same slot: the one that is not the owner copies, and
// owns its copy from then on.

// owner holds the spare capacity of the lists a holder made, and the id
// indexes of its messages lists (see [listIndexes]). A nil *owner shares
// nothing: every change copies.
type owner struct {
	// tips maps a field to the array its last list was made in; len is
	// the list's length, the capacity after it is free.
	tips    map[string][]any
	indexes listIndexes
}

func newOwner() *owner { return &owner{tips: map[string][]any{}, indexes: listIndexes{}} }

// tip returns the array behind cur when o made cur last (so its spare
// capacity is free), else nil.
func (o *owner) tip(field string, cur []any) []any {
	if o == nil || len(cur) == 0 {
		return nil
	}
	t, ok := o.tips[field]
	if !ok || len(t) != len(cur) || &t[0] != &cur[0] {
		return nil
	}
	return t
}

// keep records list (with its spare capacity) as the field's tip.
func (o *owner) keep(field string, list []any) {
	if o == nil {
		return
	}
	if o.tips == nil {
		o.tips = map[string][]any{}
	}
	o.tips[field] = list
}

// take returns the messages index of list for field (see [listIndexes]).
func (o *owner) take(field string, list []any) map[string]int {
	if o == nil {
		return nil
	}
	return o.indexes.take(field, list)
}

func (o *owner) putIndex(field string, list []any, index map[string]int) {
	if o == nil {
		return
	}
	if o.indexes == nil {
		o.indexes = listIndexes{}
	}
	o.indexes.put(field, list, index)
}

// appendList returns a new list of cur's items followed by items, capped.
// When o made cur last and has room, the items go in cur's spare capacity.
func (o *owner) appendList(field string, cur, items []any) []any {
	if t := o.tip(field, cur); t != nil && cap(t)-len(t) >= len(items) {
		t = append(t, items...)
		o.tips[field] = t
		return t[:len(t):len(t)]
	}
	n := len(cur) + len(items)
	c := n
	if o != nil {
		c = growCap(n)
	}
	out := make([]any, n, c)
	copy(out, cur)
	copy(out[len(cur):], items)
	o.keep(field, out)
	return out[:n:n]
}

// growCap is the capacity of a new array for a list of n items that is
// expected to grow: double, so appends cost O(1) amortized.
func growCap(n int) int { return max(2*n, 8) }

// Applier applies the deltas of one chain of checkpoints, in order, with
// the cost of what each delta holds: like [ApplyDelta], except that an
// append (or a messages delta that only adds messages) shares the items
// of the list it extends instead of copying them. The values a call
// returned stay exactly as they were after later calls: each may be kept
// as a snapshot. Lists in the values are capped (see the package notes in
// lists.go), so a caller appending to one gets a copy.
//
// An Applier is not safe for concurrent use. Its zero value is ready.
type Applier struct {
	// Decoded promises that the deltas given to Apply hold canonical JSON
	// values only, as decoding JSON makes them (nil, bool, int, finite
	// float64, string, []any and map[string]any, nothing else at any
	// depth): Apply then takes them as they are, where it otherwise looks
	// through every value of every delta to check it. A saver applying
	// the deltas it decoded itself sets it.
	Decoded bool
	own     owner
}

// Apply applies d to values in place, like [ApplyDelta]. values must be
// owned by the caller except for the lists in it, which Apply never
// modifies: pass a copy of the map of the previous snapshot (a shallow
// copy suffices) to keep that snapshot. Unlike ApplyDelta, the values may
// share the canonical values of d (they are not copied): neither must be
// modified after.
func (a *Applier) Apply(values map[string]any, d Delta) error {
	return applyDelta(values, d, &a.own, a.Decoded)
}
