"""Outbound HTTP plumbing shared by the reward providers and the reward sources' clients.

* :mod:`tasks.http.base` — :class:`ProviderClient`: I/O, timeouts, status → error mapping.
* :mod:`tasks.http.oauth` — the OAuth2 client-credentials token cache.
* :mod:`tasks.http.errors` — the typed error tree callers decide retry or dead letter on.
* :mod:`tasks.http.redaction` — :class:`Secret` and :class:`RewardCode`, masked in reprs.

Imports nothing from :mod:`tasks.providers` or :mod:`tasks.sources`: both import from here.
"""

from __future__ import annotations

__all__: list[str] = []
