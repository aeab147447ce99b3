"""Which provider answers mean the money or a cap ran out (a funds pause, not a dead letter)."""

from __future__ import annotations

import pytest

from tasks.http.errors import (
    ConflictError,
    PermanentProviderError,
    TransientProviderError,
)
from tasks.lanes import is_funds


@pytest.mark.parametrize(
    "error",
    [
        PermanentProviderError("ifeelgoods", "no_allocation", status_code=422),
        PermanentProviderError("ifeelgoods", "budget_exhausted", status_code=422),
        PermanentProviderError("rewardops", "program cap internal", status_code=400),
        PermanentProviderError("rewardops", "Offer Cap Supplier", status_code=400),
    ],
    ids=str,
)
def test_budget_and_programme_caps_are_funds(error: Exception) -> None:
    assert is_funds(error)


@pytest.mark.parametrize(
    "error",
    [
        PermanentProviderError("ifeelgoods", "operation_refused", status_code=422),
        PermanentProviderError("rewardops", "member cap internal", status_code=400),
        PermanentProviderError("rewardops", "no_allocation", status_code=400),
        ConflictError("ifeelgoods", "user_mismatch", status_code=409),
        TransientProviderError("ifeelgoods", "no_allocation", status_code=503),
    ],
    ids=str,
)
def test_other_refusals_are_not_funds(error: Exception) -> None:
    # a member's own cap, another vendor's word, a conflict or an outage: not the lane's money
    assert not is_funds(error)
