"""Process entry for ``celery -A worker.app``: builds the Celery app from the environment.

A bad setting stops the process here with one line naming the variable.
"""

from __future__ import annotations

import logging
import sys

from celery.signals import beat_init, celeryd_init, setup_logging, worker_process_init

from worker.celery_app import make_celery
from worker.config import Settings, SettingsError
from worker.observability import configure_logging, init_sentry, skip_unused_record_fields

try:
    settings = Settings.from_env()
    settings.require("REDIS_URL")
except SettingsError as _exc:
    sys.stderr.write(f"rewardrelay: invalid setting {_exc}\n")
    raise SystemExit(2) from None

app = make_celery(settings)


@celeryd_init.connect  # type: ignore[untyped-decorator]
def _init_worker(**_: object) -> None:
    configure_logging(settings)
    skip_unused_record_fields()  # inherited by the pool's forked children
    init_sentry(settings, component="worker")


@setup_logging.connect  # type: ignore[untyped-decorator]
def _logging(loglevel: int | None = None, **_: object) -> None:
    """Every Celery program of ours (worker, beat) logs through our handler: one format
    (``LOG_FORMAT=json`` included), secrets scrubbed. Connecting here is what tells
    Celery not to install its own plain-text handler."""
    configure_logging(settings, level=loglevel or logging.INFO)


@beat_init.connect  # type: ignore[untyped-decorator]
def _init_beat(sender: object = None, **_: object) -> None:
    """Beat publishes only scheduled tasks (the sweep every few seconds, the pollers):
    no "task-sent" event for them, which Flower would list as a task of its own."""
    app.conf.task_send_sent_event = False
    init_sentry(settings, component="beat")


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _init_child(**_: object) -> None:
    init_sentry(settings, component="worker")
