"""The stored Merkle tree of the audit log: every complete subtree hash, addressed by position.

A backend stores, beside each entry, the hashes of the complete (perfect) subtrees that the
entry completes: its own leaf hash (level 0) and one node for each level its append closes.
That is 2n - popcount(n) hashes for n entries, written in the order they are created, so one
integer, the node's *position* in that order, addresses it (see `node_position`).

With those nodes the root at any size and every proof cost O(log n) lookups, never a scan
(`root_at`, `inclusion_proof_at`, `consistency_proof_at`). The proofs are the RFC 9162
PATH and PROOF of `broker.audit.merkle`; the tests compare them for every size and index.

`Frontier` is the sequencer's side: the right edge of the tree (one complete subtree per set
bit of the size), rebuilt from O(log n) stored nodes, that appends leaves and reports the
nodes each append creates. Nothing here knows about SQLite or Kafka.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from broker.audit.merkle import EMPTY_ROOT, HASH_SIZE, fold_frontier, node_hash

NodeReader = Callable[[int], bytes]
"""Return the stored node hash at a position; raise `MissingNodeError` if it is not stored."""


class MissingNodeError(LookupError):
    """The tree store lacks a node that a complete subtree of the log should have."""


def node_position(level: int, index: int) -> int:
    """Position of the complete subtree (level, index) in creation order.

    The subtree covers leaves [index * 2**level, (index + 1) * 2**level). It is created when
    its last leaf j is appended, after the 2j - popcount(j) nodes of the tree of size j
    and after the `level` nodes of lower level that the same append creates.
    """
    last = ((index + 1) << level) - 1
    return 2 * last - last.bit_count() + level


def node_count(size: int) -> int:
    """How many nodes a tree of `size` leaves stores: 2n - popcount(n)."""
    return 2 * size - size.bit_count()


def level_index_of(position: int) -> tuple[int, int]:
    """The (level, index) stored at a position (inverse of `node_position`); for messages."""
    # Find the append that created the position: the largest j with node_count(j) <= pos.
    low, high = 0, position + 1
    while low < high:
        mid = (low + high + 1) // 2
        if node_count(mid) <= position:
            low = mid
        else:
            high = mid - 1
    level = position - node_count(low)
    return level, low >> level


def perfect_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """The complete subtrees (level, index) that make up leaves [start, end), left to right.

    For the ranges of the left-filled tree (start a multiple of a power of two at least
    end - start, as in every range of RFC 9162's recursion) this is the decomposition the
    tree itself uses: the largest power of two first.
    """
    out = []
    while start < end:
        size = end - start
        level = size.bit_length() - 1
        # Alignment: a subtree of 2**level leaves must start at a multiple of 2**level.
        while start & ((1 << level) - 1):
            level -= 1
        out.append((level, start >> level))
        start += 1 << level
    return out


def range_root(read: NodeReader, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range of the left-filled tree, from stored nodes."""
    if start >= end:
        return EMPTY_ROOT
    parts = [read(node_position(level, index)) for level, index in perfect_subtrees(start, end)]
    root = parts[-1]
    for left in reversed(parts[:-1]):
        root = node_hash(left, root)
    return root


def root_at(read: NodeReader, size: int) -> bytes:
    """The root of the tree of the first `size` entries."""
    return range_root(read, 0, size)


def _split(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof_at(read: NodeReader, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) (RFC 9162 2.1.3.1) from stored nodes: O(log n) lookups."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    siblings: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            siblings.append(range_root(read, start + k, end))
            end = start + k
        else:
            siblings.append(range_root(read, start, start + k))
            start += k
    siblings.reverse()  # the recursion appends the root's children last: leaf-to-root order
    return siblings


def consistency_proof_at(read: NodeReader, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) (RFC 9162 2.1.4.1) from stored nodes.

    Empty for old_size 0 or old_size == new_size, like `merkle.consistency_proof`.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"old size {old_size} and new size {new_size} are not 0 <= old <= new")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    m, start, end, complete = old_size, 0, new_size, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                proof.append(range_root(read, start, end))
            break
        k = _split(n)
        if m <= k:
            proof.append(range_root(read, start + k, end))
            end = start + k
        else:
            proof.append(range_root(read, start, start + k))
            m, start, complete = m - k, start + k, False
    proof.reverse()
    return proof


class NewNode(NamedTuple):
    """A node an append creates; as a tuple, it is the (pos, hash) row the store inserts."""

    position: int
    hash: bytes


class Frontier:
    """The right edge of the tree: append leaf hashes, learn the nodes each append creates.

    Holds one complete subtree root per set bit of the size, largest first, as
    `merkle.TreeBuilder` does; unlike it, it can start from a stored tree and it reports
    every node it creates (with its position) so the backend can store them.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self, size: int = 0, stack: list[bytes] | None = None) -> None:
        stack = list(stack or [])
        if len(stack) != size.bit_count():
            raise ValueError(f"a tree of size {size} has {size.bit_count()} frontier nodes, "
                             f"got {len(stack)}")
        self._size = size
        self._stack = stack

    @classmethod
    def load(cls, read: NodeReader, size: int) -> Frontier:
        """The frontier of the stored tree of `size` leaves: popcount(size) lookups."""
        return cls(size, [read(node_position(level, index))
                          for level, index in perfect_subtrees(0, size)])

    @property
    def size(self) -> int:
        return self._size

    def copy(self) -> Frontier:
        return Frontier(self._size, self._stack)

    def push(self, leaf: bytes) -> list[NewNode]:
        """Append a leaf hash; return the leaf node and each interior node it completes."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes")
        j = self._size
        position = node_count(j)
        created = [NewNode(position, leaf)]
        node, carry = leaf, j
        while carry & 1:
            position += 1
            node = node_hash(self._stack.pop(), node)
            created.append(NewNode(position, node))
            carry >>= 1
        self._stack.append(node)
        self._size = j + 1
        return created

    def root(self) -> bytes:
        return fold_frontier(self._stack)
