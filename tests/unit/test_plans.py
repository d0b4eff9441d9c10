"""The shipped covenant compiled into plans: views, scope, default deny, field accounting.

Expected names come from the domain brief's purpose-by-purpose description of the sample
covenant, so a drift between the covenant file and what the parties agreed shows up here.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from broker.clock import local_date, to_millis
from broker.errors import CovenantError
from broker.policy.control import ControlState, ThemeSwitch
from broker.policy.covenant import load_covenant, parse_covenant
from broker.policy.decision import DecisionContext, Release
from broker.policy.plan import Plan, PlanSet, compile_plans
from tests import factories as f
from tests.unit.strategies import POLICY_FILE, REGISTRY, decoded, fixed_key

COVENANT = load_covenant(POLICY_FILE)
PLANS = compile_plans(COVENANT, REGISTRY, fixed_key)
BOAS = ["boa-hor-noord", "boa-hor-oost", "boa-hor-zuid", "boa-hor-west"]

# From the domain brief, "The sample covenant (policies/), purpose by purpose".
EXPECTED = {
    "surveillance-woninginbraak": (
        "politie.woninginbraak", [*BOAS, "interventieteam"],
        ["ref", "occurred_from", "occurred_until", "street", "postcode4", "wijk", "attempt",
         "heterdaad", "modus_operandi"]),
    "preventie-woninginbraak": (
        "politie.woninginbraak", ["preventie"],
        ["street", "postcode4", "wijk", "date", "modus_operandi", "attempt"]),
    "slachtoffer-preventieadvies": (
        "politie.woninginbraak", ["preventie"],
        ["name", "phone", "email", "street", "house_number", "postcode", "modus_operandi",
         "date"]),
    "handhaving-gebiedsverbod": (
        "om.gebiedsverbod", [*BOAS, "interventieteam"],
        ["ref", "name", "date_of_birth", "description", "area", "valid_from", "valid_until",
         "legal_ground"]),
    "nazorg-detentie-terugkeer": (
        "om.detentie_uitstroom", ["casusregisseur-dt"],
        ["name", "date_of_birth", "bsn", "municipality", "expected_release_date", "facility",
         "needs", "offence_category"]),
    "informatie-politie": (
        "gemeente.boa_waarneming", ["politie-amstelland"],
        ["event_id", "observed_at", "boa_id", "wijk", "location", "category", "description",
         "vehicle_plate", "person_description"]),
}
# Withheld by name in the brief (and personal data the purpose has no need for).
MUST_WITHHOLD = {
    "surveillance-woninginbraak": {"victim.name", "victim.bsn", "address.house_number",
                                   "suspect.bsn", "police_case_number", "stolen_goods"},
    "preventie-woninginbraak": {"victim.name", "victim.email", "address.house_number",
                                "suspect.description"},
    "slachtoffer-preventieadvies": {"victim.bsn", "suspect.name", "police_case_number"},
    "handhaving-gebiedsverbod": {"person.bsn", "parketnummer", "offence_category"},
    "nazorg-detentie-terugkeer": {"risk_notes", "parketnummer"},
    "informatie-politie": set(),
}


def plans_of(purpose: str) -> list[Plan]:
    return [p for p in PLANS.all if p.purpose == purpose]


def covered(path: str, released: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r + ".") for r in released)


def test_six_purposes_compile_into_one_plan_per_recipient() -> None:
    assert sorted({p.purpose for p in PLANS.all}) == sorted(EXPECTED)
    for purpose, (event_type, recipients, _names) in EXPECTED.items():
        plans = plans_of(purpose)
        assert [p.recipient for p in plans] == recipients, purpose
        assert {p.event_type for p in plans} == {event_type}
        assert all(p in PLANS.plans_for(event_type) for p in plans)
    assert len(PLANS.all) == sum(len(r) for _, r, _ in EXPECTED.values())


@pytest.mark.parametrize("purpose", sorted(EXPECTED))
def test_view_fields_are_exactly_the_covenants_rule_names(purpose: str) -> None:
    rule_names = list(COVENANT.purposes[purpose].fields)
    assert rule_names == EXPECTED[purpose][2]
    for plan in plans_of(purpose):
        view_names = [field["name"] for field in plan.view_schema.raw["fields"]]
        # every view carries its ref: the covenant's own rule, or one the plan adds first
        assert view_names == (rule_names if "ref" in rule_names else ["ref", *rule_names])
        assert [f.name for f in plan.fields] == view_names
        assert plan.view_schema.kind == "views"
        assert plan.view_schema.name == COVENANT.purposes[purpose].view


@pytest.mark.parametrize("purpose", sorted(EXPECTED))
def test_plans_carry_the_purposes_legal_basis_and_retention(purpose: str) -> None:
    spec = COVENANT.purposes[purpose]
    hashes = {p.policy_hash for p in plans_of(purpose)}
    assert len(hashes) == 1  # one policy hash per purpose, whatever the recipient
    for plan in plans_of(purpose):
        assert plan.legal_basis == spec.legal_basis
        assert plan.legal_basis
        assert plan.retention_days == spec.retention_days > 0
    others = {p.policy_hash for p in PLANS.all if p.purpose != purpose}
    assert not hashes & others


def test_default_deny_for_an_event_type_no_purpose_names() -> None:
    assert PLANS.plans_for("politie.zakkenrollerij") == []
    assert PLANS.plans_for("records.audit_entry") == []
    # drop the only purpose for boa observations: the type exists, but nothing flows
    trimmed = COVENANT.model_copy(update={"purposes": {
        name: p for name, p in COVENANT.purposes.items() if name != "informatie-politie"}})
    plans = compile_plans(trimmed, REGISTRY, fixed_key)
    assert "gemeente.boa_waarneming" in REGISTRY.event_types()
    assert plans.plans_for("gemeente.boa_waarneming") == []
    assert plans.plan("gemeente.boa_waarneming", "informatie-politie",
                      "politie-amstelland") is None


def test_a_recipient_not_named_by_a_purpose_has_no_plan() -> None:
    for purpose, (event_type, recipients, _names) in EXPECTED.items():
        for recipient in COVENANT.recipients:
            plan = PLANS.plan(event_type, purpose, recipient)
            assert (plan is not None) is (recipient in recipients), (purpose, recipient)
    assert PLANS.plan("politie.woninginbraak", "surveillance-woninginbraak", "burgemeester") \
        is None
    # a recipient only ever sees event types some purpose names for it
    per_recipient = {r: {p.event_type for p in PLANS.all if p.recipient == r}
                     for r in COVENANT.recipients}
    assert per_recipient["casusregisseur-dt"] == {"om.detentie_uitstroom"}
    assert per_recipient["politie-amstelland"] == {"gemeente.boa_waarneming"}
    assert per_recipient["preventie"] == {"politie.woninginbraak"}
    assert per_recipient["boa-hor-zuid"] == {"politie.woninginbraak", "om.gebiedsverbod"}


@pytest.mark.parametrize("plan", PLANS.all, ids=lambda p: f"{p.purpose}->{p.recipient}")
def test_released_and_withheld_account_for_every_leaf_field(plan: Plan) -> None:
    source = REGISTRY.get(plan.event_type)
    released, withheld = plan.fields_released, plan.fields_withheld
    for path in source.leaf_paths:
        assert covered(path, released) or path in withheld, f"{path} is unaccounted for"
        assert not (covered(path, released) and path in withheld), f"{path} is both"
    assert set(withheld) <= set(source.leaf_paths)
    assert len(set(withheld)) == len(withheld)
    assert all(r in source.fields for r in released)
    # released is exactly the sources of the rules
    spec = COVENANT.purposes[plan.purpose]
    assert set(released) == {rule.source or name for name, rule in spec.fields.items()}
    assert MUST_WITHHOLD[plan.purpose] <= set(withheld)


def test_purposes_that_release_nothing_personal() -> None:
    """Surveillance and street-level prevention: "Nothing about persons"."""
    for purpose in ("surveillance-woninginbraak", "preventie-woninginbraak"):
        personal = set(REGISTRY.get("politie.woninginbraak").personal_paths)
        for plan in plans_of(purpose):
            assert not set(plan.fields_released) & personal, purpose


def test_informatie_politie_withholds_nothing_but_pseudonymises_boa_id() -> None:
    (plan,) = plans_of("informatie-politie")
    assert plan.fields_withheld == ()
    rules = COVENANT.purposes["informatie-politie"].fields
    assert rules["boa_id"].transform == "pseudonymise"
    assert {name for name, rule in rules.items() if rule.transform != "keep"} == {"boa_id"}


def ctx(now: str, theme_on: bool = False) -> DecisionContext:
    at = datetime.fromisoformat(now).astimezone(UTC)
    switches = [ThemeSwitch("woninginbraak", True, 0, 1)] if theme_on else []
    return DecisionContext(at, to_millis(at), local_date(at, COVENANT.zone),
                           ControlState.fold(switches))


def hmac32(purpose: str, value: str) -> str:
    return hmac.new(fixed_key(purpose), value.encode(), hashlib.sha256).hexdigest()[:32]


def test_surveillance_release_has_the_agreed_values() -> None:
    event = f.woninginbraak(event_id="6f1c2a8e-0b1d-4c3e-9f2a-1234567890ab",
                            occurred_from="2026-05-09T22:15:42.123+02:00",
                            occurred_until="2026-05-10T06:40:00+02:00")
    plan = PLANS.plan("politie.woninginbraak", "surveillance-woninginbraak", "boa-hor-noord")
    assert plan is not None
    decision = plan.evaluate(decoded("politie.woninginbraak", event),
                             ctx("2026-05-12T10:00:00Z"))
    assert isinstance(decision, Release)
    assert decision.view == {
        "ref": hmac32("surveillance-woninginbraak", "6f1c2a8e-0b1d-4c3e-9f2a-1234567890ab"),
        "occurred_from": datetime(2026, 5, 9, 20, 0, tzinfo=UTC),
        "occurred_until": datetime(2026, 5, 10, 4, 0, tzinfo=UTC),
        "street": "Dorpsstraat", "postcode4": "1181", "wijk": "noord", "attempt": False,
        "heterdaad": False, "modus_operandi": "cilinder_trekken",
    }


def test_refs_are_unlinkable_across_purposes() -> None:
    """The same event_id gets a different reference under each purpose's key."""
    event_id = "0b7c1f7e-5d1a-4f3b-8e2d-9a8b7c6d5e4f"
    now = ctx("2026-05-12T10:00:00Z", theme_on=True)
    surveillance = PLANS.plan("politie.woninginbraak", "surveillance-woninginbraak",
                              "interventieteam")
    ban = PLANS.plan("om.gebiedsverbod", "handhaving-gebiedsverbod", "interventieteam")
    assert surveillance is not None
    assert ban is not None
    burglary = surveillance.evaluate(decoded("politie.woninginbraak",
                                             f.woninginbraak(event_id=event_id)), now)
    banned = ban.evaluate(decoded("om.gebiedsverbod", f.gebiedsverbod(event_id=event_id)), now)
    assert isinstance(burglary, Release)
    assert isinstance(banned, Release)
    assert burglary.view["ref"] == hmac32("surveillance-woninginbraak", event_id)
    assert banned.view["ref"] == hmac32("handhaving-gebiedsverbod", event_id)
    assert burglary.view["ref"] != banned.view["ref"]


