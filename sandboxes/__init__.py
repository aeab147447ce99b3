"""Provider sandboxes: local HTTP simulators of Ifeelgoods Fulfillment v2 and RewardOps v4,
and of the reward sources Ignico, the OAuth2 orders platform and Coniq (issue 6).

Stage: test and demo infrastructure that ships with the package. ``rewardrelay run`` points
the worker at these when no vendor credentials are configured, and the test suite starts
them as real HTTP servers on loopback. They implement ``contracts/providers.md`` (sections
1 and 2, and 3-5 for the sources, including the parts tagged [DESIGN]) and can misbehave
on demand, so every retry, lookup and If-Match path of the worker can be exercised end to
end. ``sandboxes/README.md`` is the user's guide (how to ask for a fault over HTTP, how to
make a dead letter, what each sandbox enforces).

Layout: each sandbox module holds a state class (``*State``), a handler class (``*Api``:
one short method per endpoint) and an ``ENDPOINTS`` route table; :mod:`sandboxes.base`
registers the table and adds the shared fault hooks and ``/_sandbox`` control endpoints.

Apps and servers::

    sandboxes.ifeelgoods.create_app(state=None, *, api_key=None, api_secret=None) -> Flask
    sandboxes.rewardops.create_app(state=None, *, client_id=None, client_secret=None) -> Flask
    sandboxes.ignico.create_app(state=None, *, client_id=None, client_secret=None) -> Flask
    sandboxes.orders_platform.create_app(state=None, *, client_id=None, client_secret=None,
                                         redirect_uri=None) -> Flask
    sandboxes.coniq.create_app(state=None, *, api_key=None) -> Flask
    sandboxes.server.serve_in_thread(app, host="127.0.0.1", port=0) -> RunningServer
    sandboxes.server.serve_forever(name, host="127.0.0.1", port=0, **creds) -> None
    sandboxes.control.SandboxControl(url)   # HTTP client for the control API below

Unset credentials come from ``IFEELGOODS_API_KEY``/``IFEELGOODS_API_SECRET`` and
``REWARDOPS_CLIENT_ID``/``REWARDOPS_CLIENT_SECRET``, else ``sandbox-key``/``sandbox-secret``
and ``sandbox-client``/``sandbox-client-secret``.

Seeded data: Ifeelgoods promotions ``1`` (SKUs ``APP-ITU-10USD-US``, ``AMZ-25USD-US``,
``STB-5USD-US``) and ``2`` (``AMZ-25USD-US``); RewardOps program ``12`` with item order
tokens ``tok-gift-25``, ``tok-gift-10`` (codes), ``tok-link-15`` (redirect link),
``tok-physical-mug`` (no assets) and ``tok-reject`` (the item ends ``rejected``).

Control API (no authentication, never faulted)
----------------------------------------------
=========================  =====================================================
``POST /_sandbox/reset``   forget resources, tokens, counters and fault rules
``GET /_sandbox/counters`` ``{"issued": {"<key>": n}, "requests": n,
                           "faults_injected": {"<kind>": n}}``; ``issued`` counts
                           creations per idempotency key (Ifeelgoods ``order_id``,
                           RewardOps ``program_order_id``), never replays;
                           ``requests`` counts provider API calls (control excluded)
``GET /_sandbox/faults``   the active rules with their hit counts
``POST /_sandbox/faults``  install rules (format below); replaces unless ``append``
``DELETE /_sandbox/faults`` remove every rule
``POST /_sandbox/tokens/expire``  expire every issued bearer token (next use → 401)
``POST /_sandbox/config``  RewardOps: ``{"delivery_delay": seconds}``; orders
                           platform: ``{"access_ttl": seconds}``
``POST /_sandbox/orders``  orders platform only: seed orders (see its module)
=========================  =====================================================

Fault rules
-----------
``POST /_sandbox/faults`` body::

    {"seed": 7,            # optional: reseed the RNG used by "rate" (reproducible runs)
     "append": false,      # optional: add to the current rules instead of replacing them
     "rules": [
       {"method": "POST",                           # optional, default "*"
        "path": "/api/v4/programs/*/orders",        # optional glob on the path, default "*"
        "kind": "commit_then_timeout", "seconds": 1.0,
        "times": 1},                                # exact sequence: the next N matches
       {"path": "/fulfillment/v2/*", "kind": "status", "status": 503, "rate": 0.2},
       {"kind": "latency", "ms": 150, "skip": 2}    # no times/rate: every match
     ]}

A rule selects requests by ``method`` (case-insensitive) and ``path`` (``fnmatch`` glob on
the full path; ``*`` also crosses ``/``). ``times: N`` hits the next N matching requests and
then retires; ``rate: p`` hits each matching request with probability ``p``; with neither,
every matching request is hit. ``skip: N`` lets the first N matching requests through first.
Rules are tried in order; the first that fires wins.

Kinds and their parameters:

=======================  ==============================================================
``latency``              ``ms`` (default 100): sleep, then answer normally
``status``               ``status`` 500-599 (default 503), ``body`` (default true): the
                         provider's error body, or an empty body when false
``rate_limit``           ``retry_after`` (default 1): 429 with ``Retry-After``; a number
                         is sent as seconds, a string verbatim (e.g. an HTTP date)
``commit_then_timeout``  ``seconds`` (default 2.0): perform the write, then wait that
                         long before answering so the client times out not knowing
``precondition_race``    ``bumps`` (default 1), Ifeelgoods: bump the redemption's
                         ``version`` just before the If-Match check, so it answers 412
``token_expired``        401 exactly as for an expired bearer token
``permanent``            ``status`` 400-499 (default 422), ``error`` (Ifeelgoods
                         ``error_name`` / RewardOps ``reason``), ``message``
``quota``                [DESIGN] ``per_second``, ``burst`` (default a tenth of a
                         second's worth): a token bucket; requests beyond it get 429
                         with ``Retry-After: 1`` (counted as ``rate_limit``)
=======================  ==============================================================

[DESIGN] Money or a cap running out, which neither vendor documents as an error: an
exhausted Ifeelgoods promotion budget is ``{"kind": "permanent", "status": 422, "error":
"no_allocation"}`` (the vendor's reward sub-state ``no_allocation``, providers.md 1.7); a
RewardOps programme or offer cap is ``{"kind": "permanent", "status": 400, "error":
"program cap internal"}`` (the ``status_reason`` values of providers.md 2.7). The worker
pauses the provider's lane for ``funds`` on these instead of dead-lettering.

One-off fault for a single request: send the header ``X-Sandbox-Fault`` with either a JSON
object in the rule format (``{"kind": "permanent", "status": 400}``) or the shorthand
``kind`` / ``kind:value``, where value sets the kind's main parameter: ``latency:250``,
``status:502``, ``rate_limit:3``, ``commit_then_timeout:1.5``, ``precondition_race:2``,
``permanent:404``, ``token_expired``.
"""

from __future__ import annotations

from sandboxes.control import SandboxControl
from sandboxes.faults import Fault, FaultKind, FaultRule, FaultSpecError
from sandboxes.server import RunningServer, create_sandbox_app, serve_forever, serve_in_thread

__all__ = [
    "Fault",
    "FaultKind",
    "FaultRule",
    "FaultSpecError",
    "RunningServer",
    "SandboxControl",
    "create_sandbox_app",
    "serve_forever",
    "serve_in_thread",
]
