"""RFC 9162 (Certificate Transparency v2) Merkle tree, section 2.1.

Hashing (2.1.1): the empty tree hashes to SHA-256(""), a leaf to SHA-256(0x00 || entry)
and an interior node to SHA-256(0x01 || left || right). The domain separation keeps an
interior node from passing as a leaf. The tree is left-filled: n > 1 leaves split at k,
the largest power of two smaller than n.

Proof generation follows the recursive definitions PATH (2.1.3.1) and PROOF/SUBPROOF
(2.1.4.1), computed over index ranges so a proof costs O(n) hashes and O(log n) memory
besides the input. Verification follows the algorithms of 2.1.3.2 and 2.1.4.2 literally,
step by step; every failure raises `ProofError` with a message naming what is wrong.
Nothing here ever returns False.

Edge cases outside the RFC algorithms (which assume 0 < first < second for consistency):

* Inclusion in a tree of size 0 is always an error: the tree has no leaves.
* Consistency from old size 0: every tree extends the empty tree, so it holds, but only
  with an EMPTY proof and an old root equal to `EMPTY_ROOT` (transparency-dev/merkle
  accepts size1 == 0 only with an empty proof; we also pin the root, since a tree of size
  0 has exactly one valid root).
* Consistency between equal sizes: only with an empty proof and equal roots; for size 0
  both roots must be `EMPTY_ROOT`.
* old_size > new_size is an error (a rollback), never a skip.

A verifier proves a statement about a (size, root) pair; it cannot tell whether that
pair is genuine. Take both from the same verified signed checkpoint, never from the
proof's supplier (see `broker.audit.checkpoint.check_inclusion`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "ProofError",
    "TreeBuilder",
    "VerificationError",
    "consistency_proof",
    "fold_frontier",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Length in bytes of every hash in the tree (SHA-256)."""

MAX_TREE_SIZE = 2**64 - 1
"""Tree sizes and indexes are uint64 in RFC 9162 and C2SP checkpoints."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256(""), the root of the tree of size 0."""


class VerificationError(Exception):
    """Something that must verify does not: a proof, a checkpoint, a signature."""


class ProofError(VerificationError):
    """An inclusion or consistency proof does not verify against the given root(s)."""


def leaf_hash(entry: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d): the hash of one log entry."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k with k < n <= 2k, for n > 1 (the RFC's split point)."""
    return 1 << ((n - 1).bit_length() - 1)


