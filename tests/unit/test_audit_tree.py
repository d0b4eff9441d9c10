"""The stored tree (broker.audit.tree) against merkle.py's RFC 9162 reference generation.

merkle.py is itself checked against a literal implementation of the RFC definitions
(test_merkle.py); here every root, inclusion proof and consistency proof served from
stored nodes must equal it, for every tree size 0..70 and every index and old size.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.audit import merkle, tree


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(n)]


def stored(hashes: list[bytes]) -> tuple[tree.Frontier, dict[int, bytes]]:
    frontier, nodes = tree.Frontier(), {}
    for leaf in hashes:
        for node in frontier.push(leaf):
            assert node.position not in nodes
            nodes[node.position] = node.hash
    return frontier, nodes


def reader(nodes: dict[int, bytes]) -> tree.NodeReader:
    def read(position: int) -> bytes:
        if position not in nodes:
            raise tree.MissingNodeError(position)
        return nodes[position]
    return read


ALL = leaves(70)
FRONTIER, NODES = stored(ALL)
READ = reader(NODES)


def test_nodes_are_stored_densely_in_creation_order() -> None:
    for n in range(71):
        _, nodes = stored(ALL[:n])
        assert sorted(nodes) == list(range(tree.node_count(n)))
    for position in range(tree.node_count(70)):
        level, index = tree.level_index_of(position)
        assert tree.node_position(level, index) == position


def test_roots_at_every_size_match_the_reference() -> None:
    for n in range(71):
        assert tree.root_at(READ, n) == merkle.root_from_leaf_hashes(ALL[:n])
        assert tree.Frontier.load(READ, n).root() == merkle.root_from_leaf_hashes(ALL[:n])
    assert FRONTIER.root() == merkle.root_from_leaf_hashes(ALL)


def test_inclusion_proofs_for_every_size_and_index_match_the_reference() -> None:
    for n in range(1, 71):
        for i in range(n):
            proof = tree.inclusion_proof_at(READ, i, n)
            assert proof == merkle.inclusion_proof(ALL, i, n), (i, n)
            merkle.verify_inclusion(ALL[i], i, n, proof, merkle.root_from_leaf_hashes(ALL[:n]))


def test_consistency_proofs_for_every_pair_of_sizes_match_the_reference() -> None:
    for n in range(71):
        for m in range(n + 1):
            proof = tree.consistency_proof_at(READ, m, n)
            assert proof == merkle.consistency_proof(ALL, m, n), (m, n)
            merkle.verify_consistency(m, n, merkle.root_from_leaf_hashes(ALL[:m]),
                                      merkle.root_from_leaf_hashes(ALL[:n]), proof)


def test_bad_arguments_are_errors_not_empty_proofs() -> None:
    with pytest.raises(ValueError, match="outside a tree of size 0"):
        tree.inclusion_proof_at(READ, 0, 0)
    with pytest.raises(ValueError, match="outside"):
        tree.inclusion_proof_at(READ, 5, 5)
    with pytest.raises(ValueError, match="old <= new"):
        tree.consistency_proof_at(READ, 6, 5)
    with pytest.raises(tree.MissingNodeError):
        tree.root_at(READ, 71)
    with pytest.raises(ValueError, match="frontier nodes"):
        tree.Frontier(3, [])


def test_a_frontier_loaded_from_storage_continues_the_same_tree() -> None:
    for n in (0, 1, 5, 32, 33, 63):
        _, nodes = stored(ALL[:n])
        frontier = tree.Frontier.load(reader(nodes), n)
        for leaf in ALL[n:]:
            for node in frontier.push(leaf):
                nodes[node.position] = node.hash
        assert nodes == NODES


@given(st.integers(1, 5000), st.data())
def test_large_positions_round_trip_and_decompose(size: int, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, size - 1))
    level = data.draw(st.integers(0, 12))
    index = start >> level
    assert tree.level_index_of(tree.node_position(level, index)) == (level, index)
    covered = [(lv, ix) for lv, ix in tree.perfect_subtrees(0, size)]
    assert sum(1 << lv for lv, _ in covered) == size
    assert len(covered) == size.bit_count()
