"""Benchmark scripts (``python -m benchmarks.bench_protocol``, ``python -m benchmarks.bench_platform``)."""
