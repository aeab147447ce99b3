"""RewardCode and Secret never print their values; provider messages lose what they quote."""

from __future__ import annotations

import pickle

import pytest

from tasks.http.redaction import MAX_MESSAGE_LENGTH, RewardCode, Secret, redact_message


def test_reward_code_repr_and_str_show_only_last_four() -> None:
    # given
    code = RewardCode("ABCD1234EFGH5678", label="PIN")
    # when
    texts = [repr(code), str(code), f"{code}", f"{code!s} {code!r}"]
    # then
    assert repr(code) == "RewardCode('****5678')"
    assert all("ABCD1234EFGH" not in text for text in texts)
    assert code.reveal() == "ABCD1234EFGH5678"


@pytest.mark.parametrize("value", ["1234567", "ab"])
def test_short_codes_are_masked_entirely(value: str) -> None:
    # given / when / then
    assert repr(RewardCode(value)) == "RewardCode('****')"


def test_containers_of_codes_stay_masked() -> None:
    # given
    codes = (RewardCode("SECRETCODE0001"), RewardCode("SECRETCODE0002"))
    # when
    text = repr({"codes": codes})
    # then
    assert "SECRETCODE" not in text


def test_codes_compare_by_value_and_pickle() -> None:
    # given / when
    clone = pickle.loads(pickle.dumps(RewardCode("XYZXYZXYZ", "Gift")))
    # then
    assert clone == RewardCode("XYZXYZXYZ", "Gift") and clone != RewardCode("XYZXYZXYZ")


def test_secret_is_fully_masked() -> None:
    # given
    secret = Secret("hunter2-but-long")
    # when / then
    assert repr(secret) == "Secret('****')" and str(secret) == "****"
    assert secret.reveal() == "hunter2-but-long"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "User ada@example.com already has a redemption",
            "User [redacted] already has a redemption",
        ),
        ("Reward ABCD-1234-WXYZ was already used", "Reward [redacted] was already used"),
        ("call +44 20 7946 0958 to confirm", "call [redacted] to confirm"),
        ("invalid token=abc.def.ghi here", "invalid [redacted] here"),
        ("Authorization: Bearer eyJhbGciOi rejected", "Authorization: [redacted] rejected"),
        ("pin: 4821 is wrong", "[redacted] is wrong"),
        ("Promotion 42 not found", "Promotion 42 not found"),
        ("Order item rejected by supplier", "Order item rejected by supplier"),
        ("two\nlines\tand   spaces", "two lines and spaces"),
        ("", ""),
    ],
)
def test_provider_messages_keep_their_words_and_lose_what_they_quote(
    message: str, expected: str
) -> None:
    # given / when / then
    assert redact_message(message) == expected


def test_a_long_provider_message_is_cut_after_redaction() -> None:
    # given a long message whose code straddles the cut
    message = "x " * 72 + "code-part 9F3K2LQ7X1 " + "tail " * 50
    # when
    kept = redact_message(message)
    # then it is bounded and no part of the code survives the cut
    assert len(kept) <= MAX_MESSAGE_LENGTH and kept.endswith("…")
    assert "9F3K" not in kept and "LQ7X" not in kept
    assert redact_message(None) == ""
