"""Refused source items through the admin API, the console and ``rewardrelay sources``
(the CLI over real HTTP to the real app); items are written as the sources write them.
"""

from __future__ import annotations

import json
import time

import pytest

from rewardrelay.cli import main
from tasks.sources.common import SourceKeys
from tasks.sources.coniq_outbound import OutboundKeys
from tests.webhooks.test_console import _csrf
from webhooks.paths import quote_id
from worker.stores.refused import RefusedItems, hold_value

PROBLEM = "https://rewardrelay.dev/problems/"
EMAIL = "ada@example.com"
UNIT = "evt/odd#id:0:0"  # a unit id that needs quoting in a URL


@pytest.fixture
def admin(settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.admin_token}"}


@pytest.fixture
def held(app) -> dict[str, str]:
    """A refused payout, a failed settlement, a refused order and a failed Coniq record."""
    ctx = app.extensions["rewardrelay"]
    client, keys, now = ctx.redis, ctx.keys, time.time()
    ignico, orders = SourceKeys(keys, "ignico"), SourceKeys(keys, "orders-platform")
    coniq = OutboundKeys(keys, "coniq-outbound")
    client.hset(ignico.rejected, "ignico-payout-7", hold_value("validation-failed", now - 30))
    client.hset(ignico.failed, "8", hold_value("transaction not found", now - 20))
    client.hset(orders.rejected, "orders-platform-order-3", hold_value("no-recipient", now - 10))
    client.hset(coniq.failed, UNIT, hold_value("event has no subscription id", now))
    return {"payout": "ignico-payout-7", "settle": "8", "unit": UNIT}


def store(app) -> RefusedItems:
    ctx = app.extensions["rewardrelay"]
    return RefusedItems(ctx.redis, ctx.keys)


