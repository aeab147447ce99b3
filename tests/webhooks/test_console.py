"""The dead-letter console (/admin): sign-in, cookie flags, CSRF, filters, replay, discard,
event look-up, against the app from the factory and its real Redis.

The browser flow (a real chromium) is in tests/integration/test_console_browser.py.
"""

from __future__ import annotations

import html
import re
import time
from dataclasses import replace
from urllib.parse import urljoin, urlsplit

import pytest

from tests.webhooks.test_admin_api import CODE, Seed
from webhooks import create_app
from webhooks.console import (
    SESSION_COOKIE_NAME,
    SESSION_IDLE_SECONDS,
    SESSION_MAX_SECONDS,
    SIGN_IN_ATTEMPTS,
    SIGN_IN_WINDOW_SECONDS,
)
from worker.stores.dead_letters import LetterStatus
from worker.stores.models import UnitState

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def seed(app) -> Seed:
    return Seed(app)


def _csrf(html: str) -> str:
    match = CSRF.search(html)
    assert match, html
    return match.group(1)


def _sign_in(client, token: str, next_path: str = ""):
    page = client.get("/admin/sign-in")
    return client.post(
        "/admin/sign-in",
        data={"token": token, "csrf_token": _csrf(page.text), "next": next_path},
    )


@pytest.fixture
def signed_in(client, settings):
    response = _sign_in(client, settings.admin_token)
    assert response.status_code == 303
    return client


def test_pages_redirect_to_sign_in_until_signed_in(client):
    # when
    response = client.get("/admin/dead-letters?source=coniq")

    # then
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/admin/sign-in?next=")
    assert "dead-letters" in response.headers["Location"]


def test_session_cookie_is_secure_http_only_strict_and_scoped_to_admin(client, settings):
    # when
    response = _sign_in(client, settings.admin_token)

    # then
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("rr_console=")
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/admin"):
        assert flag in cookie
    assert settings.admin_token not in cookie


def test_right_token_signs_in_and_returns_to_the_page_asked_for(client, settings):
    # when
    response = _sign_in(client, settings.admin_token, "/admin/dead-letters?source=coniq")

    # then
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/dead-letters?source=coniq"
    assert client.get("/admin/dead-letters").status_code == 200


@pytest.mark.parametrize("token", ["wrong-token-0123456789", "", " "])
def test_wrong_token_is_refused(client, token):
    # when
    response = _sign_in(client, token)

    # then
    assert response.status_code == 401
    assert "not the admin token" in response.text
    assert client.get("/admin/dead-letters").status_code == 303


@pytest.mark.parametrize(
    "next_path", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "/healthz"]
)
def test_sign_in_never_redirects_outside_the_console(client, settings, next_path):
    # when
    response = _sign_in(client, settings.admin_token, next_path)

    # then
    assert response.headers["Location"] == "/admin/dead-letters"


@pytest.mark.parametrize("csrf", [None, "", "forged-token"])
def test_sign_in_without_the_session_csrf_token_is_refused(client, settings, csrf):
    # given a session (the form was loaded)
    client.get("/admin/sign-in")
    data = {"token": settings.admin_token}
    if csrf is not None:
        data["csrf_token"] = csrf

    # when
    response = client.post("/admin/sign-in", data=data)

    # then
    assert response.status_code == 403
    assert client.get("/admin/dead-letters").status_code == 303


@pytest.mark.parametrize("action", ["replay", "discard"])
@pytest.mark.parametrize("csrf", [None, "forged-token"])
def test_actions_without_the_csrf_token_are_refused_and_change_nothing(
    signed_in, seed, action, csrf
):
    # given
    letter_id = seed.letter("evt_csrf", time.time())
    data = {} if csrf is None else {"csrf_token": csrf}

    # when
    response = signed_in.post(f"/admin/dead-letters/{letter_id}/{action}", data=data)

    # then
    assert response.status_code == 403
    assert seed.letters.get(letter_id).status is LetterStatus.WAITING


def test_sign_out_ends_the_session(signed_in):
    # given
    page = signed_in.get("/admin/dead-letters")

    # when
    response = signed_in.post("/admin/sign-out", data={"csrf_token": _csrf(page.text)})

    # then
    assert response.status_code == 303
    assert signed_in.get("/admin/dead-letters").status_code == 303


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"a", "b", "c", "d"}),
        ("source=internal", {"b"}),
        ("provider=rewardops", {"c"}),
        ("reason=retries-exhausted", {"d"}),
        ("age=gt24h", {"a"}),
        ("age=lt1h", {"b", "c", "d"}),
        ("source=coniq&provider=ifeelgoods&age=lt1h", {"d"}),
    ],
)
def test_list_applies_filters(signed_in, seed, query, expected):
    # given
    now = time.time()
    seed.letter("evt_a", now - 2 * 86400)
    seed.letter("evt_b", now - 60, source="internal")
    seed.letter("evt_c", now - 60, provider="rewardops")
    seed.letter("evt_d", now - 60, reason="retries-exhausted")

    # when
    page = signed_in.get(f"/admin/dead-letters?{query}")

    # then
    assert page.status_code == 200
    shown = set(re.findall(r'href="/admin/dead-letters/evt_(\w):0:0"', page.text))
    assert shown == expected