def _require_hash(what: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise ProofError(f"{what} must be bytes, got {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} must be {HASH_SIZE} bytes, got {len(value)}")


def _require_proof(proof: object) -> list[bytes]:
    if isinstance(proof, (bytes, bytearray, str)) or not isinstance(proof, Sequence):
        raise ProofError(f"proof must be a sequence of hashes, got {type(proof).__name__}")
    for position, element in enumerate(proof):
        _require_hash(f"proof hash {position}", element)
    return list(proof)


def _require_size(what: str, value: object) -> int:
    # bool is an int subclass; True as a tree size is a bug, not a size.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProofError(f"{what} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ProofError(f"{what} must not be negative, got {value}")
    if value > MAX_TREE_SIZE:
        raise ProofError(f"{what} {value} exceeds 2**64-1")
    return value


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


class TreeBuilder:
    """Streaming Merkle Tree Hash: append leaf hashes, read the root at any size.

    Keeps only the right edge of the tree (the "compact range" [0, size)): one perfect
    subtree root per set bit of `size`, largest first. Memory is O(log n) and each append
    costs amortised O(1) hashes, so a million entries verify without holding them all.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._size = 0
        self._stack: list[bytes] = []

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf hash (already `leaf_hash(entry)`, 32 bytes)."""
        if not isinstance(leaf_hash, bytes) or len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes")
        if self._size >= MAX_TREE_SIZE:
            raise ValueError("tree is full (2**64-1 leaves)")
        node = leaf_hash
        # Each trailing one bit of the old size is a perfect subtree of the same height
        # as `node` waiting for its right sibling: merge them.
        carry = self._size
        while carry & 1:
            node = node_hash(self._stack.pop(), node)
            carry >>= 1
        self._stack.append(node)
        self._size += 1

    def root(self) -> bytes:
        """MTH of all leaves appended so far (`EMPTY_ROOT` for none)."""
        return fold_frontier(self._stack)


def fold_frontier(stack: Sequence[bytes]) -> bytes:
    """The root of a tree from its frontier: the perfect subtrees, largest (leftmost) first.

    Folds from the smallest (rightmost) up: for n leaves the left child is the largest
    power of two below n, exactly as in the RFC. An empty frontier is `EMPTY_ROOT`.
    """
    if not stack:
        return EMPTY_ROOT
    root = stack[-1]
    for left in reversed(stack[:-1]):
        root = node_hash(left, root)
    return root


def _range_root(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH(D[start:end]) without copying the slice."""
    builder = TreeBuilder()
    for position in range(start, end):
        builder.append(leaf_hashes[position])
    return builder.root()


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D_n) for the given leaf hashes: O(n) hashing, O(log n) extra memory."""
    return _range_root(leaf_hashes, 0, len(leaf_hashes))


def _check_generation_size(leaf_hashes: Sequence[bytes], size: int, what: str) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{what} must be a non-negative int, got {size!r}")
    if size > len(leaf_hashes):
        raise ValueError(f"{what} {size} exceeds the {len(leaf_hashes)} leaf hashes given")


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 2.1.3.1, leaf-to-root order.

    `leaf_hashes` may hold more than `size` leaves; only the first `size` are used.
    Raises ValueError for an index outside [0, size) (a caller bug, not a bad proof).
    """
    _check_generation_size(leaf_hashes, size, "size")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < size:
        raise ValueError(f"index {index!r} is outside a tree of size {size}")
    return _path(leaf_hashes, index, 0, size)


def _path(leaf_hashes: Sequence[bytes], m: int, start: int, end: int) -> list[bytes]:
    """PATH(m, D[start:end]); m is relative to start."""
    n = end - start
    if n == 1:
        return []  # PATH(0, {d(0)}) = {}
    k = _largest_power_of_two_below(n)
    if m < k:
        # PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])
        return [
            *_path(leaf_hashes, m, start, start + k),
            _range_root(leaf_hashes, start + k, end),
        ]
    # PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])
    return [*_path(leaf_hashes, m - k, start + k, end), _range_root(leaf_hashes, start, start + k)]


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) = SUBPROOF(m, D_n, true) of RFC 9162 2.1.4.1.

    Empty when old_size is 0 or equals new_size (the RFC defines PROOF for 0 < m < n;
    these two cases are verified without hashes, see `verify_consistency`).
    """
    _check_generation_size(leaf_hashes, new_size, "new_size")
    if not isinstance(old_size, int) or isinstance(old_size, bool) or old_size < 0:
        raise ValueError(f"old_size must be a non-negative int, got {old_size!r}")
    if old_size > new_size:
        raise ValueError(f"old_size {old_size} exceeds new_size {new_size}")
    if old_size in (0, new_size):
        return []
    return _subproof(leaf_hashes, old_size, 0, new_size, complete=True)


def _subproof(
    leaf_hashes: Sequence[bytes], m: int, start: int, end: int, *, complete: bool
) -> list[bytes]:
    """SUBPROOF(m, D[start:end], b); `complete` is the RFC's boolean b."""
    n = end - start
    if m == n:
        # SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])}
        return [] if complete else [_range_root(leaf_hashes, start, end)]
    k = _largest_power_of_two_below(n)
    if m <= k:
        # SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
        return [
            *_subproof(leaf_hashes, m, start, start + k, complete=complete),
            _range_root(leaf_hashes, start + k, end),
        ]
    # SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
    return [
        *_subproof(leaf_hashes, m - k, start + k, end, complete=False),
        _range_root(leaf_hashes, start, start + k),
    ]


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Verify an inclusion proof, RFC 9162 2.1.3.2 step by step. Raises ProofError."""
    _require_hash("leaf hash", leaf_hash)
    _require_hash("root", root)
    path = _require_proof(proof)
    _require_size("leaf index", index)
    _require_size("tree size", size)
    if size == 0:
        raise ProofError("no inclusion proof exists for a tree of size 0: it has no leaves")

    # 1. If leaf_index >= tree_size, fail.
    if index >= size:
        raise ProofError(f"leaf index {index} is not less than tree size {size}")
    # 2. Set fn to leaf_index and sn to tree_size - 1.
    fn, sn = index, size - 1
    # 3. Set r to hash.
    r = leaf_hash
    # 4. For each value p in the inclusion_path array:
    for used, p in enumerate(path):
        # a. If sn is 0, stop the iteration and fail the proof verification.
        if sn == 0:
            raise ProofError(
                f"inclusion proof too long: {len(path)} hashes, index {index} in a tree "
                f"of size {size} needs {used}"
            )
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn & 1 or fn == sn:
            # i. Set r to HASH(0x01 || p || r).
            r = node_hash(p, r)
            # ii. If LSB(fn) is not set, right-shift both fn and sn equally until either
            #     LSB(fn) is set or fn is 0.
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            # Otherwise: i. Set r to HASH(0x01 || r || p).
            r = node_hash(r, p)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 5. Compare sn to 0. Compare r against the root_hash. If sn is equal to 0 and r and
    #    root_hash are equal, the inclusion is proven. Otherwise, fail.
    if sn != 0:
        raise ProofError(
            f"inclusion proof too short: {len(path)} hashes do not reach the root of a "
            f"tree of size {size} from index {index}"
        )
    if not _same(r, root):
        raise ProofError(
            f"inclusion proof does not match the root: leaf {index} of a tree of size "
            f"{size} hashes to {r.hex()}, expected {root.hex()}"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Verify a consistency proof, RFC 9162 2.1.4.2 step by step. Raises ProofError."""
    _require_size("old size", old_size)
    _require_size("new size", new_size)
    _require_hash("old root", old_root)
    _require_hash("new root", new_root)
    path = _require_proof(proof)

    if old_size > new_size:
        raise ProofError(
            f"old size {old_size} is larger than new size {new_size}: a tree never shrinks"
        )
    if old_size in (0, new_size):
        _verify_trivial_consistency(old_size, new_size, old_root, new_root, path)
        return
    _verify_consistency_rfc(old_size, new_size, old_root, new_root, path)


def _verify_trivial_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: list[bytes]
) -> None:
    """old_size == 0 or old_size == new_size: outside the RFC algorithm, no hashing."""
    if old_size == 0:
        if path:
            raise ProofError(
                f"consistency from size 0 needs an empty proof, got {len(path)} hashes"
            )
        if not _same(old_root, EMPTY_ROOT):
            raise ProofError("old root of a tree of size 0 must be the empty root")
        if new_size == 0 and not _same(new_root, EMPTY_ROOT):
            raise ProofError("new root of a tree of size 0 must be the empty root")
        return  # Every tree extends the empty tree.
    if old_size == new_size:
        if path:
            raise ProofError(
                f"consistency between equal sizes ({old_size}) needs an empty proof, "
                f"got {len(path)} hashes"
            )
        if not _same(old_root, new_root):
            raise ProofError(
                f"two different roots for the same tree size {old_size}: "
                f"{old_root.hex()} != {new_root.hex()}"
            )


def _verify_consistency_rfc(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: list[bytes]
) -> None:
    """RFC 9162 2.1.4.2 for 0 < first < second; `path` is a fresh copy of the proof."""
    supplied = len(path)
    # From here 0 < first < second, as RFC 9162 2.1.4.2 assumes.
    # 1. If consistency_path is an empty array, stop and fail the proof verification.
    if not path:
        raise ProofError(f"empty consistency proof from size {old_size} to {new_size}")
    # 2. If first is an exact power of 2, prepend first_hash to the consistency_path.
    prepended = old_size & (old_size - 1) == 0
    if prepended:
        path.insert(0, old_root)
    # 3. Set fn to first - 1 and sn to second - 1.
    fn, sn = old_size - 1, new_size - 1
    # 4. If LSB(fn) is set, right-shift both fn and sn equally until LSB(fn) is not set.
    #    (The loop condition is the "if": it does nothing when LSB(fn) is clear.)
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. Set both fr and sr to the first value in the consistency_path array.
    fr = sr = path[0]
    # 6. For each subsequent value c in the consistency_path array:
    for used, c in enumerate(path[1:], start=1):
        # a. If sn is 0, stop the iteration and fail the proof verification.
        if sn == 0:
            needed = used - 1 if prepended else used
            raise ProofError(
                f"consistency proof too long: {supplied} hashes, size {old_size} to "
                f"{new_size} needs {needed}"
            )
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn & 1 or fn == sn:
            # i. Set fr to HASH(0x01 || c || fr).  ii. Set sr to HASH(0x01 || c || sr).
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            # iii. If LSB(fn) is not set, right-shift both fn and sn equally until
            #      either LSB(fn) is set or fn is 0.
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            # Otherwise: i. Set sr to HASH(0x01 || sr || c).
            sr = node_hash(sr, c)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 7. Verify that fr equals first_hash, sr equals second_hash, and sn is 0.
    if sn != 0:
        raise ProofError(
            f"consistency proof too short: {supplied} hashes do not reach the root of "
            f"a tree of size {new_size} from size {old_size}"
        )
    if not _same(fr, old_root):
        raise ProofError(
            f"consistency proof does not match the old root of size {old_size}: "
            f"got {fr.hex()}, expected {old_root.hex()}"
        )
    if not _same(sr, new_root):
        raise ProofError(
            f"consistency proof does not match the new root of size {new_size}: "
            f"got {sr.hex()}, expected {new_root.hex()}"
        )