def assert_problem(response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["type"] == PROBLEM + kind
    return body


# --- admin API -------------------------------------------------------------------------


def test_listing_shows_ids_kind_reason_and_time_only(client, admin, held):
    # when
    response = client.get("/sources/ignico/refused", headers=admin)
    # then
    assert response.status_code == 200
    body = response.get_json()
    assert body["count"] == 2 and body["source"] == "ignico"
    assert [(i["id"], i["kind"], i["reason"]) for i in body["items"]] == [
        ("ignico-payout-7", "refused", "validation-failed"),
        ("8", "settle-failed", "transaction not found"),
    ]
    assert all(set(i) == {"source", "id", "kind", "reason", "at"} for i in body["items"])
    assert EMAIL not in response.get_data(as_text=True)


def test_listings_need_the_admin_token(client, held):
    assert_problem(client.get("/sources/ignico/refused"), 401, "unauthorized")
    assert_problem(
        client.post("/sources/ignico/refused/ignico-payout-7/retry"), 401, "unauthorized"
    )


def test_an_unknown_source_is_a_404_naming_the_sources(client, admin):
    body = assert_problem(client.get("/sources/shopify/refused", headers=admin), 404,
                          "source-not-found")  # fmt: skip
    assert "ignico, orders-platform, coniq-outbound" in body["detail"]


def test_retry_queues_the_item_once(app, client, admin, held):
    # when
    path = f"/sources/coniq-outbound/refused/{quote_id(held['unit'])}/retry"
    response = client.post(path, headers=admin)
    # then
    assert response.status_code == 202
    assert response.get_json() == {
        "source": "coniq-outbound", "id": UNIT, "kind": "record-failed", "result": "queued",
    }  # fmt: skip
    ctx = app.extensions["rewardrelay"]
    assert ctx.redis.sismember(OutboundKeys(ctx.keys, "coniq-outbound").pending, UNIT)
    assert store(app).audit_log()[-1]["actor"] == "admin-api"
    # and a second retry finds nothing held
    assert_problem(client.post(path, headers=admin), 404, "refused-item-not-found")


def test_discard_records_the_reason_and_drops_the_item(app, client, admin, held):
    # when
    response = client.delete(
        "/sources/ignico/refused/ignico-payout-7", headers=admin, json={"reason": "duplicate"}
    )
    # then
    assert response.status_code == 200 and response.get_json()["status"] == "discarded"
    assert [i.id for i in store(app).held("ignico")] == ["8"]
    entry = store(app).audit_log()[-1]
    assert (entry["action"], entry["id"], entry["reason"]) == (
        "discard",
        "ignico-payout-7",
        "duplicate",
    )


@pytest.mark.parametrize(
    ("kwargs", "status", "kind"),
    [
        ({"json": {"reason": 3}}, 422, "validation-failed"),
        ({"json": {"why": "x"}}, 422, "validation-failed"),
        ({"data": "reason=x", "content_type": "application/x-www-form-urlencoded"}, 415,
         "unsupported-media-type"),
        ({"data": "{\x00}", "content_type": "application/json"}, 400, "malformed-json"),
    ],
)  # fmt: skip
def test_a_bad_discard_body_is_refused_and_discards_nothing(
    app, client, admin, held, kwargs, status, kind
):
    # when
    response = client.delete("/sources/ignico/refused/ignico-payout-7", headers=admin, **kwargs)
    # then
    assert_problem(response, status, kind)
    assert len(store(app).held("ignico")) == 2


def test_an_item_another_source_holds_is_not_found(client, admin, held):
    assert_problem(
        client.delete("/sources/orders-platform/refused/ignico-payout-7", headers=admin),
        404,
        "refused-item-not-found",
    )


# --- console ---------------------------------------------------------------------------


def _signed_in(client, settings):
    page = client.get("/admin/sign-in")
    response = client.post(
        "/admin/sign-in",
        data={"token": settings.admin_token, "csrf_token": _csrf(page.text), "next": ""},
    )
    assert response.status_code == 303
    return client


def test_the_console_lists_held_items_and_retries_and_discards_them(app, client, settings, held):
    # given
    browser = _signed_in(client, settings)
    # when
    page = browser.get("/admin/sources")
    # then every source's items are listed, without personal data
    assert page.status_code == 200
    for item_id in ("ignico-payout-7", "orders-platform-order-3", "validation-failed"):
        assert item_id in page.text
    assert "evt/odd#id:0:0" in page.text and EMAIL not in page.text
    # when an item is retried, and another discarded with a reason
    retried = browser.post(
        f"/admin/sources/ignico/{held['settle']}/retry", data={"csrf_token": _csrf(page.text)}
    )
    discarded = browser.post(
        "/admin/sources/orders-platform/orders-platform-order-3/discard",
        data={"csrf_token": _csrf(page.text), "reason": "test order"},
    )
    # then both went through, audited as the console's
    assert retried.status_code == 303 and discarded.status_code == 303
    assert [i.id for i in store(app).held("ignico")] == ["ignico-payout-7"]
    assert store(app).held("orders-platform") == []
    assert [e["actor"] for e in store(app).audit_log()] == ["console", "console"]
    assert "Discarded orders-platform-order-3" in browser.get(discarded.headers["Location"]).text


def test_console_actions_need_the_csrf_token(app, client, settings, held):
    browser = _signed_in(client, settings)
    response = browser.post("/admin/sources/ignico/ignico-payout-7/retry", data={})
    assert response.status_code == 403
    assert len(store(app).held("ignico")) == 2


# --- rewardrelay sources refused -------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch, tmp_path, settings):
    monkeypatch.setenv("RR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ADMIN_TOKEN", settings.admin_token)
    monkeypatch.setenv("CONIQ_WEBHOOK_SECRETS", settings.coniq_webhook_secrets[0])
    monkeypatch.setenv("EVENT_SECRETS", settings.event_secrets[0])
    for name in ("REDIS_URL", "PORT", "RULES_FILE", "RR_KEY_PREFIX"):
        monkeypatch.delenv(name, raising=False)


def test_the_cli_knows_the_sources_the_store_knows():
    from rewardrelay.commands import sources
    from worker.stores import refused

    assert sources.SOURCES == refused.SOURCES


def test_cli_lists_every_sources_held_items(cli_env, live_url, held, capsys):
    # when
    code = main(["sources", "refused", "list", "--url", live_url])
    # then a header, one line per item, a count
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["SOURCE", "KIND"]
    assert [line.split()[0] for line in out[1:-1]] == [
        "ignico", "ignico", "orders-platform", "coniq-outbound",
    ]  # fmt: skip
    assert out[-1] == "4 item(s)"


def test_cli_json_for_one_source(cli_env, live_url, held, capsys):
    assert main(["sources", "refused", "list", "ignico", "--json", "--url", live_url]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["count"] == 2


def test_cli_retries_and_discards_by_id(app, cli_env, live_url, held, capsys):
    # when
    retry = main(["sources", "refused", "retry", "coniq-outbound", UNIT, "--url", live_url])
    discard = main(["sources", "refused", "discard", "ignico", "8", "--reason", "gone",
                    "--url", live_url])  # fmt: skip
    # then
    assert (retry, discard) == (0, 0)
    assert store(app).held("coniq-outbound") == []
    assert [i.id for i in store(app).held("ignico")] == ["ignico-payout-7"]
    assert store(app).audit_log()[-1]["reason"] == "gone"


def test_cli_says_what_is_wrong_when_nothing_is_held(cli_env, live_url, held, capsys):
    # when
    code = main(["sources", "refused", "retry", "ignico", "ignico-payout-404", "--url", live_url])
    # then
    assert code == 1
    assert "404 refused-item-not-found" in capsys.readouterr().err
