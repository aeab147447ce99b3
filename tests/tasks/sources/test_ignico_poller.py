"""The Ignico payout poller against the Ignico sandbox and the real receiver over HTTP."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sandboxes import SandboxControl
from tasks.runtime import WorkerRuntime
from tasks.sources.clients.ignico import IgnicoClient
from tasks.sources.common import SourceKeys
from tasks.sources.emit import EmitError, EmitResult, HttpEmitter, RewardEvent
from tasks.sources.ignico import event_id_for, poll_payouts, run_ignico, settle_payouts
from tests.source_seeds import IgnicoSeeder
from tests.tasks.sources.conftest import event_ids
from worker.stores.codec import text_map
from worker.stores.models import UnitState

TRANSACTIONS = "/api/v1/users/wallets/transactions"


class CountingEmitter:
    """Wraps the real emitter: records what it sent; may fail on the n-th call."""

    def __init__(
        self, inner: HttpEmitter, fail_on: int | None = None, crash_after: int | None = None
    ) -> None:
        self.inner = inner
        self.fail_on = fail_on
        self.crash_after = crash_after
        self.sent: list[str] = []
        self.results: list[EmitResult] = []

    def __call__(self, event: RewardEvent) -> EmitResult:
        if self.fail_on is not None and len(self.sent) + 1 == self.fail_on:
            raise EmitError("connecterror")  # the receiver went away: retryable
        result = self.inner(event)
        self.sent.append(event.id)
        self.results.append(result)
        if self.crash_after is not None and len(self.sent) == self.crash_after:
            raise SystemExit("worker killed between emit and record")
        return result


def mark_units(rt: WorkerRuntime, event_id: str, state: UnitState, reason: str = "") -> None:
    """Put every unit of an emitted event into ``state`` (and discard its dead letter)."""
    for unit_id in rt.inbox.get(event_id).unit_ids:  # type: ignore[union-attr]
        rt.redis.hset(rt.keys.unit(unit_id), "state", state.value)
        if reason:
            rt.redis.hset(
                rt.keys.dead_letter(unit_id),
                mapping={"status": "discarded", "discard_reason": reason},
            )


def test_poll_walks_every_page_and_emits_each_pending_payout_once(
    rt: WorkerRuntime,
    seeder: IgnicoSeeder,
    make_ignico: Callable[[], IgnicoClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given: 7 pending payouts (3 pages of 3) and a credit that is not a payout
    ids = seeder.payouts(7)
    seeder.transaction("ada@example.com", kind="add")
    emitter = CountingEmitter(make_emitter())
    # when
    report = poll_payouts(rt, make_ignico(), emitter)
    # then
    assert report.pages == 3 and report.emitted == 7 and not report.stopped
    assert emitter.sent == [event_id_for(tx) for tx in ids]
    assert event_ids(rt, "ignico-payout-") == sorted(event_id_for(tx) for tx in ids)
    stored = rt.inbox.get(event_id_for(ids[0]))
    assert stored is not None and stored.source == "internal" and len(stored.unit_ids) == 1


def test_second_poll_emits_nothing_new(
    rt: WorkerRuntime,
    seeder: IgnicoSeeder,
    make_ignico: Callable[[], IgnicoClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given
    seeder.payouts(4)
    poll_payouts(rt, make_ignico(), make_emitter())
    again = CountingEmitter(make_emitter())
    # when
    report = poll_payouts(rt, make_ignico(), again)
    # then
    assert again.sent == [] and report.emitted == 0 and report.skipped == 4


def test_restart_mid_page_neither_skips_nor_repeats(
    rt: WorkerRuntime,
    seeder: IgnicoSeeder,
    make_ignico: Callable[[], IgnicoClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given: 8 payouts in pages of 3; the receiver fails on the 5th (middle of page 2)
    ids = seeder.payouts(8)
    first = CountingEmitter(make_emitter(), fail_on=5)
    stopped = poll_payouts(rt, make_ignico(), first)
    # when: a restarted worker (new client, new emitter, only Redis kept) polls again
    second = CountingEmitter(make_emitter())
    resumed = poll_payouts(rt, make_ignico(), second)
    # then: the two runs together sent every payout once, in order
    assert stopped.stopped and stopped.emitted == 4
    assert not resumed.stopped and resumed.emitted == 4 and resumed.duplicates == 0
    assert first.sent + second.sent == [event_id_for(tx) for tx in ids]
    watermark = rt.redis.hgetall(SourceKeys(rt.keys, "ignico").watermark)
    assert text_map(watermark)["last_id"] == ids[-1]


def test_restart_after_ignico_failed_on_a_later_page_resumes_there(
    rt: WorkerRuntime,
    seeder: IgnicoSeeder,
    ignico_sandbox: SandboxControl,
    make_ignico: Callable[[], IgnicoClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given: Ignico answers 503 to the second page request once
    ids = seeder.payouts(7)
    ignico_sandbox.set_faults(
        {
            "kind": "status",
            "status": 503,
            "method": "GET",
            "path": TRANSACTIONS,
            "skip": 1,
            "times": 1,
        }
    )
    first = CountingEmitter(make_emitter())
    stopped = poll_payouts(rt, make_ignico(), first)
    # when
    second = CountingEmitter(make_emitter())
    poll_payouts(rt, make_ignico(), second)
    # then
    assert stopped.stopped.startswith("ignico:") and len(first.sent) == 3
    assert first.sent + second.sent == [event_id_for(tx) for tx in ids]


def test_crash_between_emit_and_record_repeats_one_emit_as_a_duplicate(
    rt: WorkerRuntime,
    seeder: IgnicoSeeder,
    make_ignico: Callable[[], IgnicoClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given: the worker dies right after the receiver took the 2nd payout
    ids = seeder.payouts(4)
    with pytest.raises(SystemExit):
        poll_payouts(rt, make_ignico(), CountingEmitter(make_emitter(), crash_after=2))
    # when
    second = CountingEmitter(make_emitter())
    report = poll_payouts(rt, make_ignico(), second)
    # then: the repeat is byte-identical, so the edge takes it as a redelivery (202 while
    # not yet published, else 200), never as a conflict, and stores no second event
    assert second.sent == [event_id_for(tx) for tx in ids[1:]]
    assert report.emitted + report.duplicates == 3 and not report.rejected
    assert event_ids(rt, "ignico-payout-") == sorted(event_id_for(tx) for tx in ids)
    assert rt.redis.xlen(rt.keys.outbox) == 4  # one unit per payout, none twice


def test_settle_realizes_fulfilled_and_cancels_discarded_payouts_once(
    rt: WorkerRuntime,
    seeder: IgnicoSeeder,
    ignico_sandbox: SandboxControl,
    make_ignico: Callable[[], IgnicoClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given: three emitted payouts: one fulfilled, one discarded, one still in progress
    done, dropped, open_ = seeder.payouts(3)
    poll_payouts(rt, make_ignico(), make_emitter())
    mark_units(rt, event_id_for(done), UnitState.FULFILLED)
    mark_units(rt, event_id_for(dropped), UnitState.DEAD_LETTERED, reason="out of stock")
    # when: two settle runs
    first = settle_payouts(rt, make_ignico())
    second = settle_payouts(rt, make_ignico())
    # then
    assert first.settled == {"realized": 1, "cancelled": 1} and second.settled == {}
    assert ignico_sandbox.issued(f"realized:{done}") == 1
    assert ignico_sandbox.issued(f"cancelled:{dropped}") == 1
    assert seeder.get(dropped)["cancellationReason"] == "out of stock"
    assert seeder.get(open_)["realized"] is False and seeder.get(open_)["cancelled"] is False


def test_run_holds_the_source_lock(
    rt: WorkerRuntime,
    seeder: IgnicoSeeder,
    make_ignico: Callable[[], IgnicoClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given: another run holds the lock
    seeder.payouts(1)
    rt.redis.set(SourceKeys(rt.keys, "ignico").lock, "other-run")
    # when
    report = run_ignico(rt, make_ignico(), make_emitter())
    # then
    assert report.busy and report.emitted == 0


def test_a_wrong_event_secret_stops_the_walk_and_rejects_nothing(
    rt: WorkerRuntime,
    seeder: IgnicoSeeder,
    receiver: str,
    make_ignico: Callable[[], IgnicoClient],
    make_emitter: Callable[[], HttpEmitter],
) -> None:
    # given a worker signing with a secret the receiver does not know (401)
    ids = seeder.payouts(2)
    wrong = HttpEmitter(receiver, "whsec_d3Jvbmctc2VjcmV0LXZhbHVlLTEyMzQ=")
    # when
    report = poll_payouts(rt, make_ignico(), wrong)
    wrong.close()
    # then the walk stopped without rejecting; with the right secret every payout goes
    assert report.stopped and report.rejected == 0 and report.emitted == 0
    fixed = CountingEmitter(make_emitter())
    poll_payouts(rt, make_ignico(), fixed)
    assert fixed.sent == [event_id_for(tx) for tx in ids]
