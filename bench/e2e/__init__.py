"""End-to-end benchmark: ``python -m bench.e2e``."""
