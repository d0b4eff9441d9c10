"""A compiled Avro binary writer: fastavro's bytes, without its per-field dispatch.

fastavro's writer interprets the schema on every call (about 0.4 µs per field, 20 µs for
one audit entry). `compile_writer` walks a parsed schema once into a tree of small
closures, one per field, that append encoded pieces to a list.

Exactness: the closures take only the values whose encoding is unambiguous (exact types:
`str` for a string, `int` but not `bool` for a long in range, a `dict` record with every
field present, `None` for the null branch of a two-branch union, an aware `datetime` for a
timestamp, and so on) and write what fastavro writes for them. Anything else (a missing
field, a tuple in a union, a naive datetime, a three-branch union, an unknown logical type,
an error of any kind) abandons the fast path and the caller encodes the whole record with
fastavro, so its bytes and its errors stay fastavro's. tests/unit/test_avro_writer.py
compares the two on every schema in schemas/.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

Out = list[bytes]
FieldWriter = Callable[[Any, Out], None]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAYS_SHIFT = date(1970, 1, 1).toordinal()
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
_CACHE_LIMIT = 64  # per field: low-cardinality values (purposes, recipients) stay cached
_EMPTY = b"\x00"
_TRUE, _FALSE = b"\x01", b"\x00"
_pack_float = struct.Struct("<f").pack
_pack_double = struct.Struct("<d").pack


class Fallback(Exception):  # noqa: N818 - a signal, not an error: use fastavro instead
    """The value is outside the fast path; encode the whole record with fastavro."""


def zigzag(n: int) -> bytes:
    """Avro int/long: zigzag, then a little-endian base-128 varint."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return _SMALL[z]
    if z < 0x4000:
        return bytes(((z & 0x7F) | 0x80, z >> 7))
    if z < 0x200000:  # offsets and sequence numbers: three bytes, no loop
        return bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80, z >> 14))
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL = [bytes((z,)) for z in range(0x80)]
_LENGTH = [bytes((n << 1,)) for n in range(64)]  # the length prefix of a short string


def _long(lo: int, hi: int) -> FieldWriter:
    def write_long(v: Any, out: Out) -> None:
        if type(v) is not int or not lo <= v <= hi:
            raise Fallback
        out.append(zigzag(v))

    return write_long


def _string(cached: bool) -> FieldWriter:
    if not cached:
        def write_string(v: Any, out: Out) -> None:
            if type(v) is not str:
                raise Fallback
            data = v.encode()
            n = len(data)
            out.append(_LENGTH[n] if n < 64 else zigzag(n))
            out.append(data)

        return write_string
    cache: dict[str, bytes] = {}

    def write_cached_string(v: Any, out: Out) -> None:
        if type(v) is not str:
            raise Fallback
        encoded = cache.get(v)
        if encoded is None:
            data = v.encode()
            n = len(data)
            encoded = (_LENGTH[n] if n < 64 else zigzag(n)) + data
            if len(cache) < _CACHE_LIMIT:
                cache[v] = encoded
        out.append(encoded)

    return write_cached_string


def _nullable_string(null_tag: bytes, value_tag: bytes, cached: bool) -> FieldWriter:
    """["null", "string"] in one step (the commonest field type of all)."""
    cache: dict[str, bytes] = {}
    limit = _CACHE_LIMIT if cached else 0

    def write_nullable_string(v: Any, out: Out) -> None:
        if v is None:
            out.append(null_tag)
            return
        encoded = cache.get(v) if limit else None
        if encoded is None:
            if type(v) is not str:
                raise Fallback
            data = v.encode()
            n = len(data)
            encoded = value_tag + (_LENGTH[n] if n < 64 else zigzag(n)) + data
            if len(cache) < limit:
                cache[v] = encoded
        out.append(encoded)

    return write_nullable_string


def _bytes(v: Any, out: Out) -> None:
    if type(v) is not bytes:
        raise Fallback
    out.append(zigzag(len(v)))
    out.append(v)


def _boolean(v: Any, out: Out) -> None:
    if v is True:
        out.append(_TRUE)
    elif v is False:
        out.append(_FALSE)
    else:
        raise Fallback


def _null(v: Any, out: Out) -> None:
    if v is not None:
        raise Fallback


def _float(v: Any, out: Out) -> None:
    if type(v) is not float:
        raise Fallback
    out.append(_pack_float(v))


def _double(v: Any, out: Out) -> None:
    if type(v) is not float:
        raise Fallback
    out.append(_pack_double(v))


def _timestamp_millis() -> FieldWriter:
    last: list[tuple[int, bytes]] = [(0, zigzag(0))]  # instants repeat within a batch

    def write_timestamp_millis(v: Any, out: Out) -> None:
        if type(v) is datetime and v.tzinfo is not None:
            delta = v - _EPOCH
            v = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
        elif type(v) is not int:
            raise Fallback
        seen = last[0]
        if seen[0] == v:
            out.append(seen[1])
            return
        if not _LONG_MIN <= v <= _LONG_MAX:
            raise Fallback
        encoded = zigzag(v)
        last[0] = (v, encoded)
        out.append(encoded)

    return write_timestamp_millis


