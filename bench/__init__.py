"""Benchmarks (not shipped): run with ``python -m bench.<name>``."""
