package checkpoint

import "context"

// ChainStats is what Get read to rebuild a checkpoint's values.
type ChainStats = chainStats

// ChainStats reports what Get reads to rebuild the values of checkpoint id
// of thread: the rows of its chain back to the nearest snapshot.
func ChainStatsOf(s *SQLite, thread, id string) (ChainStats, error) {
	_, st, err := s.values(context.Background(), thread, id)
	return st, err
}
