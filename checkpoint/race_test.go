//go:build race

package checkpoint_test

// flipTrials is smaller under the race detector, which has nothing to find
// in TestFlippedBytes (one goroutine) and slows it down tenfold.
const flipTrials = 50
