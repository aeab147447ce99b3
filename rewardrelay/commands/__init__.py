"""The ``rewardrelay`` commands, one module per command group.

Each module has ``register(subparsers)``, which adds its parser and sets the handler;
``rewardrelay.cli`` builds the parser from ``COMMAND_MODULES`` in this order and
dispatches. Shared client plumbing (receiver URL, admin token, HTTP errors, exit codes)
is in ``common``.

    run       the whole stack on embedded defaults          (rewardrelay.stack)
    relay     the outbox relay and scheduler, a Procfile process
    worker    WORKER_PROCESSES Celery workers, a Procfile process
    sandbox   a provider or source sandbox in the foreground
    send      sign and post an event; optionally arm a sandbox fault first
    status    the fulfilment state of an event's units
    dlq       list, show, replay and discard dead letters
    sources   items the reward sources hold for an operator: list, retry, discard
    check     settings, rules, Redis, broker and provider reachability
    connect   authorize access to a reward source once
    console   the operator console's URL and admin token
    rotate-keys  re-seal stored reward codes under the first key of CODE_KEYS
    lanes     provider lanes: state, pause, resume
    erase     erase one customer's personal data (issue 19)
"""

from __future__ import annotations

from rewardrelay.commands import (
    check,
    connect,
    console,
    dlq,
    erase,
    lanes,
    relay,
    rotate_keys,
    run,
    sandbox,
    send,
    sources,
    status,
    worker,
)

__all__ = ["COMMAND_MODULES"]

COMMAND_MODULES = (
    run,
    relay,
    worker,
    sandbox,
    send,
    status,
    dlq,
    lanes,
    sources,
    check,
    connect,
    console,
    rotate_keys,
    erase,
)
