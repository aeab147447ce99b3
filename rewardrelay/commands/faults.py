"""``send --fault``: arm a fault on the sandbox an event will be routed to, before sending.

The event's units and their routes are computed exactly as the edge and the worker do
(``webhooks.units.units_for`` and the rules file), so the fault lands on the provider that
will really be called: one rule per route on that sandbox's order call (Ifeelgoods
create-and-redeem, RewardOps order creation), ``times`` = the units routed there, added to
the rules already installed (``append``). Sandboxes only: a base URL whose server has no
``/_sandbox`` control API is refused, so a real provider is never asked for a fault.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from rewardrelay.commands.common import EXIT_FAILED, EXIT_USAGE, CommandError
from worker.config import Settings

__all__ = ["arm_fault_for", "fault_rules"]

CONTROL_TIMEOUT_SECONDS = 5.0
BASE_URL_VARIABLES = {"ifeelgoods": "IFEELGOODS_BASE_URL", "rewardops": "REWARDOPS_BASE_URL"}


def _order_path(provider: str, base_url: str, route: Any) -> str:
    """The glob of the one call that places the order, under the provider's base path."""
    prefix = urlsplit(base_url).path.rstrip("/")
    if provider == "ifeelgoods":
        return f"{prefix}/promotions/{route.promotion_id}/rewards/*/redemptions/actions/redeem"
    return f"{prefix}/programs/{route.program_id}/orders"


def fault_rules(
    settings: Settings, source: str, event: Mapping[str, Any], spec: str
) -> dict[str, list[dict[str, Any]]]:
    """The fault rules to install, by provider, for ``event`` and the fault ``spec``.

    Raises:
        CommandError: the spec is malformed, the event is invalid, or no unit of it is
            routed to a provider (exit 2).
    """
    from marshmallow import ValidationError

    from sandboxes.faults import FaultSpecError, parse_fault_header
    from tasks.routing import Route, RulesError, load_rules
    from webhooks.schemas import load_event
    from webhooks.units import units_for

    try:
        fault = parse_fault_header(spec)
    except FaultSpecError as exc:
        raise CommandError(f"--fault {spec!r}: {exc}", EXIT_USAGE) from None
    try:
        rules = load_rules(settings.rules_file)
    except RulesError as exc:
        raise CommandError(f"--fault needs the rules: {exc}", EXIT_USAGE) from None
    try:
        parsed = load_event(source, dict(event))
    except ValidationError as exc:
        raise CommandError(
            f"--fault: the event is not valid, the receiver would refuse it: {exc.messages}",
            EXIT_USAGE,
        ) from None
    routes: Counter[tuple[str, str]] = Counter()
    for unit in units_for(source, parsed, rules):
        route = rules.decide(source, parsed.type, unit.match)
        if isinstance(route, Route):
            base_url = getattr(settings, f"{route.provider}_base_url")
            routes[(route.provider, _order_path(route.provider, base_url, route))] += 1
    if not routes:
        raise CommandError(
            f"--fault: no unit of event {event.get('id')} is routed to a provider by "
            f"{settings.rules_file}, so no sandbox would be called",
            EXIT_USAGE,
        )
    fault_json = {k: v for k, v in fault.to_json().items() if v is not None}
    by_provider: dict[str, list[dict[str, Any]]] = {}
    for (provider, path), units in sorted(routes.items()):
        rule = {**fault_json, "method": "POST", "path": path, "times": units}
        by_provider.setdefault(provider, []).append(rule)
    return by_provider


def arm_fault_for(
    settings: Settings, source: str, event: Mapping[str, Any], spec: str
) -> list[str]:
    """Install the fault on each sandbox the event is routed to; one line per rule.

    Raises:
        CommandError: see ``fault_rules``; or a provider's base URL is not a sandbox, or
            the sandbox does not answer.
    """
    from sandboxes.control import SandboxControl

    lines = []
    for provider, rules in fault_rules(settings, source, event, spec).items():
        base_url: str = getattr(settings, f"{provider}_base_url")
        origin = _sandbox_origin(provider, base_url)
        with SandboxControl(origin) as control:
            try:
                control.set_faults(*rules, append=True)
            except httpx.HTTPError as exc:
                raise CommandError(f"the {provider} sandbox refused the fault: {exc}") from None
        for rule in rules:
            lines.append(
                f"armed {spec} on the {provider} sandbox ({origin}) for the next "
                f"{rule['times']} POST {rule['path']}"
            )
    return lines


def _sandbox_origin(provider: str, base_url: str) -> str:
    """The sandbox's origin, after checking that it serves the ``/_sandbox`` control API."""
    parts = urlsplit(base_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    variable = BASE_URL_VARIABLES[provider]
    if base_url == getattr(Settings(), f"{provider}_base_url"):
        # Not even a GET to the vendor: this is the default, the real provider's API.
        raise CommandError(
            f"--fault works on sandboxes only: {variable} is the real {provider} API — "
            "start `rewardrelay run`, or point it at a sandbox",
            EXIT_USAGE,
        )
    try:
        response = httpx.get(f"{origin}/_sandbox/faults", timeout=CONTROL_TIMEOUT_SECONDS)
    except httpx.HTTPError:
        raise CommandError(
            f"cannot reach the {provider} sandbox at {origin} — start `rewardrelay run` "
            f"(or set {variable})",
            EXIT_FAILED,
        ) from None
    try:
        is_sandbox = response.is_success and isinstance(response.json().get("rules"), list)
    except (ValueError, AttributeError):
        is_sandbox = False
    if not is_sandbox:
        raise CommandError(
            f"--fault works on sandboxes only: {variable} ({base_url}) is not one",
            EXIT_USAGE,
        )
    return origin
