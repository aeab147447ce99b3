"""Standard Webhooks v1 signing and verifying: stage 2 of the edge, and the sources' signer.

The signed content is ``{webhook-id}.{webhook-timestamp}.{raw body}``; the signature is
HMAC-SHA256 keyed with the base64-decoded part of a ``whsec_`` secret. The
``webhook-signature`` header is a space-separated list of ``v1,<base64>`` entries (other
versions are ignored), and any active secret may match, so secrets can be rotated by
running an old and a new one side by side. The timestamp must lie within the tolerance
both ways, which bounds replays of a captured request.

Everything here is pure (no Flask, no I/O) so it can be property-tested, and it lives in
``worker`` (the bottom layer) so the edge (verify), the source pollers and ``rewardrelay
send`` (sign) share one implementation without an import pointing up.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "SignatureError",
    "WebhookMeta",
    "decode_secret",
    "sign",
    "signed_headers",
    "verify",
    "SECRET_PREFIX",
]

SECRET_PREFIX = "whsec_"
# Longest webhook-id we accept: ids become Redis keys and unit ids.
MAX_ID_CHARS = 200
# Longest webhook-signature header we look at: a handful of signatures, never kilobytes.
MAX_SIGNATURE_HEADER_CHARS = 4096
# Printable ASCII without spaces: ids are echoed back and stored as keys.
_ID = re.compile(r"[\x21-\x7e]{1,200}")  # MAX_ID_CHARS
# Unix seconds: digits only (no sign, no underscores, no non-ASCII digits).
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class SignatureError(Exception):
    """The request is not signed by a current secret; ``problem_type`` is a stable slug.

    Slugs: ``signature-missing``, ``signature-invalid``, ``webhook-id-invalid``,
    ``timestamp-invalid``, ``timestamp-out-of-tolerance``.
    """

    def __init__(self, problem_type: str, detail: str) -> None:
        super().__init__(detail)
        self.problem_type = problem_type
        self.detail = detail


@dataclass(frozen=True)
class WebhookMeta:
    """What a verified request tells us about itself."""

    id: str
    timestamp: int


@functools.lru_cache(maxsize=64)
def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret.

    Raises:
        ValueError: the secret is empty or not valid base64 (a configuration error).
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    if not encoded:
        raise ValueError("empty webhook secret")
    # Like the reference implementation, accept secrets whose base64 padding was dropped.
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(padded, validate=True)
    except binascii.Error as exc:
        raise ValueError("webhook secret is not valid base64") from exc
    if not key:
        raise ValueError("empty webhook secret")
    return key


def _digest(key: bytes, msg_id: str, timestamp: int | str, raw: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + raw
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(raw: bytes, secret: str, msg_id: str, timestamp: int) -> str:
    """The ``v1,<base64>`` signature of ``raw`` for one secret.

    Raises:
        ValueError: the secret is not a ``whsec_<base64>`` secret.
    """
    digest = _digest(decode_secret(secret), msg_id, int(timestamp), raw)
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    raw: bytes, secret: str, msg_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """Headers for a signed JSON request: ``webhook-id``/``-timestamp``/``-signature``.

    ``timestamp`` defaults to now and ``msg_id`` to a fresh ``msg_`` id; the dict also
    carries ``content-type: application/json``.
    """
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(raw, secret, msg_id, ts),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        # Plain dicts are case-sensitive; HTTP header names are not.
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value.strip() if isinstance(value, str) else ""


def _candidate_signatures(header: str) -> list[bytes]:
    found: list[bytes] = []
    for entry in header[:MAX_SIGNATURE_HEADER_CHARS].split():
        version, _, encoded = entry.partition(",")
        if version != "v1" or not encoded:
            continue  # other versions (v1a, ...) are for other verifiers
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            continue
        # Only the canonical text of a digest counts, as in the reference library (1.3+),
        # which compares signature text: an alias with other unused low bits is refused.
        if base64.b64encode(decoded).decode("ascii") == encoded:
            found.append(decoded)
    return found


def verify(
    raw: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    *,
    tolerance: int,
    now: float | None = None,
) -> WebhookMeta:
    """Check that ``raw`` was signed by one of ``secrets`` within ``tolerance`` seconds.

    ``headers`` may be any mapping (Flask's headers, or a dict with any name case).

    Raises:
        SignatureError: a header is missing or malformed, the timestamp is outside the
            tolerance (stale or in the future), or no ``v1`` signature matches any secret.
        ValueError: ``secrets`` is empty or holds an invalid secret (configuration error,
            never caused by the request).
    """
    if not secrets:
        raise ValueError("no webhook secrets configured")
    keys = [decode_secret(secret) for secret in secrets]
    msg_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signature = _header(headers, "webhook-signature")
    missing = [
        name
        for name, value in (
            ("webhook-id", msg_id),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", signature),
        )
        if not value
    ]
    if missing:
        raise SignatureError("signature-missing", f"Missing header(s): {', '.join(missing)}.")
    if not _ID.fullmatch(msg_id):
        raise SignatureError(
            "webhook-id-invalid",
            f"webhook-id must be 1-{MAX_ID_CHARS} printable ASCII characters without spaces.",
        )
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError("timestamp-invalid", "webhook-timestamp must be Unix seconds.")
    sent_at = int(timestamp)
    current = time.time() if now is None else now
    if sent_at < current - tolerance:
        raise SignatureError(
            "timestamp-out-of-tolerance",
            f"webhook-timestamp is more than {tolerance} s in the past.",
        )
    if sent_at > current + tolerance:
        raise SignatureError(
            "timestamp-out-of-tolerance",
            f"webhook-timestamp is more than {tolerance} s in the future.",
        )
    candidates = _candidate_signatures(signature)
    if not candidates:
        raise SignatureError("signature-invalid", "webhook-signature holds no v1 signature.")
    matched = False
    for key in keys:
        expected = _digest(key, msg_id, sent_at, raw)
        for candidate in candidates:
            # Keep comparing after a match: the time taken must not depend on which matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("signature-invalid", "No signature matches an active secret.")
    return WebhookMeta(id=msg_id, timestamp=sent_at)
