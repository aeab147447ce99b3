"""Contract tests: the Ifeelgoods sandbox answers as providers.md section 1 describes.

Each test names the providers.md fact it checks and its tag.
"""

from __future__ import annotations

import re

import httpx
import pytest

from sandboxes import SandboxControl

USER = {"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"}
REDEEM_PATH = "/promotions/1/rewards/AMZ-25USD-US/redemptions/actions/redeem"


def create_pending(ifg: httpx.Client, order_id: str = "ord-1") -> dict:
    response = ifg.post("/promotions/1/redemptions", json={"data": {"order_id": order_id}})
    assert response.status_code == 201
    return response.json()


def test_create_and_redeem_returns_201_then_200_with_same_codes_on_replay(
    ifg: httpx.Client, ifg_control: SandboxControl
) -> None:
    """providers.md 1.9 [PUB S3]: 201 first, 200 replay with same order_id and user."""
    # given
    body = {"data": {"order_id": "ord-replay", "user": USER}}
    # when
    first = ifg.post(REDEEM_PATH, json=body)
    second = ifg.post(REDEEM_PATH, json=body)
    # then
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["data"]["id"] == second.json()["data"]["id"]
    assert first.json()["data"]["reward_codes"] == second.json()["data"]["reward_codes"]
    assert first.json()["data"]["state"] == "redeemed"
    assert ifg_control.counters()["issued"] == {"ord-replay": 1}


def test_create_and_redeem_hands_back_a_pending_redemption_unchanged(
    ifg: httpx.Client, ifg_control: SandboxControl
) -> None:
    """providers.md 1.9: "the same redemption, no new charge"; that it is not redeemed
    in passing is our simulator's reading [DESIGN]: the client redeems it with If-Match."""
    # given an order created (pending) with the two-call flow
    pending = create_pending(ifg, "ord-half-done")
    # when create-and-redeem is called for the same order_id
    again = ifg.post(REDEEM_PATH, json={"data": {"order_id": "ord-half-done", "user": USER}})
    # then the same redemption comes back, still pending, same version, nothing issued
    assert again.status_code == 200
    assert again.json()["data"]["id"] == pending["data"]["id"]
    assert again.json()["data"]["state"] == "pending"
    assert again.json()["version"] == pending["version"]
    assert ifg_control.counters()["issued"] == {"ord-half-done": 1}


def test_single_redemption_has_data_envelope_integer_version_and_id_format(
    ifg: httpx.Client,
) -> None:
    """providers.md 1.3 [SEED 003] data/version envelope; 1.6 id like MUC3B-JTQGN;
    1.8 [DESIGN] version starts at 1."""
    # given / when
    body = ifg.post(REDEEM_PATH, json={"data": {"order_id": "ord-env", "user": USER}}).json()
    # then
    assert body["version"] == 1
    assert re.fullmatch(r"[A-Z0-9]{5}-[A-Z0-9]{5}", body["data"]["id"])
    codes = body["data"]["reward_codes"]["codes"]
    assert codes[0]["usage"] == "primary" and codes[0]["value"]


def test_replay_with_other_user_is_409_user_mismatch(ifg: httpx.Client) -> None:
    """providers.md 1.9 [INFERRED/DESIGN]: same order_id, different user → 409 user_mismatch."""
    # given
    ifg.post(REDEEM_PATH, json={"data": {"order_id": "ord-u", "user": USER}})
    # when
    response = ifg.post(
        REDEEM_PATH, json={"data": {"order_id": "ord-u", "user": {"email": "eve@example.com"}}}
    )
    # then
    assert response.status_code == 409
    assert response.json()["error_name"] == "user_mismatch"


def test_replay_with_other_sku_is_409_conflict_uniqueness(ifg: httpx.Client) -> None:
    """providers.md 1.9 [DESIGN]: same order_id, different SKU → 409 conflict_uniqueness."""
    # given
    ifg.post(REDEEM_PATH, json={"data": {"order_id": "ord-s", "user": USER}})
    # when
    response = ifg.post(
        "/promotions/1/rewards/APP-ITU-10USD-US/redemptions/actions/redeem",
        json={"data": {"order_id": "ord-s", "user": USER}},
    )
    # then
    assert response.status_code == 409
    assert response.json()["error_name"] == "conflict_uniqueness"


def test_create_or_find_returns_201_pending_then_200_existing(
    ifg: httpx.Client, ifg_control: SandboxControl
) -> None:
    """providers.md 1.6 [PUB S1]: POST /promotions/{id}/redemptions is create-or-find."""
    # given
    first = create_pending(ifg, "ord-cof")
    # when
    again = ifg.post("/promotions/1/redemptions", json={"data": {"order_id": "ord-cof"}})
    # then
    assert again.status_code == 200
    assert first["data"]["state"] == "pending" and first["data"]["reward_codes"] is None
    assert again.json()["data"]["id"] == first["data"]["id"]
    assert ifg_control.issued("ord-cof") == 1


