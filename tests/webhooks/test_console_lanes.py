"""The console's lanes page: sign-in and CSRF like the rest, confirmation, audit log."""

from __future__ import annotations

from tests.webhooks.test_console import _csrf, _sign_in
from worker.stores.lanes import LaneStore


def _store(app) -> LaneStore:
    ctx = app.extensions["rewardrelay"]
    return LaneStore(ctx.redis, ctx.keys)


def test_lanes_page_needs_sign_in(client) -> None:
    response = client.get("/admin/lanes")
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/admin/sign-in?next=")


def test_pause_is_confirmed_with_csrf_and_audited_then_resume(app, client, settings) -> None:
    assert _sign_in(client, settings.admin_token).status_code == 303
    page = client.get("/admin/lanes")
    assert page.status_code == 200
    assert "ifeelgoods" in page.text and "rewardops" in page.text
    assert "/admin/lanes/ifeelgoods/pause" in page.text
    assert page.headers["X-Frame-Options"] == "DENY"

    confirm = client.get("/admin/lanes/ifeelgoods/pause")
    assert confirm.status_code == 200 and "Yes, pause" in confirm.text
    # Without the session's CSRF token the form is refused and nothing changes.
    refused = client.post("/admin/lanes/ifeelgoods/pause", data={"reason": "x"})
    assert refused.status_code == 403
    assert _store(app).view("ifeelgoods").state == "open"

    done = client.post(
        "/admin/lanes/ifeelgoods/pause",
        data={"reason": "vendor window", "csrf_token": _csrf(confirm.text)},
    )
    assert done.status_code == 303 and done.headers["Location"] == "/admin/lanes"
    view = _store(app).view("ifeelgoods")
    assert (view.state, view.reason, view.by) == ("paused", "vendor window", "console")
    listing = client.get("/admin/lanes").text
    assert "vendor window" in listing and "/admin/lanes/ifeelgoods/resume" in listing

    confirm = client.get("/admin/lanes/ifeelgoods/resume")
    client.post("/admin/lanes/ifeelgoods/resume", data={"csrf_token": _csrf(confirm.text)})
    assert _store(app).view("ifeelgoods").state == "open"
    assert [(e["action"], e["by"]) for e in _store(app).audit_log()] == [
        ("resume", "console"),
        ("pause", "console"),
    ]


def test_unknown_lane_or_action_is_a_404_page(client, settings) -> None:
    _sign_in(client, settings.admin_token)
    assert client.get("/admin/lanes/acme/pause").status_code == 404
    assert client.get("/admin/lanes/ifeelgoods/explode").status_code == 404
