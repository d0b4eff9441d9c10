"""Conditions: field comparisons, max age, validity windows, themes, covenant validity, CEL.

Each kind is tested on its own (the compiled check) and through the shipped covenant's
plans, whose decisions are what recipients see. Decision dates are the decision time's
calendar date in Europe/Amsterdam; the boundary instants below are worked out by hand.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from broker.app.service import Broker
from broker.clock import local_date, to_millis
from broker.errors import CovenantError
from broker.policy import covenant as model
from broker.policy.conditions import (
    cel_check,
    covenant_validity_check,
    field_check,
    max_age_check,
    theme_check,
    valid_between_check,
)
from broker.policy.control import ControlState, ThemeSwitch
from broker.policy.covenant import load_covenant
from broker.policy.decision import DecisionContext, Release, Withhold
from broker.policy.plan import PlanSet, compile_plans
from tests.factories import (
    boa_waarneming,
    detentie_uitstroom,
    gebiedsverbod,
    lines,
    woninginbraak,
)
from tests.unit.strategies import POLICY_FILE, REGISTRY, decoded, fixed_key

AMS = ZoneInfo("Europe/Amsterdam")
COVENANT = load_covenant(POLICY_FILE)
PLANS = compile_plans(COVENANT, REGISTRY, fixed_key)


def instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def ctx(now: str | datetime, control: ControlState | None = None) -> DecisionContext:
    at = instant(now) if isinstance(now, str) else now
    return DecisionContext(at, to_millis(at), local_date(at, AMS), control or ControlState())


def themes_on(at: str) -> ControlState:
    return ControlState.fold([ThemeSwitch("woninginbraak", True, to_millis(instant(at)), 1)])


def decide(event_type: str, purpose: str, recipient: str, event: dict[str, Any],
           context: DecisionContext, plans: PlanSet = PLANS) -> Release | Withhold:
    plan = plans.plan(event_type, purpose, recipient)
    assert plan is not None, f"no plan for {purpose} -> {recipient}"
    return plan.evaluate(decoded(event_type, event), context)


def code(decision: Release | Withhold) -> str:
    return "release" if isinstance(decision, Release) else decision.code


def field_condition(**spec: Any) -> model.FieldCondition:
    return model.FieldCondition.model_validate(spec)


NOW = ctx("2026-05-12T10:00:00Z")


# -- field equals ----------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "passes"), [
    (True, True), (False, False), (1, False), (1.0, False), ("true", False), (None, False),
])
def test_equals_true_accepts_only_the_boolean_true(value: object, passes: bool) -> None:
    check = field_check(field_condition(field="victim.consent", equals=True), {})
    result = check({"victim": {"consent": value}}, NOW)
    assert (result is None) is passes
    if not passes:
        assert result == Withhold("condition_not_met", "victim.consent does not equal True")


@pytest.mark.parametrize(("expected", "value", "passes"), [
    (1, 1, True), (1, True, False), (0, False, False), (False, 0, False), (False, False, True),
])
def test_equals_does_not_confuse_bool_and_int(expected: object, value: object,
                                              passes: bool) -> None:
    check = field_check(field_condition(field="n", equals=expected), {})
    assert (check({"n": value}, NOW) is None) is passes


def test_equals_on_a_missing_parent_withholds() -> None:
    check = field_check(field_condition(field="victim.consent", equals=True), {})
    assert check({}, NOW) is not None
    assert check({"victim": None}, NOW) is not None


def test_equals_with_ignore_case_and_a_reason() -> None:
    check = field_check(field_condition(field="wijk", equals="Noord", ignore_case=True,
                                        reason="alleen wijk noord"), {})
    assert check({"wijk": "NOORD"}, NOW) is None
    assert check({"wijk": "noord"}, NOW) is None
    assert check({"wijk": "zuid"}, NOW) == Withhold("condition_not_met", "alleen wijk noord")
    strict = field_check(field_condition(field="wijk", equals="Noord"), {})
    assert strict({"wijk": "noord"}, NOW) is not None


def test_consent_condition_of_the_shipped_covenant() -> None:
    args = ("politie.woninginbraak", "slachtoffer-preventieadvies", "preventie")
    assert code(decide(*args, woninginbraak(), NOW)) == "release"
    refused = decide(*args, woninginbraak(victim={"consent_prevention_advice": False}), NOW)
    assert refused == Withhold("condition_not_met",
                               "the victim did not consent to prevention advice")


# -- field one_of ----------------------------------------------------------------------------
@pytest.mark.parametrize(("municipality", "passes"), [
    ("Amstelveen", True), ("AMSTELVEEN", True), ("amstelveen", True), (" Amstelveen ", True),
    ("ouder-amstel", True), ("Uithoorn", True), ("Aalsmeer", True), ("Diemen", True),
    ("Amsterdam", False), ("Amstel veen", False), ("", False), ("Ouder Amstel", False),
])
def test_one_of_with_ignore_case_in_the_shipped_covenant(municipality: str,
                                                         passes: bool) -> None:
    decision = decide("om.detentie_uitstroom", "nazorg-detentie-terugkeer", "casusregisseur-dt",
                      detentie_uitstroom(municipality=municipality), NOW)
    if passes:
        assert isinstance(decision, Release)
        assert decision.view["municipality"] == municipality  # kept as sent, not folded
    else:
        assert decision == Withhold("condition_not_met",
                                    "the municipality is outside the Amstelland region")


def test_one_of_without_ignore_case_is_exact() -> None:
    check = field_check(field_condition(field="m", one_of=["Amstelveen", "Diemen"]), {})
    assert check({"m": "Amstelveen"}, NOW) is None
    assert check({"m": "amstelveen"}, NOW) is not None
    assert check({"m": None}, NOW) is not None
    assert check({}, NOW) is not None


def test_one_of_with_non_string_values() -> None:
    check = field_check(field_condition(field="n", one_of=[1, 2]), {})
    assert check({"n": 2}, NOW) is None
    assert check({"n": 3}, NOW) is not None


# -- equals_recipient / contains_recipient ---------------------------------------------------
BOAS = ("boa-hor-noord", "boa-hor-oost", "boa-hor-zuid", "boa-hor-west")


@pytest.mark.parametrize("wijk", ["noord", "oost", "zuid", "west"])
def test_equals_recipient_releases_only_to_the_boa_of_the_events_wijk(wijk: str) -> None:
    event = woninginbraak(address={"wijk": wijk})
    for boa in BOAS:
        decision = decide("politie.woninginbraak", "surveillance-woninginbraak", boa, event, NOW)
        if boa == f"boa-hor-{wijk}":
            assert isinstance(decision, Release)
        else:
            assert decision == Withhold(
                "out_of_scope", "address.wijk does not match the recipient's wijk")


@pytest.mark.parametrize("wijk", ["Noord", "noord ", "centrum", ""])
def test_equals_recipient_without_ignore_case_matches_exactly(wijk: str) -> None:
    event = woninginbraak(address={"wijk": wijk})
    for boa in BOAS:
        decision = decide("politie.woninginbraak", "surveillance-woninginbraak", boa, event, NOW)
        assert code(decision) == "out_of_scope"


def test_equals_recipient_when_the_recipient_lacks_the_attribute() -> None:
    check = field_check(field_condition(field="wijk", equals_recipient="wijk"), {})
    assert check({"wijk": "noord"}, NOW) is not None
    assert check({"wijk": None}, NOW) is not None  # None == missing attribute is no match


def test_equals_recipient_with_ignore_case() -> None:
    check = field_check(field_condition(field="wijk", equals_recipient="wijk", ignore_case=True),
                        {"wijk": "Noord"})
    assert check({"wijk": "NOORD"}, NOW) is None
    assert check({"wijk": "zuid"}, NOW) is not None


@pytest.mark.parametrize(("wijken", "boas_released"), [
    (["noord", "west"], {"boa-hor-noord", "boa-hor-west"}),
    (["zuid"], {"boa-hor-zuid"}),
    (["noord", "oost", "zuid", "west"], set(BOAS)),
    ([], set()),
    (["Noord", "centrum"], set()),
])
def test_contains_recipient_releases_to_each_boa_whose_wijk_is_in_the_area(
        wijken: list[str], boas_released: set[str]) -> None:
    event = gebiedsverbod(area={"wijken": wijken, "streets": []})
    context = ctx("2026-05-15T12:00:00Z")
    for boa in BOAS:
        decision = decide("om.gebiedsverbod", "handhaving-gebiedsverbod", boa, event, context)
        if boa in boas_released:
            assert isinstance(decision, Release)
        else:
            assert decision == Withhold("out_of_scope",
                                        "the recipient's wijk is not in area.wijken")
    # the intervention team has no wijk condition
    assert code(decide("om.gebiedsverbod", "handhaving-gebiedsverbod", "interventieteam",
                       event, context)) == "release"


def test_contains_recipient_on_a_missing_list_withholds() -> None:
    check = field_check(field_condition(field="area.wijken", contains_recipient="wijk"),
                        {"wijk": "noord"})
    assert check({"area": {"wijken": None}}, NOW) is not None
    assert check({}, NOW) is not None
    assert check({"area": {"wijken": ["noord"]}}, NOW) is None


# -- max_age ---------------------------------------------------------------------------------
def test_max_age_boundary_is_exactly_fourteen_days() -> None:
    now = instant("2026-05-23T21:45:10.500Z")
    fresh = woninginbraak(occurred_until=to_millis(now - timedelta(days=14)))
    stale = woninginbraak(occurred_until=to_millis(now - timedelta(days=14, milliseconds=1)))
    args = ("politie.woninginbraak", "surveillance-woninginbraak", "boa-hor-noord")
    assert code(decide(*args, fresh, ctx(now))) == "release"
    assert decide(*args, stale, ctx(now)) == Withhold(
        "too_old", "occurred_until is more than 14 days before the decision time")


def test_max_age_counts_occurred_until_not_occurred_from() -> None:
    now = instant("2026-05-23T12:00:00Z")
    event = woninginbraak(occurred_from=to_millis(now - timedelta(days=40)),
                          occurred_until=to_millis(now - timedelta(days=13)))
    assert code(decide("politie.woninginbraak", "surveillance-woninginbraak", "boa-hor-noord",
                       event, ctx(now))) == "release"


def test_max_age_of_an_event_from_the_future_releases() -> None:
    now = instant("2026-05-23T12:00:00Z")
    event = woninginbraak(occurred_until=to_millis(now + timedelta(hours=1)))
    assert code(decide("politie.woninginbraak", "surveillance-woninginbraak", "boa-hor-noord",
                       event, ctx(now))) == "release"


def test_max_age_check_in_milliseconds_and_when_missing() -> None:
    check = max_age_check(model.MaxAgeCondition.model_validate(
        {"max_age": {"field": "t", "days": 1}}))
    now = instant("2026-05-23T12:00:00Z")
    assert check({"t": now - timedelta(days=1)}, ctx(now)) is None
    assert check({"t": now - timedelta(days=1, milliseconds=1)}, ctx(now)) is not None
    assert check({"t": None}, ctx(now)) == Withhold(
        "too_old", "t is missing, so its age is unknown")


def test_max_age_applies_to_every_recipient_of_the_purpose() -> None:
    now = instant("2026-06-30T12:00:00Z")
    context = ctx(now, themes_on("2026-01-01T00:00:00Z"))
    for recipient in ("boa-hor-noord", "interventieteam"):
        assert code(decide("politie.woninginbraak", "surveillance-woninginbraak", recipient,
                           woninginbraak(), context)) == "too_old"
    # the prevention purpose has no age limit
    assert code(decide("politie.woninginbraak", "preventie-woninginbraak", "preventie",
                       woninginbraak(), context)) == "release"


# -- valid_between ---------------------------------------------------------------------------
BAN = ("om.gebiedsverbod", "handhaving-gebiedsverbod", "interventieteam")


MAY_BAN = {"valid_from": "2026-05-01", "valid_until": "2026-05-31"}


@pytest.mark.parametrize(("now", "expected"), [
    ("2026-04-30T21:59:59.999Z", "not_yet_valid"),  # 23:59:59.999 on 30 April local
    ("2026-04-30T22:00:00Z", "release"),  # 00:00 on 1 May local: the first valid day
    ("2026-05-15T12:00:00Z", "release"),
    ("2026-05-31T21:59:59.999Z", "release"),  # 23:59:59.999 on 31 May local: the last day
    ("2026-05-31T22:00:00Z", "expired"),  # 00:00 on 1 June local
    ("2026-05-31T22:30:00Z", "expired"),  # still 31 May in UTC, already 1 June locally
    ("2026-06-01T09:00:00Z", "expired"),
])
def test_valid_between_is_inclusive_and_uses_the_local_date(now: str, expected: str) -> None:
    assert code(decide(*BAN, gebiedsverbod(**MAY_BAN), ctx(now))) == expected


def test_valid_between_reasons() -> None:
    assert decide(*BAN, gebiedsverbod(**MAY_BAN), ctx("2026-04-01T12:00:00Z")) == Withhold(
        "not_yet_valid", "the decision date is before valid_from")
    assert decide(*BAN, gebiedsverbod(**MAY_BAN), ctx("2026-07-01T12:00:00Z")) == Withhold(
        "expired", "the decision date is after valid_until")


def test_a_one_day_ban_is_valid_for_the_whole_local_day() -> None:
    event = gebiedsverbod(valid_from="2026-05-31", valid_until="2026-05-31")
    assert code(decide(*BAN, event, ctx("2026-05-30T22:00:00Z"))) == "release"
    assert code(decide(*BAN, event, ctx("2026-05-31T21:59:59.999Z"))) == "release"
    assert code(decide(*BAN, event, ctx("2026-05-30T21:59:59.999Z"))) == "not_yet_valid"
    assert code(decide(*BAN, event, ctx("2026-05-31T22:00:00Z"))) == "expired"


def test_valid_between_check_compares_dates_not_instants() -> None:
    check = valid_between_check(model.ValidBetweenCondition.model_validate(
        {"valid_between": {"from": "a", "until": "b"}}))
    window = {"a": date(2026, 5, 1), "b": date(2026, 5, 31)}
    assert check(window, ctx("2026-05-31T21:59:59.999Z")) is None
    assert check(window, ctx("2026-05-31T22:30:00Z")) is not None


def test_broker_context_uses_the_amsterdam_date(broker: Broker) -> None:
    assert broker.context(instant("2026-05-31T22:30:00Z")).today == date(2026, 6, 1)
    assert broker.context(instant("2026-05-31T21:59:59.999Z")).today == date(2026, 5, 31)
    assert broker.context(instant("2026-12-31T23:00:00Z")).today == date(2027, 1, 1)


def test_ban_decided_late_on_its_last_utc_day_is_not_released(broker: Broker) -> None:
    """The whole pipeline: 22:30Z on 31 May is 1 June in Amsterdam, after valid_until."""
    early, late = gebiedsverbod(**MAY_BAN), gebiedsverbod(**MAY_BAN)
    first = broker.ingest("om", "gebiedsverbod", lines(early),
                          instant("2026-05-31T21:59:59.999Z"))
    second = broker.ingest("om", "gebiedsverbod", lines(late), instant("2026-05-31T22:30:00Z"))
    # area.wijken is noord and oost: those two boa's and the team; zuid and west are out
    assert (first.decided.released, first.decided.withheld) == (3, 2)
    assert (second.decided.released, second.decided.withheld) == (0, 5)
    delivered = broker.consume("interventieteam", None, 0, instant("2026-05-31T22:31:00Z"))
    records = [d for d in delivered if d.kind == "record"]
    assert len(records) == 1
    assert records[0].record["valid_until"] == "2026-05-31"


# -- themes ----------------------------------------------------------------------------------
T0 = to_millis(instant("2026-05-01T08:00:00Z"))


def test_themes_start_off() -> None:
    state = ControlState()
    assert not state.theme_on("woninginbraak", T0)
    assert not state.theme_on("woninginbraak", 2**62)


def test_the_latest_switch_at_or_before_the_decision_time_applies() -> None:
    state = ControlState.fold([ThemeSwitch("woninginbraak", True, T0, 1),
                               ThemeSwitch("woninginbraak", False, T0 + 1000, 2)])
    assert not state.theme_on("woninginbraak", T0 - 1)
    assert state.theme_on("woninginbraak", T0)  # at the switch instant itself
    assert state.theme_on("woninginbraak", T0 + 999)
    assert not state.theme_on("woninginbraak", T0 + 1000)
    assert not state.theme_on("drugs", T0 + 500)  # other themes are untouched


def test_a_switch_recorded_later_but_effective_earlier_still_applies_by_time() -> None:
    # recorded order (seq) differs from effective order: time decides, not recording
    state = ControlState.fold([ThemeSwitch("woninginbraak", False, T0 + 1000, 1),
                               ThemeSwitch("woninginbraak", True, T0, 2)])
    assert state.theme_on("woninginbraak", T0 + 500)
    assert not state.theme_on("woninginbraak", T0 + 1000)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_ties_at_the_same_instant_go_to_the_switch_recorded_last(order: tuple[int, int]) -> None:
    switches = [ThemeSwitch("woninginbraak", True, T0, 7),
                ThemeSwitch("woninginbraak", False, T0, 8)]
    state = ControlState.fold([switches[i] for i in order])
    assert not state.theme_on("woninginbraak", T0)
    reversed_seq = ControlState.fold([ThemeSwitch("woninginbraak", False, T0, 7),
                                      ThemeSwitch("woninginbraak", True, T0, 8)])
    assert reversed_seq.theme_on("woninginbraak", T0)


def test_theme_condition_gates_the_intervention_team() -> None:
    args = ("politie.woninginbraak", "surveillance-woninginbraak", "interventieteam")
    now = "2026-05-12T10:00:00Z"
    assert decide(*args, woninginbraak(), ctx(now)) == Withhold(
        "theme_off", "theme woninginbraak is switched off at the decision time")
    assert code(decide(*args, woninginbraak(), ctx(now, themes_on(now)))) == "release"
    assert code(decide(*args, woninginbraak(),
                       ctx(now, themes_on("2026-05-12T10:00:00.001Z")))) == "theme_off"
    # the boa of the wijk does not depend on the theme
    assert code(decide("politie.woninginbraak", "surveillance-woninginbraak", "boa-hor-noord",
                       woninginbraak(), ctx(now))) == "release"


def test_theme_check_with_a_reason() -> None:
    check = theme_check(model.ThemeCondition(theme="drugs", reason="thema drugs staat uit"))
    assert check({}, NOW) == Withhold("theme_off", "thema drugs staat uit")


# -- covenant validity -----------------------------------------------------------------------
PREVENTION = ("politie.woninginbraak", "preventie-woninginbraak", "preventie")


@pytest.mark.parametrize(("now", "expected"), [
    ("2020-04-28T21:59:59.999Z", "covenant_not_yet_valid"),  # 28 April 23:59 CEST
    ("2020-04-28T22:00:00Z", "release"),  # 29 April 00:00 CEST: signed and valid
    ("2023-01-01T00:00:00Z", "release"),
    ("2026-12-31T22:59:59.999Z", "release"),  # 31 December 23:59:59.999 CET: last day
    ("2026-12-31T23:00:00Z", "covenant_expired"),  # 1 January 2027 local
    ("2027-01-01T12:00:00Z", "covenant_expired"),
])
def test_covenant_validity_by_local_date(now: str, expected: str) -> None:
    assert code(decide(*PREVENTION, woninginbraak(), ctx(now))) == expected


def test_covenant_expiry_comes_first_and_says_nothing_flows() -> None:
    expired = decide(*PREVENTION, woninginbraak(), ctx("2027-01-01T00:00:00+01:00"))
    assert expired == Withhold(
        "covenant_expired",
        "covenant amstelveen-veiligheid v1 expired after 2026-12-31; nothing flows after that")
    # even a decision that would also fail another condition reports the covenant first
    stale = decide("politie.woninginbraak", "surveillance-woninginbraak", "boa-hor-zuid",
                   woninginbraak(), ctx("2027-03-01T00:00:00Z"))
    assert code(stale) == "covenant_expired"


def test_covenant_validity_check_on_its_own() -> None:
    check = covenant_validity_check(COVENANT.covenant)
    assert check({}, ctx("2026-12-31T22:59:59.999Z")) is None
    assert check({}, ctx("2026-12-31T23:00:00Z")) is not None
    assert check({}, ctx("2020-04-28T22:00:00Z")) is None
    not_yet = check({}, ctx("2020-04-28T21:59:59.999Z"))
    assert not_yet == Withhold("covenant_not_yet_valid",
                               "covenant amstelveen-veiligheid v1 is valid from 2020-04-29")


# -- CEL -------------------------------------------------------------------------------------
def cel(expression: str, bind: dict[str, str] | None = None,
        attributes: dict[str, str] | None = None) -> Any:
    cond = model.CelCondition.model_validate({"cel": expression, "bind": bind or {}})
    return cel_check(cond, attributes or {}, "purposes.test.conditions.0")


def test_cel_condition_with_bound_fields_and_recipient_attributes() -> None:
    check = cel("consent && wijk == recipient.wijk",
                {"consent": "victim.consent", "wijk": "address.wijk"}, {"wijk": "noord"})
    event = {"victim": {"consent": True}, "address": {"wijk": "noord"}}
    assert check(event, NOW) is None
    assert check({**event, "address": {"wijk": "zuid"}}, NOW) == Withhold(
        "condition_not_met", "CEL condition 'consent && wijk == recipient.wijk' is false")
    assert check({**event, "victim": {"consent": False}}, NOW) is not None


def test_cel_sees_only_what_is_bound() -> None:
    # victim.name is in the event but not bound: the expression cannot read it
    check = cel("victim.name == 'J'", {})
    assert check({"victim": {"name": "J"}}, NOW) == Withhold(
        "condition_error", "CEL condition \"victim.name == 'J'\" did not evaluate")


def test_cel_evaluation_error_withholds() -> None:
    check = cel("n > 3", {"n": "count"})
    assert check({"count": 5}, NOW) is None
    assert code(check({"count": "five"}, NOW)) == "condition_error"
    assert code(check({}, NOW)) == "condition_error"


def test_cel_that_does_not_compile_names_its_place() -> None:
    with pytest.raises(CovenantError) as caught:
        cel("n >")
    assert caught.value.problems[0].startswith("purposes.test.conditions.0.cel: does not compile")


def test_cel_condition_in_a_covenant_file(tmp_path: Path) -> None:
    text = POLICY_FILE.read_text(encoding="utf-8")
    old = "          - {field: address.wijk, equals_recipient: wijk}\n"
    new = ("          - cel: wijk == recipient.wijk && !heterdaad\n"
           "            bind: {wijk: address.wijk, heterdaad: heterdaad}\n")
    assert text.count(old) == 1
    path = tmp_path / "cel.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    plans = compile_plans(load_covenant(path), REGISTRY, fixed_key)
    args = ("politie.woninginbraak", "surveillance-woninginbraak")
    assert code(decide(*args, "boa-hor-noord", woninginbraak(), NOW, plans)) == "release"
    assert code(decide(*args, "boa-hor-zuid", woninginbraak(), NOW, plans)) == \
        "condition_not_met"
    assert code(decide(*args, "boa-hor-noord", woninginbraak(heterdaad=True), NOW, plans)) == \
        "condition_not_met"


def test_cel_bind_to_an_unknown_field_is_refused_at_compile(tmp_path: Path) -> None:
    text = POLICY_FILE.read_text(encoding="utf-8")
    old = "          - {field: address.wijk, equals_recipient: wijk}\n"
    new = "          - {cel: wijk == recipient.wijk, bind: {wijk: address.district}}\n"
    path = tmp_path / "cel.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(CovenantError) as caught:
        compile_plans(load_covenant(path), REGISTRY, fixed_key, str(path))
    assert caught.value.problems == [
        f"{path}:purposes.surveillance-woninginbraak.recipients.0.conditions.0.bind.wijk: "
        "address.district is not a field of politie.woninginbraak"]


def test_boa_observation_has_no_conditions_beyond_the_covenant() -> None:
    assert code(decide("gemeente.boa_waarneming", "informatie-politie", "politie-amstelland",
                       boa_waarneming(), NOW)) == "release"
