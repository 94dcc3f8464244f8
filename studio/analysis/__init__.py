"""Analysis of runs: nearest training neighbours, per-step statistics, comparison metrics."""
