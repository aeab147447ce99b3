"""Reward codes at rest: sealed with Fernet under ``CODE_KEYS`` before they reach Redis.

A reward code, a PIN or a redemption link is a bearer value: whoever reads it spends it.
The ledger keeps them only as a Fernet token (AES-128-CBC plus HMAC-SHA256, from the
``cryptography`` package), so a Redis dump, a replica, a backup or ``MONITOR`` shows
ciphertext. ``CODE_KEYS`` holds one or more keys: the first seals, every one opens
(``MultiFernet``), so a new key is put first, ``rewardrelay rotate-keys`` re-seals what is
stored, and the old key is removed after. What admins see day to day is the masked form,
stored beside the token in clear, so showing a unit needs no key at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["CodeKeyError", "CodeVault", "SealedCodes", "is_sealed", "mask_code", "new_code_key"]

SEALED_PREFIX = "fernet:"  # marks a sealed value, so a plain one is never mistaken for it


class CodeKeyError(Exception):
    """No key of ``CODE_KEYS`` opens a stored token (or there are no keys to seal with)."""


def is_sealed(value: str) -> bool:
    """A sealed token, as opposed to codes a release before sealing stored in clear."""
    return value.startswith(SEALED_PREFIX)


def new_code_key() -> str:
    """A fresh Fernet key, as ``CODE_KEYS`` takes it."""
    return Fernet.generate_key().decode()


def mask_code(code: str) -> str:
    """Only the last four characters of a code (nothing of one of six or fewer)."""
    return "****" + code[-4:] if len(code) > 6 else "****"


@dataclass(frozen=True)
class SealedCodes:
    """What a fulfilled unit was given: codes (numbers, PINs) and links, in clear."""

    codes: tuple[str, ...] = field(default=(), repr=False)
    links: tuple[str, ...] = field(default=(), repr=False)

    @property
    def masked(self) -> list[str]:
        return [mask_code(code) for code in self.codes]


class CodeVault:
    """Seals and opens reward codes under ``CODE_KEYS`` (first seals, all open)."""

    def __init__(self, keys: Sequence[str]) -> None:
        fernets = [Fernet(key.encode()) for key in keys]
        self._first = fernets[0] if fernets else None
        self._fernet = MultiFernet(fernets) if fernets else None

    def _keys(self) -> MultiFernet:
        if self._fernet is None:
            raise CodeKeyError("CODE_KEYS is not set: reward codes cannot be sealed or opened")
        return self._fernet

    def seal(self, codes: SealedCodes) -> str:
        """One token for a unit's codes and links."""
        plain = json.dumps({"codes": list(codes.codes), "links": list(codes.links)})
        return SEALED_PREFIX + self._keys().encrypt(plain.encode()).decode()

    def open(self, token: str) -> SealedCodes:
        """The codes inside ``token``.

        Raises:
            CodeKeyError: no key opens it (it was sealed under a key no longer listed), or
                it is not a token at all.
        """
        data = json.loads(self._decrypt(token))
        return SealedCodes(tuple(data["codes"]), tuple(data["links"]))

    def reseal(self, token: str) -> str:
        """``token`` re-sealed under the first key (the same token if it already is)."""
        keys = self._keys()
        raw = self._strip(token).encode()
        try:
            if self._first is not None and _opens(self._first, raw):
                return token
            return SEALED_PREFIX + keys.rotate(raw).decode()
        except InvalidToken:
            raise CodeKeyError("none of CODE_KEYS opens this unit's codes") from None

    def _decrypt(self, token: str) -> bytes:
        keys = self._keys()
        try:
            return keys.decrypt(self._strip(token).encode())
        except InvalidToken:
            raise CodeKeyError("none of CODE_KEYS opens this unit's codes") from None

    @staticmethod
    def _strip(token: str) -> str:
        if not token.startswith(SEALED_PREFIX):
            raise CodeKeyError("the stored codes are not a sealed token")
        return token[len(SEALED_PREFIX) :]


def _opens(key: Fernet, raw: bytes) -> bool:
    try:
        key.decrypt(raw)
    except InvalidToken:
        return False
    return True
