"""Properties of the Standard Webhooks verifier (``worker.signing``), pure functions.

tests/webhooks/test_signatures.py pins the spec vector, the reference library and one
example per refusal, plus a garbage-header property over a few header names. Here:
round trips over arbitrary bodies, ids and in-tolerance timestamps; every single-byte
mutation refused; rotation over N secrets; and garbage over any header name, any
character and near-valid headers that reach the HMAC comparison.
"""

from __future__ import annotations

import base64
import time

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.fuzz.conftest import budget
from worker.signing import (
    MAX_ID_CHARS,
    SignatureError,
    decode_secret,
    sign,
    signed_headers,
    verify,
)

TOLERANCE = 300
NOW = 1_800_000_000
SLUGS = {
    "signature-missing",
    "signature-invalid",
    "webhook-id-invalid",
    "timestamp-invalid",
    "timestamp-out-of-tolerance",
}

secrets = st.binary(min_size=1, max_size=64).map(
    lambda key: "whsec_" + base64.b64encode(key).decode()
)
# Any webhook-id the verifier accepts: printable ASCII without spaces, up to the limit.
msg_ids = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=MAX_ID_CHARS
)
bodies = st.binary(max_size=2048)
skews = st.integers(min_value=-TOLERANCE, max_value=TOLERANCE)
any_char = st.characters(exclude_categories=())


def headers_for(raw: bytes, secret: str, msg_id: str, timestamp: int) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(raw, secret, msg_id, timestamp),
    }


def check(raw: bytes, headers: dict[str, str], keys: tuple[str, ...]) -> None:
    verify(raw, headers, keys, tolerance=TOLERANCE, now=NOW)


def replace_char(text: str, index: int, char: str) -> str:
    return text[:index] + char + text[index + 1 :]


# --- round trip ------------------------------------------------------------------------


@budget(8)
@given(raw=bodies, secret=secrets, msg_id=msg_ids, skew=skews)
def test_signed_request_verifies_for_any_body_id_and_timestamp_within_tolerance(
    raw, secret, msg_id, skew
):
    # given a request signed at a time up to the tolerance before or after "now"
    headers = signed_headers(raw, secret, msg_id=msg_id, timestamp=NOW + skew)
    # when it is verified with the signing secret
    meta = verify(raw, headers, (secret,), tolerance=TOLERANCE, now=NOW)
    # then it passes and reports the id and timestamp it was signed with
    assert (meta.id, meta.timestamp) == (msg_id, NOW + skew)


@budget(4)
@given(raw=bodies, secret=secrets, msg_id=msg_ids, beyond=st.integers(1, 10**6), past=st.booleans())
def test_signed_request_is_refused_just_outside_the_tolerance(raw, secret, msg_id, beyond, past):
    # given a correctly signed request from further away in time than the tolerance
    timestamp = NOW - TOLERANCE - beyond if past else NOW + TOLERANCE + beyond
    headers = headers_for(raw, secret, msg_id, timestamp)
    # when / then
    with pytest.raises(SignatureError) as caught:
        check(raw, headers, (secret,))
    assert caught.value.problem_type == "timestamp-out-of-tolerance"


# --- single-byte mutations -------------------------------------------------------------


@budget(8)
@given(
    raw=bodies.filter(bool),
    secret=secrets,
    msg_id=msg_ids,
    skew=skews,
    data=st.data(),
)
def test_any_single_byte_change_to_the_body_is_refused(raw, secret, msg_id, skew, data):
    # given a correctly signed request
    headers = headers_for(raw, secret, msg_id, NOW + skew)
    # when one byte of the body is changed to any other value
    index = data.draw(st.integers(0, len(raw) - 1), label="index")
    flip = data.draw(st.integers(1, 255), label="xor")
    tampered = raw[:index] + bytes([raw[index] ^ flip]) + raw[index + 1 :]
    # then the signature no longer matches
    with pytest.raises(SignatureError) as caught:
        check(tampered, headers, (secret,))
    assert caught.value.problem_type == "signature-invalid"


@budget(8)
@given(raw=bodies, secret=secrets, msg_id=msg_ids, skew=skews, data=st.data())
def test_any_single_character_change_to_the_id_is_refused(raw, secret, msg_id, skew, data):
    # given a correctly signed request
    headers = headers_for(raw, secret, msg_id, NOW + skew)
    # when one character of webhook-id is replaced by any other character
    index = data.draw(st.integers(0, len(msg_id) - 1), label="index")
    char = data.draw(any_char.filter(lambda c: c != msg_id[index]), label="char")
    headers["webhook-id"] = replace_char(msg_id, index, char)
    # then it is refused, as a bad signature or (for an unusable id) a bad id; a lone
    # character changed into whitespace is stripped away and the id counts as missing
    with pytest.raises(SignatureError) as caught:
        check(raw, headers, (secret,))
    assert caught.value.problem_type in {
        "signature-invalid",
        "webhook-id-invalid",
        "signature-missing",
    }


