"""Things that run many runs: the comparison with a reference, patch-size calibration, the benchmark."""
