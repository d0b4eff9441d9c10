"""`audit verify` in bulk: the same checks as the exact walk, in chunks, on every core.

The log is cut into chunks of 2**16 entries, aligned so that every tree node below level 16
lies inside one chunk. Each chunk is checked on its own (in a worker process when more
than one core is ours): contiguous seqs, each entry's seq and prev_hash, every leaf hash
and every node the chunk's appends create below level 16, against the stored rows at
exactly their positions. The parent then joins the chunks in order: the chain links
between them, the nodes of level 16 and up, the root at each checkpoint (the frontier
before the chunk plus the chunk's own at that size), the signed notes, consistency.

This path only ever says "intact" (with the same report as the exact walk of
`broker.audit.verify`) or "look closer": on any difference it returns None and the caller
runs the exact walk, which names the first problem precisely. A store that cannot be
read in chunks (no `chunk_reader`) is walked exactly too.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing import get_context
from typing import Protocol

from broker.audit.entries import GENESIS
from broker.audit.tree import node_count
from broker.model.avro_writer import zigzag

CHUNK_LEVEL = 16
_HASH_HEX_LEN = b"\x80\x01"  # Avro zigzag varint of the string length 64
_LEAF = hashlib.sha256(b"\x00")


class ChunkReader(Protocol):
    """A connection of a worker's own: stored rows by range, in order."""

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]: ...

    def nodes(self, start: int, end: int) -> Iterator[tuple[int, bytes]]: ...

    def close(self) -> None: ...


@dataclass
class ChunkResult:
    ok: bool
    first_prev: bytes = b""  # the prev_hash the chunk's first entry names (hex)
    last_hash: bytes = b""  # the chain hash of its last entry (hex)
    stack: list[bytes] = field(default_factory=list)  # its frontier (subtrees inside it)
    high_nodes: list[bytes] = field(default_factory=list)  # stored nodes of level >= 16
    stacks_at: dict[int, list[bytes]] = field(default_factory=dict)  # frontier at due sizes


def scan_chunk(open_reader: Callable[[], ChunkReader], header: bytes, start: int, end: int,
               due: Sequence[int], chunk_level: int = CHUNK_LEVEL) -> ChunkResult:
    """Check entries [start, end) and the nodes their appends create (see the module doc)."""
    reader = open_reader()
    try:
        return _scan(reader, header, start, end, due, chunk_level)
    finally:
        reader.close()


def _scan(reader: ChunkReader, header: bytes, start: int, end: int, due: Sequence[int],
          chunk_level: int) -> ChunkResult:
    full = end - start == 1 << chunk_level
    # The last append of a full chunk also closes subtrees above it: one per trailing one
    # bit of the chunk's index. Those (only) need other chunks, so the parent checks them.
    high = ((start >> chunk_level) ^ ((start >> chunk_level) + 1)).bit_length() - 1 \
        if full else 0
    lo, hi = node_count(start), node_count(end)
    sha256 = hashlib.sha256
    leaf0 = _LEAF
    stack: list[bytes] = []
    computed: list[bytes] = []
    push = computed.append
    stacks_at: dict[int, list[bytes]] = {}
    wanted = iter(due)
    next_due = next(wanted, None)
    result = ChunkResult(False)
    head = b""
    count = start
    for stored_seq, data in reader.entries(start, end):
        if stored_seq != count:
            return result
        seq = zigzag(count)  # the Avro long of seq, as it opens the entry
        prefix = header + seq + _HASH_HEX_LEN
        if count == start:
            if not data.startswith(prefix):
                return result
            result.first_prev = data[len(prefix):len(prefix) + 64]
        elif not data.startswith(prefix + head):
            return result
        h = leaf0.copy()
        h.update(data)
        node = h.digest()
        push(node)
        carry = count - start
        while carry & 1:
            node = sha256(b"\x01" + stack.pop() + node).digest()
            push(node)
            carry >>= 1
        stack.append(node)
        head = sha256(data).hexdigest().encode()
        count += 1
        if count == next_due:
            stacks_at[count] = list(stack)
            next_due = next(wanted, None)
    if count != end or len(result.first_prev) != 64:
        return result
    high_nodes = _compare_nodes(reader.nodes(lo, hi), lo, hi, computed)
    if high_nodes is None or len(high_nodes) != high:
        return result
    result.ok = True
    result.last_hash = head
    result.stack = stack
    result.high_nodes = high_nodes
    result.stacks_at = stacks_at
    return result


def _compare_nodes(stored: Iterator[tuple[int, bytes]], lo: int, hi: int,
                   computed: list[bytes]) -> list[bytes] | None:
    """The stored rows at exactly positions lo..hi-1 against `computed` (the first ones);
    the rest (the nodes above the chunk) are returned. None on any difference."""
    done = 0
    high: list[bytes] = []
    while True:
        block = list(islice(stored, 8192))
        if not block:
            break
        if block[0][0] != lo + done or block[-1][0] != lo + done + len(block) - 1:
            return None
        hashes = [h for _, h in block]
        mine = computed[done:done + len(block)]
        if hashes[:len(mine)] != mine:
            return None
        high.extend(hashes[len(mine):])
        done += len(block)
    return high if done == hi - lo else None


def _fold(stack: Sequence[bytes]) -> bytes:
    root = stack[-1]
    for left in reversed(stack[:-1]):
        root = hashlib.sha256(b"\x01" + left + root).digest()
    return root


@dataclass
class BulkOutcome:
    count: int
    head: bytes  # hex chain hash of the last entry
    roots: dict[int, bytes]  # root at each due size
    root: bytes | None  # root of the whole log (None when empty)


def workers() -> int:
    """Cores this process may use (its affinity), at most four."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    return max(1, min(cores, 4))


def bulk_walk(open_reader: Callable[[], ChunkReader], header: bytes, size: int,
              due: Sequence[int], chunk_level: int = CHUNK_LEVEL,
              processes: int | None = None) -> BulkOutcome | None:
    """Every entry, node and due root of a log of `size` entries; None on any difference."""
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
            futures = [pool.submit(scan_chunk, open_reader, header, a, b, d, chunk_level)
                       for (a, b), d in zip(ranges, per_chunk, strict=True)]
            results = (f.result() for f in futures)
            return _join(results, ranges, due, chunk_level)
        finally:
            pool.shutdown(cancel_futures=True)
    reader = open_reader()
    try:
        results = (_scan(reader, header, a, b, d, chunk_level)
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
    for (start, end), result in zip(ranges, results, strict=True):
        if not result.ok or result.first_prev != head:
            return None
        for size, local in result.stacks_at.items():
            roots[size] = _fold(prefix + local)
        head = result.last_hash
        if end - start != 1 << chunk_level:  # the last, partial chunk
            final = prefix + result.stack
            continue
        # A full chunk is one subtree: it joins the frontier, closing the nodes above it.
        node, carry, high = result.stack[0], start >> chunk_level, iter(result.high_nodes)
        while carry & 1:
            node = hashlib.sha256(b"\x01" + prefix.pop() + node).digest()
            if next(high, None) != node:
                return None
            carry >>= 1
        if next(high, None) is not None:
            return None
        prefix.append(node)
        final = list(prefix)
    if 0 in due:
        roots[0] = hashlib.sha256(b"").digest()
    size = ranges[-1][1] if ranges else 0
    if any(s not in roots for s in due):
        return None
    return BulkOutcome(size, head, roots, _fold(final) if final else None)
