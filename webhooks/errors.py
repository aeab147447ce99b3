"""Edge errors and the one handler that turns them into ``application/problem+json``.

Every refusal the HTTP API makes is a ``ProblemError`` with a stable ``type`` slug, so
clients can branch on it; nothing reaches Flask's default HTML 500 page.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, has_request_context, json
from gunicorn.http.errors import (  # type: ignore[import-untyped]
    InvalidResponseHeader,
    InvalidResponseHeaderName,
    NoMoreData,
    ParseException,
)
from werkzeug.exceptions import HTTPException

__all__ = [
    "BODY_FRAMING_ERRORS",
    "INTERNAL_ERROR_DETAIL",
    "MALFORMED_BODY_DETAIL",
    "ProblemError",
    "problem_document",
    "problem_response",
    "register_error_handlers",
    "PROBLEM_BASE",
]

PROBLEM_BASE = "https://rewardrelay.dev/problems/"
log = logging.getLogger(__name__)
# What gunicorn raises while the app reads a body whose framing is broken (a chunk size
# that is not hex, a chunk without its CRLF, a malformed trailer, a body cut short). The
# edge worker hands such requests on without judging them (webhooks/edge_worker.py), and
# gunicorn only parses a body when the app reads it: the client's fault, so a 400.
# (A response header the app got wrong is a ParseException too, and stays a 500.)
BODY_FRAMING_ERRORS: tuple[type[Exception], ...] = (ParseException, NoMoreData)
_OUR_FAULT = (InvalidResponseHeader, InvalidResponseHeaderName)
# Shared with the edge worker, which answers the same faults when gunicorn finds them.
MALFORMED_BODY_DETAIL = "The request body's HTTP framing is invalid."
INTERNAL_ERROR_DETAIL = "An unexpected error occurred."


class ProblemError(Exception):
    """An RFC 9457 problem: ``status``, a stable ``type`` slug, a human ``detail``."""

    def __init__(
        self,
        status: int,
        type_: str,
        detail: str,
        *,
        title: str | None = None,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.type = type_
        self.detail = detail
        self.title = title or type_.replace("-", " ").capitalize()
        self.errors = errors
        self.headers = headers or {}


def problem_document(
    status: int, type_: str, detail: str, *, title: str | None = None
) -> dict[str, Any]:
    """The members every problem has; ``title`` defaults to the slug in words, as in
    ``ProblemError`` (the edge worker builds its answers with this too)."""
    return {
        "type": PROBLEM_BASE + type_,
        "title": title or type_.replace("-", " ").capitalize(),
        "status": status,
        "detail": detail,
    }


def problem_response(problem: ProblemError) -> Response:
    if has_request_context():
        # For after-request hooks (ingest's metrics count refusals by problem type).
        g.problem_type = problem.type
    body = problem_document(problem.status, problem.type, problem.detail, title=problem.title)
    if problem.errors is not None:
        body["errors"] = problem.errors
    response = Response(
        json.dumps(body), status=problem.status, mimetype="application/problem+json"
    )
    for name, value in problem.headers.items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    """Map ProblemError, werkzeug HTTP errors and anything unexpected to problem+json."""

    @app.errorhandler(ProblemError)
    def _problem(error: ProblemError) -> Response:
        return problem_response(error)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        status = error.code or 500
        slug = {
            404: "not-found",
            405: "method-not-allowed",
            413: "payload-too-large",
            415: "unsupported-media-type",
        }.get(status, f"http-{status}")
        response = problem_response(ProblemError(status, slug, error.description or slug))
        if status == 405 and error.get_response().headers.get("Allow"):
            response.headers["Allow"] = error.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        # Logged with its type only: the message could carry request data.
        log.error("unhandled %s at the edge", type(error).__name__, exc_info=error)
        return problem_response(ProblemError(500, "internal-error", INTERNAL_ERROR_DETAIL))

    def _malformed_body(error: Exception) -> Response:
        if isinstance(error, _OUR_FAULT):
            return _unexpected(error)
        # Logged without a traceback (nor a Sentry event): it says nothing about our code.
        log.info("request body refused: %s", type(error).__name__)
        return problem_response(ProblemError(400, "malformed-body", MALFORMED_BODY_DETAIL))

    for framing_error in BODY_FRAMING_ERRORS:
        app.register_error_handler(framing_error, _malformed_body)
