"""Fixtures for the fuzz suite: the real app (real Redis, the test's key prefix), its
OpenAPI schema loaded by schemathesis through WSGI, and example budgets.

Budgets are modest so the suite stays well under a minute in CI; ``RR_FUZZ_EXAMPLES``
scales every budget (the default, 25, is the CI setting), e.g.::

    RR_FUZZ_EXAMPLES=500 pytest tests/fuzz
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from webhooks import create_app
from worker.config import Settings

# Examples per generated test at the CI default; every budget below is derived from it.
BASE_EXAMPLES = 25
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
