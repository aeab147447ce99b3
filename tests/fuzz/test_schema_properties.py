"""Properties of the payload schemas (``webhooks.schemas.load_event``), no HTTP.

tests/webhooks/test_schemas.py already throws random JSON and one fixed event with one
replaced node at ``load_event``. Here the valid side is generated too: every valid Coniq
``reward.issued`` and internal ``reward.granted`` (and recorded-only Coniq types) loads
into the right typed data, and mutations of *generated* events (replace, delete, add, with
lone surrogates and big numbers) only ever fail with a ``ValidationError``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from marshmallow import ValidationError

from tasks.routing import Rules
from tests.fuzz.conftest import budget
from tests.fuzz.strategies import (
    coniq_other,
    coniq_reward_issued,
    internal_reward_granted,
    json_values,
    mutated,
    valid_events,
)
from webhooks.schemas import RewardGranted, RewardIssued, load_event
from webhooks.units import canonical_json, fingerprint, units_for


def through_json(document: Any) -> Any:
    """What the edge hands to load_event: the document after a JSON round trip."""
    return json.loads(json.dumps(document))


def messages_are_json(messages: Any) -> None:
    """Field errors must serialise into the problem body (keys may be list indexes)."""
    json.dumps(messages, default=str)


@budget(8)
@given(event=coniq_reward_issued())
def test_any_valid_coniq_reward_issued_loads_into_typed_data(event):
    # given a valid Coniq reward.issued (optional parts present or not, unknown fields)
    document = through_json(event)
    # when
    loaded = load_event("coniq", document)
    # then the envelope is kept and data is typed, ids as strings
    assert (loaded.id, loaded.type, loaded.account_id) == (
        event["id"],
        "reward.issued",
        event["account_id"],
    )
    assert isinstance(loaded.created_at, datetime)
    assert isinstance(loaded.data, RewardIssued)
    reward = event["data"]["reward"]
    assert loaded.data.reward.offer_id == str(reward["offer_id"])
    assert loaded.data.reward.id == str(reward["id"])
    # and it expands to exactly one unit, even without any rule
    assert len(units_for("coniq", loaded, Rules())) == 1


@budget(8)
@given(event=internal_reward_granted())
def test_any_valid_internal_reward_granted_loads_with_one_unit_per_quantity(event):
    # given a valid internal reward.granted (1..6 lines, quantities summing to <= 100)
    document = through_json(event)
    # when
    loaded = load_event("internal", document)
    # then each line is typed, with quantity 1 when it was left out
    assert isinstance(loaded.data, RewardGranted)
    lines = event["data"]["rewards"]
    assert [line.quantity for line in loaded.data.rewards] == [
        line.get("quantity", 1) for line in lines
    ]
    assert [line.match() for line in loaded.data.rewards] == [
        {key: line[key] for key in ("reward_code", "provider", "product") if key in line}
        for line in lines
    ]
    # and it expands to one unit per quantity, keyed {line}:{index}
    units = units_for("internal", loaded, Rules())
    assert len(units) == sum(line.get("quantity", 1) for line in lines)
    assert len({(unit.line, unit.index) for unit in units}) == len(units)


@budget(4)
@given(event=coniq_other())
def test_any_recorded_only_coniq_type_loads_with_its_data_as_given(event):
    # given a Coniq type that is recorded, not fulfilled, with any object as data
    document = through_json(event)
    # when
    loaded = load_event("coniq", document)
    # then data is kept as the (free-form) object it was
    assert loaded.data == document["data"]


@budget(12)
@given(source=st.sampled_from(["coniq", "internal"]), document=json_values)
def test_arbitrary_json_only_ever_raises_validation_error(source, document):
    # given any JSON value (lone surrogates, big numbers, nesting)
    # when
    try:
        load_event(source, through_json(document))
    # then it fails with field messages that serialise, and with nothing else
    except ValidationError as exc:
        assert isinstance(exc.messages, dict)
        messages_are_json(exc.messages)


@budget(8)
@given(data=st.data())
def test_mutated_valid_events_only_ever_raise_validation_error(data):
    # given a generated valid event with one node replaced, deleted or added anywhere
    source, event = data.draw(valid_events(), label="event")
    document = through_json(data.draw(mutated(event), label="mutated"))
    # when
    try:
        loaded = load_event(source, document)
    except ValidationError as exc:
        # then it fails with serialisable field messages...
        assert isinstance(exc.messages, dict)
        messages_are_json(exc.messages)
    else:
        # ...or it is still valid, and everything the edge does next works on it
        units_for(source, loaded, Rules())
        fingerprint(canonical_json(document))


@budget(4)
@given(source_event=valid_events())
def test_valid_events_of_one_source_are_refused_or_loaded_but_never_crash_the_other(
    source_event,
):
    # given a valid event sent to the other source's endpoint
    source, event = source_event
    other = "internal" if source == "coniq" else "coniq"
    # when / then: reward.granted is an unknown Coniq type; Coniq data is free-form
    # for the internal source unless it is reward.granted
    try:
        load_event(other, through_json(event))
    except ValidationError as exc:
        assert isinstance(exc.messages, dict)
