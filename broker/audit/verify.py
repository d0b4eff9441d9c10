"""`audit verify`: re-derive the whole log and check everything the broker stored about it.

One streaming pass over the entries (memory stays flat) checks, entry by entry:
  1. the stored positions are contiguous (nothing deleted);
  2. the entry is an audit entry whose seq is its position and whose prev_hash is the
     chain hash (the RFC 9162 leaf hash) of the entry before it (`broker.audit.chain`);
  3. its RFC 9162 leaf hash, and every complete subtree its append closes, equal the tree
     nodes stored when it was appended (the cache that proofs are served from);
  4. at each checkpoint's size: the note opens under the pinned key and origin, names the
     size it is stored under, and its root equals the root re-derived from the entries.
Then, with the node cache proven equal to the entries, the consistency proof between each
pair of consecutive checkpoints is generated and checked (RFC 9162 2.1.4.2).

The first problem is reported by position: "entry N: ..." or "checkpoint at size S: ...".
Entries after the last checkpoint are covered by the chain only; the report counts them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from broker.audit import verify_bulk, verify_derived
from broker.audit.checkpoint import (
    Checkpoint,
    VerifierKey,
    check_consistent,
    open_checkpoint,
)
from broker.audit.entries import GENESIS
from broker.audit.merkle import EMPTY_ROOT, VerificationError
from broker.audit.store import AuditStore, StoredCheckpoint
from broker.audit.tree import MissingNodeError, consistency_proof_at, level_index_of, node_count
from broker.model.codec import MARKER
from broker.model.schemas import Schema

_LEAF = hashlib.sha256(b"\x00")


@dataclass(frozen=True)
class AuditReport:
    entries: int
    head: str  # hex chain hash of the last entry checked (GENESIS for none)
    root: str  # hex RFC 9162 root re-derived from the entries checked
    checkpoints: int  # checkpoints verified
    signed_size: int  # size of the last verified checkpoint (0 if none)
    problem: str | None  # the first problem; None when intact

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def unsigned(self) -> int:
        """Entries after the last checkpoint: protected by the hash chain only."""
        return self.entries - self.signed_size

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, "entries": self.entries, "head": self.head, "root": self.root,
                "checkpoints": self.checkpoints, "signed_size": self.signed_size,
                "unsigned_entries": self.unsigned, "problem": self.problem}


@dataclass(frozen=True)
class Verdict:
    """`audit verify`'s answer: the report, and the problem that fails it, which with
    `require_signed` includes entries that no signed checkpoint covers yet."""

    report: AuditReport
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_json(self) -> dict[str, object]:
        return {**self.report.as_json(), "ok": self.ok, "problem": self.problem}


def verdict(report: AuditReport, require_signed: bool) -> Verdict:
    """The one place the `--require-signed` rule lives (both backends' `audit verify`)."""
    problem = report.problem
    if problem is None and require_signed and report.unsigned:
        problem = (f"entry {report.signed_size}: {report.unsigned} entries after the last "
                   "checkpoint are not signed")
    return Verdict(report, problem)


def pending_verdict(first_problem: str | None, pending: int, require_signed: bool
                    ) -> str | None:
    """The Kafka log's `audit verify`: the first problem found (a partition chain's, else
    the integrated log's verdict); else, with `require_signed`, committed audit entries the
    integrator has not sequenced yet, which no checkpoint can have signed."""
    if first_problem is None and require_signed and pending:
        return (f"{pending} committed audit entries on Kafka are not integrated (so not "
                "signed) yet; run `covenant-broker audit integrate`")
    return first_problem


def _read_long(data: bytes, at: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), at


class _Problem(Exception):  # noqa: N818 - internal control flow, never escapes this module
    pass


def _entry_problem(schema: Schema, data: bytes, count: int, prev_hex: bytes) -> str:
    """Why an entry's prefix is not the expected one: precise wording for the report."""
    header = MARKER + schema.fingerprint
    if not data.startswith(header):
        return (f"entry {count}: is not an audit entry (its header is not the audit_entry "
                "single-object header)")
    try:
        seq, at = _read_long(data, len(header))
        length, at = _read_long(data, at)
    except ValueError:
        return f"entry {count}: does not decode as an audit entry"
    if seq != count:
        return (f"entry {count}: carries seq {seq}; entries were reordered, inserted or "
                "duplicated")
    if length != 64 or data[at:at + 64] != prev_hex:
        return (f"entry {count}: prev_hash does not match the hash of entry {count - 1}; "
                f"entry {count - 1} or entry {count} was altered")
    return f"entry {count}: does not decode as an audit entry"


def _node_problem(position: int, stored: bytes | None) -> str:
    level, index = level_index_of(position)
    first, last = index << level, ((index + 1) << level) - 1
    if stored is None:
        where = (f"entry {first}: its leaf hash" if level == 0 else
                 f"tree node level {level} index {index} (entries {first}..{last})")
        return f"{where} is missing from the tree cache"
    if level == 0:
        return (f"entry {first}: its bytes do not match the leaf hash stored when it was "
                "appended; the entry (or the tree cache) was altered")
    return (f"tree node level {level} index {index} (entries {first}..{last}) does not match "
            "the entries; proofs served from the tree cache would fail")


class _Verifier:
    def __init__(self, store: AuditStore, schema: Schema, verifier: VerifierKey, origin: str,
                 trusted: Sequence[Checkpoint]) -> None:
        self.store = store
        self.schema = schema
        self.verifier = verifier
        self.origin = origin
        self.trusted = {cp.size: cp for cp in trusted}
        self.count = 0
        self.head = GENESIS.encode()
        self.stack: list[bytes] = []
        self.verified: list[Checkpoint] = []

    def root(self) -> bytes:
        if not self.stack:
            return EMPTY_ROOT
        root = self.stack[-1]
        for left in reversed(self.stack[:-1]):
            root = hashlib.sha256(b"\x01" + left + root).digest()
        return root

    def check_checkpoint(self, stored: StoredCheckpoint | None,
                         root: bytes | None = None) -> None:
        size = self.count
        root = self.root() if root is None else root
        if stored is not None:
            try:
                opened = open_checkpoint(stored.note, self.verifier, self.origin)
            except VerificationError as exc:
                raise _Problem(f"checkpoint at size {size}: {exc}") from None
            if opened.size != size:
                raise _Problem(f"checkpoint at size {size}: its signed note is for size "
                               f"{opened.size}; the checkpoint was replaced")
            if opened.root != root:
                after = self.verified[-1].size if self.verified else 0
                raise _Problem(
                    f"checkpoint at size {size}: the signed root {opened.root.hex()} does not "
                    f"match the root {root.hex()} re-derived from the entries; entries "
                    f"{after}..{size - 1} differ from what was signed")
            self.verified.append(opened)
        pinned = self.trusted.get(size)
        if pinned is not None and pinned.root != root:
            raise _Problem(f"trusted checkpoint at size {size}: its root {pinned.root.hex()} "
                           f"does not match the root {root.hex()} re-derived from the entries")

    def run(self, checkpoints: list[StoredCheckpoint]) -> None:
        by_size = {cp.size: cp for cp in checkpoints}
        due = sorted(set(by_size) | set(self.trusted))
        schedule = iter(due)
        next_due = next(schedule, None)
        if next_due == 0:
            self.check_checkpoint(by_size.get(0))
            next_due = next(schedule, None)
        next_due = self._walk(by_size, schedule, next_due)
        if next_due is not None:
            raise _Problem(f"entry {self.count}: missing; a checkpoint covers {next_due} "
                           f"entries, the log holds {self.count} (the log was truncated)")

    def _walk(self, by_size: dict[int, StoredCheckpoint], schedule: Iterator[int],
              next_due: int | None) -> int | None:
        """Stream every entry and stored node once; returns the next checkpoint not reached."""
        header = MARKER + self.schema.fingerprint
        # The hot loop: locals only, one comparison per stored node (a deleted node row
        # shifts the hashes, so it shows as a mismatch; _mismatch then says which).
        nodes: Iterator[tuple[int, bytes]] = self.store.tree_nodes(0)
        end = (-1, b"")
        sha256 = hashlib.sha256
        leaf0 = _LEAF
        stack = self.stack
        position = count = base = 0
        head = self.head
        opening: list[bytes] = []  # what entries base.. open with, up to their prev_hash
        for stored_seq, data in self.store.audit_entries(0):
            if stored_seq != count:
                raise _Problem(f"entry {count}: missing; the next stored entry is at position "
                               f"{stored_seq} (entries were deleted)")
            if count - base == len(opening):
                base, opening = count, verify_bulk.seq_prefixes(header, count, 4096)
            if not data.startswith(opening[count - base] + head):
                raise _Problem(_entry_problem(self.schema, data, count, head))
            h = leaf0.copy()
            h.update(data)
            node = h.digest()
            head = node.hex().encode()  # the chain hash is the leaf hash
            if next(nodes, end)[1] != node:
                raise _Problem(self._mismatch(position))
            position += 1
            carry = count
            while carry & 1:
                node = sha256(b"\x01" + stack.pop() + node).digest()
                if next(nodes, end)[1] != node:
                    raise _Problem(self._mismatch(position))
                position += 1
                carry >>= 1
            stack.append(node)
            count += 1
            if next_due == count:
                self.count, self.head = count, head
                self.check_checkpoint(by_size.get(next_due))
                next_due = next(schedule, None)
        self.count, self.head = count, head
        if next_due is None and next(nodes, None) is not None:
            raise _Problem(f"entry {count}: missing; the tree cache holds nodes for more "
                           f"than {count} entries (the log was truncated)")
        return next_due

    def _mismatch(self, position: int) -> str:
        try:
            stored: bytes | None = self.store.tree_node(position)
        except MissingNodeError:
            stored = None
        return _node_problem(position, stored)

    def check_consistency(self) -> None:
        """Consecutive checkpoints, with proofs from the (now verified) tree cache."""
        for old, new in zip(self.verified, self.verified[1:], strict=False):
            try:
                proof = consistency_proof_at(self.store.tree_node, old.size, new.size)
                check_consistent(old, new, proof)
            except (VerificationError, MissingNodeError) as exc:
                raise _Problem(f"checkpoint at size {new.size}: not consistent with the "
                               f"checkpoint at size {old.size}: {exc}") from None


def verify_log(store: AuditStore, schema: Schema, verifier: VerifierKey, origin: str,
               trusted: Sequence[Checkpoint] = (), *, bulk: bool = True) -> AuditReport:
    """Verify the whole stored log; `trusted` are checkpoints an auditor kept from before.

    In bulk on every core when the store can be read in chunks (`verify_bulk`, which also
    re-derives the tables reports read, reading each entry once); where that finds
    anything at all, or `bulk` is off, the exact walk names the first problem.
    """
    if bulk:
        found = _bulk(store, schema, verifier, origin, trusted)
        if found is not None and found[1]:
            return found[0]  # the entries and the derived tables are proven
        if found is not None:  # the entries are; the derived tables differ somewhere
            return _with_derived(found[0], store, schema)
    report = _verify_entries(store, schema, verifier, origin, trusted)
    return _with_derived(report, store, schema)


def _with_derived(report: AuditReport, store: AuditStore, schema: Schema) -> AuditReport:
    if report.ok and hasattr(store, "index_rows"):
        # The entries are proven: now what reports read instead of them (verify_derived).
        derived = verify_derived.derived_problem(cast("verify_derived.DerivedRows", store),
                                                 schema)
        if derived is not None:
            return dataclasses.replace(report, problem=derived)
    return report


def _verify_entries(store: AuditStore, schema: Schema, verifier: VerifierKey, origin: str,
                    trusted: Sequence[Checkpoint] = ()) -> AuditReport:
    """The exact walk: names the first problem of the entries, tree and checkpoints."""
    checker = _Verifier(store, schema, verifier, origin, trusted)
    problem = None
    try:
        checker.run(store.checkpoints())
        checker.check_consistency()
    except _Problem as found:
        problem = str(found)
    signed = checker.verified[-1].size if checker.verified else 0
    return AuditReport(checker.count, checker.head.decode(), checker.root().hex(),
                       len(checker.verified), signed, problem)


def _verify_in_bulk(store: AuditStore, schema: Schema, verifier: VerifierKey, origin: str,
                    trusted: Sequence[Checkpoint]) -> AuditReport | None:
    """The report of an intact log, from `bulk_walk`; None when anything differs (the
    derived tables of a store that has them included)."""
    found = _bulk(store, schema, verifier, origin, trusted)
    if found is None or (not found[1] and hasattr(store, "index_rows")):
        return None
    return found[0]


def _bulk(store: AuditStore, schema: Schema, verifier: VerifierKey, origin: str,
          trusted: Sequence[Checkpoint]) -> tuple[AuditReport, bool] | None:
    """`_verify_in_bulk`'s report, and whether the derived tables were proven with it."""
    chunk_reader = getattr(store, "chunk_reader", None)
    open_reader = chunk_reader() if chunk_reader is not None else None
    size = store.audit_size()
    if open_reader is None or size == 0:
        return None
    checker = _Verifier(store, schema, verifier, origin, trusted)
    stored = store.checkpoints()
    due = sorted({cp.size for cp in stored} | set(checker.trusted))

    def check_notes() -> None:
        """What needs no entry (signatures, sizes, consistency proofs from the tree cache),
        while the workers scan; it counts only once the scan has proven the cache."""
        for cp in stored:
            opened = open_checkpoint(cp.note, verifier, origin)
            if opened.size != cp.size:
                raise _Problem(f"checkpoint at size {cp.size}: signed for {opened.size}")
            checker.verified.append(opened)
        checker.check_consistency()

    header = MARKER + schema.fingerprint
    derived = (verify_bulk.DerivedCheck(schema.raw, len(header), size)
               if hasattr(store, "index_rows") else None)
    try:
        outcome = verify_bulk.bulk_walk(open_reader, header, size, due,
                                        chunk_level=verify_bulk.CHUNK_LEVEL,
                                        meanwhile=check_notes, derived=derived)
    except Exception:  # noqa: BLE001 - a finding, no workers, ...: the exact walk decides
        return None
    if outcome is None or outcome.root is None:
        return None
    extra = store.tree_nodes(node_count(size))
    try:
        if next(extra, None) is not None:  # nodes for entries the log does not hold
            return None
    finally:
        close = getattr(extra, "close", None)
        if close is not None:
            close()
    pins = [(cp.size, cp.root) for cp in checker.verified] + [
        (cp.size, cp.root) for cp in checker.trusted.values()]
    if any(outcome.roots.get(at) != root for at, root in pins):
        return None
    signed = checker.verified[-1].size if checker.verified else 0
    return AuditReport(size, outcome.head.decode(), outcome.root.hex(),
                       len(checker.verified), signed, None), outcome.derived is True
