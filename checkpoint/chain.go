package checkpoint

import (
	"github.com/lgrun/lgrun/runtime"
)

// composer folds a run of deltas into one, field by field, so that a
// chain of N deltas is applied in one pass over the state instead of N:
// applying N messages or append deltas one by one copies the growing list
// N times.
//
// Consecutive append deltas of a field concatenate their items, messages
// deltas concatenate their items (applying a list of them in one call is
// the same as applying it in pieces: each upsert, removal or remove-all
// sees the result of the ones before it), merge deltas union their patches
// (later keys win), and
// a set replaces whatever came before. When a field's op changes kind, the
// accumulated op is applied first. For well-formed deltas the values are
// exactly those of calling [runtime.ApplyDelta] for each delta in order; a
// malformed op overwritten by a later set is not reported.
type composer struct {
	values map[string]any
	acc    runtime.Delta
	// apply applies the composed ops: the values and the deltas are the
	// composer's own (freshly decoded, plain), so they need no copy and
	// no check (Decoded).
	apply runtime.Applier
}

// newComposer returns a composer applying to values. The deltas it is
// given must be canonical JSON values, as decoding makes them (see
// [runtime.Applier.Decoded]).
func newComposer(values map[string]any) *composer {
	return &composer{values: values, acc: runtime.Delta{}, apply: runtime.Applier{Decoded: true}}
}

// add folds d in. The op values of d must be owned by the composer (freshly
// decoded); they are extended in place.
func (c *composer) add(d runtime.Delta) error {
	for f, op := range d {
		prev, ok := c.acc[f]
		if !ok || op.Kind == runtime.OpSet {
			c.acc[f] = op
			continue
		}
		if prev.Kind == op.Kind {
			switch op.Kind {
			case runtime.OpAppend, runtime.OpMessages:
				a, aok := prev.Value.([]any)
				b, bok := op.Value.([]any)
				if aok && bok {
					c.acc[f] = runtime.Op{Kind: op.Kind, Value: append(a, b...)}
					continue
				}
			case runtime.OpMerge:
				a, aok := prev.Value.(map[string]any)
				b, bok := op.Value.(map[string]any)
				if aok && bok {
					for k, v := range b {
						a[k] = v
					}
					continue
				}
			}
		}
		// Different kinds (or malformed values, which ApplyDelta reports):
		// apply what was accumulated, then start again from op.
		if err := c.apply.Apply(c.values, runtime.Delta{f: prev}); err != nil {
			return err
		}
		c.acc[f] = op
	}
	return nil
}

// result applies what remains and returns the values.
func (c *composer) result() (map[string]any, error) {
	if err := c.apply.Apply(c.values, c.acc); err != nil {
		return nil, err
	}
	c.acc = runtime.Delta{}
	return c.values, nil
}
