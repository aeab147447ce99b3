"""The edge's error handlers: what gunicorn raises while the app reads a body."""

from __future__ import annotations

import pytest
from flask import Flask
from gunicorn.http.errors import (  # type: ignore[import-untyped]
    ChunkMissingTerminator,
    InvalidChunkSize,
    InvalidHeader,
    InvalidResponseHeader,
    NoMoreData,
)

from webhooks.errors import register_error_handlers


def _app_raising(error: Exception) -> Flask:
    app = Flask(__name__)

    @app.post("/read")
    def read() -> str:
        raise error

    register_error_handlers(app)
    return app


@pytest.mark.parametrize(
    "error",
    [
        InvalidChunkSize(b"zz"),
        ChunkMissingTerminator(b"XX"),
        InvalidHeader("trailer"),
        NoMoreData(),
    ],
)
def test_a_broken_body_framing_is_the_clients_400(error):
    # when reading the body raises what gunicorn raises for a broken framing
    response = _app_raising(error).test_client().post("/read")

    # then
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["type"].endswith("/malformed-body")


def test_a_response_header_gunicorn_refuses_stays_our_500():
    # when (a ParseException too, but the app's fault)
    response = _app_raising(InvalidResponseHeader("x")).test_client().post("/read")

    # then
    assert response.status_code == 500
    assert response.get_json()["type"].endswith("/internal-error")
