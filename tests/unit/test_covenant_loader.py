"""The covenant loader and `policy check`: every problem as `<file>:<dotted.key>: <problem>`.

Each broken covenant is the shipped file with one edit, so the expected line number is
found in the edited text itself (the line a person would go to), not copied from output.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.clock import to_millis
from broker.errors import CovenantError
from broker.policy.control import ControlState
from broker.policy.covenant import load_covenant
from broker.policy.decision import DecisionContext
from broker.policy.lint import lint
from broker.policy.plan import compile_plans
from tests import factories as f
from tests.unit.strategies import POLICY_FILE, REGISTRY, SCHEMAS_DIR, decoded, fixed_key

SHIPPED = POLICY_FILE.read_text(encoding="utf-8")
LOADER_LINE = re.compile(
    r"^(?P<file>.+?):(?P<key>[^:\s]+): (?P<problem>.+) \(line (?P<line>\d+)\)$")


def edited(tmp_path: Path, old: str, new: str, name: str = "covenant.yaml") -> Path:
    assert SHIPPED.count(old) == 1, f"the edit must hit exactly one place: {old!r}"
    path = tmp_path / name
    path.write_text(SHIPPED.replace(old, new), encoding="utf-8")
    return path


def line_of(path: Path, fragment: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line of the file that contains `fragment`."""
    hits = [n for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if fragment in text]
    return hits[occurrence - 1]


def problems(path: Path) -> list[str]:
    with pytest.raises(CovenantError) as caught:
        load_covenant(path)
    assert caught.value.path == str(path)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def only_problem(path: Path) -> tuple[str, str, int]:
    """(dotted key, problem, line) of the one problem the file has; checks the line shape."""
    found = problems(path)
    assert len(found) == 1, found
    match = LOADER_LINE.match(found[0])
    assert match is not None, f"not `<path>:<key>: <problem> (line N)`: {found[0]!r}"
    assert match["file"] == str(path)
    return match["key"], match["problem"], int(match["line"])


def test_the_shipped_covenant_loads() -> None:
    covenant = load_covenant(POLICY_FILE)
    assert covenant.covenant.id == "amstelveen-veiligheid"
    assert covenant.covenant.timezone == "Europe/Amsterdam"
    assert str(covenant.covenant.valid_until) == "2026-12-31"
    assert len(covenant.purposes) == 6


def test_bad_yaml(tmp_path: Path) -> None:
    path = edited(tmp_path, "  version: 1\n", "  version: [1\n")
    key, problem, line = only_problem(path)
    assert key == "<yaml>"
    assert "expected ',' or ']'" in problem
    # PyYAML notices the unclosed flow sequence at the next key
    assert line == line_of(path, "title: Convenant")


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- covenant\n- purposes\n", encoding="utf-8")
    assert problems(path) == [f"{path}:<top>: expected a mapping of sections"]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert problems(path) == [f"{path}:<file>: cannot be read: No such file or directory"]


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = edited(tmp_path, "sources: [politie, om, gemeente]\n",
                  "sources: [politie, om, gemeente]\nsinks: [archief]\n")
    assert problems(path) == [
        f"{path}:sinks: Extra inputs are not permitted (line {line_of(path, 'sinks:')})"]


def test_unknown_key_inside_a_purpose(tmp_path: Path) -> None:
    path = edited(tmp_path, "    retention_days: 28\n",
                  "    retention_days: 28\n    retention_weeks: 4\n")
    key, problem, line = only_problem(path)
    assert key == "purposes.surveillance-woninginbraak.retention_weeks"
    assert problem == "Extra inputs are not permitted"
    assert line == line_of(path, "retention_weeks: 4")


