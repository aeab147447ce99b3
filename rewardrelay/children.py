"""Child processes that must not outlive the process that started them.

Its own module (stdlib only) so that light commands (``rewardrelay worker``, imported by
the CLI for every command, ``send`` included) can use it without loading redis-py.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
from typing import Any

__all__ = ["die_with_parent"]

# Linux: ask the kernel to SIGTERM a child when its parent dies (even by SIGKILL), so a
# crashed supervisor leaves no orphan holding a port and the Redis data directory.
_PR_SET_PDEATHSIG = 1
_prctl: Any = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        _prctl = ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent() -> None:
    """``preexec_fn`` for a child that must not outlive its parent (Linux; else a no-op).

    The kernel ties this to the *thread* that started the child: start such children from
    a thread that lives as long as the process (the main thread).
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
