"""Redis key layout: one place that names every key the stores use.

All keys share a prefix (``RR_KEY_PREFIX``), so tests and several deployments can share
one Redis server without touching each other's data.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True)
class Keys:
    prefix: str = "rr"

    def event(self, event_id: str) -> str:
        """Hash: the accepted event (source, type, fingerprint, body, unit ids)."""
        return f"{self.prefix}:event:{event_id}"

    def unit(self, unit_id: str) -> str:
        """Hash: one reward unit's ledger entry."""
        return f"{self.prefix}:unit:{unit_id}"

    def attempts(self, unit_id: str) -> str:
        """List: the unit's attempt history, oldest first (JSON entries, redacted)."""
        return f"{self.prefix}:unit:{unit_id}:attempts"

    @property
    def outbox(self) -> str:
        """Stream: unit ids accepted at the edge and not yet published to the broker."""
        return f"{self.prefix}:outbox"

    @property
    def live(self) -> str:
        """Sorted set: every non-terminal unit, scored by when it next needs attention."""
        return f"{self.prefix}:units:live"

    @property
    def dead_letters(self) -> str:
        """Sorted set: dead-letter ids by the time they were dead-lettered."""
        return f"{self.prefix}:dlq"

    def dead_letter(self, letter_id: str) -> str:
        """Hash: one dead letter."""
        return f"{self.prefix}:dlq:{letter_id}"

    @property
    def dead_letter_log(self) -> str:
        """List: replays and discards, for audit."""
        return f"{self.prefix}:dlq:log"

    @property
    def code_reveals(self) -> str:
        """List: every reveal of a unit's full reward codes (who, when, why), for audit."""
        return f"{self.prefix}:audit:code-reveals"

    @property
    def unroutable(self) -> str:
        """Sorted set: units no routing rule matched."""
        return f"{self.prefix}:unroutable"

    @property
    def events_index(self) -> str:
        """Sorted set: accepted event ids by acceptance time."""
        return f"{self.prefix}:events"

    def seen(self, event_id: str) -> str:
        """String: the dedupe marker of a finished event (``source fingerprint outcome``),
        kept ``DEDUPE_RETENTION_SECONDS`` after the event's own data expired."""
        return f"{self.prefix}:seen:{event_id}"

    @property
    def closing(self) -> str:
        """Set: event ids whose last unit may have just finished, for retention to close."""
        return f"{self.prefix}:retention:closing"

    @property
    def retention_cursors(self) -> str:
        """Hash: where retention's bounded walks of the sources' bookkeeping stopped."""
        return f"{self.prefix}:retention:cursors"

    def subject(self, digest: str) -> str:
        """Set: ids of events holding one customer's personal data, named by the keyed
        hash (HMAC) of their normalised email or Coniq customer id, never in clear."""
        return f"{self.prefix}:subject:{digest}"

    @property
    def erasures(self) -> str:
        """List: the erasure audit log (keyed hashes and counts, never an address)."""
        return f"{self.prefix}:erasures"

    def source(self, source: str, suffix: str) -> str:
        """A reward source's key (``{prefix}:source:{name}:{suffix}``; see tasks/sources)."""
        return f"{self.prefix}:source:{source}:{suffix}"

    @property
    def source_audit(self) -> str:
        """List: operators' retries and discards of held source items, for audit."""
        return f"{self.prefix}:source:audit"

    def lock(self, name: str) -> str:
        return f"{self.prefix}:lock:{name}"
