"""Redis-backed stores shared by the web edge and the workers: inbox, ledger, dead letters."""

from __future__ import annotations

from worker.stores.keys import Keys
from worker.stores.models import TERMINAL_STATES, UnitState

__all__ = ["Keys", "UnitState", "TERMINAL_STATES"]