@budget(8)
@given(raw=bodies, secret=secrets, msg_id=msg_ids, skew=skews, data=st.data())
def test_any_single_character_change_to_the_timestamp_is_refused(raw, secret, msg_id, skew, data):
    # given a correctly signed request
    timestamp = str(NOW + skew)
    headers = headers_for(raw, secret, msg_id, NOW + skew)
    # when one character of webhook-timestamp is replaced by any other character
    index = data.draw(st.integers(0, len(timestamp) - 1), label="index")
    char = data.draw(any_char.filter(lambda c: c != timestamp[index]), label="char")
    headers["webhook-timestamp"] = replace_char(timestamp, index, char)
    # then it is refused: not a timestamp, out of tolerance, or not what was signed
    with pytest.raises(SignatureError) as caught:
        check(raw, headers, (secret,))
    assert caught.value.problem_type in {
        "signature-invalid",
        "timestamp-invalid",
        "timestamp-out-of-tolerance",
    }


@budget(8)
@given(raw=bodies, secret=secrets, msg_id=msg_ids, skew=skews, data=st.data())
def test_any_single_byte_change_to_the_hmac_is_refused(raw, secret, msg_id, skew, data):
    # given a correctly signed request
    headers = headers_for(raw, secret, msg_id, NOW + skew)
    digest = base64.b64decode(headers["webhook-signature"].removeprefix("v1,"))
    # when one byte of the HMAC is changed to any other value (and re-encoded)
    index = data.draw(st.integers(0, len(digest) - 1), label="index")
    flip = data.draw(st.integers(1, 255), label="xor")
    forged = digest[:index] + bytes([digest[index] ^ flip]) + digest[index + 1 :]
    headers["webhook-signature"] = "v1," + base64.b64encode(forged).decode()
    # then it is refused
    with pytest.raises(SignatureError) as caught:
        check(raw, headers, (secret,))
    assert caught.value.problem_type == "signature-invalid"


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


def _decodes_to(entry: str) -> bytes | None:
    version, _, encoded = entry.partition(",")
    try:
        return base64.b64decode(encoded, validate=True) if version == "v1" else None
    except ValueError:
        return None


@budget(8)
@given(raw=bodies, secret=secrets, msg_id=msg_ids, skew=skews, data=st.data())
def test_any_single_character_change_to_the_signature_header_is_refused_unless_same_hmac(
    raw, secret, msg_id, skew, data
):
    # given a correctly signed request
    headers = headers_for(raw, secret, msg_id, NOW + skew)
    signature = headers["webhook-signature"]
    # when one character of the header text (version, comma or base64) is replaced,
    # mostly by another base64 character so the result still decodes
    index = data.draw(st.integers(0, len(signature) - 1), label="index")
    char = data.draw(
        (st.sampled_from(_B64) | any_char).filter(lambda c: c != signature[index]), label="char"
    )
    changed = replace_char(signature, index, char)
    headers["webhook-signature"] = changed
    # then it is refused, except when the text still decodes to the very same HMAC: base64
    # ignores the unused low bits of the last character (the reference implementation
    # compares decoded bytes too), so those spellings carry the same, valid signature
    if _decodes_to(changed) == _decodes_to(signature):
        check(raw, headers, (secret,))
        return
    with pytest.raises(SignatureError) as caught:
        check(raw, headers, (secret,))
    assert caught.value.problem_type in {"signature-invalid", "signature-missing"}


def test_signature_with_other_unused_low_bits_is_refused_like_the_reference_library():
    # given a signature whose last base64 character carries two unused (zero) bits
    raw, secret, now = (
        b'{"id": "msg_1"}',
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        int(time.time()),
    )
    signature = sign(raw, secret, "msg_1", now)
    last = _B64.index(signature[-2])
    for bits in (1, 2, 3):
        # when those bits are set in the header text (it decodes to the same HMAC)
        alias = signature[:-2] + _B64[last ^ bits] + "="
        headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": alias}
        # then neither ours nor the reference implementation (which compares the text)
        # accepts it, and the canonical text still verifies
        with pytest.raises(SignatureError):
            verify(raw, headers, (secret,), tolerance=TOLERANCE)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(raw, headers)
    canonical = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": signature,
    }
    assert verify(raw, canonical, (secret,), tolerance=TOLERANCE).id == "msg_1"


# --- rotation --------------------------------------------------------------------------


@budget(8)
@given(
    raw=bodies,
    active=st.lists(secrets, min_size=1, max_size=6, unique=True),
    msg_id=msg_ids,
    skew=skews,
    data=st.data(),
)
def test_a_signature_by_any_of_the_active_secrets_verifies(raw, active, msg_id, skew, data):
    # given N active secrets (a rotation in progress) and a request signed by one of them
    signer = data.draw(st.sampled_from(active), label="signer")
    headers = headers_for(raw, signer, msg_id, NOW + skew)
    # when it is verified against all N, in any order
    order = data.draw(st.permutations(active), label="order")
    meta = verify(raw, headers, tuple(order), tolerance=TOLERANCE, now=NOW)
    # then it passes
    assert meta.id == msg_id


