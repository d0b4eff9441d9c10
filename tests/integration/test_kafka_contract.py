"""Contract: one scenario, both backends, the same consume output.

The scenario mixes good and bad input (invalid JSON, a duplicate, a naive timestamp, an
unknown extra field, a source that does not own the type), switches a theme on between
two ingests, and lets an area ban expire so every recipient of it gets one tombstone.
Both backends run through the command line with pinned decision times and the same keys
(so pseudonyms match). On Kafka, `ingest` produces and `serve --until-idle` decides.

Offsets are compared by rank within their stream: Kafka's offsets are positions in the
topic, where transaction markers take offsets too, so they are increasing but not dense.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.app.service import Broker
from broker.audit import trace
from broker.config import load_settings
from tests import factories as f
from tests.integration.kafka_support import KafkaEnv, check_exactly_once, run_cli, snapshot

T0 = "2026-05-10T12:00:00Z"  # first ingest; the ban is valid
T1 = "2026-05-11T08:00:00Z"  # theme woninginbraak on; second ingest
T2 = "2026-06-02T09:00:00Z"  # after the ban's valid_until (2026-05-31): tombstones
RECIPIENTS = ["boa-hor-noord", "boa-hor-oost", "boa-hor-zuid", "boa-hor-west",
              "interventieteam", "preventie", "casusregisseur-dt", "politie-amstelland"]


def _inputs() -> dict[str, list[str]]:
    first = f.woninginbraak(address={"wijk": "noord"})
    naive = f.woninginbraak(reported_at="2026-05-10T08:00:00")
    extra = f.woninginbraak(address={"wijk": "oost"}, unknown_field="dropped")
    no_consent = f.woninginbraak(address={"wijk": "west"},
                                 victim={"consent_prevention_advice": False})
    later = f.woninginbraak(address={"wijk": "zuid"}, occurred_until="2026-05-11T06:00:00Z",
                            occurred_from="2026-05-11T02:00:00Z")
    ban = f.gebiedsverbod(valid_from="2026-05-01", valid_until="2026-05-31",
                          area={"wijken": ["noord", "oost"], "streets": ["Dorpsstraat"]})
    outside = f.detentie_uitstroom(municipality="Rotterdam")
    inside = f.detentie_uitstroom()
    return {
        "burglaries": [json.dumps(first), "{not json", json.dumps(naive), json.dumps(extra),
                       json.dumps(first), json.dumps(no_consent)],
        "later": [json.dumps(later)],
        "bans": [json.dumps(ban)],
        "detention": [json.dumps(outside), json.dumps(inside)],
        "observations": [json.dumps(f.boa_waarneming())],
    }


INPUTS = _inputs()


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys made once, copied into both backends' data dirs: the same pseudonyms."""
    root = tmp_path_factory.mktemp("keys")
    settings = load_settings(overrides={"data_dir": root / "data"}, environ={})
    Broker(settings).close()
    return root / "data" / "keys"


class Scenario:
    def __init__(self, root: Path, keys: Path, kafka: KafkaEnv | None) -> None:
        self.kafka = kafka
        self.data_dir = kafka.data_dir if kafka else root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # it holds keys
        shutil.copytree(keys, self.data_dir / "keys")
        self.files = root / "inputs"
        self.files.mkdir()

    def _base(self, now: str) -> list[str]:
        base = self.kafka.args() if self.kafka else ["--data-dir", str(self.data_dir)]
        return [*base, "--now", now]

    def cli(self, now: str, *argv: str) -> str:
        code, out = run_cli([*self._base(now), *argv])
        assert code == 0, (argv, out)
        return out

    def ingest(self, now: str, source: str, event_type: str, name: str) -> None:
        path = self.files / f"{name}.jsonl"
        path.write_text("".join(line + "\n" for line in INPUTS[name]))
        self.cli(now, "ingest", "--source", source, "--type", event_type, str(path))

    def decide(self, now: str) -> None:
        """The embedded backend decided in `ingest`; on Kafka, serve decides what is there."""
        if self.kafka:
            self.cli(now, "serve", "--until-idle")

    def consume(self, now: str, recipient: str) -> list[dict[str, Any]]:
        out = self.cli(now, "consume", "--recipient", recipient)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def run(self) -> dict[str, Any]:
        self.ingest(T0, "politie", "politie.woninginbraak", "burglaries")
        self.ingest(T0, "om", "om.gebiedsverbod", "bans")
        self.ingest(T0, "om", "om.detentie_uitstroom", "detention")
        self.ingest(T0, "politie", "gemeente.boa_waarneming", "observations")  # not owner
        self.ingest(T0, "gemeente", "gemeente.boa_waarneming", "observations")
        self.decide(T0)
        self.cli(T1, "control", "theme", "on", "woninginbraak")
        self.ingest(T1, "politie", "politie.woninginbraak", "later")
        self.decide(T1)
        outputs = {r: normalise(self.consume(T2, r)) for r in RECIPIENTS}
        again = {r: normalise(self.consume(T2, r)) for r in RECIPIENTS[:2]}
        assert again == {r: outputs[r] for r in again}, "consume again changed the output"
        verify = json.loads(self.cli(T2, "--json", "audit", "verify"))
        assert verify["ok"], verify
        outputs["(audit)"] = audit_facts(self._audit_entries())
        return outputs

    def _audit_entries(self) -> list[dict[str, Any]]:
        if self.kafka:
            snap = snapshot(self.kafka)
            return [e for entries in snap.audit.values() for e in entries]
        broker = Broker(load_settings(overrides={"data_dir": self.data_dir}, environ={}))
        try:
            schema = broker.registry.get("records.audit_entry")
            return [schema.decode(data) for _, data in broker.log.audit_rows()]
        finally:
            broker.close()


