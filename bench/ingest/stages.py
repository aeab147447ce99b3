"""``python -m bench.ingest.stages``: where an accepted webhook's CPU goes, stage by stage.

``python -m bench.ingest`` says how fast each edge is under gunicorn; this says why. In one
process, with no server around it, it measures:

* each app's whole request (ours, the minimal receiver, the naive view), called as WSGI
  with a fresh signed event each time: CPU per request, and the ratio minimal/ours (what
  the throughput ratio tends to where the CPU is the limit);
* what each stage of our view costs inside a real request: ours minus ours with that stage
  taken out (validation answered from a template, the log line disabled, the Lua inbox
  write replaced by the minimal's ``SET NX`` + ``XADD``, ...): cold caches and fresh
  events included, which a stage timed alone in a loop does not see (also printed);
* what stands between ours and the minimal: each stage's share of the difference.

Rounds alternate the variants, and each variant's figure is the least CPU it took over the
rounds (other work on the machine only adds). Every call runs against the local Redis
(db 12/13, unique key prefixes, deleted at the end). Our app logs to a file in
bench/results/, as a deployment logs to its collector.
Absolute figures depend on the machine's load; the shares and ratios much less.
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import hmac
import io
import json
import logging
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import redis

from bench.ingest.__main__ import NAIVE_DB, OURS_DB, RESULTS, SECRET
from bench.ingest.load import make_event
from worker.signing import signed_headers
from worker.stores.inbox import InboxOutcome

ADMIN_TOKEN = "bench-admin-token-0123456789"
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _environ(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """A WSGI environ for ``POST /events`` as gunicorn builds it."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/events",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in headers.items():
        if name != "content-type":
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


class Requests:
    """Signed events made before the clock starts, one per request."""

    def __init__(self, count: int) -> None:
        self.items = []
        for _ in range(count):
            body, event_id = make_event()
            self.items.append((body, signed_headers(body, SECRET, event_id)))

    def cpu_per_request(self, app: WsgiApp, statuses: dict[str, int]) -> float:
        """CPU seconds per request for ``app`` over every prepared request."""

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            statuses[status] = statuses.get(status, 0) + 1

        gc.collect()
        gc.disable()  # as timeit does: a collection lands on whichever variant runs then
        started = time.process_time()
        for body, headers in self.items:
            answer = app(_environ(body, headers), start_response)
            b"".join(answer)
            close = getattr(answer, "close", None)
            if close is not None:
                close()
        spent = time.process_time() - started
        gc.enable()
        return spent / len(self.items)


def _apps(run_id: str, redis_base: str) -> dict[str, WsgiApp]:
    os.environ.update(
        {
            "REDIS_URL": f"{redis_base}/{OURS_DB}",
            "RR_KEY_PREFIX": f"rrstages-{run_id}",
            "EVENT_SECRETS": SECRET,
            "CONIQ_WEBHOOK_SECRETS": SECRET,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "LOG_FORMAT": "text",
            "BENCH_REDIS_URL": f"{redis_base}/{NAIVE_DB}",
            "BENCH_PREFIX": f"minstages-{run_id}",
            "BENCH_SECRET": SECRET,
            "BENCH_BROKER_URL": f"{redis_base}/{NAIVE_DB}",
            "BENCH_QUEUE": f"naivestages-{run_id}",
        }
    )
    from bench.ingest import minimal_app, naive_app
    from webhooks import create_app

    ours = create_app()  # from the environment: logging configured as in production
    RESULTS.mkdir(exist_ok=True)
    log_file = (RESULTS / "ingest-stages.log").open("a")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(log_file)
    return {
        "ours": ours,
        "minimal": minimal_app.create_app(),
        "naive": naive_app.create_app(),
    }


def _micro(function: Callable[[], object], number: int, repeat: int) -> float:
    """Median microseconds per call of ``function`` over ``repeat`` batches of ``number``."""
    batches = []
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(number):
            function()
        batches.append((time.process_time() - started) / number)
    return statistics.median(batches) * 1e6


