"""rewardrelay: loyalty events in, rewards out, exactly once.

This package holds the operator's tools around the service: the ``rewardrelay`` command
line (``cli``), the ``run`` supervisor (``stack``), the embedded Redis (``embedded``),
the local data directory (``datadir``) and the outbox relay process (``relay``). The
service itself lives in ``webhooks`` (edge), ``tasks`` (fulfilment) and ``worker``.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
