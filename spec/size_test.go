package spec_test

import (
	"fmt"
	"testing"

	"github.com/lgrun/lgrun/spec"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64 // 0: an error
	}{
		{"65536", 65536}, {"1B", 1}, {"64KiB", 64 << 10}, {"16MiB", 16 << 20}, {"2GiB", 2 << 30},
		{"0", 0}, {"0KiB", 0}, {"-1", 0}, {"+5", 0}, {"1.5MiB", 0}, {"64KB", 0}, {"64 KiB", 0}, {"", 0}, {"KiB", 0},
		{"99999999999GiB", 0},
	}
	for _, tt := range tests {
		got, err := spec.ParseSize(tt.in)
		if tt.want == 0 {
			if err == nil {
				t.Errorf("ParseSize(%q) = %d, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{10: "10 B", 1024: "1 KiB", 65538: "64.0 KiB", 1536: "1.5 KiB", 16 << 20: "16 MiB", 3 << 30: "3 GiB"} {
		if got := spec.FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestLimitsStateSize(t *testing.T) {
	const src = "version: 1\nname: g\nnodes:\n  a: {kind: noop}\nedges:\n  - {from: START, to: a}\n  - {from: a, to: END}\nlimits: {state_size: %s}\n"
	for in, want := range map[string]int64{"64KiB": 64 << 10, "4096": 4096} {
		g, errs := spec.Parse("g.yaml", []byte(fmt.Sprintf(src, in)), nil)
		if errs.HasErrors() {
			t.Errorf("state_size %s: %v", in, errs)
		} else if g.Limits.StateSize != want {
			t.Errorf("state_size %s: %d, want %d", in, g.Limits.StateSize, want)
		}
	}
	if _, errs := spec.Parse("g.yaml", []byte(fmt.Sprintf(src, "0KiB")), nil); !errs.HasErrors() {
		t.Errorf("state_size 0KiB accepted")
	}
}