def test_letter_page_shows_the_attempt_history(signed_in, seed):
    # given a unit retried once, then dead-lettered
    now = time.time()
    (unit_id,) = seed.event("evt_hist", at=now - 10)
    seed.retry(unit_id, now - 9)
    seed.dead(unit_id, now - 5)

    # when
    page = signed_in.get(f"/admin/dead-letters/{unit_id}")

    # then
    assert page.status_code == 200
    rows = re.findall(r"<tr>\s*<td>(\d+)</td>", page.text)
    assert rows == ["1", "2"]
    assert "retry" in page.text and "dead_letter" in page.text
    assert "Replay…" in page.text and "Discard…" in page.text


def test_replay_asks_for_confirmation_then_puts_the_unit_back(signed_in, seed):
    # given
    letter_id = seed.letter("evt_replay", time.time())

    # when the operator opens the confirmation, then confirms
    confirm = signed_in.get(f"/admin/dead-letters/{letter_id}/replay")
    assert seed.letters.get(letter_id).status is LetterStatus.WAITING
    response = signed_in.post(
        f"/admin/dead-letters/{letter_id}/replay", data={"csrf_token": _csrf(confirm.text)}
    )

    # then the letter is replayed and the event page shows the unit back in the schedule
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/events?event_id=evt_replay"
    assert seed.letters.get(letter_id).status is LetterStatus.REPLAYED
    assert seed.ledger.get(letter_id).state is not UnitState.DEAD_LETTERED
    page = signed_in.get(response.headers["Location"])
    assert "Replayed evt_replay:0:0" in page.text
    again = signed_in.post(
        f"/admin/dead-letters/{letter_id}/replay", data={"csrf_token": _csrf(page.text)}
    )
    assert "already handled" in signed_in.get(again.headers["Location"]).text


def test_discard_records_the_reason(signed_in, seed):
    # given
    letter_id = seed.letter("evt_discard", time.time())
    confirm = signed_in.get(f"/admin/dead-letters/{letter_id}/discard")

    # when
    response = signed_in.post(
        f"/admin/dead-letters/{letter_id}/discard",
        data={"csrf_token": _csrf(confirm.text), "reason": "customer left"},
    )

    # then
    assert response.status_code == 303
    assert seed.letters.get(letter_id).status is LetterStatus.DISCARDED
    [entry] = [e for e in seed.letters.audit_log() if e.get("id") == letter_id]
    assert entry["reason"] == "customer left"
    assert entry["actor"] == "console"


def test_event_look_up_lists_units_with_codes_masked(signed_in, seed):
    # given
    now = time.time()
    first, second = seed.event("evt_look", units=2, at=now)
    seed.fulfil(first, now)
    seed.dead(second, now)

    # when
    page = signed_in.get("/admin/events?event_id=evt_look")

    # then
    assert page.status_code == 200
    assert CODE not in page.text
    assert "****" + CODE[-4:] in page.text
    assert "ifg-order-77" in page.text
    assert f'href="/admin/dead-letters/{second}"' in page.text
    assert signed_in.get("/admin/events?event_id=evt_nope").status_code == 404


def test_unknown_letter_is_a_404_page(signed_in):
    assert signed_in.get("/admin/dead-letters/evt_x:0:0").status_code == 404
    assert signed_in.get("/admin/dead-letters/evt_x:0:0/replay").status_code == 404


def test_pages_carry_security_headers_and_no_scripts(signed_in):
    # when
    page = signed_in.get("/admin/dead-letters")

    # then
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Cache-Control"] == "no-store"
    assert "<script" not in page.text
    assert signed_in.get("/admin/static/console.css").status_code == 200


def _copy_session(source, target) -> None:
    cookie = source.get_cookie(SESSION_COOKIE_NAME, path="/admin")
    assert cookie is not None
    target.set_cookie(SESSION_COOKIE_NAME, cookie.value, path="/admin")


def test_store_down_is_a_503_page_not_a_500(client, settings):
    # given a browser signed in, then an app (same token) whose Redis does not answer
    assert _sign_in(client, settings.admin_token).status_code == 303
    app = create_app(replace(settings, redis_url="redis://127.0.0.1:9/0"))
    down = app.test_client()
    _copy_session(client, down)

    # when a page, or a sign-in, needs the store
    page = down.get("/admin/dead-letters")
    sign_in = _sign_in(app.test_client(), settings.admin_token)

    # then
    assert page.status_code == 503 and sign_in.status_code == 503
    assert "Store unavailable" in page.text and "Store unavailable" in sign_in.text


