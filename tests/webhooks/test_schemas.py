"""Event validation and unit computation, without HTTP."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from tasks.routing import Route, Rule, Rules
from webhooks.schemas import MAX_EMAIL_CHARS, RewardGranted, RewardIssued, load_event
from webhooks.units import canonical_json, fingerprint, scalar_fields, units_for
from worker.stores.models import UnitSpec


def test_coniq_reward_issued_loads_into_typed_data(coniq_event):
    # given a valid Coniq reward.issued with integer ids
    # when
    event = load_event("coniq", coniq_event("evt_1"))
    # then ids are strings and the data is typed
    assert isinstance(event.data, RewardIssued)
    assert (event.data.reward.offer_id, event.data.reward.id) == ("1001", "rw_1")
    assert event.created_at.tzinfo is not None


def test_coniq_data_ignores_unknown_fields_but_envelope_refuses_them(coniq_event):
    # given an unknown field inside data (Coniq's format is unpublished) and one outside
    event = coniq_event("evt_1")
    event["data"]["reward"]["colour"] = "blue"
    # when / then: inside data it is ignored
    assert isinstance(load_event("coniq", event).data, RewardIssued)
    # and on the envelope it is refused
    event["extra"] = 1
    with pytest.raises(ValidationError) as caught:
        load_event("coniq", event)
    assert caught.value.messages == {"extra": ["Unknown field."]}


def test_reward_line_defaults_quantity_to_one(internal_event):
    # given a line without quantity
    # when
    event = load_event("internal", internal_event("evt_1"))
    # then
    assert isinstance(event.data, RewardGranted)
    assert [line.quantity for line in event.data.rewards] == [2, 1]


# 254 characters, every part at its own limit (local 64, labels 63): the longest accepted.
LONGEST_EMAIL = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 61


@pytest.mark.parametrize("source", ["coniq", "internal"])
def test_email_is_capped_at_254_characters(coniq_event, internal_event, source):
    # given events whose email is 254 characters, and one more
    def event(email: str) -> dict:
        if source == "coniq":
            document = coniq_event("evt_1")
            document["data"]["customer"]["email"] = email
        else:
            document = internal_event("evt_1")
            document["data"]["recipient"]["email"] = email
        return document

    assert len(LONGEST_EMAIL) == MAX_EMAIL_CHARS == 254
    # when / then the first loads, the second is refused naming the field
    load_event(source, event(LONGEST_EMAIL))
    with pytest.raises(ValidationError) as caught:
        load_event(source, event(LONGEST_EMAIL + "d"))
    person = "customer" if source == "coniq" else "recipient"
    assert caught.value.messages == {
        "data": {person: {"email": ["Longer than maximum length 254."]}}
    }


@pytest.mark.parametrize(
    ("change", "errors"),
    [
        pytest.param(
            lambda d: d["rewards"][0].update(quantity=0),
            {
                "rewards": {
                    0: {
                        "quantity": [
                            "Must be greater than or equal to 1 and less than or equal to 100."
                        ]
                    }
                }
            },
            id="quantity-zero",
        ),
        pytest.param(
            lambda d: d["rewards"][0].update(quantity=True),
            {"rewards": {0: {"quantity": ["Not a valid integer."]}}},
            id="quantity-bool",
        ),
        pytest.param(
            lambda d: d["rewards"][0].update(provider="ifeelgoods"),
            {
                "rewards": {
                    0: {"reward_code": ["Give either reward_code or provider + product, not both."]}
                }
            },
            id="code-and-product",
        ),
        pytest.param(
            lambda d: d["rewards"][1].pop("product"),
            {"rewards": {1: {"product": ["Give reward_code, or provider and product."]}}},
            id="provider-without-product",
        ),
        pytest.param(
            lambda d: d.update(rewards=[]),
            {"rewards": ["Length must be between 1 and 100."]},
            id="no-rewards",
        ),
        pytest.param(
            lambda d: d.update(rewards=[{"reward_code": "A", "quantity": 60}] * 2),
            {"rewards": ["At most 100 units per event (sum of quantities), got 120."]},
            id="too-many-units",
        ),
        pytest.param(
            lambda d: d["recipient"].update(email="not-an-email"),
            {"recipient": {"email": ["Not a valid email address."]}},
            id="bad-email",
        ),
        pytest.param(
            lambda d: d["recipient"].update(email=LONGEST_EMAIL + "d"),
            {"recipient": {"email": ["Longer than maximum length 254."]}},
            id="email-255",
        ),
        pytest.param(
            lambda d: d["recipient"].update(email="a" * 200_000 + "@example.com"),
            {"recipient": {"email": ["Longer than maximum length 254."]}},
            id="email-200k",
        ),
        pytest.param(
            lambda d: d.pop("reference"),
            {"reference": ["Missing data for required field."]},
            id="missing-reference",
        ),
    ],
)
def test_reward_granted_reports_field_errors_under_data(internal_event, change, errors):
    # given a reward.granted broken in one way
    event = internal_event("evt_1")
    change(event["data"])
    # when / then
    with pytest.raises(ValidationError) as caught:
        load_event("internal", event)
    assert caught.value.messages == {"data": errors}


def test_unknown_coniq_type_is_refused_but_known_families_are_free_form(coniq_event):
    # given
    known = coniq_event("evt_1", type="customer.updated", data={"anything": [1, 2]})
    unknown = coniq_event("evt_2", type="reward.revoked", data={})
    # when / then
    assert load_event("coniq", known).data == {"anything": [1, 2]}
    with pytest.raises(ValidationError) as caught:
        load_event("coniq", unknown)
    assert caught.value.messages == {"type": ["Unknown Coniq event type 'reward.revoked'."]}


def test_units_expand_quantities_per_line(internal_event):
    # given two lines, quantities 2 and 1
    event = load_event("internal", internal_event("evt_1"))
    # when
    units = units_for("internal", event, Rules())
    # then
    assert units == [
        UnitSpec(0, 0, {"reward_code": "GIFT10"}),
        UnitSpec(0, 1, {"reward_code": "GIFT10"}),
        UnitSpec(1, 0, {"provider": "rewardops", "product": "12/tok-gift-25"}),
    ]


def test_other_types_get_a_unit_only_when_a_rule_wants_them(coniq_event):
    # given a points.updated event and rules with and without a route for it
    event = load_event(
        "coniq",
        coniq_event("evt_1", type="points.updated", data={"tier": "gold", "points": 10, "x": {}}),
    )
    route = Route("ifeelgoods", "r", promotion_id=1, sku="S")
    wanting = Rules((Rule("r", "coniq", "points.updated", {"tier": "gold"}, route),))
    # when / then
    assert units_for("coniq", event, Rules()) == []
    assert units_for("coniq", event, wanting) == [UnitSpec(0, 0, {"points": "10", "tier": "gold"})]


def test_scalar_fields_render_like_routing_rules_compare():
    # given / when / then
    assert scalar_fields({"b": True, "i": 3, "f": 1.5, "n": None, "l": [1]}) == {
        "b": "true",
        "f": "1.5",
        "i": "3",
    }


def test_fingerprint_ignores_key_order_and_whitespace():
    # given two spellings of one document
    one = {"id": "e", "data": {"a": 1, "b": [1, 2]}}
    two = {"data": {"b": [1, 2], "a": 1}, "id": "e"}
    # when / then
    assert fingerprint(canonical_json(one)) == fingerprint(canonical_json(two))
    assert fingerprint(canonical_json(one)) != fingerprint(canonical_json({"id": "f"}))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)


def _mutations(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid event with one random path replaced by random JSON (deeper than pure noise)."""

    def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix]
        if isinstance(node, dict):
            for key, value in node.items():
                found += paths(value, (*prefix, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                found += paths(value, (*prefix, index))
        return found

    def replace(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
        event = copy.deepcopy(base)
        if not path:
            return value
        node: Any = event
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
        return event

    return st.builds(replace, st.sampled_from(paths(base)), _json)


@settings(max_examples=300, deadline=None)
@given(source=st.sampled_from(["coniq", "internal"]), document=_json)
def test_load_event_raises_only_validation_error_for_random_json(source, document):
    # given any JSON value
    # when
    try:
        load_event(source, document)
    # then it either loads or fails with field messages
    except ValidationError as exc:
        assert isinstance(exc.messages, dict)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_load_event_raises_only_validation_error_for_mutated_events(
    data, coniq_event, internal_event
):
    # given a valid event with one part replaced by random JSON
    source = data.draw(st.sampled_from(["coniq", "internal"]))
    base = coniq_event("evt_1") if source == "coniq" else internal_event("evt_1")
    document = data.draw(_mutations(base))
    # when
    try:
        event = load_event(source, document)
    except ValidationError as exc:
        assert isinstance(exc.messages, dict)
    else:
        # then whatever loads yields units and a fingerprint without error
        units_for(source, event, Rules())
        fingerprint(canonical_json(document))