def _stages(run_id: str, redis_base: str, number: int, repeat: int) -> list[tuple[str, float]]:
    """Our view's stages one by one, then the minimal receiver's, in µs per call."""
    from flask import Response

    from tasks.routing import load_rules
    from webhooks.jsonbody import parse_strict
    from webhooks.schemas import load_event
    from webhooks.units import canonical_json, fingerprint, units_for
    from worker import metrics, observability
    from worker.config import Settings
    from worker.redis_connect import redis_client
    from worker.signing import verify
    from worker.stores.inbox import Inbox
    from worker.stores.keys import Keys
    from worker.stores.personal_data import hasher_for, subjects_of

    settings = Settings.from_env()
    rules = load_rules(settings.rules_file)
    body, event_id = make_event()
    headers = signed_headers(body, SECRET, event_id)
    document = parse_strict(body)
    event = load_event("internal", document)
    hasher = hasher_for(settings)
    canonical = canonical_json(document)
    units = units_for("internal", event, rules)
    client = redis_client(f"{redis_base}/{OURS_DB}", socket_timeout=1.5)
    inbox = Inbox(client, Keys(f"rrstages-{run_id}"))
    edge_log = logging.getLogger("webhooks.ingest")
    counter = iter(range(10**9))

    def subjects() -> list[str]:
        return [hasher.digest(*found) for found in subjects_of("internal", event.type, document)]

    def accept() -> None:
        inbox.accept(
            event_id=f"{event_id}-{next(counter)}",
            source="internal",
            event_type=event.type,
            fingerprint=fingerprint(canonical),
            body=canonical,
            units=units,
            now=time.time(),
            stale_after=settings.unit_stale_seconds,
            subjects=[
                hasher.digest(*found) for found in subjects_of("internal", event.type, document)
            ],
        )

    def log_line() -> None:
        with observability.event_context(event_id, "internal"):
            edge_log.info(
                "event %s source=%s type=%s units=%d outcome=%s",
                event_id, "internal", event.type, len(units), "accepted",
            )  # fmt: skip

    def count() -> None:
        metrics.event_received("internal")
        metrics.EVENTS_ACCEPTED.labels(source="internal").inc()

    def answer() -> None:
        Response(f'{{"id": "{event_id}", "status": "accepted"}}', mimetype="application/json")

    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    minimal = redis.Redis.from_url(f"{redis_base}/{NAIVE_DB}")

    def minimal_verify() -> None:
        signed = f"{event_id}.{headers['webhook-timestamp']}.".encode() + body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        hmac.compare_digest(headers["webhook-signature"].partition(",")[2], expected)

    def minimal_write() -> None:
        pipe = minimal.pipeline(transaction=False)
        pipe.set(f"minstages-{run_id}:seen:{next(counter)}", 1, nx=True, ex=86_400)
        pipe.xadd(f"minstages-{run_id}:stream", {"id": event_id, "body": body})
        pipe.execute()

    ours: list[tuple[str, Callable[[], object]]] = [
        ("verify signature", lambda: verify(body, headers, settings.event_secrets, tolerance=300)),
        ("strict JSON parse", lambda: parse_strict(body)),
        ("validate (marshmallow)", lambda: load_event("internal", document)),
        ("units", lambda: units_for("internal", event, rules)),
        ("canonical JSON + fingerprint", lambda: fingerprint(canonical_json(document))),
        ("erasure subjects", subjects),
        ("inbox write (Lua, round trip)", accept),
        ("log line + context", log_line),
        ("metrics", count),
        ("202 response", answer),
    ]  # fmt: skip
    rows = [(f"ours: {name}", _micro(function, number, repeat)) for name, function in ours]
    rows.append(("minimal: verify signature", _micro(minimal_verify, number, repeat)))
    rows.append(("minimal: SET NX + XADD pipeline", _micro(minimal_write, number, repeat)))
    client.close()
    minimal.close()
    return rows


class _Anything:
    """Stands in for the metrics module: every attribute, call and ``inc`` does nothing."""

    def __getattr__(self, name: str) -> _Anything:
        return self

    def __call__(self, *args: object, **kwargs: object) -> _Anything:
        return self


def _ablations(
    ours: Any, run_id: str, redis_base: str
) -> dict[str, Callable[[], Callable[[], None]]]:
    """Ways to take one stage out of our view; each returns the function that puts it back.

    What a stage costs inside a real request (cold caches, fresh events) is the whole
    request's CPU with it minus without it: more honest than timing it alone in a loop.
    """
    import dataclasses

    import webhooks.ingest as ingest
    from webhooks.context import EXTENSION_KEY

    def swap(name: str, value: object) -> Callable[[], None]:
        saved = getattr(ingest, name)
        setattr(ingest, name, value)
        return lambda: setattr(ingest, name, saved)

    def no_validation() -> Callable[[], None]:
        from webhooks.schemas import load_event as real

        body, _ = make_event()
        template = real("internal", json.loads(body))
        return swap(
            "load_event", lambda source, document: dataclasses.replace(template, id=document["id"])
        )

    def no_log_line() -> Callable[[], None]:
        silent = logging.getLogger("bench.silent")
        silent.disabled = True
        return swap("log", silent)

    def no_context() -> Callable[[], None]:
        return swap("observability", SimpleNamespace(event_context=lambda *a: nullcontext()))

    def minimal_write() -> Callable[[], None]:
        """Our Lua inbox script replaced by the minimal receiver's SET NX + XADD."""
        context = ours.extensions[EXTENSION_KEY]
        client = redis.Redis.from_url(f"{redis_base}/{NAIVE_DB}")

        def accept(*, event_id: str, body: str, **_: object) -> InboxOutcome:
            pipe = client.pipeline(transaction=False)
            pipe.set(f"minstages-{run_id}:seen:{event_id}", 1, nx=True, ex=86_400)
            pipe.xadd(f"minstages-{run_id}:stream", {"id": event_id, "body": body})
            first, _ = pipe.execute()
            return InboxOutcome.ACCEPTED if first else InboxOutcome.DUPLICATE

        ours.extensions[EXTENSION_KEY] = dataclasses.replace(
            context, inbox=SimpleNamespace(accept=accept)
        )

        def restore() -> None:
            ours.extensions[EXTENSION_KEY] = context
            client.close()

        return restore

    return {
        "validation (marshmallow)": no_validation,
        "the INFO line": no_log_line,
        "log/Sentry context": no_context,
        "erasure subjects": lambda: swap("subjects_of", lambda *a: []),
        "metrics": lambda: swap("metrics", _Anything()),
        "Lua inbox write -> minimal's pipeline": minimal_write,
    }


