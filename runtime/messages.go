package runtime

import (
	"fmt"
	"hash/maphash"
	"strconv"

	"github.com/lgrun/lgrun/spec"
)

// RemoveAllMessages is the id of the removal that deletes every message of
// a messages field: a write of {id: "__remove_all__", remove: true} (the
// spelling of LangGraph's REMOVE_ALL_MESSAGES) empties the list, and the
// messages after it in the same write become the new list.
const RemoveAllMessages = "__remove_all__"

// messageList is a messages value being changed, with an index of its
// ids. It shares the items of the list it starts from until a message of
// that list is replaced or removed (then it copies them); new messages go
// after them, in the spare capacity of the list's array when the merge's
// [owner] made that list. Removed messages leave holes (nil) until done,
// so positions in the index stay valid.
//
// The index is built when a change first needs it (see
// [messageList.indexAll]): a list that many new messages are appended to
// at once (a saver applying a chain's deltas to a snapshot) checks the
// old ids against the new ones, a lookup each, instead of indexing them
// all (see [messageList.appendNew]).
type messageList struct {
	orig  []any // the list it started from, returned when unchanged
	items []any
	// frozen is how many leading items are shared with orig: they are
	// copied before one is changed.
	frozen int
	// index maps ids to positions in items; nil until built.
	index   map[string]int
	holes   bool
	changed bool
}

// newMessageList returns a list to change, starting as cur. index, when
// not nil, is the index of cur (see [listIndexes]); the list takes it
// over. tip, when not nil, is cur's array with the spare capacity the
// caller owns (see [owner.tip]); the list appends in it.
func newMessageList(cur []any, index map[string]int, tip []any) *messageList {
	ml := &messageList{orig: cur, items: cur[:len(cur):len(cur)], frozen: len(cur), index: index}
	if tip != nil {
		ml.items = tip
	}
	return ml
}

// indexAll builds the index if it is not built yet, sized for extra more
// ids to come.
func (ml *messageList) indexAll(extra int) {
	if ml.index != nil {
		return
	}
	ml.index = make(map[string]int, len(ml.items)+extra)
	for i, m := range ml.items {
		if id := messageID(m); id != "" {
			ml.index[id] = i
		}
	}
}

// messageID is the id of message m, "" if it has none (or is not one).
func messageID(m any) string {
	mm, _ := m.(map[string]any)
	id, _ := mm["id"].(string)
	return id
}

// thaw makes the items at i and after the list's own to change.
func (ml *messageList) thaw(i int) {
	if i >= ml.frozen {
		return
	}
	items := make([]any, len(ml.items), growCap(len(ml.items)))
	copy(items, ml.items)
	ml.items, ml.frozen = items, 0
}

// add appends m.
func (ml *messageList) add(m any) {
	if len(ml.items) == cap(ml.items) {
		items := make([]any, len(ml.items), growCap(len(ml.items)+1))
		copy(items, ml.items)
		ml.items, ml.frozen = items, 0
	}
	ml.items = append(ml.items, m)
}

// has reports whether a message of the list has id.
func (ml *messageList) has(id string) bool {
	ml.indexAll(0)
	_, ok := ml.index[id]
	return ok
}

// apply applies items in order: {id, remove: true} deletes the message with
// that id ({id: RemoveAllMessages, remove: true} deletes all), a message
// whose id exists replaces it in place, any other is appended. This is the
// meaning of a messages delta; each item sees the result of the ones before
// it, so applying a list in one call equals applying it in pieces.
func (ml *messageList) apply(items []any) error {
	if ml.index == nil && ml.appendNew(items) {
		return nil
	}
	ml.indexAll(len(items))
	for _, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			return fmt.Errorf("message is %s, want object", spec.TypeName(it))
		}
		ml.changed = true
		id, _ := m["id"].(string)
		if rm, _ := m["remove"].(bool); rm {
			if id == RemoveAllMessages {
				ml.items, ml.frozen, ml.index, ml.holes = []any{}, 0, map[string]int{}, false
				continue
			}
			i, ok := ml.index[id]
			if !ok {
				return fmt.Errorf("cannot remove message %q: no message has that id", id)
			}
			ml.thaw(i)
			ml.items[i] = nil
			delete(ml.index, id)
			ml.holes = true
			continue
		}
		if i, ok := ml.index[id]; ok && id != "" {
			ml.thaw(i)
			ml.items[i] = m
			continue
		}
		if id != "" {
			ml.index[id] = len(ml.items)
		}
		ml.add(m)
	}
	return nil
}

// appendNew applies items, to a list not indexed yet, when they are all
// new messages (objects, none a removal, no two with one id, none with the
// id of a message of the list) and there are enough of them, at least a
// quarter as many as the list has: it checks the list's ids against
// theirs in an [idSet], a lookup each, and leaves the list unindexed, for
// a later change that needs the index to build it (the last change of a
// chain a saver reads never does). Appending costs O(items) amortized.
// Else it changes nothing and reports false.
func (ml *messageList) appendNew(items []any) bool {
	if len(items) == 0 || 4*len(items) < len(ml.items) {
		return false
	}
	var set idSet
	set.init(len(items))
	for _, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			return false
		}
		if rm, _ := m["remove"].(bool); rm {
			return false
		}
		if id, _ := m["id"].(string); id != "" && !set.add(id) {
			return false
		}
	}
	for _, m := range ml.items {
		if id := messageID(m); id != "" && set.has(id) {
			return false
		}
	}
	ml.appendAll(items)
	return true
}

// appendAll appends items.
func (ml *messageList) appendAll(items []any) {
	if len(ml.items)+len(items) > cap(ml.items) {
		grown := make([]any, len(ml.items), growCap(len(ml.items)+len(items)))
		copy(grown, ml.items)
		ml.items, ml.frozen = grown, 0
	}
	ml.items = append(ml.items, items...)
	ml.changed = true
}