def test_unknown_transform(tmp_path: Path) -> None:
    path = edited(tmp_path, "occurred_from: {transform: hour}", "occurred_from: {transform: blur}")
    key, problem, line = only_problem(path)
    assert key == "purposes.surveillance-woninginbraak.fields.occurred_from.transform"
    assert problem.startswith("Input should be 'keep', 'hour', 'day', 'year', 'postcode4', "
                              "'pseudonymise' or 'mask'")
    assert line == line_of(path, "transform: blur")


def test_unknown_transform_in_shorthand(tmp_path: Path) -> None:
    path = edited(tmp_path, "      heterdaad: keep\n", "      heterdaad: hide\n")
    key, _problem, line = only_problem(path)
    assert key == "purposes.surveillance-woninginbraak.fields.heterdaad.transform"
    assert line == line_of(path, "heterdaad: hide")


def test_missing_legal_basis(tmp_path: Path) -> None:
    path = edited(tmp_path,
                  "    legal_basis: AVG art. 6 lid 1 sub a (toestemming van het slachtoffer)\n", "")
    key, problem, line = only_problem(path)
    assert key == "purposes.slachtoffer-preventieadvies.legal_basis"
    assert problem == "Field required"
    # the key is absent, so the line is the purpose's (its key, or the first line under it)
    purpose_line = line_of(path, "  slachtoffer-preventieadvies:")
    assert line in (purpose_line, purpose_line + 1)


def test_empty_legal_basis(tmp_path: Path) -> None:
    path = edited(tmp_path,
                  "    legal_basis: AVG art. 6 lid 1 sub a (toestemming van het slachtoffer)\n",
                  "    legal_basis: ''\n")
    key, problem, line = only_problem(path)
    assert key == "purposes.slachtoffer-preventieadvies.legal_basis"
    assert "at least 1 character" in problem
    assert line == line_of(path, "legal_basis: ''")


@pytest.mark.parametrize("days", ["0", "-5"])
def test_retention_days_must_be_positive(tmp_path: Path, days: str) -> None:
    path = edited(tmp_path, "retention_days: 90", f"retention_days: {days}")
    key, problem, line = only_problem(path)
    assert key == "purposes.slachtoffer-preventieadvies.retention_days"
    assert problem == "Input should be greater than 0"
    assert line == line_of(path, f"retention_days: {days}")


@pytest.mark.parametrize(("condition", "message"), [
    ("{field: address.wijk}", "Value error, a field condition takes exactly one of equals, "
     "one_of, equals_recipient, contains_recipient"),
    ("{field: address.wijk, equals_recipient: wijk, equals: noord}",
     "Value error, a field condition takes exactly one of equals, one_of, equals_recipient, "
     "contains_recipient"),
    ("{reason: alleen de eigen wijk}",
     "a condition needs one of: field, max_age, valid_between, theme, cel"),
])
def test_condition_without_exactly_one_operator(tmp_path: Path, condition: str,
                                                message: str) -> None:
    path = edited(tmp_path, "{field: address.wijk, equals_recipient: wijk}", condition)
    assert problems(path) == [
        f"{path}:purposes.surveillance-woninginbraak.recipients.0.conditions.0: {message} "
        f"(line {line_of(path, condition)})"]


def test_recipient_not_listed(tmp_path: Path) -> None:
    path = edited(tmp_path, "      - to: [preventie]\n    fields:\n      name:",
                  "      - to: [preventie, burgemeester]\n    fields:\n      name:")
    assert problems(path) == [
        f"{path}:purposes.slachtoffer-preventieadvies.recipients.0.to.1: recipient "
        f"'burgemeester' is not listed in recipients (line {line_of(path, 'burgemeester')})"]


def test_unknown_party_in_approved_by(tmp_path: Path) -> None:
    path = edited(tmp_path, "approved_by: [om, gemeente]\n    event_type: om.detentie",
                  "approved_by: [om, reclassering]\n    event_type: om.detentie")
    assert problems(path) == [
        f"{path}:purposes.nazorg-detentie-terugkeer.approved_by.1: unknown party "
        f"'reclassering' (line {line_of(path, 'reclassering')})"]


