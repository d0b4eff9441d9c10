"""The audit sequencer's logic, shared by every backend: seal drafts, grow the tree, sign.

A backend calls `AuditSequencer.seal` inside the one transaction (SQLite) or producer
transaction (Kafka) that also writes what the entries justify, with the chain head and the
tree frontier it read in that same transaction. It gets back, per entry, everything it must
store with it: the entry bytes, the chain hash (its leaf hash), the new tree nodes, the
query index row, the subject index keys, and the signed checkpoint when the entry
completes a multiple of N entries. At the end of the transaction, when `checkpoint_due`
says so (T seconds since the last one, or shutdown), it stores `sign(...)` of the tree as
it stands. Either way a checkpoint is written with the entries it covers: it never covers
an uncommitted entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from broker.audit.checkpoint import Checkpoint, CheckpointSigner
from broker.audit.entries import Draft, entry_writer
from broker.audit.merkle import leaf_hash
from broker.audit.tree import Frontier, NewNode
from broker.gcpause import during
from broker.model.schemas import Schema


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class IndexRow(NamedTuple):
    """The columns `audit query` filters on, taken from the draft as it is sealed; as a
    tuple, the audit_index row itself."""

    seq: int
    name: str
    recipient: str | None
    purpose: str | None
    decision: str | None
    event_type: str | None
    start_time: int

    def as_tuple(self) -> tuple[int, str, str | None, str | None, str | None, str | None, int]:
        return (self.seq, self.name, self.recipient, self.purpose, self.decision,
                self.event_type, self.start_time)


# Not frozen: read-only by contract; a frozen dataclass costs five times as much to make,
# and the sequencer makes two of these per entry.
@dataclass(slots=True)
class SignedCheckpoint:
    size: int
    root: bytes
    note: str  # the C2SP signed note
    signed_ms: int


@dataclass(slots=True)
class SealedAudit:
    seq: int
    data: bytes  # the stored entry bytes: the Merkle leaf
    entry_hash: str  # the chain hash (hex leaf hash of data); the next entry's prev_hash
    nodes: list[NewNode]  # the leaf hash and the complete subtrees this entry closes
    index: IndexRow
    subjects: list[bytes]  # distinct data subject pseudonyms (16 bytes each)
    checkpoint: SignedCheckpoint | None = None  # when this entry completes N more entries


def subject_keys(entry: Mapping[str, Any]) -> list[bytes]:
    """The distinct pseudonyms of an entry's data subjects, as index keys."""
    keys: list[bytes] = []
    for subject in entry.get("data_subjects") or ():
        key = bytes.fromhex(subject["pseudonym"])
        if key not in keys:
            keys.append(key)
    return keys


class AuditSequencer:
    """Seals drafts into entries and decides when to sign a checkpoint. No I/O of its own."""

    def __init__(self, schema: Schema, *, origin: str, signer: CheckpointSigner | None = None,
                 every_entries: int = 1000, every_seconds: float = 60.0,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        if every_entries < 1 or every_seconds <= 0:
            raise ValueError("checkpoint intervals must be positive")
        self.schema = schema
        self.origin = origin
        self.signer = signer
        self.every_entries = every_entries
        self.every_ms = int(every_seconds * 1000)
        self.clock = clock

    @during  # a batch: the cyclic collector paused (broker/gcpause.py)
    def seal(self, size: int, prev_hash: str, frontier: Frontier,
             drafts: Sequence[Draft]) -> list[SealedAudit]:
        """Seal drafts after the entry `size - 1` (hash `prev_hash`); grows `frontier`."""
        if frontier.size != size:
            raise ValueError(f"frontier has {frontier.size} leaves, the log {size}")
        logged_ms = self.clock()
        write, push = entry_writer(self.schema), frontier.push
        every = self.every_entries if self.signer is not None else 0
        out = []
        # The decisions on one event share one data_subjects list: its keys are made once
        # (nothing can change the list while this loop runs).
        last_subjects: object = None
        keys: list[bytes] = []
        for entry in drafts:
            data = write(entry, size, prev_hash, logged_ms)
            leaf = leaf_hash(data)
            entry_hash = leaf.hex()
            nodes = push(leaf)  # the chain hash is the leaf: one SHA-256
            index = IndexRow(size, entry["name"], entry.get("recipient"), entry.get("purpose"),
                             entry.get("decision"), entry.get("event_type"),
                             int(entry["start_time"]))
            subjects = entry.get("data_subjects")
            if subjects is not last_subjects:
                keys, last_subjects = subject_keys(entry), subjects
            size, prev_hash = size + 1, entry_hash
            # Every N entries exactly, so checkpoint sizes are predictable for auditors.
            boundary = (self.sign(size, frontier.root())
                        if every and size % every == 0 else None)
            out.append(SealedAudit(size - 1, data, entry_hash, nodes, index, list(keys),
                                   boundary))
        return out

    def checkpoint_due(self, size: int, last_size: int, last_signed_ms: int | None,
                       *, closing: bool = False) -> bool:
        """Sign at the end of a transaction? When T seconds passed since the last one, at
        shutdown, or (for a log that missed its boundaries) N entries behind."""
        if self.signer is None or size <= last_size:
            return False
        if closing or size - last_size >= self.every_entries:
            return True
        return last_signed_ms is None or self.clock() - last_signed_ms >= self.every_ms

    def sign(self, size: int, root: bytes) -> SignedCheckpoint:
        if self.signer is None:
            raise ValueError("this sequencer has no checkpoint signer")
        note = self.signer.sign(Checkpoint(self.origin, size, root))
        return SignedCheckpoint(size, root, note, self.clock())
