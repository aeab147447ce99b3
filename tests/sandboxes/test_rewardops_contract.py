"""Contract tests: the RewardOps sandbox answers as providers.md section 2 describes.

Each test names the providers.md fact it checks and its tag.
"""

from __future__ import annotations

import time

import httpx
import pytest

from sandboxes import SandboxControl

MEMBER = {"id": "member-1", "full_name": "Ada Lovelace", "email": "ada@example.com"}


def order_body(program_order_id: str = "po-1", token: str = "tok-gift-25", quantity: int = 1):
    return {
        "program_order_id": program_order_id,
        "member": MEMBER,
        "items": [
            {
                "item_order_token": token,
                "quantity": quantity,
                "member_spend": [{"currency_code": "USD", "amount": "0"}],
            }
        ],
    }


def items_of(order: dict) -> list[dict]:
    return [item for supplier in order["suppliers"] for item in supplier["items"]]


@pytest.mark.parametrize("as_json", [False, True])
def test_token_endpoint_accepts_basic_credentials_form_or_json(
    ro_anon: httpx.Client, ro_creds: tuple[str, str], as_json: bool
) -> None:
    """providers.md 2.2 [SEED 002 form; PUB S4 JSON]: Basic client credentials, grant_type
    client_credentials → {access_token, token_type: bearer, expires_in: 7200, created_at}."""
    # given
    body = {"grant_type": "client_credentials"}
    # when
    if as_json:
        response = ro_anon.post("/auth/token", auth=ro_creds, json=body)
    else:
        response = ro_anon.post("/auth/token", auth=ro_creds, data=body)
    # then
    token = response.json()
    assert response.status_code == 200
    assert token["token_type"] == "bearer" and token["expires_in"] == 7200
    assert isinstance(token["created_at"], int) and token["access_token"]


def test_token_endpoint_rejects_wrong_secret_with_401(
    ro_anon: httpx.Client, ro_creds: tuple[str, str]
) -> None:
    """providers.md 2.2: client authentication fails → 401."""
    # given / when
    response = ro_anon.post(
        "/auth/token", auth=(ro_creds[0], "wrong"), data={"grant_type": "client_credentials"}
    )
    # then
    assert response.status_code == 401


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token"])
def test_api_without_valid_bearer_is_401_with_error_envelope(
    ro_anon: httpx.Client, authorization: str | None
) -> None:
    """providers.md 2.2 [DESIGN] invalid token → 401; 2.3 [SEED 002] error envelope."""
    # given
    headers = {"Authorization": authorization} if authorization else {}
    # when
    response = ro_anon.get("/programs/12/orders", params={"member_id": "m"}, headers=headers)
    # then
    assert response.status_code == 401
    assert response.json()["status"] == "error"
    assert response.json()["result"]["error"]["code"] == 401


def test_expired_token_is_401(ro: httpx.Client, ro_control: SandboxControl) -> None:
    """providers.md 2.2 [SEED 002]: an expired token gets an error; simulator uses 401."""
    # given
    ro_control.expire_tokens()
    # when
    response = ro.get("/programs/12/orders", params={"member_id": "m"})
    # then
    assert response.status_code == 401
    assert "expired" in response.headers["WWW-Authenticate"]


def test_create_order_returns_ok_envelope_upper_case_status_and_lower_case_items(
    ro: httpx.Client,
) -> None:
    """providers.md 2.3 {status: OK, result: {order}}; 2.7 [DESIGN] case conventions."""
    # given / when
    response = ro.post("/programs/12/orders", json=order_body())
    # then
    body = response.json()
    assert response.status_code == 200 and body["status"] == "OK"
    order = body["result"]["order"]
    assert order["program_order_id"] == "po-1" and order["status"] == "PENDING"
    assert [i["fulfillment"]["status"] for i in items_of(order)] == ["delivered"]


def test_duplicate_program_order_id_is_409_with_documented_body(
    ro: httpx.Client, ro_control: SandboxControl
) -> None:
    """providers.md 2.9 [DESIGN]: program_order_id unique per program → 409 body."""
    # given
    ro.post("/programs/12/orders", json=order_body("po-dup"))
    # when
    response = ro.post("/programs/12/orders", json=order_body("po-dup"))
    # then
    assert response.status_code == 409
    assert response.json() == {
        "status": "error",
        "result": {
            "error": {
                "code": 409,
                "reason": "Conflict",
                "detail": "program_order_id already exists",
            }
        },
    }
    assert ro_control.issued("po-dup") == 1