def test_theme_not_declared(tmp_path: Path) -> None:
    path = edited(tmp_path, "          - theme: woninginbraak", "          - theme: drugs")
    assert problems(path) == [
        f"{path}:purposes.surveillance-woninginbraak.recipients.1.conditions.0.theme: theme "
        f"'drugs' is not in themes (line {line_of(path, 'theme: drugs')})"]


def test_recipient_attribute_missing_for_a_recipient_condition(tmp_path: Path) -> None:
    path = edited(tmp_path, "      - to: [interventieteam]\n        conditions:\n"
                  "          - theme: woninginbraak",
                  "      - to: [interventieteam]\n        conditions:\n"
                  "          - {field: address.wijk, equals_recipient: wijk}")
    key, problem, line = only_problem(path)
    assert key == ("purposes.surveillance-woninginbraak.recipients.1.conditions.0."
                   "equals_recipient")
    assert problem == "recipient 'interventieteam' has no attribute 'wijk'"
    assert line == line_of(path, "{field: address.wijk, equals_recipient: wijk}", 2)


def test_valid_until_before_valid_from(tmp_path: Path) -> None:
    path = edited(tmp_path, "  valid_until: 2026-12-31", "  valid_until: 2019-12-31")
    key, problem, line = only_problem(path)
    assert key.startswith("covenant")
    assert problem == "Value error, valid_until 2019-12-31 is before valid_from 2020-04-29"
    assert line_of(path, "covenant:") <= line <= line_of(path, "valid_until: 2019-12-31")


@pytest.mark.parametrize("zone", ["Europe/Amstelveen", "CEST+2", "../../etc/passwd"])
def test_bad_time_zone(tmp_path: Path, zone: str) -> None:
    path = edited(tmp_path, "timezone: Europe/Amsterdam", f"timezone: {zone}")
    assert problems(path) == [
        f"{path}:covenant.timezone: Value error, unknown time zone {zone!r} "
        f"(line {line_of(path, 'timezone:')})"]


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    text = SHIPPED.replace("retention_days: 90", "retention_days: 0")
    text = text.replace("occurred_from: {transform: hour}", "occurred_from: {transform: blur}")
    path.write_text(text, encoding="utf-8")
    keys = sorted(LOADER_LINE.match(p)["key"] for p in problems(path))  # type: ignore[index]
    assert keys == ["purposes.slachtoffer-preventieadvies.retention_days",
                    "purposes.surveillance-woninginbraak.fields.occurred_from.transform"]


# -- precise locations that the loader gets wrong --------------------------------------------
def test_unknown_key_with_a_mapping_value_points_at_the_key(tmp_path: Path) -> None:
    path = edited(tmp_path, "sources: [politie, om, gemeente]\n",
                  "sources: [politie, om, gemeente]\nsinks:\n  archief: 1\n")
    key, _problem, line = only_problem(path)
    assert key == "sinks"
    assert line == line_of(path, "sinks:")


def test_valid_until_before_valid_from_names_valid_until(tmp_path: Path) -> None:
    path = edited(tmp_path, "  valid_until: 2026-12-31", "  valid_until: 2019-12-31")
    key, _problem, line = only_problem(path)
    assert key == "covenant.valid_until"
    assert line == line_of(path, "valid_until: 2019-12-31")


def test_a_key_written_twice_is_refused(tmp_path: Path) -> None:
    path = edited(tmp_path, "      attempt: keep\n      heterdaad: keep\n",
                  "      attempt: keep\n      heterdaad: keep\n      attempt: {transform: mask}\n")
    found = problems(path)
    assert any("attempt" in problem for problem in found)


# -- policy check (lint) ---------------------------------------------------------------------
def test_policy_check_of_the_shipped_covenant_is_clean() -> None:
    assert lint(POLICY_FILE, SCHEMAS_DIR) == []


