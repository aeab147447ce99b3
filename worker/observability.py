"""Observability shared by web and worker: logging, log context, Sentry.

Log lines about a unit carry its event id, unit key, task id, provider and provider
reference (as ``extra`` fields, rendered by the JSON formatter), never codes, tokens or
personal data. Sentry is initialised in both processes when ``SENTRY_DSN`` is set; a
dead letter raises exactly one Sentry event (retries are control flow, not errors).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.logging import LoggingIntegration

from worker.celery_app import LANES_TICK_TASK, RETENTION_TASK, SWEEP_TASK
from worker.config import Settings
from worker.stores.models import Unit

__all__ = [
    "bind_context",
    "configure_logging",
    "event_context",
    "reset_context",
    "init_sentry",
    "unit_context",
    "unit_event",
    "report_dead_letter",
    "scrub",
    "skip_unused_record_fields",
]

log = logging.getLogger("rewardrelay")
_CONTEXT: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("rr_log_context")
CONTEXT_FIELDS = ("event_id", "unit_id", "task_id", "provider", "provider_ref", "source")
# Anything shaped like a secret or token, in one pattern so a line is scanned once:
# Standard Webhooks secrets, Authorization schemes, and secret-named key/value pairs.
_SECRET = re.compile(
    r"whsec_[A-Za-z0-9+/=]+"
    r"|(?i:bearer|basic)\s+[A-Za-z0-9._~+/=-]+"
    r"|(?i:api-secret|api_secret|client_secret|access_token|password)[\"':= ]+[^\s\"',&]+"
)


def _blank(match: re.Match[str]) -> str:
    """Keep the first 7 characters (what kind of secret it was), blank the rest."""
    return match.group(0)[:7] + "***"


# Every match of _SECRET contains one of these (lower-cased): lines without any, nearly
# all of them, skip the regex, which costs 10 us a line (it tries each position).
_SECRET_HINTS = ("whsec_", "bearer", "basic", "secret", "token", "password")


def scrub(text: str) -> str:
    """Blank out anything shaped like a secret or token in free text."""
    lowered = text.lower()
    if not any(hint in lowered for hint in _SECRET_HINTS):
        return text
    return _SECRET.sub(_blank, text)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _CONTEXT.get({}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value:
                payload[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            payload["error_type"] = record.exc_info[0].__name__
        return json.dumps(payload, sort_keys=True)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = scrub(super().format(record))
        context = " ".join(
            f"{name}={getattr(record, name)}"
            for name in CONTEXT_FIELDS
            if getattr(record, name, None)
        )
        return f"{base} {context}".rstrip()


# Tasks that run every few seconds whatever happens (beat's sweep, the lanes' tick,
# retention's closing): Celery's lines about each run ("Sending due task", "received",
# "succeeded") are routine, not news.
ROUTINE_TASKS = frozenset({SWEEP_TASK, LANES_TICK_TASK, RETENTION_TASK})


class _RoutineTasksAtDebug(logging.Filter):
    """Celery's INFO lines about a routine task are DEBUG lines (shown only at DEBUG).

    The task logs a line of its own when a run found work (``tasks.entrypoints.sweep``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _names_routine_task(record.args):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _names_routine_task(args: Any) -> bool:
    if isinstance(args, dict):  # the worker's "Task %(name)s[%(id)s] received/succeeded"
        name = args.get("name")
        return isinstance(name, str) and name in ROUTINE_TASKS
    if isinstance(args, tuple):  # beat's "Scheduler: Sending due task %s (%s)"
        return any(isinstance(arg, str) and arg in ROUTINE_TASKS for arg in args)
    return False


def configure_logging(settings: Settings, *, level: int = logging.INFO) -> None:
    """Install one stderr handler with the chosen format on the root logger."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_ContextFilter())
    handler.addFilter(_RoutineTasksAtDebug())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO; our URLs hold no secrets, but keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def skip_unused_record_fields() -> None:
    """Stop the logging module from collecting what no formatter of ours prints.

    The Logging HOWTO's "Optimization" section: without this, every record walks the
    stack for its caller (``_srcfile``) and looks up the multiprocessing process name,
    which our formats never print; at the edge every accepted event logs a line. Only
    switches whose field keeps a value that any format can still print are turned off:
    the caller becomes "(unknown file)", line 0, and the process name "MainProcess".
    ``logProcesses`` and ``logThreads`` stay on: their fields would be None, and a
    library's own format with ``%(process)d`` (gunicorn's error log: "Worker exiting",
    "Handling signal") then fails with "--- Logging error ---" on every line.
    """
    logging._srcfile = None  # the documented switch (Logging HOWTO, Optimization)
    logging.logMultiprocessing = False


@contextlib.contextmanager
def _context(values: dict[str, str]) -> Iterator[None]:
    """Log context (every line in the block) and Sentry tags (events and breadcrumbs)."""
    present = {k: v for k, v in values.items() if v}
    token = _CONTEXT.set({**_CONTEXT.get({}), **present})
    try:
        if not sentry_sdk.get_client().is_active():
            # No Sentry: a scope would cost a copy per event at the edge and tag nothing.
            yield
            return
        with sentry_sdk.new_scope() as scope:
            for name, value in present.items():
                scope.set_tag(name, value)
            yield
    finally:
        _CONTEXT.reset(token)


def bind_context(**values: str) -> contextvars.Token[dict[str, str]]:
    """Add ``values`` to the log context until ``reset_context(token)``.

    For code that cannot wrap a block in a ``with`` (Celery's task_prerun / task_postrun
    signals): lines Celery itself logs about the task then carry the ids too.
    """
    present = {k: v for k, v in values.items() if v}
    return _CONTEXT.set({**_CONTEXT.get({}), **present})


def reset_context(token: contextvars.Token[dict[str, str]]) -> None:
    _CONTEXT.reset(token)


@contextlib.contextmanager
def event_context(event_id: str, source: str) -> Iterator[None]:
    """At the edge: attach the event id and source to log lines and Sentry in the block."""
    with _context({"event_id": event_id, "source": source}):
        yield


@contextlib.contextmanager
def unit_context(unit: Unit, *, provider: str = "", task_id: str = "") -> Iterator[None]:
    """Attach the unit's ids to every log line and Sentry scope inside the block."""
    values = {
        "event_id": unit.event_id,
        "unit_id": unit.id,
        "source": unit.source,
        "provider": provider,
        "task_id": task_id,
    }
    with _context(values):
        yield