def test_get_by_program_order_id_finds_the_order_and_404_when_absent(ro: httpx.Client) -> None:
    """providers.md 2.6/2.9 [PUB S5]: GET .../orders/{id}?use_program_order_id=true."""
    # given
    created = ro.post("/programs/12/orders", json=order_body("po-get")).json()["result"]["order"]
    # when
    found = ro.get("/programs/12/orders/po-get", params={"use_program_order_id": "true"})
    by_native_id = ro.get(f"/programs/12/orders/{created['id']}")
    missing = ro.get("/programs/12/orders/po-none", params={"use_program_order_id": "true"})
    # then
    assert found.json()["result"]["order"]["id"] == created["id"]
    assert by_native_id.status_code == 200
    assert missing.status_code == 404 and missing.json()["result"]["error"]["code"] == 404


def test_items_progress_pending_processing_delivered_lazily_with_codes_on_delivery(
    ro: httpx.Client, ro_control: SandboxControl
) -> None:
    """providers.md 2.7 item statuses; [DESIGN] success = delivered with assets.codes."""
    # given
    ro_control.configure(delivery_delay=0.4)
    ro.post("/programs/12/orders", json=order_body("po-slow"))
    path, params = "/programs/12/orders/po-slow", {"use_program_order_id": "true"}
    # when
    early = items_of(ro.get(path, params=params).json()["result"]["order"])[0]
    time.sleep(0.25)
    middle = items_of(ro.get(path, params=params).json()["result"]["order"])[0]
    time.sleep(0.25)
    late = items_of(ro.get(path, params=params).json()["result"]["order"])[0]
    # then
    assert early["fulfillment"]["status"] == "pending" and early["assets"]["codes"] == []
    assert middle["fulfillment"]["status"] == "processing"
    assert late["fulfillment"]["status"] == "delivered"
    assert late["assets"]["codes"][0]["type"] == "PLAIN" and late["assets"]["codes"][0]["value"]


@pytest.mark.parametrize(
    ("token", "status", "order_status", "asset"),
    [
        ("tok-link-15", "delivered", "PENDING", "links"),
        ("tok-physical-mug", "delivered", "PENDING", None),
        ("tok-reject", "rejected", "STOPPED", None),
    ],
)
def test_item_kinds_end_in_their_terminal_state(
    ro: httpx.Client, token: str, status: str, order_status: str, asset: str | None
) -> None:
    """providers.md 2.6 assets {codes, links}; 2.7 terminal item states incl. rejected."""
    # given / when
    order = ro.post("/programs/12/orders", json=order_body(f"po-{token}", token)).json()["result"][
        "order"
    ]
    # then
    item = items_of(order)[0]
    assert item["fulfillment"]["status"] == status
    assert order["status"] == order_status
    if asset:
        assert item["assets"][asset]
    else:
        assert not item["assets"]["codes"] and not item["assets"]["links"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (order_body("po-bad", "tok-unknown"), 400),
        ({"program_order_id": "po-x", "items": [{"item_order_token": "tok-gift-25"}]}, 400),
        ({"program_order_id": "po-y", "member": MEMBER, "items": []}, 400),
    ],
)
def test_invalid_orders_are_400_parameter_errors(ro: httpx.Client, body: dict, status: int) -> None:
    """providers.md 2.3/2.5 [SEED 002]: 400 with a detailed validation message."""
    # given / when
    response = ro.post("/programs/12/orders", json=body)
    # then
    assert response.status_code == status
    assert response.json()["result"]["error"]["reason"] == "Parameter Error"


def test_unknown_program_is_404(ro: httpx.Client) -> None:
    """providers.md 2.5 [SEED 002]: 404 resource not found."""
    # given / when
    response = ro.post("/programs/999/orders", json=order_body())
    # then
    assert response.status_code == 404


