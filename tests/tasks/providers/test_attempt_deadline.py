"""The attempt deadline bounds provider calls where no time limit can (the thread pool).

Against the running Ifeelgoods sandbox: its ``latency`` fault holds the answer back.
"""

from __future__ import annotations

import threading
import time

import pytest

from sandboxes import SandboxControl
from tasks.http.deadline import attempt_deadline, seconds_left
from tasks.providers import (
    IfeelgoodsClient,
    IfeelgoodsUser,
    TransientProviderError,
    UnknownOutcomeError,
)

PROMOTION_ID = 1
SKU = "AMZ-25USD-US"


def test_a_call_slower_than_the_deadline_ends_at_the_deadline_not_the_timeout(
    make_ifeelgoods_client, user: IfeelgoodsUser, ifeelgoods_sandbox: SandboxControl
) -> None:
    # given a client with a 5 s timeout and a provider answering after 3 s
    client: IfeelgoodsClient = make_ifeelgoods_client(timeout=5.0)
    ifeelgoods_sandbox.set_faults({"kind": "latency", "ms": 3000, "times": 1})
    started = time.monotonic()
    # when the write is sent with 0.4 s left of the attempt
    with attempt_deadline(0.4), pytest.raises(UnknownOutcomeError) as caught:
        client.create_and_redeem(PROMOTION_ID, SKU, "ord-deadline", user)
    # then it gave up at the deadline, as an unknown outcome (the order may exist)
    assert time.monotonic() - started < 1.5
    assert caught.value.reason == "timeout"


def test_no_call_is_sent_once_the_deadline_has_passed(
    make_ifeelgoods_client, user: IfeelgoodsUser, ifeelgoods_sandbox: SandboxControl
) -> None:
    # given an attempt whose time is spent
    client: IfeelgoodsClient = make_ifeelgoods_client()
    with attempt_deadline(0.01):
        time.sleep(0.02)
        # when it would make another call
        with pytest.raises(TransientProviderError) as caught:
            client.create_and_redeem(PROMOTION_ID, SKU, "ord-late", user)
    # then nothing reached the provider: a plain transient error, not an unknown outcome
    assert not isinstance(caught.value, UnknownOutcomeError)
    assert caught.value.reason == "attempt_deadline"
    assert ifeelgoods_sandbox.issued("ord-late") == 0


def test_a_call_well_within_the_deadline_is_unaffected(
    make_ifeelgoods_client, user: IfeelgoodsUser, ifeelgoods_sandbox: SandboxControl
) -> None:
    # given a provider answering after 200 ms
    client: IfeelgoodsClient = make_ifeelgoods_client(timeout=5.0)
    ifeelgoods_sandbox.set_faults({"kind": "latency", "ms": 200, "times": 1})
    # when the attempt has 5 s
    with attempt_deadline(5.0):
        redemption = client.create_and_redeem(PROMOTION_ID, SKU, "ord-ok", user)
    # then
    assert redemption.is_redeemed


def test_each_thread_has_its_own_deadline_and_a_nested_one_only_shortens() -> None:
    # given one thread inside a 0.5 s attempt
    seen: dict[str, float | None] = {}
    inside = threading.Event()
    release = threading.Event()

    def attempt() -> None:
        with attempt_deadline(0.5):
            with attempt_deadline(60.0):
                seen["nested"] = seconds_left()
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=attempt)
    thread.start()
    inside.wait(5)
    # when another thread asks
    seen["other"] = seconds_left()
    release.set()
    thread.join()
    # then the other thread has no deadline and the nested one kept the shorter bound
    assert seen["other"] is None
    nested = seen["nested"]
    assert nested is not None and 0 < nested <= 0.5
