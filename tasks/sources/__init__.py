"""Reward sources: producers that turn third-party items into internal reward events.

Stage: producers (worker side, scheduled by beat), plus the loop back to Coniq.

* :mod:`tasks.sources.ignico` — Ignico pending payouts → ``reward.granted``; realize or
  cancel each payout once its reward is fulfilled or its dead letter discarded.
* :mod:`tasks.sources.orders_platform` — paid orders of the OAuth2 orders platform →
  ``reward.granted`` (authorization-code connect flow, refresh token kept in Redis).
* :mod:`tasks.sources.coniq_outbound` — record each fulfilled Coniq reward in Coniq.
* :mod:`tasks.sources.clients` — the HTTP clients of these sources (not reward providers:
  those are :mod:`tasks.providers`).

Every producer emits through the receiver's ``/events`` (:mod:`tasks.sources.emit`), so
events from sources get the same verification, dedupe, ledger and routing as any other.
Submodules are imported by name (Celery ``include``), not re-exported here, so importing
the package stays cheap. The pollers' Celery tasks get the per-process runtime from
:mod:`tasks.runtime`, never from an entry-point module, so no import closes a circle.
"""

from __future__ import annotations

__all__: list[str] = []
