"""What the audit features read from a backend: the audit store port.

The verifier, the proof bundles, `audit query` and the subject report work on this
interface only, so the embedded and the Kafka backend share them. Everything returned is
the stored bytes or derived indexes: the verifier trusts none of it without checking.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int  # the size the backend stored it under
    note: str  # the signed note as stored
    signed_ms: int


@dataclass(frozen=True)
class QueryFilter:
    """`audit query` filters; None means any. Times are epoch milliseconds, until exclusive."""

    recipient: str | None = None
    purpose: str | None = None
    decision: str | None = None
    event_type: str | None = None
    name: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    after_seq: int | None = None  # only entries with a higher seq: a page's cursor


class AuditStore(Protocol):
    def audit_size(self) -> int:
        """Number of entries (the highest seq + 1 as stored; 0 when empty)."""
        ...

    def audit_entries(self, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """(stored seq, entry bytes) in seq order from `start`, streamed."""
        ...

    def audit_entries_at(self, seqs: list[int]) -> list[tuple[int, bytes]]:
        """The entries with these seqs, in seq order; missing ones are left out."""
        ...

    def tree_node(self, position: int) -> bytes:
        """The stored tree node at a position; raises `tree.MissingNodeError` when absent."""
        ...

    def tree_nodes(self, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """(position, hash) in position order from `start`, streamed."""
        ...

    def checkpoints(self) -> list[StoredCheckpoint]:
        """Every stored checkpoint, by size ascending."""
        ...

    def latest_checkpoint(self) -> StoredCheckpoint | None: ...

    def checkpoint_at(self, size: int) -> StoredCheckpoint | None: ...

    def query(self, where: QueryFilter, limit: int | None = None
              ) -> Iterator[tuple[int, bytes]]:
        """Entries matching the filter, in seq order, through the index (not a decode scan)."""
        ...

    def subject_seqs(self, pseudonym: bytes) -> list[int]:
        """Seqs of the entries naming this data subject pseudonym, ascending."""
        ...
