"""`audit verify` in bulk: the same checks as the exact walk, in chunks, on every core.

The log is cut into chunks of 2**15 entries, aligned so that every tree node below level 15
lies inside one chunk. Each chunk is checked on its own (in a worker process when more
than one core is ours): contiguous seqs, each entry's seq and prev_hash, every leaf hash
and every node the chunk's appends create below level 15, against the stored rows at
exactly their positions. The parent then joins the chunks in order: the chain links
between them, the nodes of level 15 and up, the root at each checkpoint (the frontier
before the chunk plus the chunk's own at that size), the signed notes, consistency.

A chunk is checked a block of rows at a time with no Python loop per entry: the leaf
hashes (which are also the chain hashes) are one `map` over the entry bytes; each entry
must start with the single-object header, its seq as an Avro long and the previous
entry's chain hash (the first fields of audit_entry: nothing is decoded); the tree is
built level by level and put in the order the nodes were stored (`_creation_order`), so
the chunk's whole node range is one byte comparison with the stored hashes.

With a `DerivedCheck`, each block of entries is also read for the rows the derived tables
hold for it (broker.audit.derive_fast: the columns only, no fastavro) and those are
compared with the stored rows of the same seqs, so every entry is read from the store
once; `BulkOutcome.derived` says whether all matched (None: not checked).

This path only ever says "intact" (with the same report as the exact walk of
`broker.audit.verify`) or where it first saw a difference (`BulkOutcome.first_problem`,
an entry number, for tests and logs): then the caller runs the exact walk, which names the
first problem precisely. A store that cannot be read in chunks (no `chunk_reader`) is
walked exactly too.
"""

from __future__ import annotations

import hashlib
import os
from binascii import hexlify
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain, repeat
from multiprocessing import get_context
from typing import Any, Protocol, cast

from broker.audit import derive_fast
from broker.audit.entries import GENESIS
from broker.audit.merkle import HASH_SIZE, fold_frontier
from broker.audit.tree import level_index_of, node_count
from broker.model.avro_writer import zigzag

CHUNK_LEVEL = 15  # 31 chunks for a million entries: an even share for 2 or 4 workers
_HASH_HEX_LEN = b"\x80\x01"  # Avro zigzag varint of the string length 64
_sha256 = hashlib.sha256
_digest = type(_sha256()).digest
_LEAF = b"\x00"
_NODE = b"\x01"
# The first byte of the Avro long of seq for seq >= 64: the low six bits, doubled, with the
# continuation bit. The bytes after it are the same for 64 consecutive seqs.
_LOW_BYTES = [bytes((0x80 | (low << 1),)) for low in range(64)]


