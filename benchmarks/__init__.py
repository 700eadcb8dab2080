"""Benchmarks of the voxwire stack (``python -m benchmarks.overhead``; results in BENCHMARKS.md)."""
