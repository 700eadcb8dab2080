"""The performance record of the voxwire stack (``make bench``: ``python -m
benchmarks.record``; results in BENCHMARKS.md)."""
