//go:build race

package observe_test

// allocSlack is how far apart two allocation counts of the same work may
// be: under the race detector sync.Pool drops items at random, so pooled
// objects are made again now and then (runs of the same work were seen to
// differ by up to ~50 allocations; an installed observer adds ~400).
const allocSlack = loopSteps / 2
