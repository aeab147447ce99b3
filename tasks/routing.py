"""Routing rules: which provider and product fulfil a unit.

The rules live in a TOML file (``RULES_FILE``) and are validated once at start-up: an
invalid file stops the process with a message naming the rule and the field. Rules are
tried in file order; the first whose source, event type and ``match`` fields all equal
the unit's wins. An internal event may instead name ``provider`` + ``product`` itself.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

__all__ = [
    "PROVIDERS",
    "ROUTING_FIELDS",
    "NoRoute",
    "Route",
    "Rule",
    "Rules",
    "RulesError",
    "load_rules",
    "route_from_product",
]

PROVIDERS = ("ifeelgoods", "rewardops")
SOURCES = ("coniq", "internal", "*")
# RewardOps requires items[].member_spend (providers.md 2.6). A rule may name it; otherwise a
# reward costs the member 0, in USD (the currency of the vendor's examples).
DEFAULT_SPEND_CURRENCY = "USD"
DEFAULT_SPEND_AMOUNT = "0"
_SPEND_CURRENCY = re.compile(r"[A-Z]{3}|XRO-[A-Za-z0-9]+")  # ISO code or a points code
_SPEND_AMOUNT = re.compile(r"[0-9]+(\.[0-9]+)?")
# The unit fields a rule routes on, in the order an explanation names them: never personal
# data (a generic unit's other fields may be, so an explanation names only these).
ROUTING_FIELDS = ("reward_code", "offer_id", "product")
MAX_EXPLAINED_VALUE = 64  # a routing value quoted in a dead letter, at most


class RulesError(ValueError):
    """The rules file is invalid; the message names the rule and the field."""


@dataclass(frozen=True)
class Route:
    """A routing decision: the provider and the product to order from it."""

    provider: str
    rule: str
    # Ifeelgoods: promotion id + reward SKU.  RewardOps: program id + item order token.
    promotion_id: int = 0
    sku: str = ""
    program_id: int = 0
    item_order_token: str = ""
    # RewardOps items[].member_spend: the programme's currency and what the member paid.
    spend_currency: str = DEFAULT_SPEND_CURRENCY
    spend_amount: str = DEFAULT_SPEND_AMOUNT

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "rule": self.rule,
            "promotion_id": self.promotion_id,
            "sku": self.sku,
            "program_id": self.program_id,
            "item_order_token": self.item_order_token,
        }

    @property
    def product(self) -> str:
        if self.provider == "ifeelgoods":
            return f"{self.promotion_id}/{self.sku}"
        return f"{self.program_id}/{self.item_order_token}"


@dataclass(frozen=True)
class Rule:
    name: str
    source: str
    event: str
    match: Mapping[str, str]
    route: Route | None  # None: recognised and deliberately ignored

    def matches(self, source: str, event_type: str, fields: Mapping[str, str]) -> bool:
        if self.source not in ("*", source) or self.event not in ("*", event_type):
            return False
        return all(fields.get(key) == value for key, value in self.match.items())


@dataclass(frozen=True)
class NoRoute:
    """Why a unit found no rule: the routing field and value no rule matched, and where."""

    field: str  # reward_code / offer_id / product, or "" when the unit has none of them
    value: str
    rules_file: str
    detail: str  # one sentence for operators (no personal data)


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...] = field(default_factory=tuple)
    path: str = ""  # the file they were loaded from ("" when built in code)

    @cached_property
    def fingerprint(self) -> str:
        """What the rules decide, hashed: equal for files that differ only in comments or
        layout, different once any rule changes (a replay of an unroutable unit under the
        same fingerprint would only dead-letter it again)."""
        return hashlib.sha256(repr(self.rules).encode()).hexdigest()[:16]

    def explain_no_route(self, source: str, event_type: str, fields: Mapping[str, str]) -> NoRoute:
        """Name what found no rule, for the unroutable unit's dead letter."""
        where = self.path or "the routing rules"
        name = next((n for n in ROUTING_FIELDS if fields.get(n)), "")
        value = fields.get(name, "")[:MAX_EXPLAINED_VALUE] if name else ""
        if not self.wants(source, event_type):
            detail = f"no rule in {where} covers {source} {event_type} events"
        elif name:
            detail = f"no rule in {where} matches {name}={value!r} ({source} {event_type})"
        else:
            detail = (
                f"no rule in {where} matches this {source} {event_type} unit: "
                f"it has no {', '.join(ROUTING_FIELDS)} field"
            )
        return NoRoute(name, value, where, detail)

    def wants(self, source: str, event_type: str) -> bool:
        """True when some rule could act on this (source, event type)."""
        return any(
            r.route is not None and r.source in ("*", source) and r.event in ("*", event_type)
            for r in self.rules
        )

    def route(self, source: str, event_type: str, fields: Mapping[str, str]) -> Route | None:
        """The first matching rule's route, or None (unroutable, or an ignore rule)."""
        decision = self.decide(source, event_type, fields)
        return decision if isinstance(decision, Route) else None

    def decide(
        self, source: str, event_type: str, fields: Mapping[str, str]
    ) -> Route | Rule | None:
        """A Route to fulfil; the matching ignore Rule; or None when nothing matches."""
        # Only internal producers may name their own provider + product; a Coniq event's
        # fields must go through the rules.
        direct = route_from_product(fields) if source == "internal" else None
        if direct is not None:
            return direct
        for rule in self.rules:
            if rule.matches(source, event_type, fields):
                return rule.route if rule.route is not None else rule
        return None


