"""Error classification (providers.md section 6) and the error tree's safety properties."""

from __future__ import annotations

import pickle
import time
from email.utils import formatdate

import httpx
import pytest

from tasks.http.base import error_from_response, parse_retry_after
from tasks.http.errors import (
    ConflictError,
    NotFoundError,
    PermanentProviderError,
    PreconditionFailedError,
    ProviderAuthError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
    UnknownOutcomeError,
)


def response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers)


@pytest.mark.parametrize(
    ("status", "write", "expected"),
    [
        (500, False, TransientProviderError),
        (503, False, TransientProviderError),
        (504, True, UnknownOutcomeError),
        (502, True, UnknownOutcomeError),
        (429, True, RateLimitedError),
        (408, False, TransientProviderError),
        (401, False, ProviderAuthError),
        (403, True, ProviderAuthError),
        (404, False, NotFoundError),
        (409, True, ConflictError),
        (412, True, PreconditionFailedError),
        (400, True, PermanentProviderError),
        (406, False, PermanentProviderError),
        (422, True, PermanentProviderError),
    ],
)
def test_status_maps_to_the_documented_error_class(status: int, write: bool, expected) -> None:
    # given / when
    error = error_from_response("ifeelgoods", response(status), write=write)
    # then
    assert type(error) is expected
    assert error.status_code == status and error.provider == "ifeelgoods"


def test_5xx_on_read_is_never_unknown_outcome() -> None:
    # given / when
    error = error_from_response("rewardops", response(502), write=False)
    # then
    assert not isinstance(error, UnknownOutcomeError)


def test_reload_conflict_name_maps_409_to_precondition_failed() -> None:
    # given / when
    error = error_from_response(
        "ifeelgoods",
        response(409),
        write=True,
        name="conflict",
        reload_conflicts=frozenset({"conflict"}),
    )
    other = error_from_response(
        "ifeelgoods",
        response(409),
        write=True,
        name="user_mismatch",
        reload_conflicts=frozenset({"conflict"}),
    )
    # then
    assert isinstance(error, PreconditionFailedError)
    assert isinstance(other, ConflictError) and other.reason == "user_mismatch"


def test_412_and_transient_errors_are_not_permanent() -> None:
    # given / when
    precondition = error_from_response("ifeelgoods", response(412), write=True)
    # then
    assert not isinstance(precondition, PermanentProviderError | TransientProviderError)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("999999", 3600.0), ("soon", None), (None, None)],
)
def test_retry_after_seconds_are_parsed_and_clamped(header, expected) -> None:
    # given / when / then
    assert parse_retry_after(header) == expected


def test_retry_after_http_date_becomes_seconds_from_now() -> None:
    # given
    now = time.time()
    header = formatdate(now + 120, usegmt=True)
    # when
    seconds = parse_retry_after(header, now=now)
    # then
    assert seconds is not None and 119 <= seconds <= 121


def test_429_carries_retry_after() -> None:
    # given / when
    error = error_from_response("rewardops", response(429, {"Retry-After": "7"}), write=True)
    # then
    assert isinstance(error, RateLimitedError) and error.retry_after == 7.0


def test_message_holds_provider_reason_and_status_but_never_detail() -> None:
    # given / when
    error = NotFoundError("ifeelgoods", "Not Found!", status_code=404, detail="order SECRET-ish")
    # then
    assert str(error) == "ifeelgoods: not_found (HTTP 404)"
    assert error.reason == "not_found" and error.detail == "order SECRET-ish"


@pytest.mark.parametrize(
    "error",
    [
        UnknownOutcomeError("rewardops", "timeout"),
        RateLimitedError("ifeelgoods", status_code=429, retry_after=2.5),
        ConflictError("ifeelgoods", "user_mismatch", status_code=409, detail="x"),
    ],
)
def test_errors_survive_pickling_for_celery(error: ProviderError) -> None:
    # given / when
    clone = pickle.loads(pickle.dumps(error))
    # then
    assert type(clone) is type(error) and str(clone) == str(error)
    assert clone.__dict__ == error.__dict__
