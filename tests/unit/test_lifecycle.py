"""Covenant versions (four eyes), key rotation, deterministic replay and policy impact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.app import lifecycle
from broker.app.service import Broker
from broker.clock import parse_instant
from broker.errors import PolicyError
from tests import factories as f

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "policies" / "amstelveen.yaml"
NOW = parse_instant("2026-05-10T12:00:00Z")


def amended(tmp_path: Path, name: str, *edits: tuple[str, str], version: int = 2) -> Path:
    text = SHIPPED.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    text = text.replace("  version: 1\n", f"  version: {version}\n", 1)
    path = tmp_path / name
    path.write_text(text)
    return path


NARROW_REGION = ("one_of: [Aalsmeer, Amstelveen, Diemen, Ouder-Amstel, Uithoorn]",
                 "one_of: [Amstelveen]")


@pytest.mark.parametrize("approvers", [[], ["a.jansen"], ["a.jansen", "A.Jansen "],
                                       ["a.jansen", "  "]])
def test_activation_needs_two_distinct_approvers(broker: Broker, tmp_path: Path,
                                                 approvers: list[str]) -> None:
    path = amended(tmp_path, "v2.yaml", NARROW_REGION)
    with pytest.raises(PolicyError, match="four eyes"):
        lifecycle.activate(broker, path, approvers, NOW)
    assert broker.control_state().activations == []


def test_an_activated_version_governs_decisions_from_its_activation(broker: Broker,
                                                                    tmp_path: Path) -> None:
    path = amended(tmp_path, "v2.yaml", NARROW_REGION)
    aalsmeer = f.detentie_uitstroom(municipality="Aalsmeer")
    broker.ingest("om", "om.detentie_uitstroom", f.lines(aalsmeer), NOW)
    assert lifecycle.activate(broker, path, ["fg.devries", "burgemeester"],
                              parse_instant("2026-05-10T13:00:00Z")) == 2
    later = parse_instant("2026-05-10T14:00:00Z")
    broker.ingest("om", "om.detentie_uitstroom",
                  f.lines(f.detentie_uitstroom(municipality="Aalsmeer")), later)
    got = broker.consume("casusregisseur-dt", None, 0, later)
    assert len(got) == 1  # the first, decided under v1; the second withheld under v2
    schema = broker.registry.get("records.audit_entry")
    entries = [schema.decode(d) for _, d in broker.log.audit_rows()]
    decided = [(e["covenant_version"], e["decision"]) for e in entries
               if e["name"] == "decide"]
    assert decided == [(1, "release"), (2, "withhold")]
    (activation,) = [e for e in entries if e["detail"].get("kind") == "covenant_activation"]
    assert activation["detail"]["approvers"] == "burgemeester, fg.devries"


def test_a_version_cannot_be_reused_or_downgraded(broker: Broker, tmp_path: Path) -> None:
    v2 = amended(tmp_path, "v2.yaml", NARROW_REGION)
    lifecycle.activate(broker, v2, ["a", "b"], NOW)
    other_v2 = amended(tmp_path, "v2b.yaml", ("retention_days: 28", "retention_days: 21"))
    with pytest.raises(PolicyError, match="activated before with other content"):
        lifecycle.activate(broker, other_v2, ["a", "b"], NOW)
    with pytest.raises(PolicyError, match="not newer than the active version 2"):
        lifecycle.activate(broker, SHIPPED, ["a", "b"], NOW)


def test_replay_is_byte_identical_and_follows_the_version(broker: Broker,
                                                          tmp_path: Path) -> None:
    broker.ingest("om", "om.detentie_uitstroom", f.lines(
        f.detentie_uitstroom(municipality="Aalsmeer"),
        f.detentie_uitstroom(municipality="Amstelveen")), NOW)
    broker.ingest("politie", "politie.woninginbraak", f.lines(f.woninginbraak()), NOW)
    first = lifecycle.replay(broker, "casusregisseur-dt", None, 1, None)
    second = lifecycle.replay(broker, "casusregisseur-dt", None, 1, None)
    assert len(first.records) == 2
    assert first.view_bytes == second.view_bytes
    assert [json.dumps(r.as_json()) for r in first.records] == \
        [json.dumps(r.as_json()) for r in second.records]
    assert first.digest == second.digest
    live = [d.as_json() for d in broker.consume("casusregisseur-dt", None, 0, NOW)]
    # a delivery names the broker's span that released it; a replay releases nothing
    assert all(d.pop("traceparent") for d in live)
    assert [r.as_json() for r in first.records] == live
    lifecycle.activate(broker, amended(tmp_path, "v2.yaml", NARROW_REGION), ["a", "b"], NOW)
    narrowed = lifecycle.replay(broker, "casusregisseur-dt", None, 2, None)
    assert [r.record["municipality"] for r in narrowed.records] == ["Amstelveen"]


def test_policy_diff_over_a_crafted_history(broker: Broker, tmp_path: Path) -> None:
    broker.ingest("politie", "politie.woninginbraak", f.lines(
        f.woninginbraak(address={"wijk": "noord"}),  # 6 hours old at ingest
        f.woninginbraak(address={"wijk": "oost"}, occurred_until="2026-05-07T10:00:00Z",
                        occurred_from="2026-05-07T08:00:00Z",
                        victim={"consent_prevention_advice": False})), NOW)
    broker.ingest("om", "om.detentie_uitstroom", f.lines(
        f.detentie_uitstroom(municipality="Haarlem"),
        f.detentie_uitstroom(municipality="Diemen")), NOW)
    proposed = amended(
        tmp_path, "proposed.yaml",
        ("max_age: {field: occurred_until, days: 14}", "max_age: {field: occurred_until, days: 1}"),
        ("one_of: [Aalsmeer, Amstelveen, Diemen, Ouder-Amstel, Uithoorn]",
         "one_of: [Aalsmeer, Amstelveen, Diemen, Ouder-Amstel, Uithoorn, Haarlem]"),
        ("      phone: {from: victim.phone}\n", ""))
    examined, impact = lifecycle.policy_diff(broker, SHIPPED, proposed, None)
    assert examined == 4
    got = {(s.recipient, s.purpose): s.as_json() for s in impact}
    assert set(got) == {("boa-hor-oost", "surveillance-woninginbraak"),
                        ("casusregisseur-dt", "nazorg-detentie-terugkeer"),
                        ("preventie", "slachtoffer-preventieadvies")}
    oost = got[("boa-hor-oost", "surveillance-woninginbraak")]
    assert (oost["newly_released"], oost["no_longer_released"]) == (0, 1)
    dt = got[("casusregisseur-dt", "nazorg-detentie-terugkeer")]
    assert (dt["newly_released"], dt["no_longer_released"]) == (1, 0)
    advice = got[("preventie", "slachtoffer-preventieadvies")]
    assert advice["fields_removed"] == ["phone"]
    assert advice["fields_added"] == []
    assert (advice["newly_released"], advice["no_longer_released"]) == (0, 0)
    assert len(broker.consume("casusregisseur-dt", None, 0, NOW)) == 1  # nothing published


def test_key_rotation_changes_pseudonyms_from_its_time_on(broker: Broker) -> None:
    first = f.boa_waarneming()
    broker.ingest("gemeente", "gemeente.boa_waarneming", f.lines(first), NOW)
    assert lifecycle.rotate_key(broker, "informatie-politie",
                                parse_instant("2026-05-10T12:30:00Z")) == 2
    later = parse_instant("2026-05-10T13:00:00Z")
    broker.ingest("gemeente", "gemeente.boa_waarneming", f.lines(f.boa_waarneming()), later)
    before, after = broker.consume("politie-amstelland", None, 0, later)
    assert before.record["boa_id"] != after.record["boa_id"]  # same boa, new key version
    again = lifecycle.replay(broker, "politie-amstelland", None, 1, None)
    assert [r.record["boa_id"] for r in again.records] == [before.record["boa_id"],
                                                           after.record["boa_id"]]
