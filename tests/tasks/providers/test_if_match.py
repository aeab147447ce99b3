"""update_with_if_match: re-read and re-decide after 412, bounded attempts."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tasks.providers import (
    WRITE,
    Done,
    PreconditionFailedError,
    VersionConflictError,
    Write,
    update_with_if_match,
)


@dataclass(frozen=True)
class Doc:
    version: int
    state: str


class FakeStore:
    """A resource that a rival writer bumps ``races`` times before our writes land."""

    def __init__(self, races: int, rival_state: str = "pending") -> None:
        self.doc = Doc(1, "pending")
        self.races = races
        self.rival_state = rival_state
        self.reads = 0
        self.writes = 0

    def read(self) -> Doc:
        self.reads += 1
        return self.doc

    def write(self, snapshot: Doc) -> Doc:
        self.writes += 1
        if self.races:
            self.races -= 1
            self.doc = Doc(self.doc.version + 1, self.rival_state)
        if snapshot.version != self.doc.version:
            raise PreconditionFailedError("ifeelgoods", "precondition_failed", status_code=412)
        self.doc = Doc(self.doc.version + 1, "redeemed")
        return self.doc


def decide(doc: Doc) -> Done[Doc] | Write:
    return Done(doc) if doc.state == "redeemed" else WRITE


def test_succeeds_after_rereading_on_412() -> None:
    # given
    store = FakeStore(races=2)
    # when
    result = update_with_if_match(read=store.read, decide=decide, write=store.write)
    # then
    assert result == Doc(4, "redeemed")
    assert (store.reads, store.writes) == (3, 3)


def test_stops_without_writing_when_rival_already_finished() -> None:
    # given
    store = FakeStore(races=1, rival_state="redeemed")
    # when
    result = update_with_if_match(read=store.read, decide=decide, write=store.write)
    # then
    assert result == Doc(2, "redeemed")
    assert store.writes == 1  # the losing write; the re-decision needed none


def test_exhaustion_raises_version_conflict_chained_to_last_412() -> None:
    # given
    store = FakeStore(races=10)
    # when
    with pytest.raises(VersionConflictError) as caught:
        update_with_if_match(read=store.read, decide=decide, write=store.write, max_attempts=3)
    # then
    assert store.writes == 3 and store.reads == 3
    assert isinstance(caught.value.__cause__, PreconditionFailedError)
    assert caught.value.reason == "version_conflict_exhausted"


def test_given_snapshot_saves_the_first_read() -> None:
    # given
    store = FakeStore(races=0)
    # when
    update_with_if_match(read=store.read, decide=decide, write=store.write, current=store.doc)
    # then
    assert store.reads == 0


def test_zero_attempts_is_a_programming_error() -> None:
    # given / when / then
    with pytest.raises(ValueError):
        update_with_if_match(
            read=lambda: 1, decide=lambda _: WRITE, write=lambda x: x, max_attempts=0
        )