@budget(8)
@given(
    raw=bodies,
    active=st.lists(secrets, min_size=1, max_size=6, unique=True),
    retired=secrets,
    msg_id=msg_ids,
    skew=skews,
)
def test_a_signature_by_a_secret_not_active_is_refused(raw, active, retired, msg_id, skew):
    # given N active secrets and a request signed by a secret with another key
    assume(all(decode_secret(retired) != decode_secret(secret) for secret in active))
    headers = headers_for(raw, retired, msg_id, NOW + skew)
    # when / then
    with pytest.raises(SignatureError) as caught:
        check(raw, headers, tuple(active))
    assert caught.value.problem_type == "signature-invalid"


@budget(8)
@given(
    raw=bodies,
    signers=st.lists(secrets, min_size=1, max_size=4, unique=True),
    noise=st.lists(st.text(any_char, max_size=60), max_size=4),
    msg_id=msg_ids,
    skew=skews,
    data=st.data(),
)
def test_a_header_listing_several_signatures_passes_when_one_is_by_an_active_secret(
    raw, signers, noise, msg_id, skew, data
):
    # given a webhook-signature listing one signature per sender secret among noise
    entries = [sign(raw, signer, msg_id, NOW + skew) for signer in signers]
    entries += [entry for entry in noise if entry.strip() and " " not in entry]
    entries = data.draw(st.permutations(entries), label="order")
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(NOW + skew),
        "webhook-signature": " ".join(entries),
    }
    # when only one of the senders' secrets is still active
    active = data.draw(st.sampled_from(signers), label="active")
    # then the request verifies
    assert verify(raw, headers, (active,), tolerance=TOLERANCE, now=NOW).id == msg_id


# --- garbage ---------------------------------------------------------------------------

_near_valid_signature = st.lists(
    st.one_of(
        st.text(any_char, max_size=60),
        st.builds("v1,{}".format, st.text(any_char, max_size=60)),
        st.builds(lambda key: "v1," + base64.b64encode(key).decode(), st.binary(max_size=48)),
        st.builds(lambda key: "v1," + base64.b64encode(key).decode().rstrip("="), st.binary()),
        st.sampled_from(["v1,", "v1", ",", "v2,AAAA", "v1a,AAAA", "v1,====", "\u00a0"]),
    ),
    max_size=5,
).map(" ".join)
_header_values = st.one_of(
    st.text(any_char, max_size=80),
    st.text(any_char, min_size=4000, max_size=5000),
    st.integers(NOW - 2 * TOLERANCE, NOW + 2 * TOLERANCE).map(str),
    # digits other scripts call digits: int() accepts them, the verifier must not
    st.text(st.characters(categories=["Nd"]), min_size=1, max_size=12),
    msg_ids,
    _near_valid_signature,
)
_header_names = st.one_of(
    st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature"]).flatmap(
        lambda name: st.sampled_from([name, name.upper(), name.title(), f" {name}"])
    ),
    st.text(any_char, max_size=20),
)


@budget(20)
@given(
    raw=bodies,
    headers=st.dictionaries(_header_names, _header_values, max_size=6),
    active=st.lists(secrets, min_size=1, max_size=3),
    now=st.floats(min_value=0, max_value=1e12, allow_nan=False),
)
def test_arbitrary_headers_only_ever_raise_signature_error(raw, headers, active, now):
    # given arbitrary header names and values, garbage and near-valid alike
    # when
    try:
        meta = verify(raw, headers, tuple(active), tolerance=TOLERANCE, now=now)
    # then the only failure is a SignatureError with a known slug and a detail
    except SignatureError as exc:
        assert exc.problem_type in SLUGS
        assert exc.detail
    else:
        # and garbage never verifies: a pass would need an HMAC under an active secret
        pytest.fail(f"garbage headers verified as {meta!r}")


@budget(8)
@given(
    raw=bodies,
    secret=secrets,
    msg_id=msg_ids,
    skew=skews,
    timestamp=st.text(st.characters(categories=["Nd"]), min_size=1, max_size=12).filter(
        lambda text: not text.isascii()
    ),
)
def test_timestamp_in_non_ascii_digits_is_refused_as_invalid(raw, secret, msg_id, skew, timestamp):
    # given a correctly signed request whose timestamp is spelled in other-script digits
    headers = headers_for(raw, secret, msg_id, NOW + skew)
    headers["webhook-timestamp"] = timestamp
    # when / then
    with pytest.raises(SignatureError) as caught:
        check(raw, headers, (secret,))
    assert caught.value.problem_type == "timestamp-invalid"
