"""Benchmarks: run as `python -m benchmarks.<name>`; each prints ratios against a baseline or the machine's measured limit in the same process."""
