"""RewardCode and Secret never print their values."""

from __future__ import annotations

import pickle

import pytest

from tasks.http.redaction import RewardCode, Secret


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
