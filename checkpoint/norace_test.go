//go:build !race

package checkpoint_test

// flipTrials is how many bytes TestFlippedBytes flips.
const flipTrials = 200
