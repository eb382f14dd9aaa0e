package server

import (
	"bytes"
	"encoding/json"
	"reflect"
	"sort"

	"github.com/lgrun/lgrun/runtime"
	"github.com/lgrun/lgrun/spec"
)

// A history's response holds every checkpoint's whole state, so a long
// messages thread's history repeats each message in every checkpoint after
// it (500 steps of a 200-byte message: 34 MB). The checkpoints of a
// history read with shared values (runtime.HistoryOptions.Shared) hold the
// same message maps, so historyJSON converts and encodes each message
// once and copies its bytes into every state that has it. The bytes are
// those json.Marshal gives for the ThreadStates (threadState): keys in
// sorted order, HTML-escaped, no spaces.

// messageCache holds the JSON of messages (as outMessage converts them)
// by the address of the message's map. The maps must stay alive and
// unchanged while the cache is used: they are those of the history being
// encoded.
type messageCache map[uintptr][]byte

// historyJSON encodes the ThreadStates of cps as a JSON array.
func (s *Server) historyJSON(cps []*runtime.Checkpoint) ([]byte, error) {
	mc := messageCache{}
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, cp := range cps {
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := mc.writeState(&buf, s.graph(cp.Metadata.Graph), cp); err != nil {
			return nil, err
		}
	}
	buf.WriteByte(']')
	return buf.Bytes(), nil
}

// writeState writes cp's ThreadState (threadState), encoding the messages
// of g's messages fields through the cache.
func (mc messageCache) writeState(buf *bytes.Buffer, g *spec.Graph, cp *runtime.Checkpoint) error {
	bare := *cp
	bare.Values = nil
	st := threadState(g, &bare)
	for k := range st {
		if k > "values" { // "values" is no longer written last
			b, err := json.Marshal(threadState(g, cp))
			buf.Write(b)
			return err
		}
	}
	delete(st, "values")
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if len(st) == 0 {
		buf.WriteString(`{"values":`)
	} else {
		buf.Write(b[:len(b)-1])
		buf.WriteString(`,"values":`)
	}
	if err := mc.writeValues(buf, g, cp.Values); err != nil {
		return err
	}
	buf.WriteByte('}')
	return nil
}

// writeValues writes outValues(g, values).
func (mc messageCache) writeValues(buf *bytes.Buffer, g *spec.Graph, values map[string]any) error {
	if values == nil {
		buf.WriteString("null")
		return nil
	}
	msgs := map[string]bool{}
	if g != nil {
		for _, f := range g.Fields {
			if f.Type.Kind == spec.KindMessages {
				msgs[f.Name] = true
			}
		}
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	buf.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		kb, err := json.Marshal(k)
		if err != nil {
			return err
		}
		buf.Write(kb)
		buf.WriteByte(':')
		v := values[k]
		if msgs[k] {
			if list, ok := v.([]any); ok {
				buf.WriteByte('[')
				for j, m := range list {
					if j > 0 {
						buf.WriteByte(',')
					}
					if err := mc.writeMessage(buf, m); err != nil {
						return err
					}
				}
				buf.WriteByte(']')
				continue
			}
			v = outMessages(v)
		}
		vb, err := json.Marshal(v)
		if err != nil {
			return err
		}
		buf.Write(vb)
	}
	buf.WriteByte('}')
	return nil
}

// writeMessage writes m as outMessage converts it, encoded once per map.
func (mc messageCache) writeMessage(buf *bytes.Buffer, m any) error {
	mm, ok := m.(map[string]any)
	if !ok {
		b, err := json.Marshal(outMessage(m))
		buf.Write(b)
		return err
	}
	key := reflect.ValueOf(mm).Pointer()
	b, ok := mc[key]
	if !ok {
		var err error
		if b, err = json.Marshal(outMessage(mm)); err != nil {
			return err
		}
		mc[key] = b
	}
	buf.Write(b)
	return nil
}
