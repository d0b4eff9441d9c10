"""Several audit hash chains sequenced into one verifiable log: the logic without I/O.

A backend whose audit is one hash chain per partition (Kafka) gets one Merkle log the way
Trillian does it: the chains are the queue, one integrator is the sequencer. Each chain
entry is re-sequenced into the global log with the same fields (global seq, prev_hash and
logged_at as the sequencer assigns them) and its source position in `detail`, so anyone
can check the integrated log against the chains.

Per chain, the integrator keeps a position (entries integrated, chain hash of the last
one), stored in the same transaction as the entries. The chain hash after the first k
entries is entry k's prev_hash (or the verified head after the last entry), so the
position follows whatever hashing `broker.audit.chain` does.

Order: round-robin by batch (partitions ascending, up to `batch` entries of each per
round). Once signed, the integrated order is authoritative.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from broker.audit.chain import ChainReport
from broker.audit.entries import GENESIS, Draft
from broker.clock import to_millis
from broker.errors import AuditIntegrityError
from broker.model.schemas import Schema

SOURCE_PARTITION = "kafka_partition"
SOURCE_SEQ = "kafka_seq"
SOURCE_SHA256 = "kafka_entry_sha256"
_SEALED = ("seq", "prev_hash", "logged_at")  # assigned by whichever sequencer seals


@dataclass(frozen=True)
class ChainPosition:
    """How far one source chain is integrated."""

    partition: int
    entries: int  # entries of the chain integrated so far
    head: str = GENESIS  # chain hash of the last of them
    # where the source is read on from (Kafka: the offset of the record that holds the next
    # entry, which may also hold integrated ones (a batch record holds a transaction's
    # entries), or the end of the last read; offsets are not entry numbers). A read hint,
    # not part of what the position is.
    next_offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class ChainRead:
    """A source chain as read: entries first, first + 1, ... with their offsets, the
    offset the read ended at, and the chain verified over them."""

    first: int
    data: list[bytes]
    offsets: list[int]
    end: int
    report: ChainReport

    @classmethod
    def whole(cls, data: list[bytes], report: ChainReport) -> ChainRead:
        """A chain read from its start, with entry numbers as offsets (no Kafka)."""
        return cls(0, data, list(range(len(data))), len(data), report)


def unsealed(record: Mapping[str, Any]) -> Draft:
    """A decoded entry without what a sequencer assigns; times as epoch milliseconds."""
    out: dict[str, Any] = {k: v for k, v in record.items() if k not in _SEALED}
    for name in ("start_time", "end_time"):
        value = out[name]
        out[name] = value if isinstance(value, int) else to_millis(value)
    out["detail"] = dict(out["detail"])
    return cast(Draft, out)


def source_draft(record: Mapping[str, Any], data: bytes, partition: int) -> Draft:
    """The draft that re-sequences one chain entry (decoded `record`, stored `data`)."""
    out = unsealed(record)
    clash = sorted({SOURCE_PARTITION, SOURCE_SEQ, SOURCE_SHA256} & set(out["detail"]))
    if clash:
        raise AuditIntegrityError(f"audit partition {partition}: entry {record['seq']} "
                                  f"already carries {', '.join(clash)} in its detail")
    out["detail"].update({SOURCE_PARTITION: str(partition), SOURCE_SEQ: str(record["seq"]),
                          SOURCE_SHA256: hashlib.sha256(data).hexdigest()})
    return out


@dataclass(frozen=True)
class PendingChain:
    """The verified entries of one chain after its stored position."""

    start: ChainPosition
    records: list[dict[str, Any]]  # decoded entries start.entries, start.entries + 1, ...
    data: list[bytes]
    head: str  # the verified chain hash after the last entry
    offsets: list[int] = field(default_factory=list)  # the source record of each entry
    end: int = 0  # the source offset the read ended at

    def position_after(self, k: int) -> ChainPosition:
        """The position once the first k pending entries are integrated."""
        if k < len(self.records):
            head, offset = str(self.records[k]["prev_hash"]), self.offsets[k]
        else:
            head, offset = self.head, self.end
        return ChainPosition(self.start.partition, self.start.entries + k, head, offset)

    def drafts(self, lo: int, hi: int) -> list[Draft]:
        return [source_draft(self.records[i], self.data[i], self.start.partition)
                for i in range(lo, hi)]


def pending_chain(schema: Schema, stored: ChainPosition, read: ChainRead) -> PendingChain:
    """Check a chain (its committed entries from `read.first` on, verified into
    `read.report`) against the stored position, and return what is left to integrate.

    Raises AuditIntegrityError naming the partition and entry when the chain is broken,
    shorter than what was integrated, or no longer the chain that was integrated.
    """
    p, done, report = stored.partition, stored.entries, read.report
    if read.first > done:
        raise ValueError(f"audit partition {p}: read from entry {read.first}, but only "
                         f"{done} are integrated")
    if not report.ok:
        raise AuditIntegrityError(f"audit partition {p}: {report.problem}; integration "
                                  f"stopped (this run integrated nothing)")
    if done > report.entries:
        raise AuditIntegrityError(
            f"audit partition {p}: Kafka holds {report.entries} committed entries but "
            f"{done} are integrated; the audit topic lost entries")
    lo, hi = done - read.first, report.entries - read.first
    records = [schema.decode(item) for item in read.data[lo:hi]]
    pending = PendingChain(stored, records, list(read.data[lo:hi]), report.head,
                           read.offsets[lo:hi], read.end)
    if pending.position_after(0).head != stored.head:
        raise AuditIntegrityError(
            f"audit partition {p}: entry {done - 1} is not the entry that was integrated "
            "(its chain hash differs); the audit topic was rewritten after integration")
    return pending


def rounds(chains: Sequence[PendingChain], batch: int
           ) -> Iterator[list[tuple[PendingChain, int, int]]]:
    """Round-robin: each round takes up to `batch` entries (lo, hi) of every chain with
    entries left, in the order of `chains`."""
    if batch < 1:
        raise ValueError("batch must be 1 or more")
    lo = 0
    while True:
        taken = [(chain, lo, min(lo + batch, len(chain.records))) for chain in chains
                 if lo < len(chain.records)]
        if not taken:
            return
        yield taken
        lo += batch


class SourceCheck:
    """Checks integrated entries, in log order, against the chains they came from.

    Each chain's entries must appear once each, in chain order, with the bytes' SHA-256
    and every field (but those a sequencer assigns) equal to the chain entry.
    """

    def __init__(self, schema: Schema, sources: Mapping[int, Sequence[bytes]]) -> None:
        self.schema = schema
        self.sources = sources
        self.integrated = dict.fromkeys(sources, 0)

    def check(self, seq: int, data: bytes) -> str | None:
        """The problem with integrated entry `seq`, or None."""
        try:
            entry = self.schema.decode(data)
            detail = entry["detail"]
            p, s = int(detail[SOURCE_PARTITION]), int(detail[SOURCE_SEQ])
            digest = detail[SOURCE_SHA256]
        except Exception as exc:  # noqa: BLE001 - any failure is a finding to report
            return f"entry {seq}: names no source chain entry ({type(exc).__name__})"
        if p not in self.sources:
            return f"entry {seq}: names audit partition {p}, which does not exist"
        expected = self.integrated[p]
        if s != expected:
            return (f"entry {seq}: integrates partition {p} entry {s} where entry {expected} "
                    "was due (skipped, reordered or duplicated)")
        rows = self.sources[p]
        if s >= len(rows):
            return (f"entry {seq}: partition {p} entry {s} is not on Kafka (it holds "
                    f"{len(rows)} committed entries)")
        if hashlib.sha256(rows[s]).hexdigest() != digest or \
                unsealed(entry) != source_draft(self.schema.decode(rows[s]), rows[s], p):
            return f"entry {seq}: differs from partition {p} entry {s} on Kafka"
        self.integrated[p] = expected + 1
        return None


@dataclass(frozen=True)
class IntegrationCheck:
    """The integrated log against the Kafka chains, per audit partition."""

    chains: dict[int, ChainReport]
    integrated: dict[int, int]  # entries integrated, per partition (as the log holds them)
    problem: str | None

    @property
    def pending(self) -> dict[int, int]:
        return {p: max(0, r.entries - self.integrated.get(p, 0))
                for p, r in self.chains.items()}

    def as_json(self) -> dict[str, Any]:
        return {str(p): {"entries": r.entries, "head": r.head, "problem": r.problem,
                         "integrated": self.integrated.get(p, 0),
                         "pending": self.pending[p]} for p, r in self.chains.items()}
