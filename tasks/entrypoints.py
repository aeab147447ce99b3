"""Celery entry points of the fulfilment stage (thin): take the unit id, call the plain code.

``fulfil_reward`` (registered as ``tasks.fulfill_reward``) runs :func:`fulfil_unit`;
``sweep`` (beat) runs the relay's :func:`tasks.relay.sweep_once`. The source pollers'
entry points live with their pollers in :mod:`tasks.sources`. All share the per-process
runtime of :mod:`tasks.runtime`.

Arguments are unit ids only (``{event id}:{line}:{index}``): no personal data, no codes
in the broker, Flower or Sentry. Retries are not Celery retries: the ledger schedules
them and the sweeper publishes them when due.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import Task, shared_task
from celery.signals import task_postrun, task_prerun, worker_init

from tasks.fulfilment import fulfil_unit
from tasks.relay import sweep_once
from tasks.routing import RulesError
from tasks.runtime import check_worker_settings, runtime
from worker import observability
from worker.celery_app import FULFIL_TASK, SWEEP_TASK
from worker.config import Settings, SettingsError
from worker.stores.models import UnitId

__all__ = ["RewardFailed", "fulfil_reward", "sweep"]

log = logging.getLogger(__name__)


@worker_init.connect  # type: ignore[untyped-decorator]
def _check_before_consuming(sender: Any = None, **_: Any) -> None:
    """Stop a misconfigured worker at start-up with one line naming the problem."""
    settings: Settings = sender.app.conf.rewardrelay_settings
    try:
        check_worker_settings(settings)
    except (RulesError, SettingsError) as exc:
        label = "invalid setting" if isinstance(exc, SettingsError) else "invalid RULES_FILE"
        sys.stderr.write(f"rewardrelay: {label} {exc}\n")
        sys.stderr.flush()
        os._exit(2)  # SystemExit here is swallowed by Celery's bootsteps


# Log-context tokens of the fulfilment tasks running in this process, by task id.
_task_context: dict[str, Any] = {}


@task_prerun.connect  # type: ignore[untyped-decorator]
def _bind_task_context(
    task_id: str = "", task: Task | None = None, args: Any = None, **_: Any
) -> None:
    """Every line logged during a fulfilment task (Celery's own "succeeded" line too)
    carries the unit key, its event id and the task id: one search follows a unit."""
    if task is None or task.name != FULFIL_TASK or not args:
        return
    unit_id = str(args[0])
    _task_context[task_id] = observability.bind_context(
        event_id=UnitId.parse(unit_id).event_id, unit_id=unit_id, task_id=task_id
    )


@task_postrun.connect  # type: ignore[untyped-decorator]
def _reset_task_context(task_id: str = "", **_: Any) -> None:
    token = _task_context.pop(task_id, None)
    if token is not None:
        try:
            observability.reset_context(token)
        except ValueError:  # set in another context (a thread pool); nothing to undo here
            pass


# Attempts that leave the unit failed for good, waiting for an operator.
FAILED_ACTIONS = frozenset({"dead_lettered", "unroutable"})


class RewardFailed(Exception):
    """The unit was dead-lettered (or found no route): the ledger has settled it.

    Raised after that, so Celery records the task as FAILURE and Flower lists it under
    Failed. Named in the task's ``throws``: the worker logs it as expected (one line, no
    traceback) and Sentry's Celery integration skips it (``report_dead_letter`` already
    sent the one event). There is no autoretry: replaying a dead letter is an operator's
    decision. The message holds the unit key and the outcome only.
    """


@shared_task(  # type: ignore[untyped-decorator]
    name=FULFIL_TASK, bind=True, acks_late=True, ignore_result=True, throws=(RewardFailed,)
)
def fulfil_reward(self: Task, unit_id: str) -> str:
    """Fulfil one reward unit; safe to run any number of times."""
    outcome = fulfil_unit(unit_id, runtime(self), task_id=self.request.id or "")
    if outcome.action in FAILED_ACTIONS:
        raise RewardFailed(f"unit {unit_id} {outcome.action.replace('_', '-')}")
    return outcome.action


@shared_task(  # type: ignore[untyped-decorator]
    # No task events: a run every few seconds would fill Flower's task list.
    name=SWEEP_TASK,
    bind=True,
    ignore_result=True,
    send_events=False,
)
def sweep(self: Task) -> dict[str, Any]:
    """Beat's sweeper: re-publish outbox entries a relay left behind and every due unit."""
    rt = runtime(self)
    reclaimed, due = sweep_once(self.app, rt.redis, rt.keys, rt.settings)
    if reclaimed or due:
        log.info("sweep published %d outbox entries and %d due units", reclaimed, due)
    return {"reclaimed": reclaimed, "due": due}
