"""Tests for broker.audit.merkle against RFC 9162 section 2.1.

Three independent anchors:
* published vectors (transparency-dev/merkle testonly/constants.go, proof/verify_test.go);
* a literal reference implementation of the RFC definitions MTH, PATH and PROOF/SUBPROOF
  (below), compared for every tree size 0..70, every index and every old size;
* property-based mutation of proofs, indexes, sizes and roots with an exact oracle.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from broker.audit.merkle import (
    EMPTY_ROOT,
    ProofError,
    TreeBuilder,
    VerificationError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

# --------------------------------------------------------------------------------------
# Reference implementation: RFC 9162 2.1.1, 2.1.3.1 and 2.1.4.1, literally, on entries.
# --------------------------------------------------------------------------------------


def _ref_k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@cache
def ref_mth(d: tuple[bytes, ...]) -> bytes:
    """MTH(D[n]). Cached only for speed; the function is pure."""
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()  # MTH({}) = SHA-256()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()  # MTH({d(0)}) = SHA-256(0x00 || d(0))
    k = _ref_k(n)
    # MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: tuple[bytes, ...]) -> list[bytes]:
    """PATH(m, D[n])."""
    n = len(d)
    if n == 1:
        return []  # PATH(0, {d(0)}) = {}
    k = _ref_k(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]  # PATH(m, D[0:k]) : MTH(D[k:n])
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]  # PATH(m - k, D[k:n]) : MTH(D[0:k])


def ref_subproof(m: int, d: tuple[bytes, ...], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _ref_k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: tuple[bytes, ...]) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true), for 0 < m < n."""
    return ref_subproof(m, d, True)


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------

MAX_EXHAUSTIVE = 70
ENTRIES: tuple[bytes, ...] = tuple(f"audit entry {i}".encode() for i in range(MAX_EXHAUSTIVE))
LEAVES: list[bytes] = [leaf_hash(e) for e in ENTRIES]
ROOTS: list[bytes] = [ref_mth(ENTRIES[:n]) for n in range(MAX_EXHAUSTIVE + 1)]

# Every message a rejected-but-well-formed proof may carry.
REJECTED = r"does not match|too short|too long|not less than|empty consistency proof"