@pytest.mark.parametrize("if_match", ["1", '"1"', 'W/"1"'])
def test_redeem_action_accepts_every_if_match_form_and_bumps_version(
    ifg: httpx.Client, if_match: str
) -> None:
    """providers.md 1.8 [DESIGN]: If-Match 42, "42", W/"42"; version +1 per state change."""
    # given
    rid = create_pending(ifg)["data"]["id"]
    # when
    response = ifg.post(
        f"/redemptions/{rid}/actions/redeem",
        json={"data": {"user": USER, "reward": {"sku": "AMZ-25USD-US"}}},
        headers={"If-Match": if_match},
    )
    # then
    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert response.json()["data"]["state"] == "redeemed"
    assert response.json()["data"]["reward_codes"]["codes"]


def test_redeem_action_with_stale_version_is_412_precondition_failed(ifg: httpx.Client) -> None:
    """providers.md 1.5/1.8 [SEED 003]: If-Match mismatch → 412 precondition_failed."""
    # given
    rid = create_pending(ifg)["data"]["id"]
    # when
    response = ifg.post(
        f"/redemptions/{rid}/actions/redeem",
        json={"data": {"user": USER, "reward": {"sku": "AMZ-25USD-US"}}},
        headers={"If-Match": '"7"'},
    )
    # then
    assert response.status_code == 412
    assert response.json()["error_name"] == "precondition_failed"


def test_redeem_action_without_if_match_is_allowed_and_repeat_returns_same(
    ifg: httpx.Client,
) -> None:
    """providers.md 1.8 [DESIGN]: no If-Match → allowed; redeeming a redeemed one → 200 same."""
    # given
    rid = create_pending(ifg)["data"]["id"]
    body = {"data": {"user": USER, "reward": {"sku": "AMZ-25USD-US"}}}
    # when
    first = ifg.post(f"/redemptions/{rid}/actions/redeem", json=body)
    second = ifg.post(f"/redemptions/{rid}/actions/redeem", json=body)
    # then
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json() == second.json()


def test_cancel_pending_succeeds_but_cancel_redeemed_is_422_operation_refused(
    ifg: httpx.Client,
) -> None:
    """providers.md 1.7 [PUB S2]: redeemed is terminal; 1.5 operation_refused."""
    # given
    pending_id = create_pending(ifg, "ord-c1")["data"]["id"]
    redeemed_id = ifg.post(REDEEM_PATH, json={"data": {"order_id": "ord-c2", "user": USER}}).json()[
        "data"
    ]["id"]
    # when
    canceled = ifg.post(f"/redemptions/{pending_id}/actions/cancel", headers={"If-Match": "1"})
    refused = ifg.post(f"/redemptions/{redeemed_id}/actions/cancel")
    # then
    assert canceled.status_code == 200
    assert canceled.json()["data"]["state"] == "canceled" and canceled.json()["version"] == 2
    assert refused.status_code == 422
    assert refused.json()["error_name"] == "operation_refused"


def test_list_filters_by_order_id_and_returns_paging(ifg: httpx.Client) -> None:
    """providers.md 1.3/1.4 [SEED 003 + DESIGN]: ``paging`` {page, per_page, total}."""
    # given
    for order_id in ("ord-a", "ord-b", "ord-c"):
        create_pending(ifg, order_id)
    # when
    filtered = ifg.get("/promotions/1/redemptions", params={"order_id": "ord-b"}).json()
    paged = ifg.get("/promotions/1/redemptions", params={"page": 2, "per_page": 2}).json()
    # then
    assert [r["order_id"] for r in filtered["data"]] == ["ord-b"]
    assert filtered["paging"] == {"page": 1, "per_page": 20, "total": 1}
    assert len(paged["data"]) == 1 and paged["paging"]["total"] == 3


@pytest.mark.parametrize(
    "path",
    [
        "/promotions/99",
        "/redemptions/NOPE0-NOPE0",
        "/promotions/2/rewards/APP-ITU-10USD-US/redemptions/actions/redeem",
    ],
)
def test_unknown_resources_are_404_not_found(ifg: httpx.Client, path: str) -> None:
    """providers.md 1.5 [SEED 003]: {"error_name": "not_found", "error_message": ...}."""
    # given / when
    if path.endswith("redeem"):
        response = ifg.post(path, json={"data": {"order_id": "x", "user": USER}})
    else:
        response = ifg.get(path)
    # then
    assert response.status_code == 404
    assert response.json() == {
        "error_name": "not_found",
        "error_message": "The resource or action does not exist.",
    }


