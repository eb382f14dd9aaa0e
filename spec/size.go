package spec

import (
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// sizeUnits are the units [ParseSize] accepts, largest first.
var sizeUnits = []struct {
	suffix string
	n      int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// ParseSize parses a size in bytes: a whole number, optionally followed by
// B, KiB, MiB or GiB ("65536", "64KiB", "16MiB"). Sizes must be positive.
func ParseSize(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.n
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || num[0] == '+' || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q (want a positive whole number of bytes, optionally with B, KiB, MiB or GiB, e.g. 64KiB)", s)
	}
	return n * mult, nil
}

// FormatSize renders a size in bytes for messages, e.g. "64 KiB" or
// "1.5 MiB".
func FormatSize(n int64) string {
	for _, u := range sizeUnits[:3] {
		if n >= u.n {
			if n%u.n == 0 {
				return fmt.Sprintf("%d %s", n/u.n, u.suffix)
			}
			return fmt.Sprintf("%.1f %s", float64(n)/float64(u.n), u.suffix)
		}
	}
	return fmt.Sprintf("%d B", n)
}

func (c *checker) size(n *yaml.Node, path string) int64 {
	if n == nil {
		return 0
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		c.errs.Add(c.pos(n), "%s: %v", path, err)
	}
	return v
}