class ChunkReader(Protocol):
    """A connection of a worker's own: stored rows by range, in order."""

    def entries(self, start: int, end: int) -> Iterator[list[bytes]]:
        """The entry bytes of seqs start..end-1 that are stored, in seq order, in blocks."""
        ...

    def node_hashes(self, start: int, end: int) -> bytes | None:
        """The hashes at positions start..end-1 concatenated, when each is stored as a
        32-byte blob; None when any is missing or malformed."""
        ...

    def nodes(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """(position, hash) rows from start to end-1, in order (to locate a difference)."""
        ...

    def close(self) -> None: ...


class DerivedRowsReader(Protocol):
    """A chunk reader that also reads the derived tables by seq range (None: unbounded)."""

    def index_rows(self, lo: int | None, hi: int | None) -> list[tuple[Any, ...]]: ...

    def subject_rows(self, lo: int | None, hi: int | None) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class DerivedCheck:
    """What a chunk needs to re-derive audit_index and audit_subject (picklable)."""

    schema: dict[str, Any]  # the audit_entry schema as written (raw)
    skip: int  # the single-object header's length
    size: int  # entries in the log: the last block also owns every row past it


@dataclass
class ChunkResult:
    ok: bool
    first_problem: int | None = None  # the first entry where the chunk differs
    first_prev: bytes = b""  # the prev_hash the chunk's first entry names (hex)
    last_hash: bytes = b""  # the chain hash of its last entry (hex)
    stack: list[bytes] = field(default_factory=list)  # its frontier (subtrees inside it)
    high_nodes: list[bytes] = field(default_factory=list)  # stored nodes above the chunk
    stacks_at: dict[int, list[bytes]] = field(default_factory=dict)  # frontier at due sizes
    derived: bool | None = None  # the derived rows of its entries matched (None: unchecked)


def scan_chunk(open_reader: Callable[[], ChunkReader], header: bytes, start: int, end: int,
               due: Sequence[int], chunk_level: int = CHUNK_LEVEL,
               derived: DerivedCheck | None = None) -> ChunkResult:
    """Check entries [start, end) and the nodes their appends create (see the module doc)."""
    reader = open_reader()
    try:
        return _scan(reader, header, start, end, due, chunk_level, derived)
    finally:
        reader.close()


def seq_prefixes(header: bytes, first: int, count: int) -> list[bytes]:
    """What entries first..first+count-1 open with, up to their prev_hash: the header, the
    Avro long of seq and the length of a 64-character string."""
    out: list[bytes] = []
    seq, end = first, first + count
    while seq < end and (seq < 64 or seq & 63):
        out.append(header + zigzag(seq) + _HASH_HEX_LEN)
        seq += 1
    if seq + 64 <= end:
        heads = [header + low for low in _LOW_BYTES]
        while seq + 64 <= end:
            tail = zigzag(seq)[1:] + _HASH_HEX_LEN  # the long's bytes after its first
            out.extend(map(bytes.__add__, heads, repeat(tail)))
            seq += 64
    out.extend(header + zigzag(s) + _HASH_HEX_LEN for s in range(seq, end))
    return out


def leaf_hashes(entries: list[bytes]) -> list[bytes]:
    """RFC 9162 leaf hashes, SHA-256(0x00 || entry): the tree's leaves and the chain hashes."""
    return list(map(_digest, map(_sha256, map(_LEAF.__add__, entries))))


def parent_hashes(level: list[bytes]) -> list[bytes]:
    """SHA-256(0x01 || left || right) of each pair of an even-length level."""
    return list(map(_digest, map(_sha256, map(bytes.__add__, map(_NODE.__add__, level[0::2]),
                                               level[1::2]))))


@lru_cache(maxsize=4)  # a full chunk and the last one, mostly
def _creation_order(size: int) -> list[int]:
    """The order in which the appends of `size` leaves (from an aligned start) store their
    nodes, as indexes into the levels of the tree laid end to end (leaves first)."""
    offsets = [0]
    while size >> (len(offsets) - 1) > 1:
        offsets.append(offsets[-1] + (size >> (len(offsets) - 1)))
    order: list[int] = []
    add = order.append
    for j in range(size):
        add(j)
        level, carry = 0, j
        while carry & 1:
            level += 1
            add(offsets[level] + ((j + 1) >> level) - 1)
            carry >>= 1
    return order


def tree_levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every complete subtree of the leaves, level by level (the leaves first)."""
    levels = [leaves]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append(parent_hashes(below[:len(below) & ~1]))
    return levels


def nodes_as_stored(levels: list[list[bytes]]) -> bytes:
    """The nodes of `tree_levels` in the order the appends stored them, concatenated."""
    return b"".join(map(list(chain.from_iterable(levels)).__getitem__,
                        _creation_order(len(levels[0]))))


def _frontier(levels: list[list[bytes]], size: int) -> list[bytes]:
    """The perfect subtrees of the first `size` leaves, largest first."""
    return [levels[level][(size >> level) - 1]
            for level in range(size.bit_length() - 1, -1, -1) if size >> level & 1]


def _derived_matches(reader: DerivedRowsReader, derive: derive_fast.Derive,
                     check: DerivedCheck, block: list[bytes], first: int) -> bool:
    """The stored rows of seqs first.. are the rows the block's entries derive; the first
    block of the log also owns every row before it, the last every row after it."""
    lo = None if first == 0 else first
    hi = None if first + len(block) >= check.size else first + len(block)
    try:
        index, subjects = derive(block, first)
    except (IndexError, ValueError, UnicodeDecodeError):  # the exact comparison will say
        return False
    return reader.index_rows(lo, hi) == index and reader.subject_rows(lo, hi) == subjects


def _read_leaves(reader: ChunkReader, header: bytes, start: int, end: int,
                 result: ChunkResult, check: DerivedCheck | None = None
                 ) -> tuple[list[bytes], int | None]:
    """The leaf hashes of entries start.. and the first entry whose seq or prev_hash is not
    what the chain says (None when every one of start..end-1 is stored and links)."""
    derive = derive_fast.deriver(check.schema, check.skip) if check is not None else None
    rows = cast("DerivedRowsReader", reader) if hasattr(reader, "index_rows") else None
    if derive is not None and rows is not None:
        result.derived = True
    leaves: list[bytes] = []
    prev = b""
    count = start
    for block in reader.entries(start, end):
        n = len(block)
        hashes = leaf_hashes(block)
        chained = list(map(hexlify, hashes))
        opening = seq_prefixes(header, count, n)
        if count == start:
            at = len(opening[0])
            result.first_prev = prev = block[0][at:at + 64]
            if len(prev) != 64:
                return leaves, start
        expected = [prev, *chained[:-1]]
        if not all(map(bytes.startswith, block, map(bytes.__add__, opening, expected))):
            bad = next(i for i, (data, a, b) in enumerate(zip(block, opening, expected,
                                                             strict=True))
                       if not data.startswith(a + b))
            leaves.extend(hashes[:bad])
            return leaves, count + bad
        leaves.extend(hashes)
        if result.derived and derive is not None and rows is not None and check is not None:
            result.derived = _derived_matches(rows, derive, check, block, count)
        prev = chained[-1]
        count += n
    result.last_hash = prev
    return leaves, (None if count == end else count)


def _scan(reader: ChunkReader, header: bytes, start: int, end: int, due: Sequence[int],
          chunk_level: int, derived: DerivedCheck | None = None) -> ChunkResult:
    result = ChunkResult(False)
    leaves, bad = _read_leaves(reader, header, start, end, result, derived)
    checked = start + len(leaves)
    levels = tree_levels(leaves)
    computed = nodes_as_stored(levels)
    lo = node_count(start)
    mine = lo + len(computed) // HASH_SIZE  # == node_count(checked) below the chunk level
    hi = node_count(end) if bad is None else mine
    stored = reader.node_hashes(lo, hi)
    if stored is None or stored[:len(computed)] != computed:
        position = _first_difference(reader, lo, mine, computed, stored)
        if position is not None:
            level, index = level_index_of(position)
            result.first_problem = ((index + 1) << level) - 1  # the entry that stored it
        else:  # a node above the chunk (stored by its last entry) is not a 32-byte hash
            result.first_problem = end - 1 if bad is None else bad
        return result
    if bad is not None:
        result.first_problem = bad
        return result
    high = stored[len(computed):]
    full = end - start == 1 << chunk_level
    # The last append of a full chunk also closes subtrees above it: one per trailing one
    # bit of the chunk's index. Those (only) need other chunks, so the parent checks them.
    above = ((start >> chunk_level) ^ ((start >> chunk_level) + 1)).bit_length() - 1 \
        if full else 0
    if len(high) != above * HASH_SIZE:
        result.first_problem = end - 1
        return result
    result.ok = True
    result.stack = _frontier(levels, end - start)
    result.high_nodes = [high[i:i + HASH_SIZE] for i in range(0, len(high), HASH_SIZE)]
    result.stacks_at = {size: _frontier(levels, size - start) for size in due
                        if start < size <= checked}
    return result


def _first_difference(reader: ChunkReader, lo: int, hi: int, computed: bytes,
                      stored: bytes | None) -> int | None:
    """The first position in lo..hi-1 whose stored node is not the computed one."""
    if stored is not None:
        for i in range(0, len(computed), HASH_SIZE):
            if stored[i:i + HASH_SIZE] != computed[i:i + HASH_SIZE]:
                return lo + i // HASH_SIZE
        return None
    expected = lo
    for position, node in reader.nodes(lo, hi):
        i = (expected - lo) * HASH_SIZE
        if position != expected or node != computed[i:i + HASH_SIZE]:
            return expected
        expected += 1
    return expected if expected < hi else None


@dataclass
class BulkOutcome:
    count: int
    head: bytes  # hex chain hash of the last entry
    roots: dict[int, bytes]  # root at each due size
    root: bytes | None  # root of the whole log (None when empty or not intact)
    first_problem: int | None = None  # the first entry found to differ (None: intact)
    derived: bool | None = None  # every chunk's derived rows matched (None: unchecked)


def workers() -> int:
    """Cores this process may use (its affinity), at most four."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    return max(1, min(cores, 4))


def bulk_walk(open_reader: Callable[[], ChunkReader], header: bytes, size: int,
              due: Sequence[int], chunk_level: int = CHUNK_LEVEL,
              processes: int | None = None,
              meanwhile: Callable[[], None] | None = None,
              derived: DerivedCheck | None = None) -> BulkOutcome | None:
    """Every entry, node and due root of a log of `size` entries. None, or an outcome
    with `first_problem`, on any difference. `meanwhile` runs in this process while the
    workers scan (before the scan on one core); what it raises, this raises. With
    `derived`, the derived tables too (the outcome's `derived`)."""
    chunk = 1 << chunk_level
    ranges = [(a, min(a + chunk, size)) for a in range(0, size, chunk)]
    per_chunk = [[s for s in due if a < s <= b] for a, b in ranges]
    processes = workers() if processes is None else processes
    results: Iterator[ChunkResult]
    if processes > 1 and len(ranges) > 1:
        pool = ProcessPoolExecutor(max_workers=min(processes, len(ranges)),
                                   # fork: no re-import of __main__; a worker never uses
                                   # (nor closes: it leaves by os._exit) what it inherits
                                   mp_context=get_context("fork"))
        try:
            futures = [pool.submit(scan_chunk, open_reader, header, a, b, d, chunk_level,
                                   derived)
                       for (a, b), d in zip(ranges, per_chunk, strict=True)]
            if meanwhile is not None:
                meanwhile()
            results = (f.result() for f in futures)
            return _join(results, ranges, due, chunk_level)
        finally:
            pool.shutdown(cancel_futures=True)
    if meanwhile is not None:
        meanwhile()
    reader = open_reader()
    try:
        results = (_scan(reader, header, a, b, d, chunk_level, derived)
                   for (a, b), d in zip(ranges, per_chunk, strict=True))
        return _join(results, ranges, due, chunk_level)
    finally:
        reader.close()


def _join(results: Iterator[ChunkResult], ranges: list[tuple[int, int]], due: Sequence[int],
          chunk_level: int) -> BulkOutcome | None:
    head = GENESIS.encode()
    prefix: list[bytes] = []  # the frontier before the current chunk (chunk subtrees only)
    roots: dict[int, bytes] = {}
    final: list[bytes] = []
    derived: list[bool | None] = []
    for (start, end), result in zip(ranges, results, strict=True):
        derived.append(result.derived)
        if result.first_prev != head:  # the link into the chunk (or its first entry)
            return BulkOutcome(start, head, roots, None, start)
        if not result.ok:
            return BulkOutcome(start, head, roots, None, result.first_problem)
        for size, local in result.stacks_at.items():
            roots[size] = fold_frontier(prefix + local)
        head = result.last_hash
        if end - start != 1 << chunk_level:  # the last, partial chunk
            final = prefix + result.stack
            continue
        # A full chunk is one subtree: it joins the frontier, closing the nodes above it.
        node, carry, high = result.stack[0], start >> chunk_level, iter(result.high_nodes)
        while carry & 1:
            node = _digest(_sha256(_NODE + prefix.pop() + node))
            if next(high, None) != node:
                return BulkOutcome(start, head, roots, None, end - 1)
            carry >>= 1
        if next(high, None) is not None:
            return BulkOutcome(start, head, roots, None, end - 1)
        prefix.append(node)
        final = list(prefix)
    if 0 in due:
        roots[0] = fold_frontier([])
    size = ranges[-1][1] if ranges else 0
    if any(s not in roots for s in due):
        return None
    checked = None if not derived or None in derived else all(derived)
    return BulkOutcome(size, head, roots, fold_frontier(final) if final else None,
                       derived=checked)
