"""`ingest --backend kafka` reads its input as a stream (issue 15 item 7, the Kafka side):
a huge line keeps memory bounded and goes to ingress as its length, hash and prefix."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path

from kafka import TopicPartition

from broker.backends.kafka.event_log import KafkaEventLog
from broker.backends.kafka.framing import OVERSIZED_HEADER
from broker.backends.kafka.io import Clients, header, read_all
from broker.pipeline.ingest import PREFIX_BYTES
from tests import factories as f
from tests.integration.kafka_support import kafka_env, run_cli, snapshot

NOW = "2026-05-10T12:00:00Z"
TYPE = "gemeente.boa_waarneming"
HUGE = 48 * 1024 * 1024  # far over max_event_bytes (256 KiB) and Kafka's 1 MB records


def test_a_huge_line_is_streamed_to_ingress_in_its_bounded_form(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    digest = hashlib.sha256()
    with path.open("wb") as out:  # written in pieces: the test holds no copy either
        out.write(f.jsonl(f.boa_waarneming()))
        head = b'{"description": "'
        out.write(head)
        digest.update(head)
        piece = b"x" * (1024 * 1024)
        for _ in range(HUGE // len(piece)):
            out.write(piece)
            digest.update(piece)
        out.write(b'"}\n')
        digest.update(b'"}')
        out.write(f.jsonl(f.boa_waarneming()))
    length = len(head) + HUGE + 2
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2) as env:
        tracemalloc.start()
        try:
            code, out_text = run_cli([*env.args(), "--json", "ingest", "--source", "gemeente",
                                      "--type", "boa_waarneming", str(path)])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert code == 0, out_text
        report = json.loads(out_text.strip().splitlines()[-1])
        assert (report["produced"], report["oversized"]) == (3, 1)
        assert peak < 16 * 1024 * 1024, peak  # the old whole-file read took over 48 MB

        broker = env.broker()
        try:
            log = broker.log
            assert isinstance(log, KafkaEventLog)
            topic = log.layout.names.ingress(TYPE)
            reader = Clients(log.cfg).reader("test")
            try:
                records = [r for rs in read_all(reader, [TopicPartition(topic, p)
                                                         for p in range(2)]).values()
                           for r in rs]
            finally:
                reader.close()
        finally:
            broker.close()
        [bounded] = [r for r in records if header(r, OVERSIZED_HEADER) is not None]
        assert header(bounded, OVERSIZED_HEADER) == f"{length} {digest.hexdigest()}"
        assert header(bounded, "line") == "2"
        first, _, prefix = bytes(bounded.value).partition(b"\n")
        assert first.decode() == (f"oversized input: {length} bytes, sha256 "
                                  f"{digest.hexdigest()}; the first {PREFIX_BYTES} bytes "
                                  "follow")
        assert len(prefix) == PREFIX_BYTES

        code, out_text = run_cli([*env.args(), "--json", "--now", NOW, "serve",
                                  "--until-idle"])
        assert code == 0, out_text
        summary = json.loads(out_text.strip().splitlines()[-1])
        assert (summary["stored"], summary["quarantined"]) == (2, 1), summary
        found = snapshot(env)
        assert found.quarantine == 1
        # serve reads the bounded form as what it stands for: an input too large, with the
        # whole line's length and hash in the audit entry
        [entry] = [e for es in found.audit.values() for e in es if e["name"] == "quarantine"]
        assert entry["reason_code"] == "event_too_large", entry
        assert (entry["detail"]["bytes"], entry["detail"]["sha256"]) == (
            str(length), digest.hexdigest())
