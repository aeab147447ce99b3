"""Admin API: bearer auth, fulfilment status with masked codes, dead-letter operations.

State is seeded through the real stores (Inbox.accept, Ledger.begin/finish) on the app's
own Redis, then read and changed through the HTTP API built by ``create_app``.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from webhooks.admin import REPLAY_RATE_PER_SECOND
from webhooks.paths import dead_letter_path
from webhooks.token_guesses import GUESSES, WINDOW_SECONDS
from worker.stores.crypto import CodeVault
from worker.stores.dead_letters import DeadLetters, LetterStatus
from worker.stores.inbox import Inbox
from worker.stores.ledger import AttemptRecord, Ledger
from worker.stores.models import AttemptOutcome, UnitSpec, UnitState

PROBLEM = "https://rewardrelay.dev/problems/"
CODE = "ABCD-1234-SECRET"
LEASE = 60.0


class Seed:
    """Puts units into given states through the real stores of the app under test."""

    def __init__(self, app) -> None:
        ctx = app.extensions["rewardrelay"]
        self.redis, self.keys = ctx.redis, ctx.keys
        self.inbox = Inbox(ctx.redis, ctx.keys)
        self.ledger = Ledger(ctx.redis, ctx.keys, CodeVault(ctx.settings.code_keys))
        self.letters = DeadLetters(ctx.redis, ctx.keys)

    def event(self, event_id: str, units: int = 1, *, source: str = "coniq", at: float) -> list:
        self.inbox.accept(
            event_id=event_id,
            source=source,
            event_type="reward.issued",
            fingerprint=f"fp-{event_id}",
            body=json.dumps({"id": event_id}),
            units=[UnitSpec(line=0, index=i, match={"offer_id": "1001"}) for i in range(units)],
            now=at,
            stale_after=45.0,
        )
        return [f"{event_id}:0:{i}" for i in range(units)]

    def _attempt(self, unit_id: str, at: float, outcome: str, **finish) -> None:
        begun = self.ledger.begin(unit_id, now=at, lease_seconds=LEASE)
        assert begun.decision.proceeds
        record = AttemptRecord(
            attempt=begun.attempt,
            at=at,
            mode=begun.decision,
            outcome=AttemptOutcome(outcome),
            reason=outcome,
            status_code=503 if outcome == "retry" else None,
        )
        assert self.ledger.finish(unit_id, begun.attempt, record=record, now=at, **finish)

    def retry(self, unit_id: str, at: float) -> None:
        self._attempt(
            unit_id,
            at,
            "retry",
            state=UnitState.RETRYING,
            next_check_at=at + 1,
            fields={"next_attempt_at": at + 1, "provider": "ifeelgoods"},
        )

    def fulfil(self, unit_id: str, at: float) -> None:
        self._attempt(
            unit_id,
            at,
            "fulfilled",
            state=UnitState.FULFILLED,
            next_check_at=None,
            fields={
                "provider": "ifeelgoods",
                "provider_ref": "ifg-order-77",
                **self.ledger.sealed_fields([CODE], []),
            },
        )

    def dead(
        self,
        unit_id: str,
        at: float,
        *,
        source: str = "coniq",
        provider: str = "ifeelgoods",
        reason: str = "permanent",
    ) -> None:
        self._attempt(
            unit_id,
            at,
            "dead_letter",
            state=UnitState.DEAD_LETTERED,
            next_check_at=None,
            fields={"provider": provider, "dead_letter_id": unit_id},
            dead_letter={
                "id": unit_id,
                "event_id": unit_id.split(":")[0],
                "source": source,
                "provider": provider,
                "product": "1/SKU",
                "reason": reason,
                "error_type": "PermanentProviderError",
                "status_code": 422,
                "detail": reason,
                "attempts": 1,
                "created_at": at,
                "status": "waiting",
            },
        )

    def letter(self, event_id: str, at: float, **kwargs) -> str:
        (unit_id,) = self.event(event_id, source=kwargs.get("source", "coniq"), at=at)
        self.dead(unit_id, at, **kwargs)
        return unit_id


@pytest.fixture
def seed(app) -> Seed:
    return Seed(app)


@pytest.fixture
def admin(settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.admin_token}"}


def assert_problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["type"] == PROBLEM + slug
    assert body["status"] == status
    assert body["detail"]
    return body


ENDPOINTS = [
    ("GET", "/fulfillments/{event}"),
    ("GET", "/dead-letters"),
    ("GET", "/dead-letters/{letter}"),
    ("POST", "/dead-letters/{letter}/replay"),
    ("POST", "/dead-letters/replay"),
    ("DELETE", "/dead-letters/{letter}"),
]
BAD_AUTH = {
    "missing": {},
    "wrong-token": {"Authorization": "Bearer not-the-admin-token-at-all"},
    "wrong-scheme": {"Authorization": "Basic dGVzdC1hZG1pbi10b2tlbi0wMTIzNDU2Nzg5"},
    "empty-bearer": {"Authorization": "Bearer "},
    "token-prefix": {"Authorization": "Bearer test-admin-token"},
}


@pytest.mark.parametrize("auth", list(BAD_AUTH), ids=list(BAD_AUTH))
@pytest.mark.parametrize(("method", "path"), ENDPOINTS, ids=[f"{m} {p}" for m, p in ENDPOINTS])
def test_every_endpoint_refuses_missing_or_wrong_token_with_401(client, seed, method, path, auth):
    # given a real event and a waiting dead letter
    letter_id = seed.letter("evt_auth", time.time())
    url = path.format(event="evt_auth", letter=letter_id)
    # when the request lacks a valid admin token
    response = client.open(url, method=method, headers=BAD_AUTH[auth], json={"dry_run": False})
    # then it is refused as a problem, with a bearer challenge
    assert_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # and nothing was changed
    assert seed.letters.get(letter_id).status is LetterStatus.WAITING
    assert seed.ledger.get(letter_id).state is UnitState.DEAD_LETTERED


def _as(address: str) -> dict[str, dict[str, str]]:
    return {"environ_base": {"REMOTE_ADDR": address}}


def test_wrong_admin_tokens_are_limited_per_address_and_right_ones_never_count(
    client, seed, admin
) -> None:
    # given an address that uses the right token (never counted), then guesses the limit
    letter_id = seed.letter("evt_guess", time.time())
    wrong = {"Authorization": "Bearer not-the-admin-token-at-all"}
    for _ in range(GUESSES + 5):
        assert client.get("/dead-letters", headers=admin, **_as("192.0.2.7")).status_code == 200
    for _ in range(GUESSES):
        response = client.get("/dead-letters", headers=wrong, **_as("192.0.2.7"))
        assert_problem(response, 401, "unauthorized")
    # when it tries again, with a wrong token and with the right one, on any admin route
    limited = client.get("/dead-letters", headers=wrong, **_as("192.0.2.7"))
    right = client.post(
        f"/dead-letters/{letter_id}/replay", headers=admin, json={}, **_as("192.0.2.7")
    )
    other = client.get("/dead-letters", headers=admin, **_as("198.51.100.9"))
    # then it is told to wait as a problem with Retry-After; nothing ran; others go on
    for response in (limited, right):
        assert_problem(response, 429, "too-many-token-guesses")
        assert 0 < int(response.headers["Retry-After"]) <= WINDOW_SECONDS
    assert seed.letters.get(letter_id).status is LetterStatus.WAITING
    assert other.status_code == 200


def test_admin_api_and_console_sign_in_share_the_wrong_token_limit(client, admin) -> None:
    # given an address that spent its wrong tokens on the API
    wrong = {"Authorization": "Bearer not-the-admin-token-at-all"}
    for _ in range(GUESSES):
        assert client.get("/lanes", headers=wrong, **_as("192.0.2.8")).status_code == 401
    # when it turns to the console's sign-in form
    page = client.get("/admin/sign-in", **_as("192.0.2.8"))
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    signed = client.post(
        "/admin/sign-in",
        data={"token": "another-guess-0123", "csrf_token": csrf.group(1)},
        **_as("192.0.2.8"),
    )
    # then it is limited there too
    assert signed.status_code == 429


def test_fulfillment_shows_each_unit_with_codes_masked(client, admin, seed):
    # given an event whose first unit was fulfilled with a code and second dead-lettered
    now = time.time()
    fulfilled, dead = seed.event("evt_f", units=2, at=now)
    seed.retry(fulfilled, now)
    seed.fulfil(fulfilled, now + 2)
    seed.dead(dead, now)
    # when
    response = client.get("/fulfillments/evt_f", headers=admin)
    # then every unit is shown with its attempts and provider reference
    assert response.status_code == 200
    body = response.get_json()
    assert (body["event_id"], body["source"], body["state"]) == ("evt_f", "coniq", "failed")
    units = {u["id"]: u for u in body["units"]}
    assert units[fulfilled]["state"] == "fulfilled"
    assert units[fulfilled]["attempts"] == 2
    assert units[fulfilled]["provider_ref"] == "ifg-order-77"
    assert units[dead]["dead_letter_id"] == dead
    # and the code is masked to its last four characters, nowhere in clear
    assert units[fulfilled]["codes"] == ["****CRET"]
    assert CODE.encode() not in response.data
    assert b"ABCD" not in response.data
    assert b"1234" not in response.data


@pytest.mark.parametrize(
    ("steps", "state"),
    [
        (["fulfil", "fulfil"], "fulfilled"),
        (["fulfil", None], "in_progress"),
        (["fulfil", "retry"], "in_progress"),
        (["retry", "dead"], "failed"),
    ],
)
def test_fulfillment_state_summarises_the_units(client, admin, seed, steps, state):
    # given an event whose units went through the given steps
    now = time.time()
    unit_ids = seed.event("evt_s", units=len(steps), at=now)
    for unit_id, step in zip(unit_ids, steps, strict=True):
        if step:
            getattr(seed, step)(unit_id, now)
    # when
    body = client.get("/fulfillments/evt_s", headers=admin).get_json()
    # then
    assert body["state"] == state


@pytest.mark.parametrize(
    ("method", "path", "slug"),
    [
        ("GET", "/fulfillments/evt_missing", "event-not-found"),
        ("GET", "/dead-letters/evt_missing:0:0", "dead-letter-not-found"),
        ("POST", "/dead-letters/evt_missing:0:0/replay", "dead-letter-not-found"),
        ("DELETE", "/dead-letters/evt_missing:0:0", "dead-letter-not-found"),
    ],
)
def test_unknown_event_or_letter_is_a_404_problem(client, admin, seed, method, path, slug):
    # given nothing stored under that id
    # when
    response = client.open(path, method=method, headers=admin)
    # then
    assert_problem(response, 404, slug)


@pytest.fixture
def letters(seed) -> dict[str, str]:
    """Four waiting letters, oldest first, by name."""
    base = time.time() - 100
    return {
        "a": seed.letter("evt_a", base, source="coniq", provider="ifeelgoods"),
        "b": seed.letter(
            "evt_b", base + 10, source="coniq", provider="rewardops", reason="retries-exhausted"
        ),
        "c": seed.letter(
            "evt_c", base + 20, source="internal", provider="ifeelgoods", reason="retries-exhausted"
        ),
        "d": seed.letter("evt_d", base + 30, source="internal", provider="rewardops"),
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "abcd"),
        ("?source=coniq", "ab"),
        ("?provider=rewardops", "bd"),
        ("?reason=retries-exhausted", "bc"),
        ("?source=internal&provider=ifeelgoods", "c"),
        ("?limit=3", "abc"),
        ("?source=&provider=&reason=&since=&limit=", "abcd"),
    ],
)
def test_list_dead_letters_applies_filters(client, admin, letters, query, expected):
    # given four waiting letters
    # when
    response = client.get(f"/dead-letters{query}", headers=admin)
    # then
    assert response.status_code == 200
    body = response.get_json()
    assert [item["id"] for item in body["items"]] == [letters[k] for k in expected]
    assert body["count"] == len(expected)


def test_list_dead_letters_filters_by_since(client, admin, seed, letters):
    # given four letters 10 s apart
    since = seed.letters.get(letters["c"]).created_at
    # when
    body = client.get(f"/dead-letters?since={since}", headers=admin).get_json()
    # then
    assert [item["id"] for item in body["items"]] == [letters["c"], letters["d"]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?since=yesterday", "since"),
        ("?since=nan", "since"),
        ("?since=NaN", "since"),
        ("?since=inf", "since"),
        ("?since=-Infinity", "since"),
        ("?since=1e400", "since"),
        ("?limit=0", "limit"),
        ("?limit=x", "limit"),
        ("?limit=1001", "limit"),
        ("?source=email", "source"),
        ("?provider=amazon", "provider"),
    ],
)
def test_list_dead_letters_rejects_bad_filters(client, admin, letters, query, field):
    # given / when
    response = client.get(f"/dead-letters{query}", headers=admin)
    # then the filter is named, rather than silently matching nothing (or everything)
    body = assert_problem(response, 422, "invalid-filter")
    assert list(body["errors"]) == [field]


def test_show_dead_letter_includes_attempt_history(client, admin, seed):
    # given a unit that was retried once and then dead-lettered
    now = time.time()
    (unit_id,) = seed.event("evt_show", at=now)
    seed.retry(unit_id, now)
    seed.dead(unit_id, now + 2)
    # when
    response = client.get(f"/dead-letters/{unit_id}", headers=admin)
    # then
    assert response.status_code == 200
    body = response.get_json()
    assert (body["id"], body["reason"], body["status"]) == (unit_id, "permanent", "waiting")
    assert [(a["attempt"], a["outcome"]) for a in body["attempts"]] == [
        (1, "retry"),
        (2, "dead_letter"),
    ]
    assert body["attempts"][0]["status_code"] == 503


def test_replay_one_is_accepted_once_then_conflicts(client, admin, seed, letters):
    # given a waiting letter
    letter_id = letters["a"]
    before = time.time()
    # when it is replayed
    response = client.post(f"/dead-letters/{letter_id}/replay", headers=admin)
    # then the unit is back on the schedule, due now, under the same key
    assert response.status_code == 202
    assert response.get_json() == {"id": letter_id, "result": "replayed"}
    assert seed.ledger.get(letter_id).state is UnitState.UNKNOWN
    assert before <= seed.redis.zscore(seed.keys.live, letter_id) <= time.time()
    assert seed.letters.audit_log()[-1]["actor"] == "admin-api"
    # when it is replayed again
    again = client.post(f"/dead-letters/{letter_id}/replay", headers=admin)
    # then
    assert_problem(again, 409, "dead-letter-not-waiting")
    # and it no longer appears in the list
    listed = client.get("/dead-letters", headers=admin).get_json()
    assert letter_id not in [item["id"] for item in listed["items"]]


def test_bulk_replay_dry_run_changes_nothing(client, admin, seed, letters):
    # given four waiting letters
    # when a dry run is asked for the coniq ones
    response = client.post(
        "/dead-letters/replay", headers=admin, json={"source": "coniq", "dry_run": True}
    )
    # then it reports what it would replay
    assert response.status_code == 200
    assert response.get_json() == {
        "dry_run": True,
        "matched": 2,
        "replayed": [letters["a"], letters["b"]],
        "rules_unchanged": [],
    }
    # and nothing changed
    for letter_id in letters.values():
        assert seed.letters.get(letter_id).status is LetterStatus.WAITING
        assert seed.ledger.get(letter_id).state is UnitState.DEAD_LETTERED
    assert seed.redis.zcard(seed.keys.live) == 0
    assert seed.letters.waiting_count() == 4
    assert seed.letters.audit_log() == []


def test_bulk_replay_spreads_units_over_time(client, admin, seed, letters):
    # given four waiting letters
    # when all of them are replayed for real
    response = client.post("/dead-letters/replay", headers=admin, json={"dry_run": False})
    # then every letter was replayed, oldest first
    assert response.status_code == 200
    body = response.get_json()
    order = [letters[k] for k in "abcd"]
    assert (body["dry_run"], body["matched"], body["replayed"]) == (False, 4, order)
    assert seed.letters.waiting_count() == 0
    # and the units become due one after another at the capped rate
    scores = [seed.redis.zscore(seed.keys.live, letter_id) for letter_id in order]
    gaps = [later - earlier for earlier, later in zip(scores, scores[1:], strict=False)]
    assert all(gap == pytest.approx(1 / REPLAY_RATE_PER_SECOND, abs=1e-3) for gap in gaps)
    assert [seed.ledger.get(letter_id).state for letter_id in order] == [UnitState.UNKNOWN] * 4


def test_bulk_replay_applies_filters(client, admin, seed, letters):
    # given four waiting letters
    # when only retries-exhausted letters are replayed
    body = client.post(
        "/dead-letters/replay", headers=admin, json={"reason": "retries-exhausted"}
    ).get_json()
    # then only they left the waiting list
    assert body["replayed"] == [letters["b"], letters["c"]]
    waiting = [
        item["id"] for item in client.get("/dead-letters", headers=admin).get_json()["items"]
    ]
    assert waiting == [letters["a"], letters["d"]]


@pytest.mark.parametrize(
    ("payload", "status", "slug"),
    [
        ({"dry_run": "yes"}, 422, "validation-failed"),
        ({"dry_run": 1}, 422, "validation-failed"),
        ({"dryrun": True}, 422, "validation-failed"),
        ([1, 2], 422, "validation-failed"),
        ("everything", 422, "validation-failed"),
        ({"since": "last week"}, 422, "validation-failed"),
        ({"since": "nan"}, 422, "validation-failed"),
        ({"since": 10**400}, 422, "validation-failed"),
        ({"limit": 5000}, 422, "validation-failed"),
        ({"limit": 5.5}, 422, "validation-failed"),
        ({"limit": "10"}, 422, "validation-failed"),
        ({"source": "email"}, 422, "validation-failed"),
        ({"provider": ["ifeelgoods"]}, 422, "validation-failed"),
        ({"reason": 7}, 422, "validation-failed"),
    ],
)
def test_bulk_replay_rejects_bad_requests(client, admin, seed, letters, payload, status, slug):
    # given waiting letters
    # when
    response = client.post("/dead-letters/replay", headers=admin, json=payload)
    # then the request is refused and nothing was replayed
    assert_problem(response, status, slug)
    assert seed.letters.waiting_count() == 4


def test_discard_is_recorded_then_conflicts(client, admin, seed, letters):
    # given a waiting letter
    letter_id = letters["d"]
    # when it is discarded with a reason
    response = client.delete(
        f"/dead-letters/{letter_id}", headers=admin, json={"reason": "customer refunded"}
    )
    # then
    assert response.status_code == 200
    assert response.get_json() == {"id": letter_id, "status": "discarded"}
    assert seed.letters.get(letter_id).status is LetterStatus.DISCARDED
    entry = seed.letters.audit_log()[-1]
    assert (entry["action"], entry["id"], entry["actor"], entry["reason"]) == (
        "discard",
        letter_id,
        "admin-api",
        "customer refunded",
    )
    # when it is discarded again, or replayed
    again = client.delete(f"/dead-letters/{letter_id}", headers=admin)
    replay = client.post(f"/dead-letters/{letter_id}/replay", headers=admin)
    # then both conflict, and the unit stays dead-lettered
    assert_problem(again, 409, "dead-letter-not-waiting")
    assert_problem(replay, 409, "dead-letter-not-waiting")
    assert seed.ledger.get(letter_id).state is UnitState.DEAD_LETTERED


# --- admin JSON bodies (issue 16 §2.1) -----------------------------------------------------

BULK = "/dead-letters/replay"


@pytest.mark.parametrize(
    ("content_type", "raw", "status", "slug"),
    [
        # what `curl -d dry_run=true` sends
        ("application/x-www-form-urlencoded", b"dry_run=true", 415, "unsupported-media-type"),
        ("text/plain", b"{}", 415, "unsupported-media-type"),
        (None, b"{}", 415, "unsupported-media-type"),
        ("application/json", b"{", 400, "malformed-json"),
        ("application/json", b'{"reason": "a\x00b"}', 400, "malformed-json"),
        ("application/json", b"\x00", 400, "malformed-json"),
        ("application/json", b'{"since": 1e400}', 400, "malformed-json"),
        ("application/json", b'{"since": -1e400}', 400, "malformed-json"),
        ("application/json", b'{"since": NaN}', 400, "malformed-json"),
        ("application/json", b'{"since": Infinity}', 400, "malformed-json"),
        ("application/json", b'{"dry_run": true, "dry_run": false}', 400, "malformed-json"),
        ("application/json", b"\xff\xfe{}", 400, "malformed-json"),
        ("application/json", b"[" * 40 + b"]" * 40, 400, "malformed-json"),
        ("application/json", b"null", 422, "validation-failed"),
        ("application/json", b"", 400, "body-required"),
        (None, b"", 400, "body-required"),
    ],
)
def test_bulk_replay_refuses_every_body_that_is_not_a_json_object_and_replays_nothing(
    client, admin, seed, letters, content_type, raw, status, slug
):
    # given four waiting letters
    # when the bulk replay is sent something that is not a JSON object of filters
    headers = dict(admin)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = client.post(BULK, headers=headers, data=raw)
    # then it is refused as a typed problem and not read as "no filters, for real"
    assert_problem(response, status, slug)
    assert seed.letters.waiting_count() == 4


def test_bulk_replay_names_an_unknown_key(client, admin, seed, letters):
    # given / when a misspelt dry run
    response = client.post(BULK, headers=admin, json={"dryrun": True})
    # then the key is named, and nothing was replayed
    body = assert_problem(response, 422, "validation-failed")
    assert body["errors"] == {"dryrun": ["Unknown field."]}
    assert "dryrun" in body["detail"]
    assert seed.letters.waiting_count() == 4


def test_bulk_replay_with_an_empty_object_uses_the_defaults(client, admin, seed, letters):
    # given four waiting letters
    # when the defaults are asked for explicitly
    response = client.post(BULK, headers=admin, json={})
    # then all are replayed for real
    assert response.status_code == 200
    assert response.get_json()["replayed"] == [letters[k] for k in "abcd"]
    assert seed.letters.waiting_count() == 0


def test_bulk_replay_takes_what_the_cli_sends(client, admin, seed, letters):
    # given the body `rewardrelay dlq replay --all --since ...` sends (since as a string)
    since = seed.letters.get(letters["c"]).created_at
    payload = {"since": str(since), "provider": "ifeelgoods", "dry_run": True, "limit": 10}
    # when
    response = client.post(BULK, headers=admin, json=payload)
    # then
    assert response.status_code == 200
    assert response.get_json() == {
        "dry_run": True,
        "matched": 1,
        "replayed": [letters["c"]],
        "rules_unchanged": [],
    }


@pytest.mark.parametrize(
    ("content_type", "raw", "status", "slug"),
    [
        ("application/x-www-form-urlencoded", b"reason=x", 415, "unsupported-media-type"),
        ("application/json", b'{"reason": ', 400, "malformed-json"),
        ("application/json", b'{"reason": "x", "n": 1e400}', 400, "malformed-json"),
        ("application/json", b'{"why": "x"}', 422, "validation-failed"),
        ("application/json", b'{"reason": 7}', 422, "validation-failed"),
        ("application/json", b'{"reason": "' + b"x" * 201 + b'"}', 422, "validation-failed"),
        ("application/json", b'["x"]', 422, "validation-failed"),
    ],
)
def test_discard_refuses_a_bad_body_and_keeps_the_letter(
    client, admin, seed, letters, content_type, raw, status, slug
):
    # given a waiting letter
    letter_id = letters["a"]
    # when its discard carries a body that is not a valid one
    response = client.delete(
        f"/dead-letters/{letter_id}",
        headers={**admin, "Content-Type": content_type},
        data=raw,
    )
    # then it is refused, and the letter still waits
    assert_problem(response, status, slug)
    assert seed.letters.get(letter_id).status is LetterStatus.WAITING


# --- routing (issue 16 §2.8) -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT"])
def test_the_bulk_replay_path_is_not_read_as_a_letter_named_replay(client, admin, letters, method):
    # given / when a method other than POST on the bulk replay path
    response = client.open(BULK, method=method, headers=admin)
    # then the router refuses it, rather than looking up (or discarding) a letter "replay"
    assert_problem(response, 405, "method-not-allowed")
    assert "POST" in response.headers["Allow"]
    assert "GET" not in response.headers["Allow"]


def test_letter_ids_with_reserved_characters_round_trip_quoted(client, admin, seed):
    # given a letter whose event id holds every character a URL treats specially
    event_id = "evt/a%2Fb?c=1#frag"
    letter_id = seed.letter(event_id, time.time() - 5, source="coniq", provider="ifeelgoods")
    path = dead_letter_path(letter_id)
    # when it is read and discarded through its quoted path
    shown = client.get(path, headers=admin)
    discarded = client.delete(path, headers=admin, json={"reason": "test"})
    # then both reached that letter
    assert shown.status_code == 200 and shown.get_json()["id"] == letter_id
    assert discarded.get_json() == {"id": letter_id, "status": "discarded"}
