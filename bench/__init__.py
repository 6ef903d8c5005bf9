"""Benchmarks. Run one with ``python -m bench.bench_<topic>``; never collected by pytest."""
