"""gunicorn settings for the web process (``gunicorn.conf.py`` at the top re-exports them).

    gunicorn -c gunicorn.conf.py                          # app, bind, workers from here
    gunicorn -c python:webhooks.gunicorn_conf             # the same from an installed package

Command-line flags override these values. ``PORT`` (default 8000), ``WEB_CONCURRENCY``
(default 2 processes) and ``WEB_THREADS`` (default 8 threads each) size the server.

Prometheus multiprocess mode: set ``PROMETHEUS_MULTIPROC_DIR`` to one directory shared by
the web and worker processes of this host, empty when the deployment starts (the
prometheus_client convention). Each gunicorn worker writes its samples there; when one
exits, ``child_exit`` retires its files so ``GET /metrics`` stops reporting its live
gauges (counters and histograms keep their totals, as Prometheus expects).
"""

from __future__ import annotations

import os
from typing import Any

wsgi_app = "webhooks:create_app()"
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread whose event loop reads each request in full before a thread serves it, so slow
# or stalled clients cannot take the threads (webhooks/edge_worker.py).
worker_class = "webhooks.edge_worker.EdgeWorker"
threads = int(os.environ.get("WEB_THREADS", "8"))
# Webhook senders retry on errors; a request stuck longer than this is better retried.
timeout = 30
graceful_timeout = 20
keepalive = 5
# The app logs each event itself (with ids, never bodies); gunicorn's access log is off
# unless asked for with --access-logfile.
accesslog = None
# No gunicornc control socket: it lives in the home directory by default, where two
# deployments on one host (or the tests' stacks) would fight over it. Older gunicorn
# versions ignore the unknown name.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Create the metrics directory if it is named but missing (prometheus_client needs it)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """A gunicorn worker exited: mark it dead for the Prometheus multiprocess collector."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
