"""Ed25519 source signatures through `serve` on real Kafka: the signature travels in the
``cb-sig`` header; unsigned, tampered and other-source records are quarantined with their
audit entries; the signed one is stored and released."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kafka import KafkaProducer

from broker.pipeline.signatures import SIGNATURE_HEADER, keygen, load_private_key, sign
from tests import factories as f
from tests.integration.kafka_support import (
    check_exactly_once,
    jsonl,
    kafka_env,
    lines_file,
    run_cli,
    snapshot,
)

NOW = "2026-05-10T12:00:00Z"
TYPE = "politie.woninginbraak"


def test_serve_quarantines_unsigned_tampered_and_other_sources_records(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    private, public = keygen(tmp_path / "keys" / "politie")
    om_private, om_public = keygen(tmp_path / "keys" / "om")
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2) as env:
        config = yaml.safe_load(env.config.read_text())
        config["sources"] = {"politie": {"public_key": str(public)},
                             "om": {"public_key": str(om_public)}}
        env.config.write_text(yaml.safe_dump(config))

        signed, unsigned = f.woninginbraak(), f.woninginbraak()
        path = lines_file(tmp_path / "in.jsonl", jsonl([signed]))
        code, out = run_cli([*env.args(), "source", "sign", "--key", str(private), "--type",
                             TYPE, str(path)])
        assert code == 0, out
        code, out = run_cli([*env.args(), "ingest", "--source", "politie", "--type",
                             "woninginbraak", "--signatures", f"{path}.sig", str(path)])
        assert code == 0, out
        code, out = run_cli([*env.args(), "ingest", "--source", "politie", "--type",
                             "woninginbraak", str(lines_file(tmp_path / "u.jsonl",
                                                             jsonl([unsigned])))])
        assert code == 0, out

        topic = f"{env.name}.ingress.{TYPE}"
        tampered = json.dumps(f.woninginbraak()).encode()
        forged = json.dumps(f.woninginbraak()).encode()
        key = load_private_key(private)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        try:
            producer.send(topic, tampered.replace(b"noord", b"oost"),
                          headers=[(SIGNATURE_HEADER, sign(key, TYPE, tampered))])
            producer.send(topic, forged, headers=[
                (SIGNATURE_HEADER, sign(load_private_key(om_private), TYPE, forged))])
            # a stranger's key (not configured): just invalid
            producer.send(topic, forged, headers=[
                (SIGNATURE_HEADER, sign(Ed25519PrivateKey.generate(), TYPE, forged))])
            producer.flush()
        finally:
            producer.close()

        code, out = run_cli([*env.args(), "--json", "--now", NOW, "serve", "--until-idle"])
        assert code == 0, out
        summary = json.loads(out.strip().splitlines()[-1])
        snap = snapshot(env)
        result = check_exactly_once(snap)
        code, verify = run_cli([*env.args(), "audit", "verify"])
        assert code == 0, verify

    assert (summary["stored"], summary["quarantined"]) == (1, 4), summary
    codes = sorted(e["reason_code"] for e in snap.entries("quarantine"))
    assert codes == ["signature_invalid", "signature_invalid", "signature_missing",
                     "wrong_source"]
    assert {e["source"] for e in snap.entries("quarantine")} == {"politie"}
    assert {r[0] for r in result.releases} == {signed["event_id"].lower()}
