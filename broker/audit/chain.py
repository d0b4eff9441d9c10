"""Verify the hash chain of an audit log: decodable entries, contiguous seq, linked hashes.

Each prev_hash is the previous entry's chain hash, its RFC 9162 leaf hash (`chain_hash`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from broker.audit.entries import GENESIS, chain_hash
from broker.model.schemas import Schema


@dataclass(frozen=True)
class ChainReport:
    entries: int
    head: str  # chain hash of the last entry, GENESIS for an empty log
    problem: str | None  # the first problem, naming the entry; None when intact

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_chain(schema: Schema, rows: Iterable[tuple[int, bytes]], *, count: int = 0,
                 head: str = GENESIS) -> ChainReport:
    """Check (stored position, entry bytes) rows in order and report the first problem.

    From the start of the chain by default; with `count` and `head` (the chain hash of
    entry count - 1, verified before) it checks a continuation that starts at entry
    `count`, so a reader that keeps its position need not read the chain again.
    """
    prev = head
    for position, data in rows:
        if position != count:
            return ChainReport(count, prev, f"entry {count}: missing; the next stored entry "
                               f"is at position {position}")
        try:
            record = schema.decode(data)
        except Exception as exc:  # noqa: BLE001 - any decode failure is a finding to report
            return ChainReport(count, prev, f"entry {count}: does not decode as an audit "
                               f"entry ({type(exc).__name__})")
        if record["seq"] != count:
            return ChainReport(count, prev, f"entry {count}: carries seq {record['seq']}; "
                               "entries were reordered, inserted or duplicated")
        if record["prev_hash"] != prev:
            return ChainReport(count, prev, f"entry {count}: prev_hash does not match the "
                               f"hash of entry {count - 1}; the log was altered")
        prev = chain_hash(data)
        count += 1
    return ChainReport(count, prev, None)