def unit_event(message: str, unit: Unit, *, level: int = logging.INFO, **fields: str) -> None:
    extra = {"event_id": unit.event_id, "unit_id": unit.id, "source": unit.source}
    extra.update({k: v for k, v in fields.items() if v})
    log.log(level, message, extra=extra)


def report_dead_letter(
    unit: Unit,
    reason: str,
    provider: str,
    error: BaseException | None,
    *,
    task_id: str = "",
    context: dict[str, str] | None = None,
) -> None:
    """Log the dead letter and send exactly one Sentry event for it (no codes, no PII).

    ``context`` adds safe explanations (an unroutable unit's field, value and rules file)
    to the Sentry event's ``dead_letter`` context and, as ``detail``, to the log line.
    """
    explained = (context or {}).get("detail")
    unit_event(
        f"unit dead-lettered: {reason}" + (f" ({explained})" if explained else ""),
        unit,
        level=logging.ERROR,
        provider=provider,
        task_id=task_id,
    )
    if not sentry_sdk.get_client().is_active():
        return
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("event_id", unit.event_id)
        scope.set_tag("unit_id", unit.id)
        scope.set_tag("provider", provider or "none")
        scope.set_tag("reason", reason)
        if task_id:
            scope.set_tag("task_id", task_id)
        scope.set_context(
            "dead_letter",
            {
                "error_type": type(error).__name__ if error else None,
                "status_code": getattr(error, "status_code", None),
                **(context or {}),
            },
        )
        scope.fingerprint = ["dead-letter", provider or "none", reason]
        sentry_sdk.capture_message(f"Reward unit dead-lettered: {reason}", level="error")


def _before_send(event: Any, hint: Any) -> Any:
    """Last line of defence: scrub secrets from messages and drop request bodies."""
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)
        request.pop("cookies", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            for name in list(headers):
                if name.lower() in ("authorization", "webhook-signature", "api-secret", "cookie"):
                    headers[name] = "[Filtered]"
    for entry in (event.get("logentry"), event):
        if isinstance(entry, dict) and isinstance(entry.get("message"), str):
            entry["message"] = scrub(entry["message"])
    return event


def init_sentry(settings: Settings, *, component: str) -> bool:
    """Initialise sentry-sdk when SENTRY_DSN is set; True if it was."""
    if not settings.sentry_dsn:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        before_send=_before_send,
        traces_sample_rate=0.0,
        server_name=component,
        environment=settings.sentry_environment,
        # Log lines become breadcrumbs only: a retried failure logs on every attempt, and
        # we report a failure once, when it is dead-lettered (report_dead_letter).
        integrations=[LoggingIntegration(level=logging.INFO, event_level=None)],
    )
    sentry_sdk.set_tag("component", component)
    return True
