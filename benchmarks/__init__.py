"""Benchmarks: each one command (``python -m benchmarks.<name>``), printing its figures and
rewriting its own section of ``docs/benchmarks.md``. Tests never assert on wall-clock time."""
