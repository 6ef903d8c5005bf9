"""Benchmarks: ``python -m bench.bench_<topic>``; never collected by pytest."""
