"""`audit export --format ldv` on real Kafka: an event that came with a W3C `traceparent`
header is exported with the caller's operation as the LDV foreign operation (and an OTLP
link), its decisions carry the processing activity, and a span proves with `audit prove`
on the integrated log."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from kafka import KafkaProducer

from broker.audit.merkle import leaf_hash
from broker.policy.covenant import load_covenant
from tests import factories as f
from tests.integration.kafka_support import kafka_env, run_cli
from tests.unit.strategies import POLICY_FILE
from tests.unit.test_ldv_export import attrs, parse, spans_of

NOW = "2026-05-10T12:00:00Z"
TYPE = "politie.woninginbraak"
CALLER_TRACE, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def test_a_sources_traceparent_is_the_exported_foreign_operation(kafka_bootstrap: str,
                                                                 tmp_path: Path) -> None:
    activity = load_covenant(POLICY_FILE).purposes["surveillance-woninginbraak"]
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=1) as env:
        env.broker().close()  # creates the topics
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        try:
            producer.send(f"{env.name}.ingress.{TYPE}", json.dumps(f.woninginbraak()).encode(),
                          headers=[("traceparent",
                                    f"00-{CALLER_TRACE}-{CALLER_SPAN}-01".encode())])
            producer.flush()
        finally:
            producer.close()
        stored = 0
        for _ in range(3):  # on a loaded machine, --until-idle can stop before the group joins
            code, out = run_cli([*env.args(), "--json", "--now", NOW, "serve", "--until-idle"])
            assert code == 0, out
            stored += json.loads(out.strip().splitlines()[-1])["stored"]
            if stored:
                break
        assert stored == 1
        code, out = run_cli([*env.args(), "audit", "integrate"])
        assert code == 0, out
        code, out = run_cli([*env.args(), "audit", "export", "--format", "ldv"])
        assert code == 0, out
        spans = spans_of([parse(line) for line in out.splitlines()
                          if line.startswith("{\"resourceSpans\"")])
        decided = [s for s in spans if s.name == "decide"
                   and "dpl.core.data_subject_id" not in attrs(s)]
        assert decided
        for span in decided:
            a = attrs(span)
            assert a["dpl.core.foreign_operation.span_id"] == CALLER_SPAN
            (link,) = span.links
            assert (link.trace_id.hex(), link.span_id.hex()) == (CALLER_TRACE, CALLER_SPAN)
            if a["covenant_broker.purpose"] == "surveillance-woninginbraak":
                assert a["dpl.core.processing_activity_id"] == activity.processing_activity_id
        seq = attrs(decided[0])["covenant_broker.audit.seq"]
        bundle = tmp_path / "proof.json"
        code, out = run_cli([*env.args(), "audit", "prove", "--entry", str(seq), "--out",
                             str(bundle)])
        assert code == 0, out
        proof = json.loads(bundle.read_text())
        assert leaf_hash(base64.b64decode(proof["entry_base64"])).hex() == \
            attrs(decided[0])["covenant_broker.audit.leaf_hash"]
