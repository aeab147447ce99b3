"""Process entry for ``celery -A worker.app``: builds the Celery app from the environment.

A bad setting stops the process here with one line naming the variable.
"""

from __future__ import annotations

import sys

from celery.signals import celeryd_init, worker_process_init

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


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _init_child(**_: object) -> None:
    init_sentry(settings, component="worker")
