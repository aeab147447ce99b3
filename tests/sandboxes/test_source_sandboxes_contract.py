"""Contract tests: the Ignico, orders-platform and Coniq sandboxes answer as providers.md
sections 3-5 describe. Plain httpx, no client classes; each test names its fact and tag."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from sandboxes import SandboxControl, serve_in_thread
from sandboxes.server import RunningServer, create_sandbox_app

JSONAPI = "application/vnd.api+json"


@pytest.fixture(scope="module")
def ignico_server() -> Iterator[RunningServer]:
    app = create_sandbox_app("ignico", client_id="ct-ig", client_secret="ct-ig-secret")
    with serve_in_thread(app, log_requests=False) as server:
        yield server


@pytest.fixture(scope="module")
def orders_server() -> Iterator[RunningServer]:
    app = create_sandbox_app("orders-platform", client_id="ct-op", client_secret="ct-op-secret")
    with serve_in_thread(app, log_requests=False) as server:
        yield server


@pytest.fixture(scope="module")
def coniq_server() -> Iterator[RunningServer]:
    with serve_in_thread(create_sandbox_app("coniq", api_key="ct-key"), log_requests=False) as s:
        yield s


@pytest.fixture
def ignico(ignico_server: RunningServer) -> Iterator[httpx.Client]:
    with SandboxControl(ignico_server.url) as control:
        control.reset()
    with httpx.Client(base_url=f"{ignico_server.url}/api/v1", timeout=5.0) as client:
        yield client


def ignico_token(ignico: httpx.Client) -> str:
    body = {
        "grant_type": "client_credentials",
        "client_id": "ct-ig",
        "client_secret": "ct-ig-secret",
    }
    return str(ignico.post("/oauth2/token", data=body).json()["access_token"])


def test_ignico_token_is_a_48h_bearer_and_bad_credentials_get_the_documented_401(
    ignico: httpx.Client,
) -> None:
    """4.2 [PUB S9]: 200 {token_type, expires_in: 172800, access_token}; 401 invalid_client."""
    # given
    good = {
        "grant_type": "client_credentials",
        "client_id": "ct-ig",
        "client_secret": "ct-ig-secret",
    }
    # when
    ok = ignico.post("/oauth2/token", data=good)
    bad = ignico.post("/oauth2/token", data={**good, "client_secret": "nope"})
    # then
    assert ok.status_code == 200
    assert ok.json()["token_type"] == "Bearer" and ok.json()["expires_in"] == 172_800
    assert bad.status_code == 401
    assert bad.json() == {"error": "invalid_client", "message": "Client authentication failed"}


def test_ignico_lists_jsonapi_with_meta_page_and_refuses_unknown_filters(
    ignico: httpx.Client,
) -> None:
    """4.3/4.4: JSON:API media type, meta.page [DESIGN], filters from the S8 list only."""
    # given
    headers = {"Authorization": f"Bearer {ignico_token(ignico)}", "Accept": JSONAPI}
    # when
    listed = ignico.get("/users/wallets/transactions", params={"page[size]": 5}, headers=headers)
    unknown = ignico.get(
        "/users/wallets/transactions", params={"filter[colour]": "red"}, headers=headers
    )
    # then
    assert listed.status_code == 200 and listed.headers["content-type"].startswith(JSONAPI)
    assert listed.json()["meta"]["page"]["per-page"] == 5
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["status"] == "400"


def test_ignico_put_on_a_closed_transaction_is_409(ignico: httpx.Client) -> None:
    """4.6 [DESIGN]: realized/cancelled are terminal."""
    # given a realized payout
    headers = {
        "Authorization": f"Bearer {ignico_token(ignico)}",
        "Content-Type": JSONAPI,
        "Accept": JSONAPI,
    }

    def post(path: str, kind: str, attributes: dict) -> httpx.Response:
        body = {"data": {"type": kind, "attributes": attributes}}
        return ignico.post(path, json=body, headers=headers)

    post("/users", "user", {"email": "ada@example.com", "country": "GB"})
    tx = post(
        "/users/wallets/transactions",
        "transaction",
        {
            "user": {"email": "ada@example.com"},
            "type": "sub",
            "amount": "5",
            "description": "payout",
        },
    ).json()["data"]["id"]
    realize = {"data": {"type": "transaction", "attributes": {"realized": True}}}
    assert ignico.put(f"/users/wallets/transactions/{tx}", json=realize, headers=headers).is_success
    # when
    again = ignico.put(f"/users/wallets/transactions/{tx}", json=realize, headers=headers)
    # then
    assert again.status_code == 409


def test_orders_platform_paginates_only_when_page_is_sent(orders_server: RunningServer) -> None:
    """5.1 [SEED 001]: Laravel object with ``page``; 5.2 [DESIGN]: bare array without."""
    # given a token (client credentials are not offered: code flow only) and two orders
    control = SandboxControl(orders_server.url)
    control.reset()
    httpx.post(
        f"{orders_server.url}/_sandbox/orders",
        json={"orders": [{"total": "10", "customer": {"email": "a@example.com"}}] * 2},
    )
    redirect = "http://127.0.0.1:8765/callback"
    consent = httpx.get(
        f"{orders_server.url}/oauth/authorize",
        params={"client_id": "ct-op", "redirect_uri": redirect, "response_type": "code"},
    )
    code = httpx.URL(consent.headers["Location"]).params["code"]
    token = httpx.post(
        f"{orders_server.url}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "client_id": "ct-op",
            "client_secret": "ct-op-secret",
        },
    ).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    # when
    bare = httpx.get(f"{orders_server.url}/api/orders", headers=headers)
    paged = httpx.get(
        f"{orders_server.url}/api/orders", params={"page": 1, "per_page": 1}, headers=headers
    )
    anonymous = httpx.get(f"{orders_server.url}/api/orders")
    # then
    assert isinstance(bare.json(), list) and len(bare.json()) == 2
    keys = {"total", "per_page", "current_page", "last_page", "next_page_url", "data"}
    assert keys <= set(paged.json()) and paged.json()["last_page"] == 2
    assert token["refresh_token"] and consent.status_code == 302
    assert anonymous.status_code == 401 and anonymous.json() == {"message": "Unauthenticated."}
    control.close()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"x-api-version": "2.0"}, 401),
        ({"Authorization": 'ApiKey key="wrong"', "x-api-version": "2.0"}, 401),
        ({"Authorization": 'ApiKey key="ct-key"', "x-api-version": "3.0"}, 400),
        ({"Authorization": 'ApiKey key="ct-key"', "x-api-version": "2.0"}, 201),
    ],
)
def test_coniq_requires_the_api_key_header_and_version_2(
    coniq_server: RunningServer, headers: dict[str, str], status: int
) -> None:
    """3.2 [PUB S7] ApiKey key="…" + x-api-version 2.0; 3.5 [DESIGN] reward assignment."""
    # given
    with SandboxControl(coniq_server.url) as control:
        control.reset()
    body = {"offer_id": "9001", "external_reference": "ref-ct-1"}
    # when
    response = httpx.post(
        f"{coniq_server.url}/subscription/sub-1/reward", json=body, headers=headers
    )
    # then
    assert response.status_code == status


def test_ignico_control_seeds_pending_payouts(
    ignico: httpx.Client, ignico_server: RunningServer
) -> None:
    """Control API (ours): ``POST /_sandbox/payouts`` creates pending ``sub`` transactions."""
    # given / when
    seeded = httpx.post(
        f"{ignico_server.url}/_sandbox/payouts",
        json={"payouts": [{"email": "ada@example.com", "amount": "12.50"}] * 2},
    )
    headers = {"Authorization": f"Bearer {ignico_token(ignico)}", "Accept": JSONAPI}
    pending = ignico.get(
        "/users/wallets/transactions",
        params={"filter[type]": "sub", "filter[realized]": "0", "filter[cancelled]": "0"},
        headers=headers,
    )
    # then
    assert seeded.status_code == 200 and len(seeded.json()["payouts"]) == 2
    assert pending.json()["meta"]["page"]["total"] == 2


def _ignico_headers(ignico: httpx.Client, **extra: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {ignico_token(ignico)}",
        "Content-Type": JSONAPI,
        "Accept": JSONAPI,
        **extra,
    }


def assert_jsonapi_error(response: httpx.Response, status: int, code: str) -> None:
    """providers.md 4.3 [DESIGN]: a JSON:API errors document, served as JSON:API."""
    assert response.status_code == status
    assert response.headers["content-type"].startswith(JSONAPI)
    error = response.json()["errors"][0]
    assert error["status"] == str(status) and error["code"] == code and error["detail"]


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ({"type": "sub", "amount": "5"}, "description"),
        ({"type": "sub", "amount": "5", "description": ""}, "description"),
    ],
)
def test_ignico_transaction_without_description_is_422(
    ignico: httpx.Client, attributes: dict, field: str
) -> None:
    """4.5 [PUB S8]: a wallet transaction needs user, type, amount and description."""
    # given a user
    headers = _ignico_headers(ignico)
    user = {"data": {"type": "user", "attributes": {"email": "ada@example.com", "country": "GB"}}}
    ignico.post("/users", json=user, headers=headers)
    body = {
        "data": {
            "type": "transaction",
            "attributes": {"user": {"email": "ada@example.com"}, **attributes},
        }
    }
    # when
    response = ignico.post("/users/wallets/transactions", json=body, headers=headers)
    # then
    assert_jsonapi_error(response, 422, "invalid_transaction")
    assert field in response.json()["errors"][0]["detail"]


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        ({"attributes": {"email": "ada@example.com", "country": "GB"}}, 400, "bad_request"),
        (
            {"type": "transaction", "attributes": {"email": "ada@example.com", "country": "GB"}},
            409,
            "type_mismatch",
        ),
    ],
)
def test_ignico_resource_type_is_required_and_must_match_the_collection(
    ignico: httpx.Client, data: dict, status: int, code: str
) -> None:
    """4.3 [PUB S8] request documents are {data: {type, attributes}}; JSON:API 1.0: a type
    that is not the collection's is 409 Conflict."""
    # given / when
    response = ignico.post("/users", json={"data": data}, headers=_ignico_headers(ignico))
    # then
    assert_jsonapi_error(response, status, code)


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"Accept": "application/json"}, 406, "not_acceptable"),
        ({"Content-Type": f"{JSONAPI}; charset=utf-8"}, 415, "unsupported_media_type"),
        ({"Content-Type": "application/json"}, 415, "unsupported_media_type"),
    ],
)
def test_ignico_jsonapi_media_types_are_enforced(
    ignico: httpx.Client, headers: dict, status: int, code: str
) -> None:
    """4.3 [PUB S8, S10]: resource calls send and accept application/vnd.api+json; JSON:API
    1.0 refuses a Content-Type with media type parameters (415)."""
    # given
    body = {"data": {"type": "user", "attributes": {"email": "bo@example.com", "country": "GB"}}}
    # when
    response = ignico.post(
        "/users", content=json.dumps(body), headers=_ignico_headers(ignico, **headers)
    )
    # then
    assert_jsonapi_error(response, status, code)