def test_header_names_are_case_insensitive(
    ifg_anon: httpx.Client, ifg_creds: tuple[str, str]
) -> None:
    """providers.md 1.2 [PUB S2]: the quickstart sends API-Key/API-Secret."""
    # given
    headers = {"API-KEY": ifg_creds[0], "api-secret": ifg_creds[1]}
    # when
    response = ifg_anon.get("/fulfillment/v2/accounts/me", headers=headers)
    # then
    assert response.status_code == 200
    assert "data" in response.json()


@pytest.mark.parametrize("variant", ["missing", "wrong_secret", "unknown_bearer"])
def test_bad_or_missing_credentials_are_401_unauthorized(
    ifg_anon: httpx.Client, ifg_creds: tuple[str, str], variant: str
) -> None:
    """providers.md 1.2 [SEED 003]: 401 unauthorized."""
    # given
    headers = {
        "missing": {},
        "wrong_secret": {"Api-Key": ifg_creds[0], "Api-Secret": "wrong"},
        "unknown_bearer": {"Authorization": "Bearer nope"},
    }[variant]
    # when
    response = ifg_anon.get("/fulfillment/v2/accounts/me", headers=headers)
    # then
    assert response.status_code == 401
    assert response.json()["error_name"] == "unauthorized"


def test_bearer_token_from_oauth_works_until_expired(
    ifg_anon: httpx.Client, ifg_control: SandboxControl, ifg_creds: tuple[str, str]
) -> None:
    """providers.md 1.2 [PUB S1 apiary]: POST /oauth/token grant account_application;
    simulator accepts Bearer tokens [DESIGN]."""
    # given
    token = ifg_anon.post(
        "/oauth/token",
        json={
            "client_id": ifg_creds[0],
            "client_secret": ifg_creds[1],
            "grant_type": "account_application",
        },
    ).json()
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    # when
    before = ifg_anon.get("/fulfillment/v2/accounts/me", headers=bearer)
    ifg_control.expire_tokens()
    after = ifg_anon.get("/fulfillment/v2/accounts/me", headers=bearer)
    # then
    assert token["token_type"] == "bearer" and token["expires_in"] == 7200
    assert (before.status_code, after.status_code) == (200, 401)


def test_oauth_token_with_wrong_secret_is_401_invalid_client(
    ifg_anon: httpx.Client, ifg_creds: tuple[str, str]
) -> None:
    """providers.md 1.2 [PUB S1 apiary]: 401 {"error": "invalid_client", ...}."""
    # given / when
    response = ifg_anon.post(
        "/oauth/token",
        json={"client_id": ifg_creds[0], "client_secret": "x", "grant_type": "account_application"},
    )
    # then
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_precondition_race_fault_bumps_version_so_if_match_fails(
    ifg: httpx.Client, ifg_control: SandboxControl
) -> None:
    """Fault injection [DESIGN]: precondition_race makes a correct If-Match answer 412."""
    # given
    rid = create_pending(ifg)["data"]["id"]
    ifg_control.set_faults(
        {"method": "POST", "path": "*/actions/redeem", "kind": "precondition_race", "times": 1}
    )
    body = {"data": {"user": USER, "reward": {"sku": "AMZ-25USD-US"}}}
    # when
    raced = ifg.post(f"/redemptions/{rid}/actions/redeem", json=body, headers={"If-Match": "1"})
    fresh = ifg.get(f"/redemptions/{rid}").json()
    retried = ifg.post(
        f"/redemptions/{rid}/actions/redeem", json=body, headers={"If-Match": str(fresh["version"])}
    )
    # then
    assert raced.status_code == 412
    assert fresh["version"] == 2 and fresh["data"]["state"] == "pending"
    assert retried.status_code == 200 and retried.json()["version"] == 3


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "application/json;q=0"])
def test_accept_that_allows_no_json_is_406_not_acceptable(ifg: httpx.Client, accept: str) -> None:
    """providers.md 1.1 [PUB S2 responses-errors]: media types application/json (also
    ``; pretty=true``) and application/pdf; 406 ``not_acceptable`` otherwise [SEED 003]."""
    # given / when
    response = ifg.get("/accounts/me", headers={"Accept": accept})
    # then
    assert response.status_code == 406
    assert response.json() == {
        "error_name": "not_acceptable",
        "error_message": "The media type specified by the Accept header is not acceptable.",
    }


@pytest.mark.parametrize(
    "accept", ["application/json", "application/json; pretty=true", "*/*", "application/*"]
)
def test_accept_that_allows_json_is_served(ifg: httpx.Client, accept: str) -> None:
    """providers.md 1.1: the accepted media types (and ranges covering them) are served."""
    # given / when
    response = ifg.get("/accounts/me", headers={"Accept": accept})
    # then
    assert response.status_code == 200
    assert response.json()["data"]["login"] == "sandbox"
