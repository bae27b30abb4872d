"""Issue 3 and 5 - sync benchmarks (filled in below)."""