def test_policy_check_passes_loader_problems_through(tmp_path: Path) -> None:
    path = edited(tmp_path, "retention_days: 90", "retention_days: 0")
    assert lint(path, SCHEMAS_DIR) == [
        f"{path}:purposes.slachtoffer-preventieadvies.retention_days: Input should be "
        f"greater than 0 (line {line_of(path, 'retention_days: 0')})"]


def test_policy_check_field_path_not_in_the_schema(tmp_path: Path) -> None:
    path = edited(tmp_path, "phone: {from: victim.phone}", "phone: {from: victim.telefoon}")
    assert lint(path, SCHEMAS_DIR) == [
        f"{path}:purposes.slachtoffer-preventieadvies.fields.phone: victim.telefoon is not a "
        "field of politie.woninginbraak"]


def test_policy_check_condition_path_not_in_the_schema(tmp_path: Path) -> None:
    path = edited(tmp_path, "field: victim.consent_prevention_advice", "field: victim.toestemming")
    assert lint(path, SCHEMAS_DIR) == [
        f"{path}:purposes.slachtoffer-preventieadvies.conditions.0.field: victim.toestemming "
        "is not a field of politie.woninginbraak"]


@pytest.mark.parametrize(("old", "new", "key", "problem"), [
    ("street: {from: address.street}\n      postcode4: {from: address.postcode, "
     "transform: postcode4}\n      wijk: {from: address.wijk}\n      attempt",
     "street: {from: address.street, transform: hour}\n      postcode4: {from: "
     "address.postcode, transform: postcode4}\n      wijk: {from: address.wijk}\n      attempt",
     "purposes.surveillance-woninginbraak.fields.street",
     "transform hour needs a timestamp, address.street is not"),
    ("      facility: keep\n", "      facility: {transform: day}\n",
     "purposes.nazorg-detentie-terugkeer.fields.facility",
     "transform day needs a timestamp or date, facility is neither"),
    ("      needs: keep\n", "      needs: {transform: pseudonymise}\n",
     "purposes.nazorg-detentie-terugkeer.fields.needs",
     "transform pseudonymise needs a scalar, needs is not"),
    ("      wijk: keep\n      location: keep\n",
     "      wijk: {transform: postcode4}\n      location: keep\n",
     "purposes.informatie-politie.fields.wijk", None),
])
def test_policy_check_transform_that_does_not_fit(tmp_path: Path, old: str, new: str, key: str,
                                                  problem: str | None) -> None:
    path = edited(tmp_path, old, new)
    found = lint(path, SCHEMAS_DIR)
    if problem is None:
        # postcode4 fits any string, but the changed view no longer matches its .avsc
        assert found == [f"{path}:purposes.informatie-politie.view: informatie_politie.avsc "
                         "does not match the field rules; run `covenant-broker policy views "
                         "--write`"]
    else:
        assert found == [f"{path}:{key}: {problem}"]


def test_policy_check_view_file_that_does_not_match(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, schemas)
    view = schemas / "views" / "preventie_woninginbraak.avsc"
    raw = json.loads(view.read_text(encoding="utf-8"))
    raw["fields"] = [f for f in raw["fields"] if f["name"] != "attempt"]
    view.write_text(json.dumps(raw), encoding="utf-8")
    assert lint(POLICY_FILE, schemas) == [
        f"{POLICY_FILE}:purposes.preventie-woninginbraak.view: preventie_woninginbraak.avsc "
        "does not match the field rules; run `covenant-broker policy views --write`"]


def test_policy_check_view_type_change_is_a_mismatch(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, schemas)
    view = schemas / "views" / "nazorg_detentie_terugkeer.avsc"
    raw = json.loads(view.read_text(encoding="utf-8"))
    for field in raw["fields"]:
        if field["name"] == "bsn":
            field["type"] = ["null", "string"]
    view.write_text(json.dumps(raw), encoding="utf-8")
    assert lint(POLICY_FILE, schemas) == [
        f"{POLICY_FILE}:purposes.nazorg-detentie-terugkeer.view: nazorg_detentie_terugkeer.avsc "
        "does not match the field rules; run `covenant-broker policy views --write`"]