// idSet is a set of ids made for one check (see [messageList.appendNew]):
// open addressing on the ids' hashes, cheaper to fill and to ask than a
// map of strings.
type idSet struct {
	seed  maphash.Seed
	slots []int32 // 1 + the position of an id in ids; 0: empty
	ids   []string
	mask  uint64
}

// init makes the set room for n ids (at most half full).
func (s *idSet) init(n int) {
	size := 8
	for size < 2*n {
		size *= 2
	}
	s.seed, s.slots, s.ids, s.mask = maphash.MakeSeed(), make([]int32, size), make([]string, 0, n), uint64(size-1)
}

// add adds id, and reports false if it was there already.
func (s *idSet) add(id string) bool {
	i := maphash.String(s.seed, id) & s.mask
	for ; s.slots[i] != 0; i = (i + 1) & s.mask {
		if s.ids[s.slots[i]-1] == id {
			return false
		}
	}
	s.ids = append(s.ids, id)
	s.slots[i] = int32(len(s.ids))
	return true
}

// has reports whether id is in the set.
func (s *idSet) has(id string) bool {
	for i := maphash.String(s.seed, id) & s.mask; s.slots[i] != 0; i = (i + 1) & s.mask {
		if s.ids[s.slots[i]-1] == id {
			return true
		}
	}
	return false
}

// done returns the list, without holes and capped: the list it started
// from when nothing was applied. The list must not be changed after;
// ml.items is then the list with its spare capacity.
func (ml *messageList) done() []any {
	if !ml.changed {
		return ml.orig
	}
	if ml.holes {
		kept := make([]any, 0, growCap(len(ml.items)))
		for _, m := range ml.items {
			if m != nil {
				kept = append(kept, m)
			}
		}
		ml.items, ml.holes, ml.frozen = kept, false, 0
		ml.index = nil // positions moved
	}
	return ml.items[:len(ml.items):len(ml.items)]
}

// keepMessages records what the merge or applier that changed a messages
// field made: the list's spare capacity and its index.
func (o *owner) keepMessages(field string, ml *messageList, list []any) {
	if o == nil {
		return
	}
	if ml.changed && len(list) > 0 {
		o.keep(field, ml.items)
	}
	o.putIndex(field, list, ml.index)
}

// listIndexes keeps, per messages field, the id index of the list the
// last merge of a run made, so the next step's merge, whose base it is,
// does not index the whole list again: a step appending to a long list
// costs a copy of it, not one map entry per message. An index is handed
// over to the list made from it (take removes it) and is only used for the
// very list it indexes (same backing array and length; state lists are
// never modified in place).
type listIndexes map[string]indexedList

type indexedList struct {
	list  []any
	index map[string]int
}

// take returns the index of list for field, or nil.
func (c listIndexes) take(field string, list []any) map[string]int {
	e, ok := c[field]
	if !ok {
		return nil
	}
	delete(c, field)
	if len(e.list) != len(list) || len(list) > 0 && &e.list[0] != &list[0] {
		return nil
	}
	return e.index
}

// put records the index of list for field.
func (c listIndexes) put(field string, list []any, index map[string]int) {
	if index != nil {
		c[field] = indexedList{list: list, index: index}
	}
}

// messageWrite turns one write to a messages field into delta items: the
// write's own meaning, as in LangGraph, is that every message whose id
// exists (in the list, or earlier in the write) replaces it in place, new
// messages are appended in the order they first appear, and removals take
// effect at the end of the write; so removing an id and adding it again in
// one write keeps the message in place. A RemoveAllMessages removal drops
// the list and what came before it in the write. The items returned have
// the same effect applied one by one (see [messageList.apply]): at most one
// per id, a removal only of an id that exists.
func messageWrite(ml *messageList, items []any) ([]any, error) {
	var out []any
	cleared := false
	for k := len(items) - 1; k >= 0; k-- {
		if m := items[k].(map[string]any); m["remove"] == true && m["id"] == RemoveAllMessages {
			out, items, cleared = append(out, m), items[k+1:], true
			break
		}
	}
	exists := func(id string) bool { return !cleared && ml.has(id) }
	var order []string
	last := map[string]map[string]any{}
	for _, it := range items {
		m := it.(map[string]any)
		id := m["id"].(string)
		_, seen := last[id]
		if !seen {
			if m["remove"] == true && !exists(id) {
				return nil, fmt.Errorf("cannot remove message %q: no message has that id", id)
			}
			order = append(order, id)
		}
		last[id] = m
	}
	for _, id := range order {
		m := last[id]
		if m["remove"] == true && !exists(id) {
			continue // added and removed within the write
		}
		out = append(out, m)
	}
	return out, nil
}

// minter names the new messages of one merge (see "Message ids" in the
// package documentation).
type minter struct {
	run  string // "" or the child run's prefix, ending in "/"
	step int
	next map[string]int // node → next n
}

// id returns the next free id for a message of node, not taken by ml or
// by the write being merged.
func (mi *minter) id(node string, taken func(string) bool) string {
	if mi.next == nil {
		mi.next = map[string]int{}
	}
	prefix := mi.run + strconv.Itoa(mi.step) + "." + node + "."
	for {
		n := mi.next[node]
		mi.next[node] = n + 1
		if id := prefix + strconv.Itoa(n); !taken(id) {
			return id
		}
	}
}

// childRun returns the message-id prefix of a child run of node at step
// (suffix "#<item>" for a map item) under a run with prefix parent.
func childRun(parent, node string, step int, suffix string) string {
	return parent + node + "@" + strconv.Itoa(step) + suffix + "/"
}