def audit_facts(entries: list[dict[str, Any]]) -> list[str]:
    """What the audit log says happened, without times, offsets, seq or trace ids, and
    without the start/stop entries of long-running processes (only Kafka runs `serve`)."""
    facts = []
    for e in entries:
        if e["name"] in ("broker_start", "broker_stop"):
            continue
        subjects = sorted(s["pseudonym"] for s in e["data_subjects"])
        fact = {"name": e["name"], "decision": e["decision"], "reason_code": e["reason_code"],
                "recipient": e["recipient"], "purpose": e["purpose"],
                "event_type": e["event_type"], "event_id": e["event_id"],
                "subjects": subjects, "fields_released": sorted(e["fields_released"])}
        if e["name"] == "access":
            fact["count"] = e["detail"].get("count")
        facts.append(json.dumps(fact, sort_keys=True))
    return sorted(facts)


def normalise(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Per purpose, the delivered records as a sorted list, offsets left out.

    Records from different partitions interleave in a different order on each backend, so
    order is not compared; offsets must increase, and a tombstone's released_offset must
    point at an earlier record of the same stream with the same ref.
    """
    by_purpose: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_purpose.setdefault(line["purpose"], []).append(line)
    out: dict[str, list[str]] = {}
    for purpose, items in by_purpose.items():
        offsets = [i["offset"] for i in items]
        assert offsets == sorted(offsets), f"{purpose}: offsets do not increase"
        by_offset = {i["offset"]: i for i in items}
        rendered = []
        for item in items:
            record = dict(item["record"])
            shown = dict(item)
            if item.get("tombstone"):
                released = by_offset[record.pop("released_offset")]
                assert released["offset"] < item["offset"]
                assert released["record"]["ref"] == record["ref"]
            else:  # the broker's span that released it: random, so only its form is held
                assert trace.parse(item.get("traceparent")) is not None, item
                shown["traceparent"] = "00-<stream trace>-<release span>-01"
            rendered.append(json.dumps({**shown, "offset": None, "record": record},
                                       sort_keys=True))
        out[purpose] = sorted(rendered)
    return out


@pytest.fixture(scope="module")
def embedded_outputs(tmp_path_factory: pytest.TempPathFactory,
                     keys_dir: Path) -> dict[str, Any]:
    return Scenario(tmp_path_factory.mktemp("embedded"), keys_dir, None).run()


@pytest.fixture(params=["embedded", "kafka"])
def scenario(request: pytest.FixtureRequest, tmp_path: Path,
             keys_dir: Path) -> Iterator[Scenario]:
    if request.param == "embedded":
        yield Scenario(tmp_path, keys_dir, None)
        return
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    env = KafkaEnv(bootstrap, tmp_path / "kafka", partitions=2, instance_id="contract")
    try:
        yield Scenario(tmp_path, keys_dir, env)
    finally:
        env.cleanup()


def test_same_consume_output_on_both_backends(
        scenario: Scenario, embedded_outputs: dict[str, Any]) -> None:
    outputs = scenario.run()
    assert outputs.pop("(audit)") == embedded_outputs["(audit)"], "the audit logs differ"
    assert outputs == {k: v for k, v in embedded_outputs.items() if k != "(audit)"}

    # What the scenario must show, on either backend:
    noord = outputs["boa-hor-noord"]
    bans = [json.loads(r) for r in noord["handhaving-gebiedsverbod"]]
    assert sorted(b.get("tombstone", False) for b in bans) == [False, True]
    assert bans[1]["record"]["ref"] == bans[0]["record"]["ref"]
    assert len(outputs["boa-hor-oost"]["handhaving-gebiedsverbod"]) == 2
    assert "handhaving-gebiedsverbod" not in outputs["boa-hor-zuid"]
    team = [json.loads(r)["record"]["wijk"] for r in
            outputs["interventieteam"]["surveillance-woninginbraak"]]
    assert team == ["zuid"], "only the burglary decided after the theme switch"
    assert len(outputs["preventie"]["preventie-woninginbraak"]) == 4
    assert len(outputs["preventie"]["slachtoffer-preventieadvies"]) == 3
    assert len(outputs["casusregisseur-dt"]["nazorg-detentie-terugkeer"]) == 1
    assert len(outputs["politie-amstelland"]["informatie-politie"]) == 1

    if scenario.kafka is not None:
        result = check_exactly_once(snapshot(scenario.kafka))
        assert result.tombstones == 3  # noord, oost, interventieteam
        assert result.quarantined == 4  # invalid JSON, naive time, duplicate, not owner