def test_a_cookie_copied_before_sign_out_stops_working(app, signed_in, redis_client, key_prefix):
    # given a second browser holding a copy of the signed-in cookie
    thief = app.test_client()
    _copy_session(signed_in, thief)
    assert thief.get("/admin/dead-letters").status_code == 200
    assert len(_sessions(redis_client, key_prefix)) == 1

    # when the owner signs out
    page = signed_in.get("/admin/dead-letters")
    signed_in.post("/admin/sign-out", data={"csrf_token": _csrf(page.text)})

    # then the copy is refused too: the server forgot the session
    assert thief.get("/admin/dead-letters").status_code == 303
    assert _sessions(redis_client, key_prefix) == []


def _sessions(redis_client, key_prefix) -> list[bytes]:
    return list(redis_client.scan_iter(match=f"{key_prefix}:console:session:*"))


def test_a_session_has_an_idle_ttl_and_a_maximum_age(signed_in, redis_client, key_prefix):
    # given a session in the store, with its idle TTL
    (key,) = _sessions(redis_client, key_prefix)
    assert 0 < redis_client.ttl(key) <= SESSION_IDLE_SECONDS
    assert settings_token_absent(redis_client.get(key))
    # when it was begun longer ago than the maximum age
    redis_client.set(key, repr(time.time() - SESSION_MAX_SECONDS - 1), keepttl=True)
    # then it no longer opens pages
    assert signed_in.get("/admin/dead-letters").status_code == 303


def settings_token_absent(value: bytes | None) -> bool:
    """The stored value is a start time only (no token, no cookie)."""
    return value is not None and float(value) > 0


def _sign_in_from(client, token: str, address: str):
    page = client.get("/admin/sign-in", environ_base={"REMOTE_ADDR": address})
    return client.post(
        "/admin/sign-in",
        data={"token": token, "csrf_token": _csrf(page.text)},
        environ_base={"REMOTE_ADDR": address},
    )


def test_sign_in_is_rate_limited_per_client_address(app, settings):
    # given a client that signs in rightly (which does not count), then guesses the limit
    for _ in range(3):
        fresh = app.test_client()
        assert _sign_in_from(fresh, settings.admin_token, "192.0.2.7").status_code == 303
    browser = app.test_client()
    for _ in range(SIGN_IN_ATTEMPTS):
        assert _sign_in_from(browser, "guess-0123456789", "192.0.2.7").status_code == 401

    # when it tries again, even with the right token
    limited = _sign_in_from(browser, "guess-0123456789", "192.0.2.7")
    right = _sign_in_from(browser, settings.admin_token, "192.0.2.7")
    other = _sign_in_from(app.test_client(), settings.admin_token, "198.51.100.9")

    # then it is told to wait, as a page with Retry-After; another address is not
    for response in (limited, right):
        assert response.status_code == 429
        assert "Too many sign-in attempts" in response.text
        assert 0 < int(response.headers["Retry-After"]) <= SIGN_IN_WINDOW_SECONDS
    assert other.status_code == 303


def test_only_console_paths_open_a_session(app, signed_in, signed_post, monkeypatch):
    # given a signed-in browser, whose cookie a webhook request could also carry
    opened: list[str] = []
    interface = app.session_interface
    original = type(interface).open_session

    def spy(self, flask_app, request):
        session = original(self, flask_app, request)
        if session is not None:
            opened.append(request.path)
        return session

    monkeypatch.setattr(type(interface), "open_session", spy)

    # when
    page = signed_in.get("/admin/dead-letters")
    healthz = signed_in.get("/healthz")
    event = {"id": "evt_no_session", "type": "ticket.created", "created_at": "2026-11-23T10:00:00Z"}
    ingest = signed_post(signed_in, "/events", {**event, "account_id": "acct", "data": {}})

    # then the console page read its session; the others never built one
    assert page.status_code == 200
    assert healthz.status_code == 200 and ingest.status_code == 202
    assert opened == ["/admin/dead-letters"]
    assert "Set-Cookie" not in ingest.headers and "Set-Cookie" not in healthz.headers


@pytest.mark.parametrize("event_id", ["a/../../evt_other", "c/./d", "e#f?g=1", "%41"])
def test_links_to_a_letter_name_it_even_when_its_id_holds_dot_segments(signed_in, seed, event_id):
    # given a letter whose event id a browser would rewrite if put into a URL as it is
    letter_id = seed.letter(event_id, time.time())

    # when the operator follows the list's link, then the page's replay link
    listing = signed_in.get("/admin/dead-letters").text
    links = re.findall(r'href="(/admin/dead-letters/[^"?]+)"', listing)
    (link,) = links
    resolved = urljoin("http://127.0.0.1/admin/dead-letters", html.unescape(link))
    page = signed_in.get(urlsplit(resolved).path)
    replay = re.search(r'href="([^"]+/replay)"', page.text)

    # then each names that letter, with no dot-segment left for the browser to resolve
    assert page.status_code == 200, (link, resolved)
    assert html.escape(letter_id) in page.text
    assert replay and urlsplit(urljoin(resolved, html.unescape(replay.group(1)))).path == (
        urlsplit(resolved).path + "/replay"
    )
