"""Fixtures for the fuzz suite: the real app (real Redis, the test's key prefix), its
OpenAPI schema loaded by schemathesis through WSGI, and example budgets.

Budgets are modest so the suite stays well under a minute in CI; ``RR_FUZZ_EXAMPLES``
scales every budget (the default, 25, is the CI setting), e.g.::

    RR_FUZZ_EXAMPLES=500 pytest tests/fuzz
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from webhooks import create_app
from worker.config import Settings
from worker.stores.dead_letters import DeadLetters
from worker.stores.inbox import Inbox
from worker.stores.ledger import AttemptRecord, Ledger
from worker.stores.models import AttemptOutcome, UnitSpec, UnitState

# Examples per generated test at the CI default; every budget below is derived from it.
BASE_EXAMPLES = 25
# Ids the admin operations can find: path parameters are sometimes swapped for these.
KNOWN_EVENT = "evt_fuzz_known"
LETTERS = [f"evt_fuzz_letter_{n}:0:0" for n in range(3)]
EXAMPLES = max(1, int(os.environ.get("RR_FUZZ_EXAMPLES", str(BASE_EXAMPLES))))


def budget(factor: float = 1.0) -> hypothesis_settings:
    """Hypothesis settings for ``factor`` × ``RR_FUZZ_EXAMPLES`` examples, no deadline.

    Function-scoped fixtures are shared by every example on purpose: the app and its
    Redis prefix are set up once per test and the properties must hold in any state.
    """
    return hypothesis_settings(
        max_examples=max(1, int(EXAMPLES * factor)),
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    # Not TESTING: exceptions must go through the app's own handlers, as in production,
    # so an unhandled error shows up as the 500 a client would see.
    application = create_app(settings)
    yield application
    application.extensions["rewardrelay"].redis.close()


@pytest.fixture
def api_schema(app: Flask) -> schemathesis.BaseSchema:
    """The app's own ``/openapi.json``, fetched and exercised in-process via WSGI."""
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


@pytest.fixture
def known_ids(app: Flask) -> None:
    """An event with one unit, and waiting dead letters, in the app's own Redis."""
    ctx = app.extensions["rewardrelay"]
    inbox, ledger = Inbox(ctx.redis, ctx.keys), Ledger(ctx.redis, ctx.keys)
    now = time.time()
    for event_id in [KNOWN_EVENT, *(letter.split(":")[0] for letter in LETTERS)]:
        inbox.accept(
            event_id=event_id,
            source="coniq",
            event_type="reward.issued",
            fingerprint=f"fp-{event_id}",
            body=json.dumps({"id": event_id}),
            units=[UnitSpec(line=0, index=0, match={"offer_id": "1001"})],
            now=now,
            stale_after=45.0,
        )
    for letter in LETTERS:
        begun = ledger.begin(letter, now=now, lease_seconds=60.0)
        record = AttemptRecord(
            attempt=begun.attempt, at=now, mode=begun.decision, outcome=AttemptOutcome.DEAD_LETTER
        )
        assert ledger.finish(
            letter,
            begun.attempt,
            UnitState.DEAD_LETTERED,
            record,
            now=now,
            next_check_at=None,
            fields={"provider": "ifeelgoods", "dead_letter_id": letter},
            dead_letter={
                "id": letter,
                "event_id": letter.split(":")[0],
                "source": "coniq",
                "provider": "ifeelgoods",
                "product": "1/SKU",
                "reason": "permanent",
                "error_type": "PermanentProviderError",
                "status_code": 422,
                "detail": "permanent",
                "attempts": 1,
                "created_at": now,
                "status": "waiting",
            },
        )
    assert DeadLetters(ctx.redis, ctx.keys).get(LETTERS[0]) is not None