def route_from_product(fields: Mapping[str, str]) -> Route | None:
    """An internal event's explicit ``provider`` + ``product`` (``id/sku`` or ``id/token``)."""
    provider, product = fields.get("provider"), fields.get("product")
    if not provider or not product or provider not in PROVIDERS or "/" not in product:
        return None
    owner, _, item = product.partition("/")
    if not owner.isdigit() or not item:
        return None
    if provider == "ifeelgoods":
        return Route("ifeelgoods", "event", promotion_id=int(owner), sku=item)
    return Route("rewardops", "event", program_id=int(owner), item_order_token=item)


def load_rules(path: Path) -> Rules:
    """Parse and validate the rules file.

    Raises:
        RulesError: the file is unreadable or a rule is invalid (message names rule + field).
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{path}: not valid TOML: {exc}") from exc
    raw_rules = document.get("rule", [])
    if not isinstance(raw_rules, list):
        raise RulesError(f"{path}: 'rule' must be an array of tables ([[rule]])")
    unknown = set(document) - {"rule"}
    if unknown:
        raise RulesError(f"{path}: unknown top-level key(s): {', '.join(sorted(unknown))}")
    rules: list[Rule] = []
    names: set[str] = set()
    for position, raw in enumerate(raw_rules, start=1):
        rule = _parse_rule(raw, position)
        if rule.name in names:
            raise RulesError(f"rule '{rule.name}' (#{position}): field 'name' is not unique")
        names.add(rule.name)
        rules.append(rule)
    return Rules(tuple(rules), path=str(path))


_COMMON = {"name", "source", "event", "match", "provider", "action"}
_BY_PROVIDER = {
    "ifeelgoods": {"promotion_id", "sku"},
    "rewardops": {"program_id", "item_order_token", "member_spend"},
}


def _parse_rule(raw: Any, position: int) -> Rule:
    label = f"rule #{position}"
    if not isinstance(raw, dict):
        raise RulesError(f"{label}: must be a table")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RulesError(f"{label}: field 'name' is required (a non-empty string)")
    label = f"rule '{name}' (#{position})"

    def fail(field_name: str, problem: str) -> RulesError:
        return RulesError(f"{label}: field '{field_name}' {problem}")

    source = raw.get("source", "*")
    if source not in SOURCES:
        raise fail("source", f"must be one of {', '.join(SOURCES)}")
    event = raw.get("event")
    if not isinstance(event, str) or not event:
        raise fail("event", "is required (an event type such as 'reward.issued', or '*')")
    match = raw.get("match", {})
    if not isinstance(match, dict) or not all(isinstance(v, str | int) for v in match.values()):
        raise fail("match", "must be a table of string or integer values")
    # Booleans as the edge records them (JSON spelling), so `flag = true` matches.
    match = {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in match.items()}
    action = raw.get("action", "fulfil")
    if action not in ("fulfil", "ignore"):
        raise fail("action", "must be 'fulfil' or 'ignore'")
    if action == "ignore":
        extra = set(raw) - {"name", "source", "event", "match", "action"}
        if extra:
            raise fail(sorted(extra)[0], "is not allowed on an ignore rule")
        return Rule(name, source, event, match, None)
    provider = raw.get("provider")
    if provider not in PROVIDERS:
        raise fail("provider", f"must be one of {', '.join(PROVIDERS)}")
    allowed = _COMMON | _BY_PROVIDER[provider]
    extra = set(raw) - allowed
    if extra:
        raise fail(sorted(extra)[0], f"is not a {provider} rule field")
    if provider == "ifeelgoods":
        promotion_id, sku = raw.get("promotion_id"), raw.get("sku")
        if not _positive_int(promotion_id):
            raise fail("promotion_id", "must be a positive integer")
        if not isinstance(sku, str) or not sku:
            raise fail("sku", "must be a non-empty string")
        route = Route("ifeelgoods", name, promotion_id=int(promotion_id or 0), sku=sku)
    else:
        program_id, token = raw.get("program_id"), raw.get("item_order_token")
        if not _positive_int(program_id):
            raise fail("program_id", "must be a positive integer")
        if not isinstance(token, str) or not token:
            raise fail("item_order_token", "must be a non-empty string")
        currency, amount = _member_spend(raw.get("member_spend"), fail)
        route = Route(
            "rewardops",
            name,
            program_id=int(program_id or 0),
            item_order_token=token,
            spend_currency=currency,
            spend_amount=amount,
        )
    return Rule(name, source, event, match, route)


def _member_spend(raw: Any, fail: Callable[[str, str], RulesError]) -> tuple[str, str]:
    """A RewardOps rule's optional ``member_spend = {currency_code, amount}``.

    ``currency_code`` (required in the table) is the programme's currency: an ISO code such
    as ``CAD`` or a points code ``XRO-xxx``; ``amount`` is a non-negative decimal string or
    integer, default ``"0"``. Without the table: 0 in ``USD``.
    """
    if raw is None:
        return DEFAULT_SPEND_CURRENCY, DEFAULT_SPEND_AMOUNT
    if not isinstance(raw, dict):
        raise fail("member_spend", 'must be a table { currency_code = "USD", amount = "0" }')
    unknown = set(raw) - {"currency_code", "amount"}
    if unknown:
        raise fail("member_spend", f"has unknown key '{sorted(unknown)[0]}'")
    currency = raw.get("currency_code")
    if not isinstance(currency, str) or not _SPEND_CURRENCY.fullmatch(currency):
        raise fail(
            "member_spend",
            'needs currency_code: an ISO currency code (e.g. "CAD") or a points code "XRO-xxx"',
        )
    amount = raw.get("amount", DEFAULT_SPEND_AMOUNT)
    if isinstance(amount, int) and not isinstance(amount, bool) and amount >= 0:
        amount = str(amount)
    if not isinstance(amount, str) or not _SPEND_AMOUNT.fullmatch(amount):
        raise fail("member_spend", 'amount must be a non-negative decimal string such as "12.50"')
    return currency, amount


def _positive_int(value: Any) -> bool:
    """A TOML integer above zero (TOML booleans are ints in Python: refuse them)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