def _cleanup(redis_host: str, redis_port: int, run_id: str) -> int:
    queue = f"naivestages-{run_id}"
    deleted = 0
    for db, patterns in (
        (OURS_DB, [f"rrstages-{run_id}:*"]),
        (NAIVE_DB, [f"minstages-{run_id}:*", queue, f"{queue}\x06*", f"_kombu.binding*.{queue}"]),
    ):
        client = redis.Redis(host=redis_host, port=redis_port, db=db)
        for pattern in patterns:
            for key in client.scan_iter(match=pattern, count=1000):
                deleted += int(client.delete(key))
        client.close()
    return deleted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest.stages", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="requests per app per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000, help="calls per stage batch")
    parser.add_argument("--redis-host", default="127.0.0.1")
    parser.add_argument("--redis-port", type=int, default=6379)
    args = parser.parse_args(argv)
    run_id = uuid.uuid4().hex[:8]
    redis_base = f"redis://{args.redis_host}:{args.redis_port}"
    try:
        apps = _apps(run_id, redis_base)
        ablations = _ablations(apps["ours"], run_id, redis_base)
        warm = Requests(500)
        for app in apps.values():
            warm.cpu_per_request(app, {})
        cpu: dict[str, list[float]] = {name: [] for name in apps}
        statuses: dict[str, dict[str, int]] = {name: {} for name in apps}
        # Each stage's cost is a paired difference: ours, then ours without the stage, back
        # to back (which goes first alternates by round), so both see the same machine.
        saved: dict[str, list[float]] = {name: [] for name in ablations}
        for round_no in range(args.rounds):
            order = list(apps) if round_no % 2 == 0 else list(apps)[::-1]
            for name in order:
                requests = Requests(args.requests)
                cpu[name].append(requests.cpu_per_request(apps[name], statuses[name]))
            for name, take_out in ablations.items():
                halves = [False, True] if round_no % 2 == 0 else [True, False]
                measured = {}
                for taken_out in halves:
                    requests = Requests(args.requests)
                    restore = take_out() if taken_out else None
                    try:
                        measured[taken_out] = requests.cpu_per_request(apps["ours"], {})
                    finally:
                        if restore is not None:
                            restore()
                saved[name].append(measured[False] - measured[True])
        rows = _stages(run_id, redis_base, args.number, args.rounds)
    finally:
        deleted = _cleanup(args.redis_host, args.redis_port, run_id)
    # The least CPU an app took over the rounds: noise from the neighbours only adds.
    least = {name: min(values) * 1e6 for name, values in cpu.items()}
    print(f"whole request in process (a WSGI call), least of {args.rounds} alternating rounds:")
    for name in apps:
        print(f"  {name:8} {least[name]:7.1f} µs CPU per request   answers: {statuses[name]}")
    ours, minimal = least["ours"], least["minimal"]
    print(
        f"  minimal/ours = {minimal / ours:.2f} (what the throughput ratio tends to where the "
        f"CPU is the limit), naive/ours = {least['naive'] / ours:.2f}"
    )
    print(
        "\nwhat each stage costs inside a request (ours minus ours without it, median of "
        f"{args.rounds} pairs), of the {ours - minimal:.0f} µs ours spends beyond the minimal:"
    )
    for name, differences in saved.items():
        cost = statistics.median(differences) * 1e6
        spread = f"{min(differences) * 1e6:.0f}..{max(differences) * 1e6:.0f}"
        print(f"  {name:40} {cost:7.1f} µs  {cost / (ours - minimal):6.1%}   (pairs {spread})")
    print(
        f"\nstages timed alone in a warm loop, µs CPU per call (median of {args.rounds} batches):"
    )
    for name, value in rows:
        print(f"  {name:40} {value:7.1f}")
    print(f"\n(cleaned up {deleted} Redis keys; load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