def test_policy_check_unknown_event_type_and_missing_view(tmp_path: Path) -> None:
    path = edited(tmp_path, "    event_type: gemeente.boa_waarneming\n    view: "
                  "views.informatie_politie\n",
                  "    event_type: gemeente.melding\n    view: views.informatie_politie\n")
    assert lint(path, SCHEMAS_DIR) == [
        f"{path}:purposes.informatie-politie.event_type: no schema for event type "
        "gemeente.melding"]
    path = edited(tmp_path, "view: views.informatie_politie", "view: views.politie_info",
                  "view.yaml")
    assert lint(path, SCHEMAS_DIR) == [
        f"{path}:purposes.informatie-politie.view: no view schema views.politie_info under "
        "schemas/views"]


def test_policy_check_recipient_nobody_releases_to(tmp_path: Path) -> None:
    path = edited(tmp_path, "  politie-amstelland:\n",
                  "  burgemeester:\n    party: gemeente\n  politie-amstelland:\n")
    assert lint(path, SCHEMAS_DIR) == [
        f"{path}:recipients.burgemeester: listed but no purpose releases anything to it"]



# -- conditions whose field does not fit them ------------------------------------------------
AMSTELLAND_REASON = "        reason: the municipality is outside the Amstelland region\n"
ILL_TYPED_CONDITIONS = {
    "max_age on a date": (AMSTELLAND_REASON, AMSTELLAND_REASON +
                          "      - max_age: {field: expected_release_date, days: 30}\n"),
    "max_age on a string": (AMSTELLAND_REASON, AMSTELLAND_REASON +
                            "      - max_age: {field: facility, days: 30}\n"),
    "valid_between from a timestamp": ("valid_between: {from: valid_from, until: valid_until}",
                                       "valid_between: {from: decided_at, until: valid_until}"),
    "one_of on an array": ("{field: area.wijken, contains_recipient: wijk}",
                           "{field: area.wijken, one_of: [noord]}"),
}


@pytest.mark.parametrize("case", sorted(ILL_TYPED_CONDITIONS))
def test_a_covenant_that_passes_policy_check_never_crashes_a_decision(tmp_path: Path,
                                                                      case: str) -> None:

    path = edited(tmp_path, *ILL_TYPED_CONDITIONS[case])
    if lint(path, SCHEMAS_DIR):
        return  # refused up front: fine
    plans = compile_plans(load_covenant(path), REGISTRY, fixed_key)
    now = datetime(2026, 5, 12, 10, tzinfo=UTC)
    ctx = DecisionContext(now, to_millis(now), now.date(), ControlState())
    events = {"om.detentie_uitstroom": f.detentie_uitstroom(),
              "om.gebiedsverbod": f.gebiedsverbod()}
    for event_type, event in events.items():
        for plan in plans.plans_for(event_type):
            plan.evaluate(decoded(event_type, event), ctx)


# -- the AVG art. 30 register facts (issue 13 item 2) -----------------------------------------

_ACTIVITY = ("    processing_activity_id: "
             "urn:nl:amstelveen-veiligheid:v1:verwerkingsactiviteit:slachtoffer-preventieadvies\n")


def test_a_purpose_without_a_processing_activity_is_refused(tmp_path: Path) -> None:
    path = edited(tmp_path, _ACTIVITY, "")
    key, problem, line = only_problem(path)
    assert key == "purposes.slachtoffer-preventieadvies.processing_activity_id"
    assert problem == "Field required"
    assert line == line_of(path, "  slachtoffer-preventieadvies:")  # the purpose that lacks it


