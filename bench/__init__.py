"""Benchmarks (not tests): ``make bench`` runs every ``bench_*.py`` here and writes their tables."""
