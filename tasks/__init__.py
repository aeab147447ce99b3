"""Celery tasks (thin) and the fulfilment logic they call; provider clients under providers/."""
