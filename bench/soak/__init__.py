"""Soak benchmark: ``python -m bench.soak``."""
