"""Celery app, settings, observability and the stores shared by web and worker."""
