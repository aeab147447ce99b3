"""Nothing sensitive leaks from the reward sources: client secrets, access and refresh
tokens and authorization codes appear in no log record (root logger at DEBUG, so httpx,
werkzeug and our loggers are included), even through token expiry and 5xx."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from sandboxes import SandboxControl
from sandboxes.server import RunningServer
from tasks.runtime import WorkerRuntime
from tasks.sources.clients.ignico import IgnicoClient
from tasks.sources.clients.orders_platform import OrdersPlatformClient
from tasks.sources.emit import HttpEmitter
from tasks.sources.ignico import run_ignico
from tasks.sources.orders_platform import run_orders
from tests.source_seeds import IgnicoSeeder, order_row, seed_orders
from tests.tasks.sources.conftest import IGNICO_SECRET, ORDERS_SECRET
from worker.stores.codec import text


def test_source_runs_log_no_secret_token_or_code(
    rt: WorkerRuntime,
    seeder: IgnicoSeeder,
    ignico_sandbox: SandboxControl,
    ignico_server: RunningServer,
    orders_sandbox: SandboxControl,
    orders_server: RunningServer,
    make_ignico: Callable[[], IgnicoClient],
    make_orders: Callable[[], OrdersPlatformClient],
    make_emitter: Callable[[], HttpEmitter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given payouts and orders, and a connected orders client
    seeder.payouts(3)
    seed_orders(orders_sandbox.url, order_row(), order_row())
    orders = make_orders()
    ignico = make_ignico()
    caplog.set_level(logging.DEBUG)
    # when the runs go through token expiry and a 503 on each source
    ignico_sandbox.set_faults({"kind": "status", "status": 503, "times": 1, "method": "GET"})
    orders_sandbox.set_faults({"kind": "status", "status": 503, "times": 1, "method": "GET"})
    run_ignico(rt, ignico, make_emitter())
    run_orders(rt, orders, make_emitter())
    ignico_sandbox.expire_tokens()
    orders_sandbox.expire_tokens()
    first = run_ignico(rt, ignico, make_emitter())
    second = run_orders(rt, orders, make_emitter())
    # then the runs did their work, and no sensitive value was logged
    assert first.emitted == 3 and second.emitted == 2
    sensitive = {IGNICO_SECRET, ORDERS_SECRET}
    sensitive |= set(ignico_server.state.tokens) | set(orders_server.state.tokens)
    sensitive |= set(orders_server.state.refresh_tokens)
    stored = rt.redis.get(f"{rt.keys.prefix}:source:orders-platform:token:refresh")
    assert stored is not None
    sensitive.add(text(stored))
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert not [value for value in sensitive if value in logged]
