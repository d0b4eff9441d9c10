"""The rows `audit_index` and `audit_subject` hold for a block of entries, without fastavro.

`audit verify` re-derives both tables from the proven entries (broker.audit.verify_derived).
fastavro decodes an entry in about 20 us (it builds every field, dict and datetime even
when a reader schema skips them); that was three quarters of `audit verify`. The columns
are all in the first 26 fields, so a reader generated from the schema (straight-line
Python, one statement per field, stopping after the last field a column needs) reads
only those: the skipped fields cost a length byte each.

This is a fast path only. Its rows are compared with the stored rows as whole lists;
any difference, or an entry it cannot read (IndexError, UnicodeDecodeError, a union
branch it does not know), sends the caller to the exact comparison of verify_derived,
which decodes with fastavro and names the first mismatch. Rows equal here are the rows
that comparison derives: the same fields, the same conversions (`bytes.fromhex` of the
decoded pseudonym, the distinct ones sorted; start_time as the stored millisecond long).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

IndexRow = tuple[Any, ...]
SubjectRow = tuple[int, bytes]
Derive = Callable[[list[bytes], int], tuple[list[IndexRow], list[SubjectRow]]]

# What the index row and the subject keys are made of (sequencer.IndexRow, subject_keys).
_COLUMNS = ("name", "recipient", "purpose", "decision", "event_type", "start_time")
_NEEDED = {*_COLUMNS, "data_subjects"}
_MEMO_KEY = 48  # bytes of a segment that pick its remembered reading
_MEMO_SIZE = 1024  # remembered segments, at most (a log has a few dozen kinds)
_MEMO_PER_KEY = 16  # readings under one key, at most (a purpose's recipients)


class _Unsupported(Exception):  # noqa: N818 - the schema has a type this reader does not
    pass


def _varint(out: list[str], pad: str, var: str) -> None:
    """Read one zigzag long at d[i] into `var` (one-byte values without a loop)."""
    out += [f"{pad}b = d[i]", f"{pad}i += 1",
            f"{pad}if b < 128:", f"{pad}    {var} = (b >> 1) ^ -(b & 1)",
            f"{pad}else:", f"{pad}    v = b & 127", f"{pad}    s = 7",
            f"{pad}    while True:", f"{pad}        b = d[i]", f"{pad}        i += 1",
            f"{pad}        v |= (b & 127) << s", f"{pad}        s += 7",
            f"{pad}        if b < 128:", f"{pad}            break",
            f"{pad}    {var} = (v >> 1) ^ -(v & 1)"]


def _value(out: list[str], pad: str, kind: Any, var: str | None, n: list[int]) -> None:
    """Statements that read (var) or skip (None) one value of Avro type `kind`."""
    if isinstance(kind, dict) and "logicalType" in kind and kind["type"] in ("long", "int"):
        kind = kind["type"]  # the stored column is the long itself (to_millis of it)
    if kind in ("long", "int") or (isinstance(kind, dict) and kind.get("type") == "enum"):
        if var is None:  # skipped: past the bytes with the continuation bit
            out += [f"{pad}while d[i] > 127:", f"{pad}    i += 1", f"{pad}i += 1"]
        else:
            _varint(out, pad, var)
    elif kind == "string":
        _string(out, pad, var, n)
    elif isinstance(kind, list) and len(kind) == 2 and kind[0] == "null":
        _varint(out, pad, "u")
        out.append(f"{pad}if u == 1:")
        _value(out, pad + "    ", kind[1], var, n)
        out += [f"{pad}elif u == 0:", f"{pad}    {var or '_'} = None", f"{pad}else:",
                f"{pad}    raise ValueError('union branch')"]
    elif isinstance(kind, dict) and kind.get("type") == "array":
        _array(out, pad, kind["items"], var, n)
    elif isinstance(kind, dict) and kind.get("type") == "record":
        _record(out, pad, kind, set(), n)
    else:  # a map, fixed, bytes, float...: none before the last column in audit_entry
        raise _Unsupported(repr(kind))


def _string(out: list[str], pad: str, var: str | None, n: list[int]) -> None:
    n[0] += 1
    length = f"n{n[0]}"
    if var is None:  # skipped: a one-byte length is the rule
        out += [f"{pad}b = d[i]", f"{pad}if b < 128:", f"{pad}    if b & 1:",
                f"{pad}        raise ValueError('negative length')",
                f"{pad}    i += 1 + (b >> 1)", f"{pad}else:"]
        _varint(out, pad + "    ", length)
        out += [f"{pad}    if {length} < 0:",
                f"{pad}        raise ValueError('negative length')", f"{pad}    i += {length}"]
        return
    _varint(out, pad, length)
    out += [f"{pad}if {length} < 0:", f"{pad}    raise ValueError('negative length')",
            f"{pad}{var} = d[i:i + {length}].decode()", f"{pad}if len(d) < i + {length}:",
            f"{pad}    raise IndexError('truncated')", f"{pad}i += {length}"]


def _array(out: list[str], pad: str, item: Any, var: str | None, n: list[int]) -> None:
    n[0] += 1
    count = f"c{n[0]}"
    if var is not None:
        out.append(f"{pad}{var} = []")
    out.append(f"{pad}while True:")
    _varint(out, pad + "    ", count)
    out += [f"{pad}    if {count} == 0:", f"{pad}        break",
            f"{pad}    if {count} < 0:", f"{pad}        {count} = -{count}"]
    _value(out, pad + "        ", "long", None, n)  # the block's byte size
    out.append(f"{pad}    for _k in range({count}):")
    if var is not None and isinstance(item, dict) and item.get("type") == "record":
        _record(out, pad + "        ", item, {"pseudonym"}, n)
        out.append(f"{pad}        {var}.append(f_pseudonym)")
    elif var is None:
        _value(out, pad + "        ", item, None, n)
    else:
        raise _Unsupported(f"array of {item!r}")


def _record(out: list[str], pad: str, record: dict[str, Any], read: set[str],
            n: list[int]) -> None:
    for field in record["fields"]:
        _value(out, pad, field["type"], f"f_{field['name']}" if field["name"] in read
               else None, n)


def _remembered(body: list[str], pad: str, run: list[dict[str, Any]], n: list[int],
                memos: list[str]) -> None:
    """Read a run of fields, or take what the same bytes read before."""
    memos.append(f"memo{len(memos)}")
    memo, kept = memos[-1], [f"f_{f['name']}" for f in run if f["name"] in _NEEDED]
    got = ", ".join(kept) + "," if kept else "_"
    # Runs that share their first _MEMO_KEY bytes (one purpose, several recipients) share
    # a key: each key holds a list of readings, so they do not evict each other (a single
    # slot per key missed 71 % of the first run on the bench's log).
    body += [f"{pad}i0 = i", f"{pad}key = d[i:i + {_MEMO_KEY}]",
             f"{pad}cands = {memo}.get(key)", f"{pad}hit = None",
             f"{pad}if cands is not None:", f"{pad}    for c in cands:",
             f"{pad}        if d.startswith(c[0], i):", f"{pad}            hit = c",
             f"{pad}            break",
             f"{pad}if hit is not None:",
             f"{pad}    {got} = hit[1:]" if kept else f"{pad}    pass",
             f"{pad}    i += len(hit[0])", f"{pad}else:"]
    for field in run:
        name = field["name"]
        _value(body, pad + "    ", field["type"], f"f_{name}" if name in _NEEDED else None,
               n)
    body += [f"{pad}    if len({memo}) >= {_MEMO_SIZE}:", f"{pad}        {memo}.clear()",
             f"{pad}        cands = None",
             f"{pad}    if cands is None:", f"{pad}        {memo}[key] = cands = []",
             f"{pad}    elif len(cands) >= {_MEMO_PER_KEY}:", f"{pad}        cands.clear()",
             f"{pad}    cands.append((d[i0:i], {', '.join(kept)}))"]


def _source(raw: dict[str, Any]) -> str:
    fields = list(raw["fields"])
    names = [f["name"] for f in fields]
    if not set(names) >= _NEEDED:
        raise _Unsupported("a column's field is missing")
    last = max(names.index(c) for c in _NEEDED)
    n = [0]
    body: list[str] = []
    pad = "        "
    # Two runs of fields repeat from entry to entry: covenant, purpose, legal basis and
    # recipient; and a plan's decision, reason and field lists up to the event type. Their
    # bytes are remembered with what they read. A hit is exact: the same bytes at the same
    # place read the same way and end at the same place, whatever follows them.
    memos: list[str] = []
    runs = [(names.index("covenant_id"), names.index("recipient")),
            (names.index("data_subjects") + 1, last)]
    at = 0
    for first, final in runs:
        if not at <= first <= final <= last:
            raise _Unsupported("the fields are not in the order this reader expects")
        for field in fields[at:first]:
            name = field["name"]
            _value(body, pad, field["type"], f"f_{name}" if name in _NEEDED else None, n)
        _remembered(body, pad, fields[first:final + 1], n, memos)
        at = final + 1
    return "\n".join([
        "def derive(entries, first):",
        "    index = []",
        "    subjects = []",
        "    add_index = index.append",
        "    add_subject = subjects.extend",
        "    fromhex = bytes.fromhex",
        "    seq = first",
        *(f"    {memo} = {{}}" for memo in memos),
        "    for d in entries:",
        "        i = {skip}",
        *body,
        "        add_index((seq, f_name, f_recipient, f_purpose, f_decision, f_event_type, "
        "f_start_time))",
        "        if f_data_subjects:",
        "            add_subject([(seq, k) for k in sorted(set(map(fromhex, "
        "f_data_subjects)))])",
        "        seq += 1",
        "    return index, subjects",
    ])


@lru_cache(maxsize=4)
def _compiled(source: str, skip: int) -> Derive:
    namespace: dict[str, Any] = {}
    exec(compile(source.replace("{skip}", str(skip)), "<derive_fast>", "exec"),  # noqa: S102 - generated from our own schema
         namespace)
    derive: Derive = namespace["derive"]
    return derive


def deriver(raw: dict[str, Any], skip: int) -> Derive | None:
    """The block reader for the audit_entry schema `raw` (entries carry a `skip`-byte
    header); None when the schema has a type it cannot read (the exact path then runs)."""
    try:
        source = _source(raw)
    except (_Unsupported, ValueError, KeyError, TypeError):  # a schema it does not know
        return None
    return _compiled(source, skip)
