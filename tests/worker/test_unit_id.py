"""The unit id value type: one place builds and parses ``{event id}:{line}:{index}``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.providers.adapters import provider_key
from worker.stores.models import UnitId, UnitSpec

event_ids = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)


@given(event_id=event_ids, line=st.integers(0, 10_000), index=st.integers(0, 10_000))
def test_a_built_id_parses_back_to_its_parts_even_with_colons_in_the_event_id(
    event_id: str, line: int, index: int
) -> None:
    text = UnitSpec(line=line, index=index).unit_id(event_id)
    assert UnitId.parse(text) == UnitId(event_id, line, index)
    assert str(UnitId.parse(text)) == text


@pytest.mark.parametrize("text", ["", "evt", "evt:1", ":1:2", "evt:x:2", "evt:1:-2", "evt:1:"])
def test_text_that_is_not_a_unit_id_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        UnitId.parse(text)


def test_the_provider_key_keeps_every_part_of_an_event_id_with_colons() -> None:
    assert provider_key("evt:a:b:3:4") == "evt:a:b-3-4"
