//go:build !race

package observe_test

// allocSlack is how far apart two allocation counts of the same work may
// be: none, with collections held off while counting.
const allocSlack = 0
