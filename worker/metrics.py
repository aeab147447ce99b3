"""Prometheus metrics shared by the web and worker processes, and ``render()`` for /metrics.

Every metric is defined once, here, at import time. Counters and histograms are plain
``prometheus_client`` objects; the edge and the worker increment them through the small
helpers below, so call sites stay one line each.

Multiprocess mode: gunicorn runs several web workers and Celery's prefork pool several
children, and each has its own memory. When ``PROMETHEUS_MULTIPROC_DIR`` names a
directory (the standard prometheus_client variable, read by the library when it is first
imported, so it must be in the environment before the process starts), every process
writes its samples to memory-mapped files there and ``render()`` sums the files of all
processes, web and worker alike. The directory must be shared by every process of one
deployment (same host), be empty when the deployment starts, and is cleaned per process
on exit (gunicorn's ``child_exit`` in ``gunicorn.conf.py`` and Celery's
``worker_process_shutdown`` below call ``mark_process_dead``). When the variable is unset
each process exposes only its own samples from the default registry (fine for one
process, such as tests or a single-threaded run).

Gauges that describe the store (dead letters waiting, live units) are not kept in any
process: ``StoreCollector`` reads them from Redis at scrape time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
from celery.signals import worker_process_shutdown
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

__all__ = [
    "CONTENT_TYPE",
    "EDGE_REQUEST_TIMEOUTS",
    "EVENTS_ACCEPTED",
    "EVENTS_DUPLICATE",
    "EVENTS_RECEIVED",
    "EVENTS_REJECTED",
    "MULTIPROC_ENV",
    "PICKUP_DELAY",
    "PROVIDER_CALL_SECONDS",
    "RETRIES",
    "StoreCollector",
    "UNITS_TERMINAL",
    "edge_request_timed_out",
    "event_received",
    "multiprocess_dir",
    "observe_pickup",
    "observe_provider_call",
    "render",
    "retry_scheduled",
    "unit_terminal",
    "LANE_TRANSITIONS",
    "LaneCollector",
    "UpCollector",
    "lane_transition",
]

# The standard prometheus_client variable for multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
OWN_PREFIX = "rewardrelay_"
NO_PROVIDER = "none"  # label value for units that never reached a provider
# Seconds: provider calls take tens of milliseconds to a timeout of several seconds.
PROVIDER_CALL_BUCKETS_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Seconds from acceptance to a worker's first attempt: milliseconds when idle, minutes
# in a backlog.
PICKUP_BUCKETS_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

EVENTS_RECEIVED = Counter(
    "rewardrelay_events_received",
    "Requests to an ingest endpoint, whatever became of them.",
    ["source"],
)
EVENTS_ACCEPTED = Counter(
    "rewardrelay_events_accepted",
    "Events stored for the first time (answered 202).",
    ["source"],
)
EVENTS_DUPLICATE = Counter(
    "rewardrelay_events_duplicate",
    "Redeliveries of an event already stored (answered 200, or 202 while not yet queued).",
    ["source"],
)
EVENTS_REJECTED = Counter(
    "rewardrelay_events_rejected",
    "Ingest requests refused, by problem type (signature-invalid, validation-failed, ...).",
    ["source", "reason"],
)
UNITS_TERMINAL = Counter(
    "rewardrelay_units_terminal",
    "Reward units reaching a terminal state (fulfilled, dead_lettered, unroutable, ignored).",
    ["state", "provider"],
)
PROVIDER_CALL_SECONDS = Histogram(
    "rewardrelay_provider_call_seconds",
    "One provider call (submit, look-up or follow-up) by outcome.",
    ["provider", "outcome"],
    buckets=PROVIDER_CALL_BUCKETS_SECONDS,
)
RETRIES = Counter(
    "rewardrelay_retries",
    "Attempts that ended in a scheduled retry (including unknown outcomes), by reason.",
    ["provider", "reason"],
)
EDGE_REQUEST_TIMEOUTS = Counter(
    "rewardrelay_edge_request_timeouts",
    "Connections answered 408 and closed: the request did not arrive in full in time.",
)
PICKUP_DELAY = Histogram(
    "rewardrelay_unit_pickup_delay_seconds",
    "Backlog: time from acceptance at the edge to a worker beginning the unit's first attempt.",
    buckets=PICKUP_BUCKETS_SECONDS,
)


# The label values known in advance. Each series is created at 0 when this module is
# imported, so ``rate()`` and ``absent()`` see it before its first event: a counter that
# appears only with its first increment loses that increment to ``rate()`` and makes
# ``absent()`` fire on a healthy system.
SOURCES = ("coniq", "internal")
# tasks.routing.PROVIDERS (the worker layer imports no task module; a test keeps them equal)
PROVIDERS = ("ifeelgoods", "rewardops")
REJECT_REASONS = (
    "signature-missing",
    "signature-invalid",
    "timestamp-out-of-tolerance",
    "malformed-json",
    "malformed-body",
    "payload-too-large",
    "unsupported-media-type",
    "validation-failed",
    "store-unavailable",
)
TERMINAL_STATES_BY_PROVIDER = {
    "fulfilled": PROVIDERS,
    "dead_lettered": (*PROVIDERS, NO_PROVIDER),
    "unroutable": (NO_PROVIDER,),
    "ignored": (NO_PROVIDER,),
}
RETRY_REASONS = ("timeout", "rate_limited", "unexpected")


def _initialise_known_series() -> None:
    for source in SOURCES:
        for counter in (EVENTS_RECEIVED, EVENTS_ACCEPTED, EVENTS_DUPLICATE):
            counter.labels(source=source)
        for reason in REJECT_REASONS:
            EVENTS_REJECTED.labels(source=source, reason=reason)
    for state, providers in TERMINAL_STATES_BY_PROVIDER.items():
        for provider in providers:
            UNITS_TERMINAL.labels(state=state, provider=provider)
    for provider in PROVIDERS:
        for reason in RETRY_REASONS:
            RETRIES.labels(provider=provider, reason=reason)


_initialise_known_series()


def event_received(source: str) -> None:
    EVENTS_RECEIVED.labels(source=source).inc()


def unit_terminal(state: str, provider: str) -> None:
    UNITS_TERMINAL.labels(state=state, provider=provider or NO_PROVIDER).inc()


def observe_provider_call(provider: str, outcome: str, seconds: float) -> None:
    PROVIDER_CALL_SECONDS.labels(provider=provider, outcome=outcome).observe(max(seconds, 0.0))


def retry_scheduled(provider: str, reason: str) -> None:
    RETRIES.labels(provider=provider or NO_PROVIDER, reason=reason or "unexpected").inc()


def edge_request_timed_out() -> None:
    EDGE_REQUEST_TIMEOUTS.inc()


def observe_pickup(seconds: float) -> None:
    PICKUP_DELAY.observe(max(seconds, 0.0))


class StoreCollector:
    """Scrape-time gauges read from Redis (not kept by any process).

    ``rewardrelay_store_up`` is 0 when Redis could not be read; the other gauges are then
    left out rather than reported as zero.
    """

    def __init__(self, dead_letters_waiting: Callable[[], int], live_units: Callable[[], int]):
        self._dead_letters_waiting = dead_letters_waiting
        self._live_units = live_units

    def collect(self) -> Iterator[Metric]:
        try:
            waiting, live = self._dead_letters_waiting(), self._live_units()
        except redis.RedisError:
            yield GaugeMetricFamily("rewardrelay_store_up", "Redis answered the scrape.", 0)
            return
        yield GaugeMetricFamily("rewardrelay_store_up", "Redis answered the scrape.", 1)
        yield GaugeMetricFamily(
            "rewardrelay_dead_letters_waiting", "Dead letters waiting for an operator.", waiting
        )
        yield GaugeMetricFamily(
            "rewardrelay_units_live",
            "Units accepted and not yet terminal (queued, in progress, retrying, awaiting).",
            live,
        )


class _OwnSeries:
    """Only our families (``rewardrelay_*``) from a collector.

    The multiprocess directory is shared by every process started with
    ``PROMETHEUS_MULTIPROC_DIR`` in its environment; Flower, also a prometheus_client
    user, writes its ``flower_*`` series there too. Those belong to Flower's own
    ``/metrics``, not the receiver's.
    """

    def __init__(self, collector: Any) -> None:
        self._collector = collector

    def collect(self) -> Iterator[Metric]:
        for family in self._collector.collect():
            if family.name.startswith(OWN_PREFIX):
                yield family


# -- Provider lanes (issue 18; tasks/lanes.py, worker/stores/lanes.py) -------------------
LANE_TRANSITIONS = Counter(
    "rewardrelay_lane_transitions",
    "Provider lane transitions: to broken (breaker tripped), funds (paused: money or cap "
    "ran out) or opened (probe succeeded). Operator pauses and resumes are in the audit log.",
    ["lane", "to"],
)


def lane_transition(lane: str, to: str) -> None:
    LANE_TRANSITIONS.labels(lane=lane, to=to).inc()


class LaneCollector:
    """Scrape-time gauges of every provider lane, read from Redis.

    ``views`` returns each lane's ``LaneView`` (worker.stores.lanes); a Redis error leaves
    the lane gauges out (``rewardrelay_store_up`` already says why).
    """

    STATES = ("open", "broken", "paused")

    def __init__(self, views: Callable[[], Iterable[Any]], now: Callable[[], float]) -> None:
        self._views = views
        self._now = now

    def collect(self) -> Iterator[Metric]:
        try:
            views = list(self._views())
        except redis.RedisError:
            return
        now = self._now()
        state = GaugeMetricFamily(
            "rewardrelay_lane_state",
            "1 for the state each provider lane is in (open, broken, paused), with its reason.",
            labels=["lane", "state", "reason"],
        )
        waiting = GaugeMetricFamily(
            "rewardrelay_lane_units_waiting",
            "Units waiting in a provider lane that is not open (no attempt used).",
            labels=["lane"],
        )
        oldest = GaugeMetricFamily(
            "rewardrelay_lane_oldest_waiting_seconds",
            "Age of the oldest unit waiting in the lane (0 when none waits).",
            labels=["lane"],
        )
        since = GaugeMetricFamily(
            "rewardrelay_lane_state_seconds",
            "Seconds the lane has been in its current state.",
            labels=["lane"],
        )
        in_flight = GaugeMetricFamily(
            "rewardrelay_lane_in_flight", "Provider calls in flight in the lane.", labels=["lane"]
        )
        for view in views:
            for name in self.STATES:
                reason = view.reason if name == view.state else ""
                state.add_metric([view.name, name, reason], 1 if name == view.state else 0)
            waiting.add_metric([view.name], view.waiting)
            age = now - view.oldest_waiting_since if view.oldest_waiting_since else 0.0
            oldest.add_metric([view.name], max(0.0, age))
            since.add_metric([view.name], max(0.0, now - view.since) if view.since else 0.0)
            in_flight.add_metric([view.name], view.in_flight)
        yield from (state, waiting, oldest, since, in_flight)


class UpCollector:
    """One scrape-time 0/1 gauge from a check (e.g. ``rewardrelay_broker_up``)."""

    def __init__(self, name: str, documentation: str, check: Callable[[], bool]) -> None:
        self._name, self._documentation, self._check = name, documentation, check

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self._name, self._documentation, 1 if self._check() else 0)


class _Chain:
    """Several collectors rendered as one exposition (no registration needed)."""

    def __init__(self, collectors: Iterable[Any]) -> None:
        self._collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def multiprocess_dir() -> str:
    """The multiprocess directory, or "" in single-process mode.

    Read from the environment (not Settings) on purpose: prometheus_client decides its
    storage from this same variable at import time, and the two must agree.
    """
    return os.environ.get(MULTIPROC_ENV, "")


def render(*extra: Any) -> bytes:
    """The Prometheus text exposition: every process's samples plus ``extra`` collectors."""
    base: Any = REGISTRY
    if multiprocess_dir():
        # Sums the files every process (web and worker) wrote in the shared directory.
        base = _OwnSeries(multiprocess.MultiProcessCollector(CollectorRegistry()))  # type: ignore[no-untyped-call]
    return generate_latest(_Chain([base, *extra]))


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _mark_worker_child_dead(pid: int | None = None, **_: Any) -> None:
    """A Celery prefork child is exiting: retire its live-gauge files (multiprocess mode)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]
