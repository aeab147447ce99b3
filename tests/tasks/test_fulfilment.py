"""fulfil_unit, called as a plain function against real Redis and the sandboxes over HTTP.

No Celery here: each call is one delivery of the task, so the tests drive the ledger's
decisions (skip, submit, look up, follow, retry, dead-letter) one step at a time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from sandboxes import SandboxControl, serve_in_thread
from sandboxes.ifeelgoods import create_app as ifeelgoods_app
from sandboxes.rewardops import create_app as rewardops_app
from tasks.fulfilment import fulfil_unit
from tasks.providers.adapters import provider_key
from tasks.providers.ifeelgoods import IfeelgoodsClient
from tasks.runtime import WorkerRuntime, build_runtime
from tasks.sources.coniq_outbound import SOURCE as OUTBOUND
from tasks.sources.coniq_outbound import OutboundKeys
from tests.ifeelgoods_staging import create_pending_redemption
from worker.config import Settings
from worker.stores.models import UnitSpec, UnitState


@pytest.fixture(scope="module")
def sandbox_urls() -> Iterator[tuple[str, str]]:
    ifg = serve_in_thread(ifeelgoods_app(api_key="k", api_secret="s-secret"), log_requests=False)
    rops = serve_in_thread(
        rewardops_app(client_id="c", client_secret="c-secret"), log_requests=False
    )
    yield ifg.url, rops.url
    ifg.stop()
    rops.stop()


@pytest.fixture
def controls(sandbox_urls: tuple[str, str]) -> Iterator[tuple[SandboxControl, SandboxControl]]:
    ifg, rops = SandboxControl(sandbox_urls[0]), SandboxControl(sandbox_urls[1])
    ifg.reset()
    rops.reset()
    rops.configure(delivery_delay=0)
    yield ifg, rops
    ifg.close()
    rops.close()


@pytest.fixture
def rt(settings: Settings, sandbox_urls: tuple[str, str], controls: Any) -> WorkerRuntime:
    configured = replace(
        settings,
        ifeelgoods_base_url=f"{sandbox_urls[0]}/fulfillment/v2",
        ifeelgoods_api_key="k",
        ifeelgoods_api_secret="s-secret",
        rewardops_base_url=f"{sandbox_urls[1]}/api/v4",
        rewardops_client_id="c",
        rewardops_client_secret="c-secret",
        provider_timeout_seconds=0.5,
        retry_base_seconds=0.01,
        retry_max_delay_seconds=0.02,
        retry_max_attempts=4,
        task_lease_seconds=30,
        delivery_poll_seconds=0.01,
    )
    return build_runtime(configured)


def _accept(rt: WorkerRuntime, match: dict[str, str], *, source: str = "coniq") -> str:
    event_id = f"evt_{time.time_ns()}"
    person = {"email": "ada@example.com", "first_name": "Ada", "last_name": "L", "id": "c1"}
    body = {"id": event_id, "type": "reward.issued", "data": {"customer": person}}
    rt.inbox.accept(
        event_id=event_id,
        source=source,
        event_type="reward.issued",
        fingerprint="f",
        body=json.dumps(body),
        units=[UnitSpec(0, 0, match)],
        now=time.time(),
        stale_after=60,
    )
    return f"{event_id}:0:0"


def _until_terminal(rt: WorkerRuntime, unit_id: str, calls: int = 30) -> list[str]:
    actions = []
    for _ in range(calls):
        outcome = fulfil_unit(unit_id, rt)
        actions.append(outcome.action)
        unit = rt.ledger.get(unit_id)
        assert unit is not None
        if unit.terminal:
            return actions
        time.sleep(max(0.0, unit.next_attempt_at - time.time()))
    raise AssertionError(f"not terminal after {calls} calls: {actions}")


def test_fulfilled_unit_is_skipped_on_redelivery(rt: WorkerRuntime, controls: Any) -> None:
    # given a unit fulfilled through Ifeelgoods
    unit_id = _accept(rt, {"offer_id": "1001"})
    assert fulfil_unit(unit_id, rt).action == "fulfilled"

    # when the task is delivered again
    again = fulfil_unit(unit_id, rt)

    # then nothing is sent: the ledger says terminal, one redemption exists
    assert again.action == "skipped-terminal"
    assert controls[0].issued(provider_key(unit_id)) == 1
    assert rt.ledger.codes(unit_id)


def test_second_delivery_while_first_holds_the_lease_does_nothing(rt: WorkerRuntime) -> None:
    # given a delivery that has begun (holds the lease)
    unit_id = _accept(rt, {"offer_id": "1001"})
    begun = rt.ledger.begin(unit_id, now=time.time(), lease_seconds=30)
    assert begun.decision.proceeds

    # when a duplicate delivery arrives
    outcome = fulfil_unit(unit_id, rt)

    # then it backs off without touching the provider
    assert outcome.action == "skipped-busy"


def test_transient_errors_exhaust_attempts_into_a_dead_letter(
    rt: WorkerRuntime, controls: Any
) -> None:
    # given the provider answers 503 to every create
    controls[0].set_faults({"method": "POST", "kind": "status", "status": 503})
    unit_id = _accept(rt, {"offer_id": "1001"})

    # when the unit is retried as scheduled
    actions = _until_terminal(rt, unit_id)

    # then it was retried up to RETRY_MAX_ATTEMPTS, then dead-lettered with the reason
    assert actions[-1] == "dead_lettered"
    assert actions.count("unknown") + actions.count("retry") == rt.retry.max_attempts - 1
    letter = rt.dead_letters.get(unit_id)
    assert letter is not None and letter.reason == "retries-exhausted"
    assert letter.status_code == 503


def test_retry_horizon_dead_letters_before_attempts_run_out(
    rt: WorkerRuntime, controls: Any
) -> None:
    # given a 1-second horizon and a provider that is down
    rt.retry = replace(rt.retry, horizon_seconds=0.05, max_attempts=100, base_seconds=0.04)
    controls[0].set_faults({"method": "POST", "kind": "status", "status": 502})
    unit_id = _accept(rt, {"offer_id": "1001"})

    # when retried
    actions = _until_terminal(rt, unit_id, calls=50)

    # then the horizon, not the attempt count, ended it
    assert actions[-1] == "dead_lettered"
    assert len(actions) < 100
    assert rt.dead_letters.get(unit_id).reason == "retries-exhausted"  # type: ignore[union-attr]


def test_retry_after_sets_the_next_attempt_time(rt: WorkerRuntime, controls: Any) -> None:
    # given a 429 with Retry-After: 3
    controls[0].set_faults({"kind": "rate_limit", "retry_after": 3, "times": 1})
    unit_id = _accept(rt, {"offer_id": "1001"})

    # when the first attempt is rate-limited
    before = time.time()
    outcome = fulfil_unit(unit_id, rt)

    # then the lane slows down: the unit comes back no earlier than Retry-After without
    # spending an attempt (issue 17), and an early delivery waits
    assert outcome.action == "throttled"
    unit = rt.ledger.get(unit_id)
    assert unit is not None and unit.state is UnitState.RETRYING
    assert unit.next_attempt_at >= before + 3
    assert rt.ledger.round_attempts(unit_id) == 0
    assert fulfil_unit(unit_id, rt).action == "skipped-early"


def test_rewardops_order_is_followed_until_delivered(rt: WorkerRuntime, controls: Any) -> None:
    # given a catalogue item that takes a moment to be delivered
    controls[1].configure(delivery_delay=0.3)
    unit_id = _accept(rt, {"offer_id": "2002"})

    # when the unit is driven to the end
    actions = _until_terminal(rt, unit_id, calls=200)

    # then it was accepted, followed, and fulfilled with the delivered code, ordered once
    assert actions[0] == "awaiting"
    assert actions[-1] == "fulfilled"
    unit = rt.ledger.get(unit_id)
    assert unit is not None and unit.state is UnitState.FULFILLED
    assert rt.ledger.codes(unit_id)
    assert controls[1].issued(provider_key(unit_id)) == 1
    modes = [a["mode"] for a in rt.ledger.attempts(unit_id)]
    assert modes[0] == "submit" and set(modes[1:]) == {"follow"}


def test_rejected_catalogue_item_is_dead_lettered(rt: WorkerRuntime, controls: Any) -> None:
    # given a rule-less direct product that RewardOps rejects
    unit_id = _accept(rt, {"provider": "rewardops", "product": "12/tok-reject"}, source="internal")

    # when driven to the end
    actions = _until_terminal(rt, unit_id, calls=50)

    # then it is a dead letter with the provider's reason
    assert actions[-1] == "dead_lettered"
    assert rt.dead_letters.get(unit_id).reason == "order_item_rejected"  # type: ignore[union-attr]


def test_ignore_rule_ends_the_unit_ignored(rt: WorkerRuntime) -> None:
    # given a unit for an event type an ignore rule covers
    unit_id = _accept(rt, {})
    rt.redis.hset(rt.keys.unit(unit_id), "event_type", "customer.created")

    # when delivered
    outcome = fulfil_unit(unit_id, rt)

    # then it is terminal and ignored, not unroutable
    assert outcome.action == "ignored"
    assert rt.ledger.get(unit_id).state is UnitState.IGNORED  # type: ignore[union-attr]


def test_unknown_outcome_is_looked_up_before_resubmitting(rt: WorkerRuntime, controls: Any) -> None:
    # given the provider commits the create, then answers after the client gave up
    controls[0].set_faults(
        {
            "method": "POST",
            "path": "*/redemptions/actions/redeem",
            "kind": "commit_then_timeout",
            "seconds": 1.0,
            "times": 1,
        }
    )
    unit_id = _accept(rt, {"offer_id": "1001"})

    # when the unit is driven to the end
    actions = _until_terminal(rt, unit_id)

    # then the second attempt looked the key up and found the committed redemption
    assert actions[0] == "unknown"
    assert actions[-1] == "fulfilled"
    modes = [a["mode"] for a in rt.ledger.attempts(unit_id)]
    assert modes[:2] == ["submit", "lookup"]
    assert controls[0].issued(provider_key(unit_id)) == 1


def test_a_first_submission_is_one_create_and_redeem_request(
    rt: WorkerRuntime, controls: Any
) -> None:
    # given a fresh unit routed to Ifeelgoods
    unit_id = _accept(rt, {"offer_id": "1001"})
    before = controls[0].counters()["requests"]

    # when it is fulfilled
    outcome = fulfil_unit(unit_id, rt)

    # then one request did it all: created, redeemed, codes in hand
    assert outcome.action == "fulfilled"
    assert controls[0].counters()["requests"] - before == 1
    assert controls[0].issued(provider_key(unit_id)) == 1
    assert rt.ledger.codes(unit_id)


def test_a_pending_redemption_under_the_key_is_redeemed_with_if_match_through_a_race(
    rt: WorkerRuntime, controls: Any, sandbox_urls: tuple[str, str]
) -> None:
    # given the unit's order id already has a pending redemption (an earlier release
    # created orders and redeemed them in a second call, and stopped in between), and
    # the first redeem of it loses an If-Match race
    unit_id = _accept(rt, {"offer_id": "1001"})
    client = IfeelgoodsClient(f"{sandbox_urls[0]}/fulfillment/v2", "k", "s-secret")
    pending = create_pending_redemption(client, 1, provider_key(unit_id))
    assert not pending.is_redeemed
    controls[0].set_faults(
        {
            "method": "POST",
            "path": "/fulfillment/v2/redemptions/*/actions/redeem",
            "kind": "precondition_race",
            "times": 1,
        }
    )

    # when the unit is fulfilled
    outcome = fulfil_unit(unit_id, rt)

    # then the 412 was re-read and retried: that redemption, redeemed, nothing new created
    assert outcome.action == "fulfilled"
    assert controls[0].counters()["faults_injected"] == {"precondition_race": 1}
    assert controls[0].issued(provider_key(unit_id)) == 1
    unit = rt.ledger.get(unit_id)
    assert unit is not None and unit.provider_ref == pending.id
    assert client.get_redemption(pending.id).is_redeemed


class _WorkerDied(BaseException):
    """Stands for the process dying: nothing in the task catches it."""


def test_a_worker_dying_before_fulfilled_is_written_still_leaves_the_coniq_record_queued(
    rt: WorkerRuntime, controls: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given recording back in Coniq is on, and the worker dies right after Ifeelgoods
    # issued the reward, before the ledger's FULFILLED write
    coniq_rt = build_runtime(
        replace(
            rt.settings,
            coniq_api_key="ck-1",
            coniq_record_offer_id="9001",
            task_lease_seconds=1,
        )
    )
    unit_id = _accept(coniq_rt, {"offer_id": "1001"})
    pending = OutboundKeys(coniq_rt.keys, OUTBOUND).pending
    real_finish = coniq_rt.ledger.finish

    def die_on_fulfilled(unit: str, attempt: int, state: UnitState, *args: Any, **kw: Any) -> Any:
        if state is UnitState.FULFILLED:
            raise _WorkerDied
        return real_finish(unit, attempt, state, *args, **kw)

    monkeypatch.setattr(coniq_rt.ledger, "finish", die_on_fulfilled)
    with pytest.raises(_WorkerDied):
        fulfil_unit(unit_id, coniq_rt)

    # then the unit is not terminal, but its Coniq record is already queued
    unit = coniq_rt.ledger.get(unit_id)
    assert unit is not None and not unit.terminal
    assert coniq_rt.redis.sismember(pending, unit_id)

    # and the redelivery after the lease looks the redemption up and fulfils it, once
    monkeypatch.setattr(coniq_rt.ledger, "finish", real_finish)
    time.sleep(1.1)
    assert fulfil_unit(unit_id, coniq_rt).action == "fulfilled"
    assert coniq_rt.ledger.get(unit_id).state is UnitState.FULFILLED  # type: ignore[union-attr]
    assert coniq_rt.redis.sismember(pending, unit_id)
    assert controls[0].issued(provider_key(unit_id)) == 1


def test_an_attempt_ends_within_its_lease_however_slow_the_provider(
    rt: WorkerRuntime, controls: Any
) -> None:
    # given a 1 s lease (calls may use 0.8 s of it), a 5 s client timeout, and a provider
    # that commits the order and answers after 3 s
    settings = replace(rt.settings, task_lease_seconds=1.0, provider_timeout_seconds=5.0)
    slow = build_runtime(settings, rules=rt.rules)
    controls[0].set_faults({"kind": "latency", "ms": 3000, "times": 1})
    unit_id = _accept(rt, {"offer_id": "1001"})
    started = time.monotonic()

    # when one delivery runs
    outcome = fulfil_unit(unit_id, slow)

    # then it gave up before its lease ran out, not knowing whether the order exists,
    # and the next attempt (at its retry time) finds the order rather than placing another
    assert time.monotonic() - started < 1.0
    assert outcome.action == "unknown"
    actions = _until_terminal(rt, unit_id)
    assert actions[-1] == "fulfilled"
    assert controls[0].issued(provider_key(unit_id)) == 1
