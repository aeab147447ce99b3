"""The shipped example events: valid as they are, and routed where their names say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardrelay.cli import main
from tasks.routing import Route, load_rules
from webhooks.schemas import load_event
from webhooks.units import units_for
from worker.config import DEFAULT_RULES_FILE

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# file → (source, provider of its unit under the example rules; None = unroutable)
EXPECTED = {
    "coniq-reward-issued.json": ("coniq", "ifeelgoods"),
    "coniq-reward-issued-rewardops.json": ("coniq", "rewardops"),
    "internal-reward-granted.json": ("internal", "ifeelgoods"),
    "internal-reward-granted-rewardops.json": ("internal", "rewardops"),
    "internal-reward-granted-unroutable.json": ("internal", None),
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_passes_the_edge_schema_and_routes_as_named(name):
    # given
    source, provider = EXPECTED[name]
    document = json.loads((EXAMPLES / name).read_text())
    rules = load_rules(DEFAULT_RULES_FILE)

    # when (the id `send` adds when a file has none)
    event = load_event(source, {"id": "evt_example", **document})
    [unit] = units_for(source, event, rules)
    route = rules.decide(source, event.type, unit.match)

    # then
    assert (route.provider if isinstance(route, Route) else None) == provider


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_send_posts_the_example_as_it_is(cli_env, stub_server, capsys, name):
    # given
    source, _ = EXPECTED[name]
    stub_server.handler = lambda _r: (202, {"status": "accepted"})
    document = json.loads((EXAMPLES / name).read_text())

    # when
    code = main(["send", "--source", source, "--file", str(EXAMPLES / name),
                 "--url", stub_server.url])  # fmt: skip

    # then every field is sent unchanged, under a fresh event id
    [request] = stub_server.requests
    sent = json.loads(request.body)
    assert code == 0
    assert sent.pop("id").startswith("evt_")
    assert sent == document
