"""Codes at rest, end to end: a real fulfilment through each provider sandbox leaves no
full code, PIN or redemption link in any Redis value, and only the audited reveal gives
them back."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import TEST_ADMIN_TOKEN
from tests.integration.conftest import Stack, coniq_reward, internal_grant

pytestmark = pytest.mark.integration


def every_value(client: Any) -> list[bytes]:
    """Every key name and stored value in the database, of every type."""
    out: list[bytes] = []
    for key in client.scan_iter(count=1000):
        out.append(key)
        kind = client.type(key).decode()
        if kind == "string":
            out.append(client.get(key) or b"")
        elif kind == "hash":
            for name, value in client.hgetall(key).items():
                out += [name, value]
        elif kind == "list":
            out += client.lrange(key, 0, -1)
        elif kind == "set":
            out += list(client.smembers(key))
        elif kind == "zset":
            out += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            for _, entry in client.xrange(key):
                for name, value in entry.items():
                    out += [name, value]
        elif kind != "none":  # a type this scan does not read would hide a leak
            raise AssertionError(f"unscanned Redis type {kind} at {key!r}")
    return out


def reveal(stack: Stack, unit_id: str, **body: Any) -> Any:
    event_id = unit_id.rsplit(":", 2)[0]
    return stack.http.post(
        f"{stack.edge_url}/fulfillments/{event_id}/units/{unit_id}/reveal",
        headers={"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"},
        json=body,
    )


def test_no_full_code_is_stored_and_reveal_is_audited(make_stack: Any) -> None:
    # given rewards fulfilled for real through Ifeelgoods (codes and a redemption link)
    # and RewardOps (codes and links)
    stack: Stack = make_stack()
    ifg, rops = coniq_reward(offer_id="1001"), internal_grant([{"reward_code": "VOUCHER25"}])
    assert stack.send(ifg).status_code == 202
    assert stack.send(rops, source="internal").status_code == 202
    units = [u for e in (ifg, rops) for u in stack.wait_terminal(e["id"])["units"]]
    assert [u["state"] for u in units] == ["fulfilled", "fulfilled"]

    # when an admin reveals each unit's codes (and someone tries without saying who)
    revealed = [reveal(stack, u["id"], actor="support:kim", reason="ticket 7") for u in units]
    anonymous = reveal(stack, units[0]["id"], reason="no actor")

    # then the reveal gave full values matching the masked view, and each was audited
    assert [r.status_code for r in revealed] == [200, 200]
    assert revealed[0].headers["Cache-Control"] == "no-store"
    secrets = []
    for unit, answer in zip(units, revealed, strict=True):
        body = answer.json()
        assert body["codes"] and [f"****{c[-4:]}" for c in body["codes"]] == unit["codes"]
        secrets += body["codes"] + body["links"]
    assert any(s.startswith("http") for s in secrets)  # links are sealed too
    assert anonymous.status_code == 422
    assert anonymous.headers["Content-Type"] == "application/problem+json"
    log = stack.ledger.reveal_log()
    assert [(e["unit_id"], e["reason"]) for e in log] == [(u["id"], "ticket 7") for u in units]
    assert all(e["actor"].startswith("support:kim") for e in log)

    # and no full secret appears in any Redis value of any type (store and broker)
    values = every_value(stack.redis)
    assert len(values) > 20
    leaked = [s for s in secrets if any(s.encode() in v for v in values)]
    assert leaked == []
