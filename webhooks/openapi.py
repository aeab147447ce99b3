"""``GET /openapi.json``: the OpenAPI 3.1 description of the HTTP API.

The description is data, kept in one place: ``webhooks/openapi.json``, shipped as package
data, read once by ``create_app`` and served as those exact bytes. No module adds to it
at import time. Two tests keep it honest: ``tests/webhooks/test_openapi.py`` compares its
operations with the routes Flask really has (both ways) and its limits with the
constants the code enforces, and the fuzz suite (``tests/fuzz``) holds every response to
what the document declares.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from flask import Blueprint, Response

__all__ = ["DOCUMENT_FILE", "bp", "document", "document_bytes"]

bp = Blueprint("openapi", __name__)
DOCUMENT_FILE = "openapi.json"


@functools.cache
def document_bytes() -> bytes:
    """The packaged document, read and checked once per process.

    Raises:
        ValueError: the packaged file is not a JSON object (a packaging error).
    """
    raw = resources.files("webhooks").joinpath(DOCUMENT_FILE).read_bytes()
    if not isinstance(json.loads(raw), dict):
        raise ValueError(f"webhooks/{DOCUMENT_FILE} is not a JSON object")
    return raw


def document() -> dict[str, Any]:
    """A fresh copy of the document (callers may change it freely)."""
    parsed: dict[str, Any] = json.loads(document_bytes())
    return parsed


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return Response(document_bytes(), mimetype="application/json")