def test_a_purpose_without_a_controller_is_refused(tmp_path: Path) -> None:
    path = edited(tmp_path, _ACTIVITY + "    controllers: [politie, gemeente]\n", _ACTIVITY)
    key, problem, line = only_problem(path)
    assert key == "purposes.slachtoffer-preventieadvies.controllers"
    assert problem == "Field required"
    assert line == line_of(path, "  slachtoffer-preventieadvies:")


def test_an_empty_controller_list_is_refused(tmp_path: Path) -> None:
    path = edited(tmp_path, _ACTIVITY + "    controllers: [politie, gemeente]\n",
                  _ACTIVITY + "    controllers: []\n")
    key, problem, line = only_problem(path)
    assert key == "purposes.slachtoffer-preventieadvies.controllers"
    assert "at least 1 item" in problem
    assert line == line_of(path, "controllers: []")


def test_a_controller_must_be_a_party(tmp_path: Path) -> None:
    path = edited(tmp_path, _ACTIVITY + "    controllers: [politie, gemeente]\n",
                  _ACTIVITY + "    controllers: [politie, reclassering]\n")
    key, problem, line = only_problem(path)
    assert key == "purposes.slachtoffer-preventieadvies.controllers.1"
    assert problem == "unknown party 'reclassering'"
    assert line == line_of(path, "controllers: [politie, reclassering]")


@pytest.mark.parametrize("value", ["verwerkingsactiviteit 3", "https:///no-host",
                                   "slachtoffer-preventieadvies"])
def test_a_processing_activity_id_is_an_absolute_uri(tmp_path: Path, value: str) -> None:
    path = edited(tmp_path, _ACTIVITY, f"    processing_activity_id: {value}\n")
    key, problem, line = only_problem(path)
    assert key == "purposes.slachtoffer-preventieadvies.processing_activity_id"
    assert "is not an absolute URI" in problem
    assert line == line_of(path, f"processing_activity_id: {value}")


def test_two_purposes_cannot_share_a_processing_activity(tmp_path: Path) -> None:
    path = edited(tmp_path, _ACTIVITY, _ACTIVITY.replace("slachtoffer-preventieadvies",
                                                         "preventie-woninginbraak"))
    key, problem, _line = only_problem(path)
    assert key == "purposes.slachtoffer-preventieadvies.processing_activity_id"
    assert problem == ("purpose 'preventie-woninginbraak' has the same processing activity "
                       "id; each purpose is an activity of its own")


def test_a_party_without_a_privacy_officer_is_refused(tmp_path: Path) -> None:
    path = edited(tmp_path, "    fg: {name: Functionaris gegevensbescherming OM, "
                  "email: fg@om.example}\n", "")
    key, problem, line = only_problem(path)
    assert key == "parties.om.fg"
    assert problem == "Field required"
    assert line == line_of(path, "  om:")


def test_a_covenant_without_security_measures_is_refused(tmp_path: Path) -> None:
    text = SHIPPED.split("security_measures:\n", 1)
    head, rest = text[0], text[1]
    rest = rest.split("\n\n", 1)[1]  # drop the list up to the next blank line
    path = tmp_path / "covenant.yaml"
    path.write_text(head + rest, encoding="utf-8")
    key, problem, _line = only_problem(path)
    assert key == "security_measures"
    assert problem == "Field required"


def test_the_shipped_covenant_has_every_register_fact() -> None:
    covenant = load_covenant(POLICY_FILE)
    ids = [p.processing_activity_id for p in covenant.purposes.values()]
    assert len(set(ids)) == len(ids) == 6
    for name, purpose in covenant.purposes.items():
        assert purpose.processing_activity_id.endswith(f":{name}")
        assert purpose.controllers
        assert set(purpose.controllers) <= set(covenant.parties)
        assert purpose.data_subject_categories
        assert purpose.personal_data_categories
    assert all(party.fg.email for party in covenant.parties.values())
