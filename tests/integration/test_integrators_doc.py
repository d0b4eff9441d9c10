"""docs/integrators.md's Python producer and consumer run as written against the real
Kafka, as the README's example does (tests/unit/test_readme.py): kafka init, the producer,
serve, then the consumer reads what `consume` delivers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.kafka_support import kafka_env, run_cli

REPO = Path(__file__).resolve().parents[2]
NOW = "2026-05-10T12:00:00Z"


def _examples() -> dict[str, str]:
    text = (REPO / "docs" / "integrators.md").read_text(encoding="utf-8")
    return dict(re.findall(r"```python (\w+\.py)\n(.*?)```", text, re.S))


def _run(script: Path, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, str(script)], cwd=script.parent, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_documented_producer_and_consumer_run_against_kafka(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    examples = _examples()
    assert set(examples) == {"producer.py", "consumer.py"}
    for name, body in examples.items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    schemas = tmp_path / "schemas.d"
    schemas.mkdir()
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=3) as env:
        code, out = run_cli([*env.args(), "kafka", "init"])
        assert code == 0, out
        _, listed = run_cli([*env.args(), "--json", "schemas", "list"])
        for entry in json.loads(listed)["schemas"]:  # what an integrator asks the operator for
            _, shown = run_cli([*env.args(), "schemas", "show", entry["fingerprint"]])
            (schemas / f"{entry['fingerprint']}.avsc").write_text(shown, encoding="utf-8")
        _, ban = run_cli([*env.args(), "schemas", "show", "om.gebiedsverbod"])
        (tmp_path / "om.gebiedsverbod.avsc").write_text(ban, encoding="utf-8")
        child = {**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap,
                 "TOPIC_PREFIX": f"{env.name}.", "SCHEMA_DIR": str(schemas)}
        sent = _run(tmp_path / "producer.py", child)
        code, out = run_cli([*env.args(), "--json", "--now", NOW, "serve", "--until-idle"])
        assert code == 0, out
        report = json.loads(out.strip().splitlines()[-1])
        read = {}
        consumed = {}
        for stream in ("preventie.preventie-woninginbraak",
                       "boa-hor-noord.handhaving-gebiedsverbod"):
            lines = _run(tmp_path / "consumer.py", {**child, "STREAM": stream})
            read[stream] = [json.loads(line) for line in lines.splitlines()]
            recipient, purpose = stream.split(".")
            _, delivered = run_cli([*env.args(), "--now", NOW, "consume", "--recipient",
                                    recipient, "--purpose", purpose])
            consumed[stream] = [json.loads(line) for line in delivered.splitlines()]

    assert "(JSON)" in sent
    assert "(Avro)" in sent
    assert (report["stored"], report["quarantined"]) == (2, 0), report
    for stream, records in read.items():
        assert records, f"the consumer read nothing on {stream}"
        assert [r["offset"] for r in records] == [c["offset"] for c in consumed[stream]]
        assert all("record" in r or r.get("deleted") for r in records)
