package checkpoint_test

import (
	"testing"

	"github.com/lgrun/lgrun/checkpoint"
	"github.com/lgrun/lgrun/checkpoint/checkpointtest"
	"github.com/lgrun/lgrun/runtime"
)

func TestMemoryConformance(t *testing.T) {
	t.Parallel()
	checkpointtest.Run(t, func(*testing.T) runtime.Saver { return checkpoint.NewMemory() })
}