def _date(v: Any, out: Out) -> None:
    if type(v) is date:
        v = v.toordinal() - _DAYS_SHIFT
    elif type(v) is not int:
        raise Fallback
    if not _INT_MIN <= v <= _INT_MAX:
        raise Fallback
    out.append(zigzag(v))


def _uuid_string(v: Any, out: Out) -> None:
    if type(v) is uuid.UUID:
        v = str(v)
    elif type(v) is not str:
        raise Fallback
    data = v.encode()
    n = len(data)
    out.append(_LENGTH[n] if n < 64 else zigzag(n))
    out.append(data)


def _always_fallback(v: Any, out: Out) -> None:
    raise Fallback


class _Compiler:
    def __init__(self, named: dict[str, Any], cache_strings: bool) -> None:
        self.named = named
        self.cache_strings = cache_strings
        self.compiling: set[str] = set()

    def compile(self, schema: Any) -> FieldWriter:
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return self.primitive(schema)
            if schema in self.named and schema not in self.compiling:
                return self.compile(self.named[schema])
            return _always_fallback  # recursive or unknown named type
        if isinstance(schema, list):
            return self.union(schema)
        if not isinstance(schema, dict):
            return _always_fallback
        kind = schema.get("type")
        logical = schema.get("logicalType")
        if logical is not None:
            if (kind, logical) == ("long", "timestamp-millis"):
                return _timestamp_millis()
            if (kind, logical) == ("int", "date"):
                return _date
            if (kind, logical) == ("string", "uuid"):
                return _uuid_string
            return _always_fallback
        if kind == "record":
            return self.record(schema)
        if kind == "enum":
            return self.enum(schema)
        if kind == "array":
            return self.array(self.compile(schema["items"]), schema["items"])
        if kind == "map":
            return self.map(self.compile(schema["values"]))
        if kind in _PRIMITIVES:
            return self.primitive(kind)
        return _always_fallback  # fixed, error and anything else: fastavro's business

    def primitive(self, kind: str) -> FieldWriter:
        return {"null": _null, "boolean": _boolean, "int": _long(_INT_MIN, _INT_MAX),
                "long": _long(_LONG_MIN, _LONG_MAX), "float": _float, "double": _double,
                "bytes": _bytes, "string": _string(self.cache_strings)}[kind]

    def union(self, branches: list[Any]) -> FieldWriter:
        others = [i for i, b in enumerate(branches) if b != "null"]
        if len(branches) != 2 or len(others) != 1:
            return _always_fallback  # fastavro's best-match rules decide those
        index = others[0]
        null_tag, value_tag = zigzag(1 - index), zigzag(index)
        if branches[index] == "string":
            return _nullable_string(null_tag, value_tag, self.cache_strings)
        write = self.compile(branches[index])

        def write_nullable(v: Any, out: Out) -> None:
            if v is None:
                out.append(null_tag)
            else:
                out.append(value_tag)
                write(v, out)

        return write_nullable

    def record(self, schema: dict[str, Any]) -> FieldWriter:
        """One generated function per record: the commonest field types inline (no call
        per field), the others through their compiled writers; the same bytes either way."""
        name = schema.get("name")
        if name:
            self.compiling.add(name)
        code = _RecordCode()
        for f in schema["fields"]:
            self.field(code, f["name"], f["type"])
        if name:
            self.compiling.discard(name)
        return code.build(str(name or "record"))

    def field(self, code: _RecordCode, key: str, field_type: Any) -> None:
        value = f"v[{key!r}]"
        if field_type in ("float", "double"):
            code.line(f"{value}; raise Fallback")  # fastavro float()s these
        elif field_type in ("int", "long") or _is_nullable(field_type, ("int", "long")):
            kind = field_type if isinstance(field_type, str) else \
                next(b for b in field_type if b != "null")
            low, high = (_INT_MIN, _INT_MAX) if kind == "int" else (_LONG_MIN, _LONG_MAX)
            lines = [f"x = {value}"]
            pad = ""
            if isinstance(field_type, list):
                index = field_type.index(kind)
                lines += ["if x is None:", f"    append({code.name(zigzag(1 - index))})",
                          "else:", f"    append({code.name(zigzag(index))})"]
                pad = "    "
            code.line(*lines, f"{pad}if type(x) is not int or not {low} <= x <= {high}:",
                      f"{pad}    raise Fallback", f"{pad}append(zigzag(x))")
        elif isinstance(field_type, dict) and field_type.get("type") == "enum" and \
                "logicalType" not in field_type:
            tags = {symbol: zigzag(i) for i, symbol in enumerate(field_type["symbols"])}
            code.line(f"x = {value}", f"x = {code.name(tags)}.get(x) if type(x) is str else None",
                      "if x is None:", "    raise Fallback", "append(x)")
        elif field_type == "string" or _is_nullable(field_type, ("string",)):
            code.line(f"x = {value}")
            if field_type == "string":
                self.string(code, b"", "")
            else:
                index = field_type.index("string")
                code.line("if x is None:", f"    append({code.name(zigzag(1 - index))})",
                          "else:")
                self.string(code, zigzag(index), "    ")
        else:
            code.line(f"{code.name(self.compile(field_type))}({value}, out)")

    def string(self, code: _RecordCode, tag: bytes, pad: str) -> None:
        """The string in `x` after `tag`, as write_string / write_nullable_string write it
        (the type checked first, then the cache of this field, if cached, then encoded)."""
        encode = ["x = x.encode()", "n = len(x)"]
        if not self.cache_strings:
            tag_line = [f"append({code.name(tag)})"] if tag else []
            code.line(*(pad + line for line in [
                "if type(x) is not str:", "    raise Fallback", *encode, *tag_line,
                "append(_LENGTH[n] if n < 64 else zigzag(n))", "append(x)"]))
            return
        cache = code.name({})
        type_check = ["if type(x) is not str:", "    raise Fallback"]
        code.line(*(pad + line for line in [
            *(type_check if not tag else []),  # a nullable string: the cache first, as before
            f"e = {cache}.get(x)",
            "if e is None:",
            *("    " + line for line in (type_check if tag else [])),
            "    key = x",
            *("    " + line for line in encode),
            f"    e = {code.name(tag)} + (_LENGTH[n] if n < 64 else zigzag(n)) + x",
            f"    if len({cache}) < {_CACHE_LIMIT}:",
            f"        {cache}[key] = e",
            "append(e)"]))

    def enum(self, schema: dict[str, Any]) -> FieldWriter:
        tags = {symbol: zigzag(i) for i, symbol in enumerate(schema["symbols"])}

        def write_enum(v: Any, out: Out) -> None:
            tag = tags.get(v) if type(v) is str else None
            if tag is None:
                raise Fallback
            out.append(tag)

        return write_enum

    def array(self, write: FieldWriter, items: Any) -> FieldWriter:
        cache: dict[tuple[Any, ...], bytes] | None = (
            {} if self.cache_strings and items == "string" else None)

        def write_array(v: Any, out: Out) -> None:
            if type(v) is not list:
                raise Fallback
            if not v:
                out.append(_EMPTY)
                return
            if cache is not None:
                key = tuple(v)
                encoded = cache.get(key)
                if encoded is not None:
                    out.append(encoded)
                    return
                parts: Out = [zigzag(len(v))]
                for item in v:
                    write(item, parts)
                parts.append(_EMPTY)
                encoded = b"".join(parts)
                if len(cache) < _CACHE_LIMIT:
                    cache[key] = encoded
                out.append(encoded)
                return
            out.append(zigzag(len(v)))
            for item in v:
                write(item, out)
            out.append(_EMPTY)

        return write_array

    def map(self, write: FieldWriter) -> FieldWriter:
        key_writer = _string(False)

        def write_map(v: Any, out: Out) -> None:
            if type(v) is not dict:
                raise Fallback
            if not v:
                out.append(_EMPTY)
                return
            out.append(zigzag(len(v)))
            for key, value in v.items():
                key_writer(key, out)
                write(value, out)
            out.append(_EMPTY)

        return write_map


