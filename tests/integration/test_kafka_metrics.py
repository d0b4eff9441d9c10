"""`serve --metrics-listen` on real Kafka: /metrics, /healthz and /readyz over HTTP, and the
counts they give match what was fed and what the topics hold."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests import factories as f
from tests.integration.kafka_support import (
    REPO,
    KafkaEnv,
    ProcessLog,
    check_exactly_once,
    ingest_lines,
    jsonl,
    kafka_env,
    run_cli,
    snapshot,
)
from tests.kafka_launcher import load_launcher
from tests.unit.test_metrics import _get

NOW = "2026-05-10T12:00:00Z"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, k), v in samples.items()
               if n == name and all(dict(k).get(a) == b for a, b in labels.items()))


def _serve(env: KafkaEnv, port: int) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "broker.cli", *env.args(), "--now", NOW, "serve",
            "--metrics-listen", f"127.0.0.1:{port}"]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_metrics_endpoint_of_serve_matches_what_was_fed(kafka_bootstrap: str,
                                                        tmp_path: Path) -> None:
    good = [f.woninginbraak(address={"wijk": w}) for w in ("noord", "oost", "west", "noord")]
    bad = ["not json at all", '{"event_id": 1}', "[]"]
    port = load_launcher().free_port()
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2) as env:
        ingest_lines(env, tmp_path / "in.jsonl", [*jsonl(good), *bad])
        proc = _serve(env, port)
        log = ProcessLog(proc)
        try:
            deadline = time.monotonic() + 90
            samples: Samples = {}
            health = ready = (0, "")
            integrated = False
            while time.monotonic() < deadline:
                time.sleep(0.5)
                assert proc.poll() is None, log.tail()
                try:
                    health, ready = _get(port, "/healthz"), _get(port, "/readyz")
                    status, text = _get(port, "/metrics")
                except OSError:
                    continue  # not listening yet
                samples = _samples(text)
                lags = [v for (n, _), v in samples.items() if n == "covenant_consumer_lag"]
                settled = _total(samples, "covenant_events_in_total") >= len(good) + len(
                    bad) and lags and not any(lags) and ready[0] == 200
                if settled and not integrated:
                    # the sidecar's work, once: a signed checkpoint of what serve audited, in
                    # the data dir serve reads the checkpoint-age gauge from
                    code, out = run_cli([*env.args(), "audit", "integrate"])
                    assert code == 0, out
                    integrated = True
                age = [v for (n, _), v in samples.items()
                       if n == "covenant_audit_checkpoint_age_seconds"]
                if settled and age and not math.isnan(age[0]):
                    break
            else:
                raise AssertionError(f"never settled: ready {ready}, {samples}\n{log.tail()}")
            assert health == (200, "ok\n")
            assert ready == (200, "ready\n")
            assert status == 200
            assert _get(port, "/nothing")[0] == 404
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
        assert proc.returncode == 0, log.tail()
        snap = snapshot(env)
        result = check_exactly_once(snap)

    assert _total(samples, "covenant_events_in_total",
                  event_type="politie.woninginbraak") == len(good) + len(bad)
    quarantined = {dict(k)["reason_code"]: v for (n, k), v in samples.items()
                   if n == "covenant_quarantined_total" and v}
    assert sum(quarantined.values()) == len(bad) == result.quarantined
    assert quarantined == dict(Counter(e["reason_code"] for e in snap.entries("quarantine")))
    released = {(dict(k)["recipient"], dict(k)["purpose"]): v for (n, k), v in samples.items()
                if n == "covenant_released_total" and v}
    assert released == dict(Counter((r, p) for _, r, p in result.releases))
    assert sum(released.values()) == len(result.releases) > 0
    withheld = Counter(e["reason_code"] for e in snap.entries("decide")
                       if e["decision"] == "withhold")
    assert {dict(k)["reason_code"]: v for (n, k), v in samples.items()
            if n == "covenant_withheld_total" and v} == dict(withheld)
    # every entry serve wrote: one per decision and one per quarantined input
    assert _total(samples, "covenant_audit_entries_total") == \
        result.decisions + result.quarantined
    lags = {dict(k)["topic"] for (n, k), _ in samples.items() if n == "covenant_consumer_lag"}
    assert f"{env.name}.ingress.politie.woninginbraak" in lags
    age = [v for (n, _), v in samples.items() if n == "covenant_audit_checkpoint_age_seconds"]
    assert len(age) == 1  # the integrator signed a checkpoint while serve ran
    assert 0 <= age[0] < 600
    assert _total(samples, "covenant_decide_latency_seconds_count") == len(good)
