"""Clients of the reward sources: Ignico, the orders platform and Coniq.

They are where rewards come *from* (and, for Coniq, where fulfilled rewards are recorded
back), not reward providers: the pollers in :mod:`tasks.sources` drive them. Built on the
shared plumbing of :mod:`tasks.http`; each has one constructor from settings,
``from_settings``.
"""

from __future__ import annotations

__all__: list[str] = []
