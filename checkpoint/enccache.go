package checkpoint

import (
	"slices"
	"sync"
)

// encCache keeps the JSON of the next nodes and of the writes metadata
// of the last commit a handle encoded: a run's steps mostly repeat both
// (the log loop writes `["inc"]` and `{"inc":["count","log"]}` on every
// step), and a hit costs a comparison instead of an encoding and its
// allocations. It compares values, nil-ness included (nil and an empty
// list encode differently), and keeps its own copies of them.
type encCache struct {
	mu       sync.Mutex
	next     []string
	nextOK   bool
	nextJS   string
	writes   map[string][]string
	writesJS any // the column's value: its JSON as a string
}

// encode returns the JSON of next, and the writes column's value (nil
// for NULL, when writes is empty) of writes.
func (c *encCache) encode(next []string, writes map[string][]string) (string, any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.nextOK || !sameStrings(c.next, next) {
		js, err := marshal(next)
		if err != nil {
			return "", nil, err
		}
		c.next, c.nextJS, c.nextOK = cloneStrings(next), string(js), true
	}
	if len(writes) == 0 {
		return c.nextJS, nil, nil
	}
	if c.writes == nil || !sameWrites(c.writes, writes) {
		js, err := nullJSON(writes, false)
		if err != nil {
			return "", nil, err
		}
		w := make(map[string][]string, len(writes))
		for k, v := range writes {
			w[k] = cloneStrings(v)
		}
		c.writes, c.writesJS = w, js
	}
	return c.nextJS, c.writesJS, nil
}

// sameStrings reports whether a and b encode alike: equal, and both nil
// or neither.
func sameStrings(a, b []string) bool {
	return (a == nil) == (b == nil) && slices.Equal(a, b)
}

func cloneStrings(a []string) []string {
	if a == nil {
		return nil
	}
	return append(make([]string, 0, len(a)), a...)
}

func sameWrites(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		w, ok := a[k]
		if !ok || !sameStrings(v, w) {
			return false
		}
	}
	return true
}
