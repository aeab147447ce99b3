"""``webhooks.paths``: ids become exactly one URL path segment and come back unchanged."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from webhooks.paths import dead_letter_path, fulfillment_path, quote_id

PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))


@given(st.text(PRINTABLE, min_size=1, max_size=60))
def test_a_quoted_id_is_one_segment_that_unquotes_to_the_id(event_id):
    # given / when
    quoted = quote_id(event_id)
    url = urlsplit("http://h" + fulfillment_path(event_id))
    # then nothing in it ends the path, starts a query or splits a segment
    assert not set("/?#") & set(quoted)
    assert quoted not in (".", "..")
    assert url.path == "/fulfillments/" + quoted and not url.query and not url.fragment
    assert unquote(quoted) == event_id


def test_dead_letter_paths_quote_the_id_and_keep_the_action():
    assert dead_letter_path("a/b:0:1") == "/dead-letters/a%2Fb%3A0%3A1"
    assert dead_letter_path("a#b:0:1", "replay") == "/dead-letters/a%23b%3A0%3A1/replay"
    assert fulfillment_path("..") == "/fulfillments/%2E%2E"
