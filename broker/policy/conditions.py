"""Conditions compile once into closures (event, context) -> Withhold | None.

Declarative forms cover the covenant's common cases and cost well under a microsecond:
field comparisons (with a constant, a list, or a recipient attribute), max age, a date
validity window, and intervention-team themes. CEL covers the rare complex case, with a
context of only the bound fields and the recipient's attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from broker.clock import to_millis
from broker.errors import CovenantError
from broker.policy import covenant as model
from broker.policy.decision import DecisionContext, Withhold
from broker.policy.paths import getter

Check = Callable[[dict[str, Any], DecisionContext], Withhold | None]


def _fold(value: Any, ignore_case: bool) -> Any:
    return value.casefold() if ignore_case and isinstance(value, str) else value


def field_check(cond: model.FieldCondition, attributes: Mapping[str, str]) -> Check:
    get = getter(cond.field)
    fold = cond.ignore_case
    op = cond.operator
    if op == "equals_recipient":
        attr = cond.equals_recipient or ""
        expected = _fold(attributes.get(attr), fold)
        miss = Withhold("out_of_scope", cond.reason or
                        f"{cond.field} does not match the recipient's {attr}")

        def equals_recipient(event: dict[str, Any], ctx: DecisionContext) -> Withhold | None:
            value = get(event)
            return None if expected is not None and _fold(value, fold) == expected else miss

        return equals_recipient
    if op == "contains_recipient":
        attr = cond.contains_recipient or ""
        wanted = _fold(attributes.get(attr), fold)
        miss = Withhold("out_of_scope", cond.reason or
                        f"the recipient's {attr} is not in {cond.field}")

        def contains_recipient(event: dict[str, Any], ctx: DecisionContext) -> Withhold | None:
            values = get(event) or ()
            return None if wanted is not None and wanted in {_fold(v, fold) for v in values} \
                else miss

        return contains_recipient
    if op == "one_of":
        allowed = {_fold(v, fold) for v in cond.one_of or ()}
        miss = Withhold("condition_not_met", cond.reason or
                        f"{cond.field} is not one of the values the covenant allows")

        def one_of(event: dict[str, Any], ctx: DecisionContext) -> Withhold | None:
            value = get(event)
            if isinstance(value, str):
                value = _fold(value.strip(), fold)
            return None if value in allowed else miss

        return one_of
    expected_value = _fold(cond.equals, fold)
    miss = Withhold("condition_not_met", cond.reason or
                    f"{cond.field} does not equal {cond.equals!r}")

    def equals(event: dict[str, Any], ctx: DecisionContext) -> Withhold | None:
        value = _fold(get(event), fold)
        # `True == 1` in Python; a boolean condition must only accept a boolean.
        same = value == expected_value and type(value) is type(expected_value)
        return None if same else miss

    return equals


def max_age_check(cond: model.MaxAgeCondition) -> Check:
    get = getter(cond.max_age.field)
    limit_ms = cond.max_age.days * 86_400_000
    field = cond.max_age.field
    miss = Withhold("too_old", cond.reason or
                    f"{field} is more than {cond.max_age.days} days before the decision time")
    missing = Withhold("too_old", f"{field} is missing, so its age is unknown")

    def max_age(event: dict[str, Any], ctx: DecisionContext) -> Withhold | None:
        value = get(event)
        if value is None:
            return missing
        return miss if ctx.now_ms - to_millis(value) > limit_ms else None

    return max_age


def valid_between_check(cond: model.ValidBetweenCondition) -> Check:
    start_get = getter(cond.valid_between.start)
    until_get = getter(cond.valid_between.until)
    start_name, until_name = cond.valid_between.start, cond.valid_between.until
    before = Withhold("not_yet_valid", cond.reason or
                      f"the decision date is before {start_name}")
    after = Withhold("expired", cond.reason or f"the decision date is after {until_name}")

    def valid_between(event: dict[str, Any], ctx: DecisionContext) -> Withhold | None:
        start: date | None = start_get(event)
        until: date | None = until_get(event)
        if start is not None and ctx.today < start:
            return before
        if until is not None and ctx.today > until:
            return after
        return None

    return valid_between


def theme_check(cond: model.ThemeCondition) -> Check:
    theme = cond.theme
    miss = Withhold("theme_off", cond.reason or
                    f"theme {theme} is switched off at the decision time")

    def theme_on(event: dict[str, Any], ctx: DecisionContext) -> Withhold | None:
        return None if ctx.control.theme_on(theme, ctx.now_ms) else miss

    return theme_on


def cel_check(cond: model.CelCondition, attributes: Mapping[str, str], where: str) -> Check:
    import cel  # noqa: PLC0415 - optional at import time; only covenants using CEL need it

    try:
        program = cel.compile(cond.cel)
    except Exception as exc:  # noqa: BLE001 - the CEL library raises plain exceptions
        raise CovenantError(where, [f"{where}.cel: does not compile: {exc}"]) from None
    getters = {name: getter(path) for name, path in cond.bind.items()}
    recipient = dict(attributes)
    miss = Withhold("condition_not_met", cond.reason or f"CEL condition {cond.cel!r} is false")

    def cel_condition(event: dict[str, Any], ctx: DecisionContext) -> Withhold | None:
        context = {name: get(event) for name, get in getters.items()}
        context["recipient"] = recipient
        try:
            result = program.execute(context)
        except Exception:  # noqa: BLE001 - an evaluation error withholds (default deny)
            return Withhold("condition_error", f"CEL condition {cond.cel!r} did not evaluate")
        return None if result is True else miss

    return cel_condition


def compile_condition(cond: Any, attributes: Mapping[str, str], where: str) -> Check:
    if isinstance(cond, model.FieldCondition):
        return field_check(cond, attributes)
    if isinstance(cond, model.MaxAgeCondition):
        return max_age_check(cond)
    if isinstance(cond, model.ValidBetweenCondition):
        return valid_between_check(cond)
    if isinstance(cond, model.ThemeCondition):
        return theme_check(cond)
    if isinstance(cond, model.CelCondition):
        return cel_check(cond, attributes, where)
    raise TypeError(f"unknown condition {cond!r}")


def covenant_validity_check(header: model.Header) -> Check:
    before = Withhold("covenant_not_yet_valid",
                      f"covenant {header.id} v{header.version} is valid from {header.valid_from}")
    after = Withhold("covenant_expired",
                     f"covenant {header.id} v{header.version} expired after "
                     f"{header.valid_until}; nothing flows after that")
    start, until = header.valid_from, header.valid_until

    def covenant_valid(event: dict[str, Any], ctx: DecisionContext) -> Withhold | None:
        if ctx.today < start:
            return before
        if ctx.today > until:
            return after
        return None

    return covenant_valid


