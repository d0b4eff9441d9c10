"""The covenant compiled once into plans, one per (event type, purpose, recipient).

Evaluating a plan is a pure function of (event, decision context): the recipient and the
keys are bound at compile time. Default deny: a plan releases only the fields its rules
name, and an event type or recipient without a plan gets nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.errors import CovenantError
from broker.model.schemas import Schema, SchemaRegistry, build_schema
from broker.policy.conditions import Check, compile_condition, covenant_validity_check
from broker.policy.covenant import (
    Covenant,
    FieldCondition,
    MaxAgeCondition,
    Purpose,
    ValidBetweenCondition,
)
from broker.policy.decision import Decision, DecisionContext, Release
from broker.policy.paths import Getter, getter
from broker.policy.transforms import Transform, compile_transform, keep
from broker.policy.views import REF, REF_SOURCE, ViewError, derive_view, source_path


@dataclass(frozen=True)
class FieldPlan:
    name: str
    source: str
    get: Getter
    transform: Transform


@dataclass
class Plan:
    event_type: str
    purpose: str
    recipient: str
    legal_basis: str
    retention_days: int
    view_schema: Schema
    policy_hash: str
    checks: list[Check]
    fields: list[FieldPlan]
    expires_after: Getter | None
    fields_released: tuple[str, ...]
    fields_withheld: tuple[str, ...]
    processing_activity_id: str  # the purpose's URI in the register (LDV dpl.core.*)
    # (name, getter, transform or None for keep) per field, made once from `fields`
    _steps: tuple[tuple[str, Getter, Transform | None], ...] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._steps = tuple((f.name, f.get, None if f.transform is keep else f.transform)
                            for f in self.fields)

    def evaluate(self, event: dict[str, Any], ctx: DecisionContext) -> Decision:
        for check in self.checks:
            withheld = check(event, ctx)
            if withheld is not None:
                return withheld
        view = {name: get(event) if transform is None else transform(get(event))
                for name, get, transform in self._steps}
        return Release(view, self.fields_released, self.fields_withheld)


@dataclass
class PlanSet:
    covenant: Covenant
    policy_hash: str
    by_event_type: dict[str, list[Plan]] = field(default_factory=dict)

    def plans_for(self, event_type: str) -> list[Plan]:
        return self.by_event_type.get(event_type, [])

    def plan(self, event_type: str, purpose: str, recipient: str) -> Plan | None:
        for plan in self.plans_for(event_type):
            if plan.purpose == purpose and plan.recipient == recipient:
                return plan
        return None

    @property
    def all(self) -> list[Plan]:
        return [p for plans in self.by_event_type.values() for p in plans]


def _hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def covenant_hash(covenant: Covenant) -> str:
    return _hash(covenant.model_dump(mode="json", by_alias=True))


def compile_plans(
    covenant: Covenant, schemas: SchemaRegistry, pseudonym_key: Callable[[str], bytes],
    source_path_label: str = "covenant", derive_views: bool = False,
) -> PlanSet:
    """Compile every (event type, purpose, recipient); CovenantError lists what does not fit.

    Views come from the published files in schemas/views, which must match the rules; a
    dry run of a proposed covenant (`derive_views`) uses the views its rules derive instead.
    """
    plans = PlanSet(covenant, covenant_hash(covenant))
    problems: list[str] = []
    validity = covenant_validity_check(covenant.covenant)
    for pname, purpose in covenant.purposes.items():
        try:
            compiled = _compile_purpose(covenant, pname, purpose, schemas, pseudonym_key,
                                        validity, derive_views)
        except (ViewError, CovenantError) as exc:
            problems.append(f"{source_path_label}:{exc}")
            continue
        for plan in compiled:
            plans.by_event_type.setdefault(plan.event_type, []).append(plan)
    if problems:
        raise CovenantError(source_path_label, problems)
    return plans


def _compile_purpose(
    covenant: Covenant, pname: str, purpose: Purpose, schemas: SchemaRegistry,
    pseudonym_key: Callable[[str], bytes], validity: Check, derive_views: bool = False,
) -> list[Plan]:
    where = f"purposes.{pname}"
    source = schemas.by_name.get(purpose.event_type)
    if source is None or source.kind != "events":
        raise ViewError(f"{where}.event_type: no schema for event type {purpose.event_type}")
    derived = derive_view(pname, purpose, source)
    view = schemas.by_name.get(purpose.view)
    if derive_views:
        view = build_schema(derived, "views", Path(f"<derived {purpose.view}>"))
    if view is None or view.kind != "views":
        raise ViewError(f"{where}.view: no view schema {purpose.view} under schemas/views")
    if _view_fields(derived) != _view_fields(view.raw):
        raise ViewError(f"{where}.view: {view.path.name} does not match the field rules; "
                        f"run `covenant-broker policy views --write`")
    for cond_where, path in _condition_paths(purpose):
        if path not in source.fields:
            raise ViewError(f"{where}.{cond_where}: {path} is not a field of {source.name}")
    for cond_where, cond in _conditions(purpose):
        _check_condition_types(f"{where}.{cond_where}", cond, source)
    if purpose.expires_after is not None and purpose.expires_after not in source.fields:
        raise ViewError(f"{where}.expires_after: {purpose.expires_after} is not a field of "
                        f"{source.name}")
    zone = covenant.zone
    fields = [
        FieldPlan(name, source_path(name, rule), getter(source_path(name, rule)),
                  compile_transform(rule.transform, zone=zone,
                                    key=lambda: pseudonym_key(pname), keep_last=rule.keep_last))
        for name, rule in purpose.fields.items()
    ]
    released = sorted({f.source for f in fields})  # what the covenant's rules release
    if REF not in purpose.fields:  # derive_view added the field; the plan fills it
        fields.insert(0, FieldPlan(REF, REF_SOURCE, getter(REF_SOURCE), compile_transform(
            "pseudonymise", zone=zone, key=lambda: pseudonym_key(pname), keep_last=None)))
    released_set = set(released)
    withheld = tuple(p for p in source.leaf_paths
                     if p not in released_set and not any(p.startswith(r + ".")
                                                          for r in released_set))
    policy_hash = _hash({"covenant": covenant.covenant.model_dump(mode="json"),
                         "purpose": pname,
                         "rules": purpose.model_dump(mode="json", by_alias=True)})
    out = []
    for rule_index, rule in enumerate(purpose.recipients):
        for name in rule.to:
            attributes = covenant.recipients[name].attributes
            checks = [validity]
            checks += [compile_condition(c, attributes, f"{where}.recipients.{rule_index}")
                       for c in rule.conditions]
            checks += [compile_condition(c, attributes, where) for c in purpose.conditions]
            out.append(Plan(
                event_type=purpose.event_type, purpose=pname, recipient=name,
                legal_basis=purpose.legal_basis, retention_days=purpose.retention_days,
                view_schema=view, policy_hash=policy_hash, checks=checks, fields=fields,
                expires_after=getter(purpose.expires_after) if purpose.expires_after else None,
                fields_released=tuple(released), fields_withheld=withheld,
                processing_activity_id=purpose.processing_activity_id,
            ))
    return out


def _conditions(purpose: Purpose) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [(f"conditions.{i}", c)
                                  for i, c in enumerate(purpose.conditions)]
    for r, rule in enumerate(purpose.recipients):
        out += [(f"recipients.{r}.conditions.{i}", c) for i, c in enumerate(rule.conditions)]
    return out


def _kind(avro_type: Any) -> str:
    """timestamp, date, array, record, boolean, string (incl. enum and uuid), or number."""
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical == "timestamp-millis":
            return "timestamp"
        if logical == "date":
            return "date"
        kind = avro_type["type"]
        if kind in ("array", "record", "map"):
            return str(kind)
        return "string" if kind in ("enum", "string") else _kind(kind)
    if avro_type == "boolean":
        return "boolean"
    return "string" if avro_type == "string" else "number"


_PY_KIND = {bool: "boolean", str: "string", int: "number", float: "number"}


def _check_condition_types(where: str, cond: Any, source: Schema) -> None:
    """Refuse a condition that cannot apply to its field's type, at load, not at decide."""
    def kind_of(path: str) -> str:
        return _kind(source.fields[path].avro_type)

    if isinstance(cond, MaxAgeCondition) and kind_of(cond.max_age.field) != "timestamp":
        raise ViewError(f"{where}.max_age.field: max_age needs a timestamp, "
                        f"{cond.max_age.field} is a {kind_of(cond.max_age.field)}")
    if isinstance(cond, ValidBetweenCondition):
        for label, path in (("from", cond.valid_between.start),
                            ("until", cond.valid_between.until)):
            if kind_of(path) != "date":
                raise ViewError(f"{where}.valid_between.{label}: valid_between needs a date, "
                                f"{path} is a {kind_of(path)}")
    if isinstance(cond, FieldCondition):
        kind = kind_of(cond.field)
        if cond.operator == "contains_recipient":
            items = source.fields[cond.field].avro_type
            if kind != "array" or _kind(items.get("items")) != "string":
                raise ViewError(f"{where}.field: contains_recipient needs an array of strings, "
                                f"{cond.field} is a {kind}")
            return
        if kind not in ("string", "boolean", "number"):
            raise ViewError(f"{where}.field: {cond.operator} needs a single value, "
                            f"{cond.field} is a {kind}")
        if cond.operator == "equals_recipient" and kind != "string":
            raise ViewError(f"{where}.field: equals_recipient needs a string, {cond.field} is "
                            f"a {kind}")
        values = cond.one_of if cond.operator == "one_of" else \
            [cond.equals] if cond.operator == "equals" else []
        for value in values or []:
            if _PY_KIND.get(type(value)) != kind:
                raise ViewError(f"{where}.{cond.operator}: {value!r} can never equal "
                                f"{cond.field}, a {kind}")


def _view_fields(raw: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["name"], json.dumps(f["type"], sort_keys=True)) for f in raw["fields"]]


def _condition_paths(purpose: Purpose) -> list[tuple[str, str]]:
    paths: list[tuple[str, str]] = []
    groups = [("conditions", purpose.conditions)]
    groups += [(f"recipients.{i}.conditions", r.conditions)
               for i, r in enumerate(purpose.recipients)]
    for label, conditions in groups:
        for i, cond in enumerate(conditions):
            for attr in ("field",):
                if hasattr(cond, attr):
                    paths.append((f"{label}.{i}.{attr}", getattr(cond, attr)))
            if hasattr(cond, "max_age"):
                paths.append((f"{label}.{i}.max_age.field", cond.max_age.field))
            if hasattr(cond, "valid_between"):
                paths.append((f"{label}.{i}.valid_between.from", cond.valid_between.start))
                paths.append((f"{label}.{i}.valid_between.until", cond.valid_between.until))
            if hasattr(cond, "bind"):
                paths.extend((f"{label}.{i}.bind.{k}", v) for k, v in cond.bind.items())
    return paths
