"""Ingest benchmark: our edge (verify + validate + one atomic Redis outbox write) against a
naive Flask view that only calls ``task.delay(body)``, both under the same gunicorn setup.

Run: ``python -m bench.ingest [--duration 10] [--rate 300]``.
"""