def orders_headers(orders_server: RunningServer) -> dict[str, str]:
    """A Bearer header from the authorization-code flow (5.2 [DESIGN])."""
    redirect = "http://127.0.0.1:8765/callback"
    consent = httpx.get(
        f"{orders_server.url}/oauth/authorize",
        params={"client_id": "ct-op", "redirect_uri": redirect, "response_type": "code"},
    )
    form = {
        "grant_type": "authorization_code",
        "code": httpx.URL(consent.headers["Location"]).params["code"],
        "redirect_uri": redirect,
        "client_id": "ct-op",
        "client_secret": "ct-op-secret",
    }
    token = httpx.post(f"{orders_server.url}/oauth/token", data=form).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("method", "path", "params", "body", "field"),
    [
        ("PUT", "/api/orders/1", {}, {"status": "shipped"}, "status"),
        ("PUT", "/api/orders/1", {}, {}, "status"),
        ("GET", "/api/orders", {"page": "one"}, None, "page"),
        ("GET", "/api/orders", {"page": "1", "per_page": "0"}, None, "page"),
    ],
)
def test_orders_platform_validation_errors_are_laravel_422_with_field_errors(
    orders_server: RunningServer,
    method: str,
    path: str,
    params: dict,
    body: dict | None,
    field: str,
) -> None:
    """5.2 [DESIGN, Laravel defaults]: 422 {"message": "The given data was invalid.",
    "errors": {"field": ["…"]}} (the sandbox answered without ``errors`` before)."""
    # given an order and a token
    with SandboxControl(orders_server.url) as control:
        control.reset()
    httpx.post(
        f"{orders_server.url}/_sandbox/orders",
        json={"orders": [{"total": "10", "customer": {"email": "a@example.com"}}]},
    )
    # when
    response = httpx.request(
        method,
        f"{orders_server.url}{path}",
        params=params,
        json=body,
        headers=orders_headers(orders_server),
    )
    # then
    assert response.status_code == 422
    payload = response.json()
    assert payload["message"] == "The given data was invalid."
    assert list(payload["errors"]) == [field] and payload["errors"][field][0]
