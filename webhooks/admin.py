"""Admin API (placeholder until the fulfilment work lands)."""

from __future__ import annotations

from flask import Blueprint

__all__ = ["bp"]

bp = Blueprint("admin", __name__)
