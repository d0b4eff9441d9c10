"""`serve` on SIGTERM: the batch in hand finishes and commits, then it exits 0."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

from kafka import KafkaProducer

from broker.backends.kafka.pipeline import home_partition
from tests import factories as f
from tests.integration.kafka_support import (
    ProcessLog,
    check_exactly_once,
    ingest_lines,
    jsonl,
    kafka_env,
    lines_file,
    run_cli,
    serve_process,
    snapshot,
)

NOW = "2026-05-10T12:00:00Z"


def test_sigterm_finishes_the_batch_commits_and_exits_0(kafka_bootstrap: str,
                                                        tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=3, max_batch=2) as env:
        ingest_lines(env, tmp_path / "in.jsonl", jsonl([f.woninginbraak() for _ in range(30)]))
        proc = serve_process(env, NOW)
        log = ProcessLog(proc)
        deadline = time.monotonic() + 60
        while log.count("batch committed") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, log.tail()
        result = check_exactly_once(snapshot(env))

    match = re.search(r"(\d+) stored", out)
    assert match, out
    stored = int(match.group(1))
    assert 0 < stored < 30, out  # it stopped part way through the stream
    assert len(result.releases) == 3 * stored  # boa of the wijk, preventie, slachtoffer
    assert result.aborted == 0, "a transaction was left to abort: the batch did not finish"


def test_an_event_on_the_wrong_partition_is_forwarded_and_its_duplicate_caught(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    event = f.woninginbraak()
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=3) as env:
        home = home_partition(event["event_id"].lower(), 3)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        env.broker().close()  # creates the topics
        producer.send(f"{env.name}.ingress.politie.woninginbraak",
                      json.dumps(event).encode(), partition=(home + 1) % 3)
        producer.flush()
        code, out = run_cli([*env.args(), "--json", "--now", NOW, "serve", "--until-idle"])
        assert code == 0, out
        first = json.loads(out.strip().splitlines()[-1])

        path = lines_file(tmp_path / "again.jsonl", jsonl([event]))  # keyed: lands on home
        run_cli([*env.args(), "ingest", "--source", "politie", "--type",
                 "politie.woninginbraak", str(path)])
        code, out = run_cli([*env.args(), "--json", "--now", NOW, "serve", "--until-idle"])
        assert code == 0, out
        second = json.loads(out.strip().splitlines()[-1])
        result = check_exactly_once(snapshot(env))
        producer.close()

    assert first["forwarded"] == 1
    assert first["stored"] == 1
    assert second["quarantined"] == 1  # duplicate_event, judged on the home partition
    assert {r[0] for r in result.releases} == {event["event_id"].lower()}
    assert len(result.releases) == 3
