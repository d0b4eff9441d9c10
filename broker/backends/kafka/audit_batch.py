"""The audit topic's record format: the entries of one transaction in one record.

Each record on an audit partition is a `records.audit_batch` (Avro single-object): the
first entry's seq and the entries, each the exact `records.audit_entry` bytes its chain
hash is taken over. The hash chain is the entries' chain, as before batches (a leaf per
entry, prev_hash = the previous entry's leaf hash): a batch adds no hash of its own and
is only how the entries travel. One record per transaction instead of one per entry is
what brought serve's writes per input from 7.8 to under 4 (issue 14). A transaction whose
entries would exceed the record size limit writes several batches, in order.

Reading a partition means unpacking its records in offset order and checking every
entry's place in the chain. A record that does not decode as a batch, an empty batch,
headers that disagree with the body, or a first_seq that is not the next entry of the
chain (a batch dropped, duplicated or replayed, or lying about where it starts) is an
integrity failure naming the partition's offset; the entries themselves then go through
`broker.audit.chain.verify_chain`, which catches an entry flipped, removed, inserted or
reordered inside a batch (each entry's seq and prev_hash).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.audit.chain import ChainReport, verify_chain
from broker.audit.entries import GENESIS, chain_hash
from broker.errors import AuditIntegrityError
from broker.model.avro_writer import zigzag
from broker.model.codec import MARKER
from broker.model.schemas import Schema, build_schema

BATCH_SCHEMA = "records.audit_batch"
BATCH_FILE = "audit_batch.avsc"
# The size a batch record may reach. Kafka's caps on one record are kafka-python's
# max_request_size and the topic's max.message.bytes, both 1 MiB by default; neither
# broker/backends/kafka/io.py nor topics.py changes them. Half of that leaves room for the
# record batch framing and headers, and it is the producer's batch size
# (io.TXN_BATCH_BYTES), so a batch record fills at most one producer batch.
MAX_RECORD_BYTES = 512 * 1024
_FRAMING = 10 + 10 + 10 + 1  # marker and fingerprint, first_seq, block count, end of array
_PER_ENTRY = 10  # the length prefix of one entry (a varint, at most 10 bytes)


@functools.cache
def _load(path: Path) -> Schema:
    return build_schema(json.loads(path.read_text(encoding="utf-8")), "records", path)


def batch_schema(entry_schema: Schema) -> Schema:
    """The `records.audit_batch` schema next to the entry schema's file: the registry's
    own (same file), found from the entry schema so that every writer and reader of an
    audit chain (some are built with the entry schema alone) uses the same one."""
    schema = _load(entry_schema.path.with_name(BATCH_FILE))
    if schema.name != BATCH_SCHEMA:
        raise AuditIntegrityError(f"{schema.path}: holds {schema.name}, not {BATCH_SCHEMA}")
    return schema


@dataclass(frozen=True)
class AuditBatch:
    first_seq: int
    entries: list[bytes]

    def headers(self) -> list[tuple[str, bytes]]:
        return [("seq", str(self.first_seq).encode()),
                ("count", str(len(self.entries)).encode())]


def encode_batch(schema: Schema, batch: AuditBatch) -> bytes:
    """Avro single-object encoding of the batch, the bytes fastavro writes (the tests hold
    them equal), written directly: the record is two fields, and the generic writer costs
    ~2.4 us an entry on serve's path where this costs a tenth of that."""
    out = [MARKER, schema.fingerprint, zigzag(batch.first_seq)]
    if batch.entries:  # one block of all entries, then the empty block that ends the array
        out.append(zigzag(len(batch.entries)))
        for entry in batch.entries:
            out += (zigzag(len(entry)), entry)
    out.append(b"\x00")
    return b"".join(out)



def decode_batch(schema: Schema, data: bytes) -> AuditBatch:
    """The batch in `data`; ValueError when it is not one (or holds no entries)."""
    record = schema.decode(data)
    entries = [bytes(e) for e in record["entries"]]
    if not entries:
        raise ValueError("an audit batch with no entries")
    return AuditBatch(int(record["first_seq"]), entries)


def encoded_size(entries: Sequence[bytes]) -> int:
    """An upper bound of the encoded size of a batch holding `entries`."""
    return _FRAMING + sum(len(e) + _PER_ENTRY for e in entries)


def split(first_seq: int, entries: Sequence[bytes],
          limit: int = MAX_RECORD_BYTES) -> list[AuditBatch]:
    """The entries in as few batches as fit `limit` bytes each, in order. An entry too
    large for a batch of its own is refused (Kafka would refuse the record)."""
    out: list[AuditBatch] = []
    current: list[bytes] = []
    size = _FRAMING
    for entry in entries:
        cost = len(entry) + _PER_ENTRY
        if _FRAMING + cost > limit:
            raise AuditIntegrityError(
                f"audit entry {first_seq + sum(len(b.entries) for b in out) + len(current)}"
                f" is {len(entry)} bytes, more than an audit record may hold ({limit})")
        if current and size + cost > limit:
            out.append(AuditBatch(first_seq, current))
            first_seq, current, size = first_seq + len(current), [], _FRAMING
        current.append(bytes(entry))
        size += cost
    if current:
        out.append(AuditBatch(first_seq, current))
    return out