def _hd(text: str) -> bytes:
    return bytes.fromhex(text)


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# transparency-dev/merkle testonly/constants.go
KAT_LEAVES = [
    _hd(""),
    _hd("00"),
    _hd("10"),
    _hd("2021"),
    _hd("3031"),
    _hd("40414243"),
    _hd("5051525354555657"),
    _hd("606162636465666768696a6b6c6d6e6f"),
]
KAT_ROOTS = [
    _hd("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    _hd("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    _hd("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    _hd("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    _hd("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    _hd("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    _hd("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    _hd("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    _hd("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]
_H96A2 = _hd("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7")
_H5F08 = _hd("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e")
_H6B47 = _hd("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")
_HBC1A = _hd("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")
_HCA85 = _hd("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0")
_HD37E = _hd("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")
_HFAC5 = _hd("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")
_H6E34 = _hd("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
_H0EBC = _hd("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a")
_HB086 = _hd("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f")
# proof/verify_test.go; indexes there are 1-based, here 0-based.
KAT_INCLUSION = [
    (0, 1, []),
    (0, 8, [_H96A2, _H5F08, _H6B47]),
    (5, 8, [_HBC1A, _HCA85, _HD37E]),
    (2, 3, [_HFAC5]),
    (1, 5, [_H6E34, _H5F08, _HBC1A]),
]
KAT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, [_H96A2, _H5F08, _H6B47]),
    (6, 8, [_H0EBC, _HCA85, _HD37E]),
    (2, 5, [_H5F08, _HBC1A]),
    (6, 7, [_H0EBC, _HB086, _HD37E]),
]


# --------------------------------------------------------------------------------------
# Hashing and roots
# --------------------------------------------------------------------------------------


def test_hash_primitives_are_domain_separated() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    # An interior node's bytes, logged as an entry, do not hash to the node.
    assert leaf_hash(a + b) != node_hash(a, b)


def test_known_roots() -> None:
    leaves = [leaf_hash(x) for x in KAT_LEAVES]
    for n, expected in enumerate(KAT_ROOTS):
        assert root_from_leaf_hashes(leaves[:n]) == expected, n
        assert ref_mth(tuple(KAT_LEAVES[:n])) == expected, n


@pytest.mark.parametrize(("index", "size", "proof"), KAT_INCLUSION)
def test_known_inclusion_proofs(index: int, size: int, proof: list[bytes]) -> None:
    leaves = [leaf_hash(x) for x in KAT_LEAVES]
    assert inclusion_proof(leaves, index, size) == proof
    verify_inclusion(leaves[index], index, size, proof, KAT_ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), KAT_CONSISTENCY)
def test_known_consistency_proofs(old: int, new: int, proof: list[bytes]) -> None:
    leaves = [leaf_hash(x) for x in KAT_LEAVES]
    assert consistency_proof(leaves, old, new) == proof
    verify_consistency(old, new, KAT_ROOTS[old], KAT_ROOTS[new], proof)


def test_roots_match_reference_for_every_size() -> None:
    builder = TreeBuilder()
    assert builder.root() == EMPTY_ROOT
    assert builder.size == 0
    for n in range(MAX_EXHAUSTIVE + 1):
        assert builder.size == n
        assert builder.root() == ROOTS[n], n
        assert root_from_leaf_hashes(LEAVES[:n]) == ROOTS[n], n
        # Only the right edge is kept: one subtree root per set bit of the size.
        assert len(builder._stack) == n.bit_count()
        if n < MAX_EXHAUSTIVE:
            builder.append(LEAVES[n])


def _level_by_level_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """An independent formulation: pair up each level, promote a lone last node."""
    level = list(leaf_hashes)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def test_streaming_builder_large_tree_keeps_logarithmic_state() -> None:
    size = 100_003
    builder = TreeBuilder()
    widest = 0
    for i in range(size):
        builder.append(leaf_hash(i.to_bytes(8, "big")))
        widest = max(widest, len(builder._stack))
    assert widest <= size.bit_length()
    expected = _level_by_level_root([leaf_hash(i.to_bytes(8, "big")) for i in range(size)])
    assert builder.root() == expected


def test_builder_rejects_bad_leaf_hashes() -> None:
    builder = TreeBuilder()
    with pytest.raises(ValueError, match="32 bytes"):
        builder.append(b"\x00" * 31)
    with pytest.raises(ValueError, match="32 bytes"):
        builder.append("a" * 32)  # type: ignore[arg-type]
    assert builder.size == 0


# --------------------------------------------------------------------------------------
# Every size 0..70, every index, every old size: generation == reference, and it verifies.
# --------------------------------------------------------------------------------------


def test_inclusion_proofs_match_reference_for_every_index_and_size() -> None:
    checked = 0
    for n in range(1, MAX_EXHAUSTIVE + 1):
        for i in range(n):
            proof = inclusion_proof(LEAVES, i, n)
            assert proof == ref_path(i, ENTRIES[:n]), (i, n)
            verify_inclusion(LEAVES[i], i, n, proof, ROOTS[n])
            checked += 1
    assert checked == MAX_EXHAUSTIVE * (MAX_EXHAUSTIVE + 1) // 2


def test_consistency_proofs_match_reference_for_every_pair_of_sizes() -> None:
    for n in range(MAX_EXHAUSTIVE + 1):
        for m in range(n + 1):
            proof = consistency_proof(LEAVES, m, n)
            if 0 < m < n:
                assert proof == ref_proof(m, ENTRIES[:n]), (m, n)
                assert proof
            else:
                assert proof == [], (m, n)
            verify_consistency(m, n, ROOTS[m], ROOTS[n], proof)


def test_proof_generation_uses_only_the_first_size_leaves() -> None:
    assert inclusion_proof(LEAVES, 3, 5) == inclusion_proof(LEAVES[:5], 3, 5)
    assert consistency_proof(LEAVES, 3, 5) == consistency_proof(LEAVES[:5], 3, 5)


def test_proof_generation_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="outside a tree of size 5"):
        inclusion_proof(LEAVES, 5, 5)
    with pytest.raises(ValueError, match="outside a tree of size 0"):
        inclusion_proof(LEAVES, 0, 0)
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(LEAVES, -1, 5)
    with pytest.raises(ValueError, match="exceeds the 70 leaf hashes"):
        inclusion_proof(LEAVES, 0, 71)
    with pytest.raises(ValueError, match="old_size 6 exceeds new_size 5"):
        consistency_proof(LEAVES, 6, 5)
    with pytest.raises(ValueError, match="exceeds the 70 leaf hashes"):
        consistency_proof(LEAVES, 1, 71)


# --------------------------------------------------------------------------------------
# Inclusion: negative cases
# --------------------------------------------------------------------------------------

FLIP_INCLUSION_CASES = [(0, 8), (5, 8), (2, 5), (6, 7), (31, 33), (64, 70), (69, 70), (0, 70)]


@pytest.mark.parametrize(("index", "size"), FLIP_INCLUSION_CASES)
def test_every_bit_flip_in_an_inclusion_proof_is_rejected(index: int, size: int) -> None:
    proof = inclusion_proof(LEAVES, index, size)
    root, leaf = ROOTS[size], LEAVES[index]
    for k in range(len(proof)):
        for bit in range(256):
            bad = [*proof[:k], _flip(proof[k], bit), *proof[k + 1 :]]
            with pytest.raises(ProofError, match="inclusion proof does not match the root"):
                verify_inclusion(leaf, index, size, bad, root)
    for bit in range(256):
        with pytest.raises(ProofError, match="does not match the root"):
            verify_inclusion(_flip(leaf, bit), index, size, proof, root)
        with pytest.raises(ProofError, match="does not match the root"):
            verify_inclusion(leaf, index, size, proof, _flip(root, bit))


def test_a_bit_flip_in_each_inclusion_proof_element_is_rejected_for_every_size() -> None:
    for n in range(1, MAX_EXHAUSTIVE + 1):
        for i in range(n):
            proof = inclusion_proof(LEAVES, i, n)
            for k in range(len(proof)):
                bad = list(proof)
                bad[k] = _flip(bad[k], (i * 31 + k * 7 + n) % 256)
                with pytest.raises(ProofError, match="does not match the root"):
                    verify_inclusion(LEAVES[i], i, n, bad, ROOTS[n])


def test_dropped_or_added_inclusion_proof_elements_are_rejected() -> None:
    extra = leaf_hash(b"extra")
    for n in range(1, MAX_EXHAUSTIVE + 1):
        for i in range(n):
            proof = inclusion_proof(LEAVES, i, n)
            for k in range(len(proof)):
                shorter = proof[:k] + proof[k + 1 :]
                with pytest.raises(ProofError, match="inclusion proof too short"):
                    verify_inclusion(LEAVES[i], i, n, shorter, ROOTS[n])
            for k in range(len(proof) + 1):
                for added in (extra, ROOTS[n], LEAVES[i]):
                    longer = [*proof[:k], added, *proof[k:]]
                    with pytest.raises(
                        ProofError,
                        match=rf"inclusion proof too long: {len(proof) + 1} hashes, index {i} "
                        rf"in a tree of size {n} needs {len(proof)}$",
                    ):
                        verify_inclusion(LEAVES[i], i, n, longer, ROOTS[n])


def test_wrong_index_is_rejected() -> None:
    for n in range(1, MAX_EXHAUSTIVE + 1):
        for i in range(n):
            proof = inclusion_proof(LEAVES, i, n)
            for j in range(n):
                if j != i:
                    with pytest.raises(ProofError, match=REJECTED):
                        verify_inclusion(LEAVES[i], j, n, proof, ROOTS[n])
            with pytest.raises(ProofError, match=f"leaf index {n} is not less than tree size {n}"):
                verify_inclusion(LEAVES[i], n, n, proof, ROOTS[n])


def test_wrong_size_is_rejected_when_the_root_belongs_to_that_size() -> None:
    """A claimed (size, root) pair from a real checkpoint of another size never verifies."""
    for n in range(1, MAX_EXHAUSTIVE + 1):
        for i in range(n):
            proof = inclusion_proof(LEAVES, i, n)
            if n <= 32:
                others = set(range(1, MAX_EXHAUSTIVE + 1)) - {n}
            else:
                others = {n - 1, n + 1, n * 2, n // 2, i + 1} - {n}
            for s in sorted(others):
                root = ROOTS[s] if s <= MAX_EXHAUSTIVE else leaf_hash(b"unknown root")
                with pytest.raises(ProofError, match=REJECTED):
                    verify_inclusion(LEAVES[i], i, s, proof, root)


def test_transparency_dev_wrong_size_probes_with_the_same_root() -> None:
    """verify_test.go probes treeSize*2 and treeSize/2 keeping the root: all rejected."""
    leaves = [leaf_hash(x) for x in KAT_LEAVES]
    for index, size, proof in KAT_INCLUSION:
        for wrong in {size * 2, size // 2} - {size}:
            with pytest.raises(ProofError, match=REJECTED + "|size 0"):
                verify_inclusion(leaves[index], index, wrong, proof, KAT_ROOTS[size])


def test_size_is_bound_only_through_the_root() -> None:
    """Documents the limit every RFC 9162 verifier has (why check_inclusion exists).

    The proof for leaf 0 in the size-3 tree, [h1, h2], also has the shape of a size-4
    proof whose second hash is the interior node over leaves 2 and 3. With the size-3
    root and a claimed size of 4 it verifies: a verifier cannot tell a leaf hash from a
    node hash. The statement it proves ("h0 is leaf 0 of a size-4 tree with this root")
    is only false because no size-4 tree has that root, which the verifier cannot know.
    So the size and the root must come from one signed checkpoint; with the real size-4
    root (the test above) the same proof is rejected.
    """
    proof3 = inclusion_proof(LEAVES, 0, 3)
    verify_inclusion(LEAVES[0], 0, 4, proof3, ROOTS[3])  # accepted, see docstring
    with pytest.raises(ProofError, match="does not match the root"):
        verify_inclusion(LEAVES[0], 0, 4, proof3, ROOTS[4])


def test_proof_for_another_entry_is_rejected() -> None:
    for n in range(2, MAX_EXHAUSTIVE + 1):
        for i in range(n):
            proof = inclusion_proof(LEAVES, i, n)
            for j in {(i + 1) % n, (i + n - 1) % n, n - 1 - i} - {i}:
                with pytest.raises(ProofError, match="does not match the root"):
                    verify_inclusion(LEAVES[j], i, n, proof, ROOTS[n])
    # The entry's own proof, with another entry's bytes that were never logged.
    with pytest.raises(ProofError, match="does not match the root"):
        verify_inclusion(
            leaf_hash(b"audit entry 5 (edited)"), 5, 8, inclusion_proof(LEAVES, 5, 8), ROOTS[8]
        )


def test_inclusion_in_a_size_zero_tree_is_an_error() -> None:
    for proof in ([], [EMPTY_ROOT]):
        with pytest.raises(ProofError, match="tree of size 0: it has no leaves"):
            verify_inclusion(LEAVES[0], 0, 0, proof, EMPTY_ROOT)


def test_index_out_of_range_is_an_error() -> None:
    with pytest.raises(ProofError, match="leaf index 8 is not less than tree size 8"):
        verify_inclusion(LEAVES[0], 8, 8, inclusion_proof(LEAVES, 0, 8), ROOTS[8])
    with pytest.raises(ProofError, match="leaf index must not be negative, got -1"):
        verify_inclusion(LEAVES[0], -1, 8, inclusion_proof(LEAVES, 0, 8), ROOTS[8])
    with pytest.raises(ProofError, match="exceeds 2\\*\\*64-1"):
        verify_inclusion(LEAVES[0], 0, 2**64, [], ROOTS[1])


def test_single_leaf_tree() -> None:
    verify_inclusion(LEAVES[0], 0, 1, [], ROOTS[1])
    with pytest.raises(ProofError, match="does not match the root"):
        verify_inclusion(LEAVES[1], 0, 1, [], ROOTS[1])
    with pytest.raises(ProofError, match="too long: 1 hashes, index 0 in a tree of size 1 needs 0"):
        verify_inclusion(LEAVES[0], 0, 1, [LEAVES[1]], ROOTS[1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: verify_inclusion(b"\x00" * 31, 0, 1, [], ROOTS[1]),
            "leaf hash must be 32 bytes, got 31",
        ),
        (
            lambda: verify_inclusion(LEAVES[0], 0, 1, [], ROOTS[1] + b"\x00"),
            "root must be 32 bytes, got 33",
        ),
        (
            lambda: verify_inclusion(LEAVES[0], 0, 2, [b"\x00" * 33], ROOTS[2]),
            "proof hash 0 must be 32 bytes, got 33",
        ),
        (
            lambda: verify_inclusion(LEAVES[0], 0, 2, [b""], ROOTS[2]),
            "proof hash 0 must be 32 bytes, got 0",
        ),
        (
            lambda: verify_inclusion(LEAVES[0], 0, 2, [LEAVES[1].hex()], ROOTS[2]),  # type: ignore[list-item]
            "proof hash 0 must be bytes, got str",
        ),
        (
            lambda: verify_inclusion(LEAVES[0], 0, 2, LEAVES[1], ROOTS[2]),  # type: ignore[arg-type]
            "proof must be a sequence of hashes, got bytes",
        ),
        (
            lambda: verify_inclusion(ROOTS[2].hex(), 0, 2, [LEAVES[1]], ROOTS[2]),  # type: ignore[arg-type]
            "leaf hash must be bytes, got str",
        ),
        (
            lambda: verify_inclusion(LEAVES[0], True, 2, [LEAVES[1]], ROOTS[2]),
            "leaf index must be an int, got bool",
        ),
        (
            lambda: verify_inclusion(LEAVES[0], 0, 2.0, [LEAVES[1]], ROOTS[2]),  # type: ignore[arg-type]
            "tree size must be an int, got float",
        ),
        (
            lambda: verify_consistency(1, 2, ROOTS[1][:16], ROOTS[2], [LEAVES[1]]),
            "old root must be 32 bytes, got 16",
        ),
        (
            lambda: verify_consistency(1, 2, ROOTS[1], bytearray(ROOTS[2]), [LEAVES[1]]),  # type: ignore[arg-type]
            "new root must be bytes, got bytearray",
        ),
        (
            lambda: verify_consistency(1, 2, ROOTS[1], ROOTS[2], [LEAVES[1][:-1]]),
            "proof hash 0 must be 32 bytes, got 31",
        ),
        (
            lambda: verify_consistency(-1, 2, ROOTS[1], ROOTS[2], []),
            "old size must not be negative",
        ),
        (
            lambda: verify_consistency(1, 2**64, ROOTS[1], ROOTS[2], []),
            "new size 18446744073709551616 exceeds",
        ),
    ],
)
def test_malformed_inputs_are_errors(call: Callable[[], None], message: str) -> None:
    with pytest.raises(ProofError, match=message):
        call()


def test_verification_does_not_modify_the_callers_proof() -> None:
    proof = consistency_proof(LEAVES, 4, 13)  # old size a power of two: first_hash prepended
    before = list(proof)
    verify_consistency(4, 13, ROOTS[4], ROOTS[13], proof)
    assert proof == before
    proof = inclusion_proof(LEAVES, 6, 13)
    before = list(proof)
    verify_inclusion(LEAVES[6], 6, 13, proof, ROOTS[13])
    assert proof == before


def test_proof_error_is_a_verification_error() -> None:
    assert issubclass(ProofError, VerificationError)
    assert not issubclass(ProofError, ValueError)


# --------------------------------------------------------------------------------------
# Consistency: negative cases
# --------------------------------------------------------------------------------------

FLIP_CONSISTENCY_CASES = [(1, 8), (6, 8), (2, 5), (6, 7), (3, 70), (64, 70), (37, 64), (69, 70)]
ROOT_MISMATCH = r"consistency proof does not match the (old|new) root"


@pytest.mark.parametrize(("old", "new"), FLIP_CONSISTENCY_CASES)
def test_every_bit_flip_in_a_consistency_proof_is_rejected(old: int, new: int) -> None:
    proof = consistency_proof(LEAVES, old, new)
    for k in range(len(proof)):
        for bit in range(256):
            bad = [*proof[:k], _flip(proof[k], bit), *proof[k + 1 :]]
            with pytest.raises(ProofError, match=ROOT_MISMATCH):
                verify_consistency(old, new, ROOTS[old], ROOTS[new], bad)
    for bit in range(256):
        with pytest.raises(ProofError, match=ROOT_MISMATCH):
            verify_consistency(old, new, _flip(ROOTS[old], bit), ROOTS[new], proof)
        with pytest.raises(ProofError, match="does not match the new root"):
            verify_consistency(old, new, ROOTS[old], _flip(ROOTS[new], bit), proof)


def test_a_bit_flip_in_each_consistency_proof_element_is_rejected_for_every_pair() -> None:
    for n in range(2, MAX_EXHAUSTIVE + 1):
        for m in range(1, n):
            proof = consistency_proof(LEAVES, m, n)
            for k in range(len(proof)):
                bad = list(proof)
                bad[k] = _flip(bad[k], (m * 17 + k * 5 + n) % 256)
                with pytest.raises(ProofError, match=ROOT_MISMATCH):
                    verify_consistency(m, n, ROOTS[m], ROOTS[n], bad)


def test_dropped_or_added_consistency_proof_elements_are_rejected() -> None:
    extra = leaf_hash(b"extra")
    for n in range(2, MAX_EXHAUSTIVE + 1):
        for m in range(1, n):
            proof = consistency_proof(LEAVES, m, n)
            for k in range(len(proof)):
                shorter = proof[:k] + proof[k + 1 :]
                expected = "consistency proof too short" if shorter else "empty consistency proof"
                with pytest.raises(ProofError, match=expected):
                    verify_consistency(m, n, ROOTS[m], ROOTS[n], shorter)
            for k in range(len(proof) + 1):
                for added in (extra, ROOTS[m], ROOTS[n]):
                    longer = [*proof[:k], added, *proof[k:]]
                    with pytest.raises(
                        ProofError,
                        match=rf"consistency proof too long: {len(proof) + 1} hashes, size {m} "
                        rf"to {n} needs {len(proof)}$",
                    ):
                        verify_consistency(m, n, ROOTS[m], ROOTS[n], longer)


def test_wrong_sizes_are_rejected_when_the_roots_belong_to_them() -> None:
    for n in range(2, 41):
        for m in range(1, n):
            proof = consistency_proof(LEAVES, m, n)
            for m2 in range(1, n):
                if m2 != m and consistency_proof(LEAVES, m2, n) != proof:
                    with pytest.raises(ProofError, match=REJECTED):
                        verify_consistency(m2, n, ROOTS[m2], ROOTS[n], proof)
            for n2 in range(m + 1, MAX_EXHAUSTIVE + 1):
                if n2 != n and consistency_proof(LEAVES, m, n2) != proof:
                    with pytest.raises(ProofError, match=REJECTED):
                        verify_consistency(m, n2, ROOTS[m], ROOTS[n2], proof)


def test_consistency_with_swapped_or_foreign_roots_is_rejected() -> None:
    for n in range(2, MAX_EXHAUSTIVE + 1):
        for m in range(1, n):
            proof = consistency_proof(LEAVES, m, n)
            with pytest.raises(ProofError, match=ROOT_MISMATCH):
                verify_consistency(m, n, ROOTS[n], ROOTS[m], proof)
            with pytest.raises(ProofError, match=ROOT_MISMATCH):
                verify_consistency(m, n, ROOTS[m - 1], ROOTS[n], proof)


def test_old_size_larger_than_new_size_is_an_error() -> None:
    with pytest.raises(
        ProofError, match="old size 8 is larger than new size 7: a tree never shrinks"
    ):
        verify_consistency(8, 7, ROOTS[8], ROOTS[7], consistency_proof(LEAVES, 7, 8))
    with pytest.raises(ProofError, match="old size 1 is larger than new size 0"):
        verify_consistency(1, 0, ROOTS[1], EMPTY_ROOT, [])


def test_equal_sizes_need_equal_roots_and_an_empty_proof() -> None:
    for n in range(1, MAX_EXHAUSTIVE + 1):
        verify_consistency(n, n, ROOTS[n], ROOTS[n], [])
        with pytest.raises(ProofError, match=f"two different roots for the same tree size {n}"):
            verify_consistency(n, n, ROOTS[n], ROOTS[n - 1], [])
        with pytest.raises(ProofError, match=rf"equal sizes \({n}\) needs an empty proof, got 1"):
            verify_consistency(n, n, ROOTS[n], ROOTS[n], [ROOTS[n]])


def test_consistency_from_size_zero() -> None:
    """Size 0 extends to anything, but only with an empty proof and the empty root."""
    for n in range(MAX_EXHAUSTIVE + 1):
        verify_consistency(0, n, EMPTY_ROOT, ROOTS[n], [])
        with pytest.raises(ProofError, match="from size 0 needs an empty proof, got 1 hashes"):
            verify_consistency(0, n, EMPTY_ROOT, ROOTS[n], [EMPTY_ROOT])
        with pytest.raises(ProofError, match="old root of a tree of size 0 must be the empty root"):
            verify_consistency(0, n, ROOTS[1], ROOTS[n], [])
    with pytest.raises(ProofError, match="new root of a tree of size 0 must be the empty root"):
        verify_consistency(0, 0, EMPTY_ROOT, ROOTS[1], [])
    with pytest.raises(ProofError, match="from size 0 needs an empty proof"):
        verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])


def test_empty_consistency_proof_between_different_sizes_is_an_error() -> None:
    for n in range(2, MAX_EXHAUSTIVE + 1):
        for m in range(1, n):
            with pytest.raises(ProofError, match=f"empty consistency proof from size {m} to {n}"):
                verify_consistency(m, n, ROOTS[m], ROOTS[n], [])


# --------------------------------------------------------------------------------------
# Property-based: random sizes up to 2000, random mutations, exact oracle.
#
# Two logs share their first FORK entries and then differ (a fork). Claimed (size, root)
# pairs are always either a genuine pair of one of the logs or carry a forged root: an
# attacker cannot make a checkpoint signature cover anything else, and a mismatched
# genuine pair is the limit documented in test_size_is_bound_only_through_the_root.
# A claim must verify iff it is exactly the genuine claim for its (index, size) or
# (old, new) in some log; any other accept would need a SHA-256 collision.
# --------------------------------------------------------------------------------------

FUZZ_MAX = 2000
FORK = 777
_LOG_A = [leaf_hash(b"log entry %d" % i) for i in range(FUZZ_MAX)]
_LOG_B = _LOG_A[:FORK] + [leaf_hash(b"forked entry %d" % i) for i in range(FORK, FUZZ_MAX)]
LOGS = (_LOG_A, _LOG_B)


def _all_roots(leaves: Sequence[bytes]) -> list[bytes]:
    builder = TreeBuilder()
    roots = [builder.root()]
    for h in leaves:
        builder.append(h)
        roots.append(builder.root())
    return roots


FUZZ_ROOTS = tuple(_all_roots(log) for log in LOGS)
HASHES = st.binary(min_size=32, max_size=32)
# AUDIT_FUZZ_EXAMPLES=50000 for a deep run; the default keeps the file fast.
FUZZ_SETTINGS = settings(
    max_examples=int(os.environ.get("AUDIT_FUZZ_EXAMPLES", "1000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _reason(error: ProofError) -> str:
    """The kind of rejection, for hypothesis statistics (-s --hypothesis-show-statistics)."""
    return re.sub(r"\d+", "N", str(error).split(":")[0])


@dataclass(frozen=True)
class InclusionClaim:
    leaf: bytes
    index: int
    size: int
    proof: tuple[bytes, ...]
    root: bytes


@dataclass(frozen=True)
class ConsistencyClaim:
    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    proof: tuple[bytes, ...]


def _mutate_proof(data: st.DataObject, proof: tuple[bytes, ...]) -> tuple[bytes, ...]:
    out = list(proof)
    kind = data.draw(
        st.sampled_from(
            ["flip", "replace", "drop", "insert", "swap", "reverse", "truncate", "empty"]
        )
    )
    if kind == "insert" or not out:
        out.insert(data.draw(st.integers(0, len(out))), data.draw(HASHES))
    elif kind == "flip":
        k = data.draw(st.integers(0, len(out) - 1))
        out[k] = _flip(out[k], data.draw(st.integers(0, 255)))
    elif kind == "replace":
        out[data.draw(st.integers(0, len(out) - 1))] = data.draw(HASHES)
    elif kind == "drop":
        del out[data.draw(st.integers(0, len(out) - 1))]
    elif kind == "swap" and len(out) > 1:
        i, j = data.draw(
            st.lists(st.integers(0, len(out) - 1), min_size=2, max_size=2, unique=True)
        )
        out[i], out[j] = out[j], out[i]
    elif kind == "reverse":
        out.reverse()
    elif kind == "truncate":
        out = out[: data.draw(st.integers(0, len(out) - 1))]
    else:
        out = []
    return tuple(out)


def _genuine_pair(data: st.DataObject) -> tuple[int, bytes]:
    """A (size, root) pair from some log's real history, or a size with a forged root."""
    size = data.draw(st.integers(0, FUZZ_MAX + 2))
    if size > FUZZ_MAX or data.draw(st.integers(0, 9)) == 0:
        return size, data.draw(HASHES)
    return size, FUZZ_ROOTS[data.draw(st.integers(0, 1))][size]


def _mutate_inclusion(data: st.DataObject, c: InclusionClaim) -> InclusionClaim:
    kinds = ["proof", "proof", "proof", "index", "leaf", "pair", "root", "other_proof", "moved"]
    kind = data.draw(st.sampled_from(kinds))
    changes: dict[str, object]
    if kind == "proof":
        changes = {"proof": _mutate_proof(data, c.proof)}
    elif kind == "index":
        changes = {"index": data.draw(st.integers(0, FUZZ_MAX + 2))}
    elif kind == "leaf":
        log = LOGS[data.draw(st.integers(0, 1))]
        changes = {"leaf": log[data.draw(st.integers(0, FUZZ_MAX - 1))]}
    elif kind == "pair":
        size, root = _genuine_pair(data)
        changes = {"size": size, "root": root}
    elif kind == "root":
        changes = {"root": _flip(c.root, data.draw(st.integers(0, 255)))}
    else:
        log = LOGS[data.draw(st.integers(0, 1))]
        size = data.draw(st.integers(1, FUZZ_MAX))
        index = data.draw(st.integers(0, size - 1))
        if kind == "other_proof":  # a valid proof of some other claim
            changes = {"proof": tuple(inclusion_proof(log, index, size))}
        else:  # "moved": another real (index, leaf), the proof left as it was
            changes = {"index": index, "leaf": log[index]}
    return replace(c, **changes)  # type: ignore[arg-type]


def _inclusion_is_genuine(c: InclusionClaim) -> bool:
    for log, roots in zip(LOGS, FUZZ_ROOTS, strict=True):
        if (
            0 <= c.index < c.size <= FUZZ_MAX
            and c.root == roots[c.size]
            and c.leaf == log[c.index]
            and list(c.proof) == inclusion_proof(log, c.index, c.size)
        ):
            return True
    return False


@FUZZ_SETTINGS
@given(data=st.data())
def test_fuzzed_inclusion_claims_have_no_false_accepts(data: st.DataObject) -> None:
    which = data.draw(st.integers(0, 1))
    size = data.draw(st.integers(1, FUZZ_MAX))
    index = data.draw(st.integers(0, size - 1))
    log = LOGS[which]
    claim = InclusionClaim(
        leaf=log[index],
        index=index,
        size=size,
        proof=tuple(inclusion_proof(log, index, size)),
        root=FUZZ_ROOTS[which][size],
    )
    verify_inclusion(claim.leaf, claim.index, claim.size, list(claim.proof), claim.root)
    for _ in range(data.draw(st.integers(1, 3))):
        claim = _mutate_inclusion(data, claim)
    args = (claim.leaf, claim.index, claim.size, list(claim.proof), claim.root)
    if _inclusion_is_genuine(claim):
        event("genuine claim: accepted")
        verify_inclusion(*args)
    else:
        with pytest.raises(ProofError) as caught:
            verify_inclusion(*args)
        event("rejected: " + _reason(caught.value))


def _mutate_consistency(data: st.DataObject, c: ConsistencyClaim) -> ConsistencyClaim:
    kinds = ["proof", "proof", "proof", "old", "new", "fork", "root", "swap", "other_proof"]
    kind = data.draw(st.sampled_from(kinds))
    changes: dict[str, object]
    if kind == "proof":
        changes = {"proof": _mutate_proof(data, c.proof)}
    elif kind == "old":
        size, root = _genuine_pair(data)
        changes = {"old_size": size, "old_root": root}
    elif kind == "new":
        size, root = _genuine_pair(data)
        changes = {"new_size": size, "new_root": root}
    elif kind == "fork" and c.new_size <= FUZZ_MAX:  # same size, the other log's root
        roots = FUZZ_ROOTS[1] if c.new_root == FUZZ_ROOTS[0][c.new_size] else FUZZ_ROOTS[0]
        changes = {"new_root": roots[c.new_size]}
    elif kind == "root":
        changes = {"old_root": _flip(c.old_root, data.draw(st.integers(0, 255)))}
    elif kind == "swap":
        changes = {"old_root": c.new_root, "new_root": c.old_root}
    else:  # a valid proof of some other claim
        log = LOGS[data.draw(st.integers(0, 1))]
        new = data.draw(st.integers(0, FUZZ_MAX))
        old = data.draw(st.integers(0, new))
        changes = {"proof": tuple(consistency_proof(log, old, new))}
    return replace(c, **changes)  # type: ignore[arg-type]


def _consistency_is_genuine(c: ConsistencyClaim) -> bool:
    if c.old_size == 0 and c.old_size <= c.new_size:
        # Every tree, whatever its root, extends the empty tree (documented choice).
        return (
            not c.proof
            and c.old_root == EMPTY_ROOT
            and (c.new_size > 0 or c.new_root == EMPTY_ROOT)
        )
    if c.old_size == c.new_size:
        # Any tree is consistent with itself, whatever its root.
        return not c.proof and c.old_root == c.new_root
    for log, roots in zip(LOGS, FUZZ_ROOTS, strict=True):
        if (
            0 <= c.old_size <= c.new_size <= FUZZ_MAX
            and c.old_root == roots[c.old_size]
            and c.new_root == roots[c.new_size]
            and list(c.proof) == consistency_proof(log, c.old_size, c.new_size)
        ):
            return True
    return False


@FUZZ_SETTINGS
@given(data=st.data())
def test_fuzzed_consistency_claims_have_no_false_accepts(data: st.DataObject) -> None:
    which = data.draw(st.integers(0, 1))
    new = data.draw(st.integers(0, FUZZ_MAX))
    old = data.draw(st.integers(0, new))
    log, roots = LOGS[which], FUZZ_ROOTS[which]
    claim = ConsistencyClaim(
        old, new, roots[old], roots[new], tuple(consistency_proof(log, old, new))
    )
    verify_consistency(old, new, roots[old], roots[new], list(claim.proof))
    for _ in range(data.draw(st.integers(1, 3))):
        claim = _mutate_consistency(data, claim)
    args = (claim.old_size, claim.new_size, claim.old_root, claim.new_root, list(claim.proof))
    if _consistency_is_genuine(claim):
        event("genuine claim: accepted")
        verify_consistency(*args)
    else:
        with pytest.raises(ProofError) as caught:
            verify_consistency(*args)
        event("rejected: " + _reason(caught.value))


def test_fork_is_detected_by_consistency_proofs() -> None:
    """Past the fork point no proof from either log links A's old root to B's new root."""
    a_roots, b_roots = FUZZ_ROOTS
    for old in (FORK - 1, FORK, FORK + 1, 1024, 1500):
        for new in (old + 1, 1999, 2000):
            if old <= FORK:
                # Up to the fork both logs agree: B really extends A's old tree.
                proof = consistency_proof(LOGS[1], old, new)
                verify_consistency(old, new, a_roots[old], b_roots[new], proof)
                continue
            for log in LOGS:
                proof = consistency_proof(log, old, new)
                with pytest.raises(ProofError, match=ROOT_MISMATCH):
                    verify_consistency(old, new, a_roots[old], b_roots[new], proof)
