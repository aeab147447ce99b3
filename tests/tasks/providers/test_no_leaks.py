"""Nothing sensitive leaks: a faulty run logs no secret, token or reward code anywhere.

Captures every log record (root logger at DEBUG, so httpx, httpcore, werkzeug and our own
loggers are included) while both clients go through token expiry, 5xx, 429,
commit-then-timeout, 409 adoption and 412 races, then searches the records, their
tracebacks, the raised exceptions and the returned objects' reprs for every secret value.
"""

from __future__ import annotations

import functools
import logging
import traceback

import pytest

from sandboxes import SandboxControl
from sandboxes.server import RunningServer
from tasks.providers import (
    IfeelgoodsUser,
    Member,
    ProviderError,
    VersionConflictError,
)
from tests.ifeelgoods_staging import create_pending_redemption

IFG_POST = "/fulfillment/v2/promotions/*"
REDEEM_ACTION = "/fulfillment/v2/redemptions/*/actions/redeem"
RO_ORDERS = "/api/v4/programs/*/orders"


def collect_sensitive(
    ifeelgoods_server: RunningServer, rewardops_server: RunningServer, secrets: tuple[str, ...]
) -> set[str]:
    values = set(secrets)
    values |= set(ifeelgoods_server.state.tokens)
    values |= set(rewardops_server.state.tokens)
    for redemption in ifeelgoods_server.state.redemptions.values():
        values |= {code["value"] for code in redemption.codes}
    for order in rewardops_server.state.orders.values():
        values |= {item.code for item in order.items}
    return values


def test_faulty_run_logs_no_secret_token_or_code(
    caplog: pytest.LogCaptureFixture,
    make_ifeelgoods_client,
    make_rewardops_client,
    ifeelgoods_sandbox: SandboxControl,
    rewardops_sandbox: SandboxControl,
    ifeelgoods_server: RunningServer,
    rewardops_server: RunningServer,
    user: IfeelgoodsUser,
    member: Member,
    provider_secrets: tuple[str, ...],
) -> None:
    # given
    caplog.set_level(logging.DEBUG)
    ifg = make_ifeelgoods_client(timeout=0.3)
    ro = make_rewardops_client(timeout=0.3)
    ifeelgoods_sandbox.set_faults(
        {"method": "POST", "path": IFG_POST, "kind": "status", "status": 503, "times": 1},
        {
            "method": "POST",
            "path": IFG_POST,
            "kind": "commit_then_timeout",
            "seconds": 0.6,
            "times": 1,
        },
        {"method": "POST", "path": IFG_POST, "kind": "rate_limit", "retry_after": 1, "times": 1},
        {"method": "POST", "path": REDEEM_ACTION, "kind": "precondition_race", "times": 5},
    )
    rewardops_sandbox.set_faults(
        {
            "method": "POST",
            "path": RO_ORDERS,
            "kind": "commit_then_timeout",
            "seconds": 0.6,
            "times": 1,
        },
        {"method": "POST", "path": RO_ORDERS, "kind": "status", "status": 500, "times": 1},
        {"path": RO_ORDERS + "*", "kind": "token_expired", "times": 1},
    )
    raised: list[ProviderError] = []
    results: list[object] = []

    def attempt(call, *args, **kwargs):
        for _ in range(6):
            try:
                result = call(*args, **kwargs)
            except ProviderError as exc:
                logging.getLogger("rewardrelay.test").warning("attempt failed", exc_info=True)
                raised.append(exc)
            else:
                results.append(result)
                return result
        raise AssertionError("never succeeded")

    # when
    redeemed = attempt(ifg.create_and_redeem, 1, "AMZ-25USD-US", "ord-leak", user)
    pending = attempt(
        functools.partial(create_pending_redemption, ifg), 1, "ord-leak-2", user, "AMZ-25USD-US"
    )
    with pytest.raises(VersionConflictError) as conflict:
        ifg.ensure_redeemed(pending.id, user, current=pending)
    raised.append(conflict.value)
    attempt(ifg.ensure_redeemed, pending.id, user)
    order = attempt(ro.create_order, 12, "po-leak", member, "tok-gift-25")
    attempt(ro.create_order, 12, "po-leak", member, "tok-gift-25")  # 409 → adopt
    rewardops_sandbox.expire_tokens()
    attempt(ro.get_order, 12, "po-leak")

    # then
    sensitive = collect_sensitive(ifeelgoods_server, rewardops_server, provider_secrets)
    assert redeemed.codes and order.codes and len(sensitive) > 6
    texts = [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    texts += [
        "".join(traceback.format_exception(*record.exc_info))
        for record in caplog.records
        if record.exc_info
    ]
    texts += [str(exc) + repr(exc) + repr(vars(exc)) for exc in raised]
    texts += [repr(result) + str(result) for result in results]
    texts += [repr(ifg), repr(ro)]
    assert {type(exc).__name__ for exc in raised} >= {
        "UnknownOutcomeError",
        "RateLimitedError",
        "VersionConflictError",
    }
    assert any(r.name.startswith("httpx") for r in caplog.records)
    assert any(r.name.startswith("httpcore") for r in caplog.records)
    leaks = [(value, text) for value in sensitive for text in texts if value in text]
    assert leaks == []
