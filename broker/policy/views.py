"""Output view schemas, derived from the covenant's field rules and the source schema.

The .avsc files under schemas/views/ are the published contract with recipients;
`policy check` verifies that each still matches what the covenant derives.
"""

from __future__ import annotations

import copy
from typing import Any

from broker.model.schemas import FieldInfo, Schema
from broker.policy.covenant import FieldRule, Purpose

TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}
# Every view carries `ref`: the record's opaque reference, a keyed pseudonym of the event id
# under the purpose's own key. It is the Kafka key of the record (and of the tombstone that
# ends it), so a recipient can compact and delete by it, and it links nothing across
# purposes. A purpose whose rules name no `ref` gets this one from the compiled plan.
REF = "ref"
REF_SOURCE = "event_id"
REF_DOC = "event_id (pseudonymise): this purpose's reference of the record, added by the broker"
DATE = {"type": "int", "logicalType": "date"}


class ViewError(ValueError):
    """A field rule that cannot apply to its source field; the message names both."""


def _is_timestamp(t: Any) -> bool:
    return isinstance(t, dict) and t.get("logicalType") == "timestamp-millis"


def _is_date(t: Any) -> bool:
    return isinstance(t, dict) and t.get("logicalType") == "date"


def _is_string(t: Any) -> bool:
    return t == "string" or (isinstance(t, dict) and t.get("type") == "string")


def output_type(rule: FieldRule, source: FieldInfo, where: str) -> tuple[Any, bool]:
    """(Avro type, nullable) of a released field, or ViewError if the transform cannot apply."""
    t, nullable = source.avro_type, source.nullable
    transform = rule.transform
    if transform == "keep":
        return copy.deepcopy(t), nullable
    if transform == "hour":
        if not _is_timestamp(t):
            raise ViewError(f"{where}: transform hour needs a timestamp, {source.path} is not")
        return dict(TIMESTAMP), nullable
    if transform == "day":
        if not (_is_timestamp(t) or _is_date(t)):
            raise ViewError(f"{where}: transform day needs a timestamp or date, "
                            f"{source.path} is neither")
        return dict(DATE), nullable
    if transform == "year":
        if not (_is_timestamp(t) or _is_date(t)):
            raise ViewError(f"{where}: transform year needs a timestamp or date, "
                            f"{source.path} is neither")
        return "int", nullable
    if transform == "postcode4":
        if not _is_string(t):
            raise ViewError(f"{where}: transform postcode4 needs a string, {source.path} "
                            "is not")
        return "string", True
    if transform in ("pseudonymise", "mask"):
        if isinstance(t, dict) and t.get("type") in ("record", "array", "map"):
            raise ViewError(f"{where}: transform {transform} needs a scalar, {source.path} "
                            "is not")
        return "string", nullable
    raise ViewError(f"{where}: unknown transform {transform!r}")


def source_path(name: str, rule: FieldRule) -> str:
    return rule.source or name


def derive_view(name: str, purpose: Purpose, source: Schema) -> dict[str, Any]:
    namespace, _, short = purpose.view.rpartition(".")
    fields: list[dict[str, Any]] = []
    ref_rule = purpose.fields.get(REF)
    if ref_rule is None:
        if REF_SOURCE not in source.fields:
            raise ViewError(f"purposes.{name}: {source.name} has no {REF_SOURCE} to derive "
                            f"the record's {REF} from")
        # the default: records released before every view had a ref (an older view
        # schema, kept in schemas/views/history/) still read, with an empty ref
        fields.append({"name": REF, "type": "string", "default": "", "doc": REF_DOC})
    elif ref_rule.transform != "pseudonymise":
        # the ref is the Kafka key a recipient sees: in clear it could link purposes
        raise ViewError(f"purposes.{name}.fields.{REF}: the record's reference must use "
                        f"transform pseudonymise (a per-purpose keyed pseudonym), not "
                        f"{ref_rule.transform}")
    for out_name, rule in purpose.fields.items():
        path = source_path(out_name, rule)
        where = f"purposes.{name}.fields.{out_name}"
        info = source.fields.get(path)
        if info is None:
            raise ViewError(f"{where}: {path} is not a field of {source.name}")
        avro_type, nullable = output_type(rule, info, where)
        field: dict[str, Any] = {
            "name": out_name,
            "type": ["null", avro_type] if nullable else avro_type,
            "doc": f"{path} ({rule.transform})",
        }
        if nullable:
            field["default"] = None
        fields.append(field)
    view: dict[str, Any] = {"type": "record", "name": short, "doc":
                            f"Released under purpose {name} ({purpose.event_type}).",
                            "fields": fields}
    if namespace:
        view = {"type": "record", "namespace": namespace, **{k: v for k, v in view.items()
                                                              if k != "type"}}
    return view