def test_the_key_is_asked_per_purpose_that_pseudonymises() -> None:
    asked: list[str] = []

    def key(purpose: str) -> bytes:
        asked.append(purpose)
        return fixed_key(purpose)

    compile_plans(COVENANT, REGISTRY, key)
    # every purpose: each view's ref is a pseudonym under its purpose's key
    assert sorted(set(asked)) == sorted(COVENANT.purposes)


@pytest.mark.parametrize(("event_type", "purpose", "recipient", "event"), [
    ("politie.woninginbraak", "preventie-woninginbraak", "preventie", f.woninginbraak()),
    ("politie.woninginbraak", "slachtoffer-preventieadvies", "preventie", f.woninginbraak()),
    ("om.gebiedsverbod", "handhaving-gebiedsverbod", "boa-hor-oost", f.gebiedsverbod()),
    ("om.detentie_uitstroom", "nazorg-detentie-terugkeer", "casusregisseur-dt",
     f.detentie_uitstroom()),
    ("gemeente.boa_waarneming", "informatie-politie", "politie-amstelland", f.boa_waarneming()),
])
def test_each_purpose_releases_a_typical_event_and_its_view_encodes(
        event_type: str, purpose: str, recipient: str, event: dict[str, Any]) -> None:
    plan = PLANS.plan(event_type, purpose, recipient)
    assert plan is not None
    decision = plan.evaluate(decoded(event_type, event), ctx("2026-05-12T10:00:00Z"))
    assert isinstance(decision, Release)
    assert plan.view_schema.decode(plan.view_schema.encode(decision.view)) == decision.view
    assert decision.fields_withheld == plan.fields_withheld


