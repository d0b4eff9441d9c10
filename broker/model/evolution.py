"""Schema evolution: can a message written with an older schema resolve to the current one?

Avro schema resolution (which fastavro applies when it decodes) decides per message. This
module answers the question per schema, once, when the registry loads: it lists the
changes that make *every* message of the older writer schema fail to resolve, by field
path, so a quarantine reason can name the change instead of repeating a decoder message
(which may quote a value). Changes that only fail for some messages, such as an enum
symbol the reader dropped or a union branch it no longer has, are left to the decoder.
"""

from __future__ import annotations

from typing import Any

from fastavro.schema import expand_schema

_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
_NAMED = ("record", "enum", "fixed")


def _kind(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return "union"
    if isinstance(avro_type, dict):
        return str(avro_type["type"])
    return str(avro_type)


def _short_name(avro_type: dict[str, Any]) -> str:
    return str(avro_type["name"]).rpartition(".")[2]


def _describe(avro_type: Any) -> str:
    kind = _kind(avro_type)
    return f"{kind} {_short_name(avro_type)}" if kind in _NAMED else kind


def _problems(writer: Any, reader: Any, path: str) -> list[str]:
    where = path or "the record"
    w_kind, r_kind = _kind(writer), _kind(reader)
    if w_kind == "union":
        # resolution picks the writer's branch per message: only if no branch resolves
        # does every message fail
        if all(_problems(branch, reader, path) for branch in writer):
            return [f"{where}: no branch of the writer's union resolves to {_describe(reader)}"]
        return []
    if r_kind == "union":
        if all(_problems(writer, branch, path) for branch in reader):
            return [f"{where}: the writer's {_describe(writer)} matches no branch of the "
                    f"current union"]
        return []
    if w_kind != r_kind:
        if r_kind in _PROMOTIONS.get(w_kind, set()):
            return []
        return [f"{where}: was {_describe(writer)}, is now {_describe(reader)}"]
    if w_kind in _NAMED and _short_name(writer) != _short_name(reader):
        return [f"{where}: was {_describe(writer)}, is now {_describe(reader)}"]
    if w_kind == "fixed" and writer["size"] != reader["size"]:
        return [f"{where}: fixed size was {writer['size']}, is now {reader['size']}"]
    if w_kind == "array":
        return _problems(writer["items"], reader["items"], f"{path}[]")
    if w_kind == "map":
        return _problems(writer["values"], reader["values"], f"{path}{{}}")
    if w_kind == "record":
        return _record_problems(writer, reader, f"{path}." if path else "")
    return []


def _record_problems(writer: dict[str, Any], reader: dict[str, Any], prefix: str) -> list[str]:
    written = {f["name"]: f for f in writer["fields"]}
    out: list[str] = []
    for field in reader["fields"]:
        names = [field["name"], *field.get("aliases", [])]
        source = next((written[n] for n in names if n in written), None)
        if source is None:
            if "default" not in field:
                out.append(f"{prefix}{field['name']}: required in the current schema, has no "
                           f"default, and the writer does not have it")
            continue
        out.extend(_problems(source["type"], field["type"], f"{prefix}{field['name']}"))
    return out


def incompatibilities(writer_schema: dict[str, Any], reader_schema: dict[str, Any]
                      ) -> list[str]:
    """Changes that stop every message of `writer_schema` resolving to `reader_schema`.

    Both are raw Avro schemas (JSON); an empty list means schema resolution can succeed.
    """
    return _problems(expand_schema(writer_schema), expand_schema(reader_schema), "")
