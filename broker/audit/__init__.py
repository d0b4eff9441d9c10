"""Verifiable audit log core: RFC 9162 Merkle tree and C2SP signed checkpoints."""