def test_compiling_with_a_broken_view_names_the_file(tmp_path: Path) -> None:
    text = POLICY_FILE.read_text(encoding="utf-8").replace(
        "      heterdaad: keep\n      modus_operandi: keep\n\n  preventie",
        "      modus_operandi: keep\n\n  preventie")
    path = tmp_path / "covenant.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CovenantError) as caught:
        compile_plans(load_covenant(path), REGISTRY, fixed_key, str(path))
    assert caught.value.problems == [
        f"{path}:purposes.surveillance-woninginbraak.view: surveillance_woninginbraak.avsc does "
        "not match the field rules; run `covenant-broker policy views --write`"]


def test_planset_lookup() -> None:
    assert isinstance(PLANS, PlanSet)
    plan = PLANS.plan("om.detentie_uitstroom", "nazorg-detentie-terugkeer", "casusregisseur-dt")
    assert plan is not None
    assert plan.recipient == "casusregisseur-dt"
    assert PLANS.plan("om.detentie_uitstroom", "informatie-politie", "casusregisseur-dt") is None


def test_every_view_has_a_per_purpose_ref_of_the_event() -> None:
    """The Kafka key of a released record: a keyed pseudonym of the event id under the
    purpose's own key, so the same event gets unrelated refs in different purposes."""
    event = {"event_id": "8d0c2c1e-0000-4000-8000-000000000001"}
    refs: dict[str, str] = {}
    for plan in PLANS.all:
        assert plan.view_schema.raw["fields"][0]["name"] == "ref", plan.purpose
        (ref_field,) = [f for f in plan.fields if f.name == "ref"]
        assert ref_field.source == "event_id"
        ref = ref_field.transform(ref_field.get(event))
        assert isinstance(ref, str)
        assert len(ref) == 32
        assert event["event_id"] not in ref
        assert refs.setdefault(plan.purpose, ref) == ref  # one ref per purpose
    assert len(set(refs.values())) == len(refs)  # and unrelated across purposes


def test_a_ref_rule_that_is_not_pseudonymised_is_refused() -> None:
    text = POLICY_FILE.read_text().replace(
        "ref: {from: event_id, transform: pseudonymise}", "ref: {from: event_id, transform: keep}")
    with pytest.raises(CovenantError, match="ref: the record's reference must use"):
        compile_plans(parse_covenant(text, "<test>"), REGISTRY, fixed_key, derive_views=True)
