"""Benchmarks: each writes its section of RESULTS.md and results/<name>.json."""