@dataclass(frozen=True)
class PartitionEntries:
    """One audit partition's committed entries as read from its records, the chain
    verified over them: entry i is entry `first + i` of the chain, in the record at
    Kafka offset offsets[i]."""

    first: int
    data: list[bytes]
    offsets: list[int]
    report: ChainReport


def _header(headers: Any, name: str) -> bytes | None:
    for key, value in headers or ():
        if key == name:
            return bytes(value) if value is not None else None
    return None


def read_partition(schema: Schema, records: Iterable[Any], *, count: int = 0,
                   head: str = GENESIS, resume: bool = False) -> PartitionEntries:
    """Unpack a partition's committed records (kafka-python ConsumerRecords, offset order)
    and verify the chain of their entries from entry `count` (whose previous entry's chain
    hash is `head`) on.

    `resume`: the read continues from a stored position, at (or before) the record that
    holds entry `count`; entries before `count` were verified when they were read first
    and are skipped, entry count - 1 (when read) checked against `head`. Otherwise, and
    once entry `count` is reached, every batch must start exactly where the chain stands.
    """
    batches = batch_schema(schema)
    data: list[bytes] = []
    offsets: list[int] = []
    first, prev = count, head

    def failed(offset: int, what: str) -> PartitionEntries:
        report = ChainReport(count, prev, f"record at offset {offset}: {what}")
        return PartitionEntries(first, data, offsets, report)

    reaching = resume  # still in records that may hold entries before `count`
    for record in records:
        offset = int(record.offset)
        try:
            batch = decode_batch(batches, bytes(record.value))
        except Exception as exc:  # noqa: BLE001 - any decode failure is a finding to report
            return failed(offset, f"does not decode as an audit batch ({type(exc).__name__})")
        problem = _headers_problem(record.headers, batch)
        if problem is not None:
            return failed(offset, problem)
        entries = batch.entries
        if reaching and batch.first_seq < count:
            skip = min(count - batch.first_seq, len(entries))
            if batch.first_seq + skip == count and chain_hash(entries[skip - 1]) != head:
                return failed(offset, f"entry {count - 1} is not the entry that was read "
                              "before (its chain hash differs)")
            entries = entries[skip:]
            if not entries:
                continue
        elif batch.first_seq != count:
            return failed(offset, _misplaced(batch.first_seq, count))
        reaching = False
        report = verify_chain(schema, enumerate(entries, count), count=count, head=prev)
        if not report.ok:
            return PartitionEntries(first, data, offsets, ChainReport(
                report.entries, report.head, f"record at offset {offset}: {report.problem}"))
        data += entries
        offsets += [offset] * len(entries)
        count, prev = report.entries, report.head
    return PartitionEntries(first, data, offsets, ChainReport(count, prev, None))


def _headers_problem(headers: Any, batch: AuditBatch) -> str | None:
    seq, found = _header(headers, "seq"), _header(headers, "count")
    if seq != str(batch.first_seq).encode() or found != str(len(batch.entries)).encode():
        return (f"its headers (seq {seq!r}, count {found!r}) do not match the batch it "
                f"holds (first_seq {batch.first_seq}, {len(batch.entries)} entries)")
    return None


def _misplaced(first_seq: int, expected: int) -> str:
    if first_seq > expected:
        return (f"the batch starts at entry {first_seq}, but entry {expected} is next: "
                f"entries {expected}..{first_seq - 1} are missing (a batch was dropped?)")
    return (f"the batch starts at entry {first_seq}, but the chain already holds "
            f"{expected} entries (a batch duplicated or replayed?)")


def last_entry(schema: Schema, record: Any, partition: int) -> tuple[int, bytes]:
    """(seq, bytes) of the last entry of a partition's last committed record: the chain
    head a writer extends. Raises AuditIntegrityError when the record is not a sound
    batch (the writer must not extend a damaged chain)."""
    try:
        batch = decode_batch(batch_schema(schema), bytes(record.value))
        problem = _headers_problem(record.headers, batch)
        seq = int(schema.decode(batch.entries[-1])["seq"])
    except Exception as exc:  # noqa: BLE001 - any decode failure means a damaged log
        raise AuditIntegrityError(
            f"audit partition {partition}: the last record (offset {record.offset}) does "
            f"not decode as an audit batch ({type(exc).__name__}); refusing to extend a "
            "damaged chain") from None
    expected = batch.first_seq + len(batch.entries) - 1
    if problem is None and seq != expected:
        problem = f"its last entry carries seq {seq}, the batch says {expected}"
    if problem is not None:
        raise AuditIntegrityError(f"audit partition {partition}: the last record (offset "
                                  f"{record.offset}): {problem}; refusing to extend a "
                                  "damaged chain")
    return seq, batch.entries[-1]


def entries_of(schema: Schema, records: Iterable[Any], partition: int) -> list[bytes]:
    """The entries in a partition's records, unverified (a scan that reads what the
    chain holds, such as a subject report); a record that is not a batch is refused."""
    batches = batch_schema(schema)
    out: list[bytes] = []
    for record in records:
        try:
            out += decode_batch(batches, bytes(record.value)).entries
        except Exception as exc:  # noqa: BLE001 - any decode failure means a damaged log
            raise AuditIntegrityError(
                f"audit partition {partition}: the record at offset {record.offset} does "
                f"not decode as an audit batch ({type(exc).__name__}); `audit verify` "
                "names what is wrong") from None
    return out