def test_list_orders_by_member_paginates_with_per_page_count(ro: httpx.Client) -> None:
    """providers.md 2.4 [SEED 002/PUB S5]: page, per_page_count and the pagination object."""
    # given
    for index in range(3):
        ro.post("/programs/12/orders", json=order_body(f"po-l{index}"))
    # when
    response = ro.get(
        "/programs/12/orders", params={"member_id": "member-1", "page": 1, "per_page_count": 2}
    )
    missing_member = ro.get("/programs/12/orders")
    # then
    body = response.json()
    assert len(body["result"]["orders"]) == 2
    assert body["pagination"] == {
        "previous": None,
        "next": 2,
        "current": 1,
        "per_page_count": 2,
        "count": 3,
        "pages": 2,
    }
    assert missing_member.status_code == 400


def test_quantity_creates_one_item_per_unit_with_distinct_codes(ro: httpx.Client) -> None:
    """providers.md 2.6 items[].quantity [PUB S5]; simulator: one item per unit [DESIGN]."""
    # given / when
    order = ro.post("/programs/12/orders", json=order_body("po-q", quantity=3)).json()["result"][
        "order"
    ]
    # then
    codes = {item["assets"]["codes"][0]["value"] for item in items_of(order)}
    assert len(codes) == 3


def _without(item_key: str) -> dict:
    body = order_body(f"po-no-{item_key}")
    del body["items"][0][item_key]
    return body


def _with_item(**fields: object) -> dict:
    body = order_body("po-bad-item")
    body["items"][0].update(fields)
    return body


def assert_parameter_error(response: httpx.Response, parameter: str) -> None:
    """The vendor's 400 envelope ([SEED 002] example), naming the parameter."""
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error"
    error = body["result"]["error"]
    assert error["code"] == 400 and error["reason"] == "Parameter Error"
    assert error["detail"].startswith(f"Validation failed for parameter {parameter}")


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        (_without("member_spend"), "items[0].member_spend"),
        (_with_item(member_spend=[]), "items[0].member_spend"),
        (_with_item(member_spend={"amount": "0"}), "items[0].member_spend.currency_code"),
        (_with_item(member_spend=[{"currency_code": "USD"}]), "items[0].member_spend.amount"),
        (
            _with_item(member_spend={"currency_code": "dollars", "amount": "0"}),
            "items[0].member_spend.currency_code",
        ),
        (
            _with_item(member_spend={"currency_code": "USD", "amount": 5}),
            "items[0].member_spend.amount",
        ),
        (_without("quantity"), "items[0].quantity"),
        ({**order_body("po-pay"), "payment_status": "FREE"}, "payment_status"),
    ],
)
def test_order_item_required_fields_are_enforced_with_the_vendor_error(
    ro: httpx.Client, ro_control: SandboxControl, body: dict, parameter: str
) -> None:
    """providers.md 2.6 [PUB S5 "Create an order"]: items[] need item_order_token, quantity
    and member_spend {currency_code, amount} (only retail_value is optional); payment_status
    is one of PAID|PENDING|REJECTED|REFUNDED. A refused order is not created."""
    # given / when
    response = ro.post("/programs/12/orders", json=body)
    # then
    assert_parameter_error(response, parameter)
    assert ro_control.counters()["issued"] == {}


@pytest.mark.parametrize(
    "member_spend",
    [
        {"currency_code": "CAD", "amount": "12.50"},
        [{"currency_code": "XRO-ABC", "amount": "1000"}],
        [{"currency_code": "USD", "amount": "0"}, {"currency_code": "XRO-PTS", "amount": "5"}],
    ],
)
def test_member_spend_is_accepted_as_object_or_array(
    ro: httpx.Client, member_spend: object
) -> None:
    """providers.md 2.6: the document shows an object, the SDK sends an array [PUB S4]."""
    # given / when
    response = ro.post("/programs/12/orders", json=_with_item(member_spend=member_spend))
    # then
    assert response.status_code == 200
    assert response.json()["status"] == "OK"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/programs/twelve/orders"),
        ("GET", "/programs/twelve/orders"),
        ("GET", "/programs/1.5/orders/RO1"),
    ],
)
def test_non_integer_program_id_is_the_vendors_400(
    ro: httpx.Client, method: str, path: str
) -> None:
    """providers.md 2.3 [SEED 002]: the vendor's own example error, "Validation failed for
    parameter program_id: is not of type integer" (was a 404 before)."""
    # given / when
    response = ro.request(method, path, params={"member_id": "m"}, json=order_body())
    # then
    assert_parameter_error(response, "program_id")
    assert response.json()["result"]["error"]["detail"].endswith("is not of type integer")
