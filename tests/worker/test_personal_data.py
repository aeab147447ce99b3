"""Personal data: who an event is about, the keyed hash that names them, and redaction."""

from __future__ import annotations

from dataclasses import replace

import pytest

from worker.config import Settings, SettingsError
from worker.stores.personal_data import (
    ERASED,
    SubjectHasher,
    SubjectKind,
    hasher_for,
    redact_body,
    redact_match,
    scrub_text,
    subjects_of,
)

HASHER = SubjectHasher(b"k" * 32)
EMAIL = SubjectKind.EMAIL


def test_an_email_is_named_the_same_whatever_its_case_and_blanks():
    # when / then
    digest = HASHER.digest(SubjectKind.EMAIL, "Ada@Example.COM ")
    assert digest == HASHER.digest(SubjectKind.EMAIL, "ada@example.com")
    assert len(digest) == 32 and "ada" not in digest
    # and a customer id with the same text is another subject
    assert digest != HASHER.digest(SubjectKind.CUSTOMER_ID, "ada@example.com")


def test_the_key_comes_from_erasure_key_else_from_the_admin_token():
    base = replace(Settings(), admin_token="a" * 20)
    # when
    derived = hasher_for(base).digest(SubjectKind.EMAIL, "a@b.c")
    keyed = hasher_for(replace(base, erasure_key="e" * 32)).digest(SubjectKind.EMAIL, "a@b.c")
    other = hasher_for(replace(base, admin_token="b" * 20)).digest(SubjectKind.EMAIL, "a@b.c")
    # then each key names the subject differently
    assert len({derived, keyed, other}) == 3
    with pytest.raises(SettingsError, match="ERASURE_KEY"):
        hasher_for(Settings())


@pytest.mark.parametrize(
    ("source", "event_type", "data", "expected"),
    [
        (
            "coniq",
            "reward.issued",
            {"customer": {"id": 4711, "email": "a@b.c"}, "reward": {"id": "r"}},
            {(SubjectKind.EMAIL, "a@b.c"), (SubjectKind.CUSTOMER_ID, "4711")},
        ),
        ("coniq", "customer.updated", {"id": "cus_1"}, {(SubjectKind.CUSTOMER_ID, "cus_1")}),
        ("coniq", "points.updated", {"customer_id": 9}, {(SubjectKind.CUSTOMER_ID, "9")}),
        ("internal", "reward.granted", {"recipient": {"email": "x@y.z"}}, {(EMAIL, "x@y.z")}),
        ("internal", "crm.note", {"deep": [{"email": "d@e.f"}], "id": "n"}, {(EMAIL, "d@e.f")}),
        ("internal", "crm.note", {"customer": {"id": "c"}}, set()),  # Coniq ids only
        ("coniq", "customer.created", {"id": True, "email": ""}, set()),
    ],
)  # fmt: skip
def test_subjects_are_every_email_and_coniqs_customer_ids(source, event_type, data, expected):
    assert set(subjects_of(source, event_type, {"data": data})) == expected


def test_a_redacted_body_keeps_the_envelope_and_reward_lines_only():
    # given
    body = {
        "id": "evt_1",
        "type": "reward.granted",
        "created_at": "2026-11-23T10:00:00Z",
        "account_id": "acme",
        "data": {
            "recipient": {"email": "a@b.c", "first_name": "Ada", "address": {"city": "London"}},
            "rewards": [{"reward_code": "GIFT10", "quantity": 1, "note": "for Ada"}],
            "reference": "sent to A@B.C",
            "extra": "anything",
        },
    }
    # when
    redacted = redact_body(body, ["a@b.c"])
    # then
    assert redacted == {
        "id": "evt_1",
        "type": "reward.granted",
        "created_at": "2026-11-23T10:00:00Z",
        "account_id": "acme",
        "data": {
            "rewards": [{"reward_code": "GIFT10", "quantity": 1}],
            "reference": ERASED,
            "erased": True,
        },
    }


def test_a_unit_match_keeps_routing_keys_only():
    match = {"offer_id": "1001", "email": "a@b.c", "first_name": "Ada", "reward_code": "G"}
    assert redact_match(match) == {"offer_id": "1001", "reward_code": "G"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nothing here", None),
        ("mail A@B.C bounced", f"mail {ERASED} bounced"),
        ('{"reason": "a@b.c", "n": 1}', f'{{"n": 1, "reason": "{ERASED}"}}'),
        ("a@b.c and a@b.c", f"{ERASED} and {ERASED}"),
    ],
)
def test_scrub_text_replaces_the_address_wherever_it_is(text, expected):
    assert scrub_text(text, ["a@b.c"]) == expected
