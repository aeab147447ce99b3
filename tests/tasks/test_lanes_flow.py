"""The fulfilment path through a provider lane, in process, against real Redis and the
sandboxes over HTTP: waiting makes no call and spends no attempt, and a unit handed back
keeps the first call it must make next (follow, or look up before resubmitting)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from tasks.fulfilment import fulfil_unit
from tasks.lanes import lane_store
from tasks.providers.adapters import provider_key
from tasks.runtime import WorkerRuntime
from tests.tasks.test_fulfilment import _accept, controls, rt, sandbox_urls  # noqa: F401
from worker.stores.models import UnitState


def test_a_unit_of_a_paused_lane_makes_no_call_and_spends_nothing(
    rt: WorkerRuntime,  # noqa: F811
    controls: Any,  # noqa: F811
) -> None:
    lane_store(rt).set_state("ifeelgoods", "paused", reason="window", by="test", action="pause")
    unit_id = _accept(rt, {"offer_id": "1001"})

    outcome = fulfil_unit(unit_id, rt)

    assert outcome.action == "waiting-paused"
    assert controls[0].counters()["requests"] == 0
    unit = rt.ledger.get(unit_id)
    assert unit is not None and unit.state is UnitState.PENDING
    assert unit.first_attempt_at == 0 and rt.ledger.round_attempts(unit_id) == 0
    assert lane_store(rt).view("ifeelgoods").waiting == 1


def test_an_unknown_outcome_that_breaks_the_lane_is_looked_up_when_it_reopens(
    rt: WorkerRuntime,  # noqa: F811
    controls: Any,  # noqa: F811
) -> None:
    # given a breaker that trips on one failure, and an order committed but never answered
    rt.settings = replace(rt.settings, lane_breaker_failures=1, lane_probe_seconds=0.2)
    controls[0].set_faults({"method": "POST", "kind": "commit_then_timeout", "times": 1})
    unit_id = _accept(rt, {"offer_id": "1001"})

    # when the first attempt times out
    outcome = fulfil_unit(unit_id, rt)

    # then the lane broke and the unit waits there as UNKNOWN, its attempt handed back
    assert outcome.action == "waiting-broken"
    assert lane_store(rt).view("ifeelgoods").state == "broken"
    unit = rt.ledger.get(unit_id)
    assert unit is not None and unit.state is UnitState.UNKNOWN
    assert rt.ledger.round_attempts(unit_id) == 0
    assert rt.ledger.attempts(unit_id)[-1]["outcome"] == "lane-wait"

    # when the probe is due, the unit probes: it looks the key up and finds the order
    time.sleep(0.3)
    assert fulfil_unit(unit_id, rt).action == "fulfilled"
    assert rt.ledger.attempts(unit_id)[-1]["mode"] == "lookup"
    assert controls[0].issued(provider_key(unit_id)) == 1
    assert lane_store(rt).view("ifeelgoods").state == "open"


def test_a_follow_up_that_meets_a_429_keeps_following(
    rt: WorkerRuntime,  # noqa: F811
    controls: Any,  # noqa: F811
) -> None:
    # given a RewardOps order accepted and awaiting delivery
    controls[1].configure(delivery_delay=2)
    unit_id = _accept(rt, {"offer_id": "2002"})
    assert fulfil_unit(unit_id, rt).action == "awaiting"
    rounds = rt.ledger.round_attempts(unit_id)

    # when its follow-up gets a 429
    controls[1].set_faults({"method": "GET", "kind": "rate_limit", "retry_after": 1, "times": 1})
    time.sleep(0.05)
    outcome = fulfil_unit(unit_id, rt)

    # then the lane slows down and the unit still follows its order, no attempt spent
    assert outcome.action == "throttled"
    unit = rt.ledger.get(unit_id)
    assert unit is not None and unit.state is UnitState.AWAITING_DELIVERY
    assert rt.ledger.round_attempts(unit_id) == rounds
    assert lane_store(rt).view("rewardops").slowed_until > time.time()


def test_waits_in_a_lane_are_shown_apart_from_the_attempts(
    rt: WorkerRuntime,  # noqa: F811
    controls: Any,  # noqa: F811
) -> None:
    # given a unit handed back twice by a paused lane, then fulfilled once it resumed
    from webhooks.admin import unit_view

    store = lane_store(rt)
    store.set_state("ifeelgoods", "paused", reason="window", by="test", action="pause")
    unit_id = _accept(rt, {"offer_id": "1001"})
    assert fulfil_unit(unit_id, rt).action == "waiting-paused"
    assert fulfil_unit(unit_id, rt).action == "waiting-paused"
    store.set_state("ifeelgoods", "open", reason="", by="test", action="resume")
    # when
    fulfil_unit(unit_id, rt)
    # then the operator sees one attempt (the one call) and two waits
    unit = rt.ledger.get(unit_id)
    assert unit is not None and unit.state is UnitState.FULFILLED
    assert controls[0].counters()["requests"] >= 1
    view = unit_view(unit, rt.ledger)
    assert (view["attempts"], view["waits"]) == (1, 2)