def _is_nullable(field_type: Any, kinds: tuple[str, ...]) -> bool:
    """["null", kind] or [kind, "null"] for one of `kinds`."""
    return isinstance(field_type, list) and len(field_type) == 2 and "null" in field_type \
        and any(kind in field_type for kind in kinds)


class _RecordCode:
    """The source of one record's writer and the objects it names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {"Fallback": Fallback, "zigzag": zigzag,
                                      "_LENGTH": _LENGTH}

    def name(self, obj: Any) -> str:
        found = f"k{len(self.names)}"
        self.names[found] = obj
        return found

    def line(self, *lines: str) -> None:
        self.lines.extend(lines)

    def build(self, label: str) -> FieldWriter:
        body = "".join(f"        {line}\n" for line in self.lines) or "        pass\n"
        source = ("def write_record(v, out):\n"
                  "    if type(v) is not dict:\n"
                  "        raise Fallback\n"
                  "    append = out.append\n"
                  "    try:\n"
                  f"{body}"
                  "    except KeyError:\n"  # a missing field: fastavro's defaults apply
                  "        raise Fallback from None\n")
        exec(compile(source, f"<avro writer {label}>", "exec"), self.names)  # noqa: S102 - our own source
        writer: FieldWriter = self.names["write_record"]
        return writer


def compile_writer(parsed: Any, *, cache_strings: bool = False) -> FieldWriter:
    """The fast-path writer of a fastavro-parsed schema: `write(record, out)` appends the
    encoding to `out` or raises (Fallback or any other exception) for fastavro to decide.

    `cache_strings` keeps the encodings of up to 64 distinct values per string field and
    per string array: only for schemas that hold nothing personal (the audit entry).
    """
    named = dict(parsed.get("__named_schemas", {})) if isinstance(parsed, dict) else {}
    return _Compiler(named, cache_strings).compile(parsed)
