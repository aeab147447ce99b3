"""The Standard Webhooks v1 verifier, as a pure function (no HTTP)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from worker.signing import SignatureError, decode_secret, sign, signed_headers, verify

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_PAYLOAD = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()
TOLERANCE = 300


def spec_headers(**changes: str) -> dict[str, str]:
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    headers.update(changes)
    return headers


def verify_spec(headers: dict[str, str], secrets=(SPEC_SECRET,), now=SPEC_TIMESTAMP, raw=None):
    body = SPEC_PAYLOAD if raw is None else raw
    return verify(body, headers, secrets, tolerance=TOLERANCE, now=now)


def test_sign_reproduces_the_standard_webhooks_vector():
    # given the shared test vector of the Standard Webhooks specification
    # when we sign its payload
    signature = sign(SPEC_PAYLOAD, SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP)
    # then we get the published signature
    assert signature == SPEC_SIGNATURE


def test_verify_accepts_the_standard_webhooks_vector():
    # given the vector's headers, verified at the vector's own time
    # when
    meta = verify_spec(spec_headers())
    # then
    assert (meta.id, meta.timestamp) == (SPEC_ID, SPEC_TIMESTAMP)


def test_verify_accepts_a_request_signed_by_the_reference_library():
    # given a body signed by the standardwebhooks package
    now = datetime.now(tz=UTC)
    raw = '{"id": "evt_1", "type": "reward.issued"}'
    signature = Webhook(SPEC_SECRET).sign("evt_1", now, raw)
    headers = {
        "Webhook-Id": "evt_1",  # header names in any case
        "Webhook-Timestamp": str(int(now.timestamp())),
        "Webhook-Signature": signature,
    }
    # when
    meta = verify(raw.encode(), headers, (SPEC_SECRET,), tolerance=TOLERANCE)
    # then
    assert meta.id == "evt_1"


def test_signed_headers_are_accepted_by_the_reference_library():
    # given headers made by our helper
    raw = b'{"hello": "world"}'
    headers = signed_headers(raw, SPEC_SECRET, "msg_ours")
    # when the reference implementation verifies them
    result = Webhook(SPEC_SECRET).verify(raw, headers)
    # then
    assert result == {"hello": "world"}
    assert headers["content-type"] == "application/json"


def test_verify_ignores_other_versions_and_accepts_any_matching_entry():
    # given a header listing a future version, a wrong v1 and the right v1
    header = f"v1a,AAAA v1,{base64.b64encode(b'x' * 32).decode()} {SPEC_SIGNATURE}"
    # when / then
    assert verify_spec(spec_headers(**{"webhook-signature": header})).id == SPEC_ID


def test_verify_accepts_either_of_two_rotating_secrets():
    # given the old and the new secret both active
    secrets = (OTHER_SECRET, SPEC_SECRET)
    signed_by_other = sign(SPEC_PAYLOAD, OTHER_SECRET, SPEC_ID, SPEC_TIMESTAMP)
    # when / then both signatures pass
    assert verify_spec(spec_headers(), secrets=secrets).id == SPEC_ID
    assert verify_spec(spec_headers(**{"webhook-signature": signed_by_other}), secrets=secrets)


@pytest.mark.parametrize(
    ("headers", "now", "problem_type"),
    [
        pytest.param(
            spec_headers(), SPEC_TIMESTAMP + TOLERANCE + 1, "timestamp-out-of-tolerance", id="stale"
        ),
        pytest.param(
            spec_headers(),
            SPEC_TIMESTAMP - TOLERANCE - 1,
            "timestamp-out-of-tolerance",
            id="future",
        ),
        pytest.param(
            spec_headers(**{"webhook-timestamp": "16142653xx"}),
            SPEC_TIMESTAMP,
            "timestamp-invalid",
            id="non-numeric-timestamp",
        ),
        pytest.param(
            spec_headers(**{"webhook-timestamp": "-1614265330"}),
            SPEC_TIMESTAMP,
            "timestamp-invalid",
            id="negative-timestamp",
        ),
        pytest.param(
            spec_headers(**{"webhook-signature": SPEC_SIGNATURE[:-6]}),
            SPEC_TIMESTAMP,
            "signature-invalid",
            id="truncated-signature",
        ),
        pytest.param(
            spec_headers(**{"webhook-signature": "v2,abc"}),
            SPEC_TIMESTAMP,
            "signature-invalid",
            id="no-v1-entry",
        ),
        pytest.param(
            spec_headers(**{"webhook-signature": ""}),
            SPEC_TIMESTAMP,
            "signature-missing",
            id="empty-signature",
        ),
        pytest.param(
            {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TIMESTAMP)},
            SPEC_TIMESTAMP,
            "signature-missing",
            id="missing-signature",
        ),
        pytest.param(
            spec_headers(**{"webhook-id": "msg with spaces"}),
            SPEC_TIMESTAMP,
            "webhook-id-invalid",
            id="bad-id",
        ),
    ],
)
def test_verify_refuses(headers, now, problem_type):
    # given the vector broken in one way
    # when / then
    with pytest.raises(SignatureError) as caught:
        verify_spec(headers, now=now)
    assert caught.value.problem_type == problem_type


def test_verify_refuses_a_signature_made_with_a_secret_no_longer_active():
    # given the signing secret was rotated out and only the new one is active
    # when / then
    with pytest.raises(SignatureError) as caught:
        verify_spec(spec_headers(), secrets=(OTHER_SECRET,))
    assert caught.value.problem_type == "signature-invalid"


def test_verify_refuses_a_tampered_body():
    # given the vector's headers over a changed body
    # when / then
    with pytest.raises(SignatureError, match="No signature matches"):
        verify_spec(spec_headers(), raw=b'{"test": 2432232315}')


def test_verify_fails_fast_without_secrets():
    # given no configured secret: a configuration error, not the sender's
    # when / then
    with pytest.raises(ValueError, match="no webhook secrets"):
        verify_spec(spec_headers(), secrets=())


def test_decode_secret_accepts_unpadded_base64_like_the_reference_library():
    # given a secret whose padding was dropped
    key = b"0123456789abcdefghij0"  # 21 bytes: base64 needs one '='
    padded = base64.b64encode(key).decode()
    # when / then
    assert decode_secret("whsec_" + padded.rstrip("=")) == key
    with pytest.raises(ValueError, match="base64"):
        decode_secret("whsec_abcde")


_header_text = st.one_of(
    st.text(max_size=60),
    st.from_regex(r"v1,[A-Za-z0-9+/=]{0,50}( v1,[A-Za-z0-9+/=]{0,50})?", fullmatch=True),
    st.integers(min_value=-(10**13), max_value=10**13).map(str),
)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.binary(max_size=200),
    headers=st.dictionaries(
        st.sampled_from(
            ["webhook-id", "webhook-timestamp", "webhook-signature", "Webhook-Id", "x"]
        ),
        _header_text,
    ),
    now=st.floats(min_value=0, max_value=4e9),
)
def test_verify_raises_only_signature_error_for_arbitrary_input(raw, headers, now):
    # given arbitrary bytes and headers
    # when
    try:
        verify(raw, headers, (SPEC_SECRET, OTHER_SECRET), tolerance=TOLERANCE, now=now)
    # then the only possible failure is a SignatureError with a known slug
    except SignatureError as exc:
        assert exc.problem_type in {
            "signature-missing",
            "signature-invalid",
            "webhook-id-invalid",
            "timestamp-invalid",
            "timestamp-out-of-tolerance",
        }
