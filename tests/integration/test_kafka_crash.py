"""Crash tests on real Kafka: kill -9 `serve` at many points of a stream, restart, check.

Phase 1 decides a stream of good, bad and duplicate input at a decision time when the
area bans are valid; phase 2 restarts at a time after the bans ended, so the member that
holds partition index 0 writes expiry tombstones. In both phases `serve` runs as a child
process and is killed with SIGKILL at varied points: during start-up, right after a
writer opened, and at varied delays after the k-th committed batch (so inside the next
transaction, between its sends, or around its commit). Then `serve --until-idle` finishes.

The checks read every topic read_committed (kafka_support.check_exactly_once): each
(event, recipient, purpose) decided once, every egress record with exactly one audit
entry and vice versa, one tombstone per expired release, every input quarantined at most
once, and the hash chain of every audit partition intact. The released set must equal
what the embedded backend releases for the same input at the same decision time.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests import factories as f
from tests.integration.kafka_support import (
    KafkaEnv,
    ProcessLog,
    check_exactly_once,
    committed_tombstones,
    embedded_releases,
    jsonl,
    kafka_env,
    lines_file,
    run_cli,
    serve_process,
    snapshot,
)

NOW = "2026-05-10T12:00:00Z"
LATER = "2026-06-02T09:00:00Z"  # after the bans' valid_until: tombstones are due
WIJKEN = ["noord", "oost", "zuid", "west"]
# (what to wait for in the serve log, how many of it, extra delay in seconds)
PHASE1_POINTS = [
    ("serve started", 1, 0.0),  # before joining the group
    ("partition writer open", 1, 0.0),  # one writer fenced its predecessor, others not yet
    ("batch committed", 1, 0.0),
    ("batch committed", 1, 0.04),
    ("batch committed", 2, 0.09),
    ("batch committed", 2, 0.02),
    ("batch committed", 3, 0.06),
    ("batch committed", 1, 0.13),
    ("batch committed", 4, 0.01),
    ("batch committed", 2, 0.07),
    ("batch committed", 3, 0.11),
    ("batch committed", 1, 0.2),
]
PHASE2_POINTS = [  # in and around the transaction that writes the tombstones
    ("partition writer open", 3, 0.0),
    ("writing expiry tombstones", 1, 0.0),
    ("writing expiry tombstones", 1, 0.01),
    ("writing expiry tombstones", 1, 0.025),
    ("writing expiry tombstones", 1, 0.05),
    ("writing expiry tombstones", 1, 0.09),
]


def _stream() -> dict[str, tuple[str, list[str]]]:
    burglaries = [f.woninginbraak(address={"wijk": WIJKEN[i % 4]},
                                  victim={"consent_prevention_advice": i % 3 != 0})
                  for i in range(140)]
    bans = [f.gebiedsverbod(valid_until="2026-05-31",
                            area={"wijken": [WIJKEN[i % 4], WIJKEN[(i + 1) % 4]],
                                  "streets": []}) for i in range(8)]
    detention = [f.detentie_uitstroom(municipality=m)
                 for m in ["Amstelveen", "Rotterdam", "Diemen", "Uithoorn"]]
    burglary_lines = jsonl(burglaries)
    # bad input and duplicates among the good lines
    for i, bad in enumerate(["{broken", '{"event_id": "x"}', "[]", "null"]):
        burglary_lines.insert(5 + i * 17, bad)
    burglary_lines += [json.dumps(burglaries[3]), json.dumps(burglaries[17])]
    return {"burglaries": ("politie", burglary_lines),
            "bans": ("om", jsonl(bans)),
            "detention": ("om", jsonl(detention))}


TYPES = {"burglaries": "politie.woninginbraak", "bans": "om.gebiedsverbod",
         "detention": "om.detentie_uitstroom"}


def _crash_at(env: KafkaEnv, now: str, point: tuple[str, int, float],
              wait_s: float = 20) -> dict[str, Any]:
    """Start serve, wait for the point, kill -9; report what the run got done."""
    text, times, delay = point
    started = time.monotonic()
    proc = serve_process(env, now)
    log = ProcessLog(proc)
    deadline = time.monotonic() + wait_s
    while log.count(text) < times and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    reached = log.count(text) >= times
    time.sleep(delay)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    log.thread.join(timeout=5)
    assert alive, f"serve exited before the crash point {point}:\n{''.join(log.lines[-30:])}"
    return {"point": point, "reached": reached, "batches": log.count("batch committed"),
            "tombstones": log.count("expiry tombstones committed"),
            "seconds": round(time.monotonic() - started, 1)}


def _finish(env: KafkaEnv, now: str) -> dict[str, Any]:
    code, out = run_cli([*env.args(), "--json", "--now", now, "serve", "--until-idle"])
    assert code == 0, out
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


def test_kill_9_at_many_points_releases_everything_exactly_once(
        kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stream = _stream()
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=3, max_batch=2,
                   instance_id="crash") as env:
        for name, (source, lines) in stream.items():
            path = lines_file(tmp_path / f"{name}.jsonl", lines)
            code, out = run_cli([*env.args(), "ingest", "--source", source, "--type",
                                 TYPES[name], str(path)])
            assert code == 0, out

        phase1 = [_crash_at(env, NOW, point) for point in PHASE1_POINTS]
        final1 = _finish(env, NOW)
        after1 = check_exactly_once(snapshot(env))

        phase2 = []
        for point in PHASE2_POINTS:  # until a run gets the tombstones committed
            phase2.append(_crash_at(env, LATER, point, wait_s=8))
            time.sleep(0.3)  # a commit the coordinator accepted gets its markers anyway
            if phase2[-1]["tombstones"] or committed_tombstones(env):
                phase2[-1]["tombstones"] = 1
                break
        final2 = _finish(env, LATER)
        after2 = check_exactly_once(snapshot(env))
        code, out = run_cli([*env.args(), "audit", "verify"])
        assert code == 0, out

    expected = embedded_releases(tmp_path / "embedded", NOW, [
        (source, TYPES[name], lines) for name, (source, lines) in stream.items()])
    assert after1.releases == expected, (
        f"missing {len(expected - after1.releases)}, extra {len(after1.releases - expected)}")
    assert after2.releases == expected
    bans_released = sum(1 for _, _, purpose in expected
                        if purpose == "handhaving-gebiedsverbod")
    assert after2.tombstones == bans_released > 0
    assert after1.quarantined == 6  # 4 bad lines, 2 duplicates

    crashes = phase1 + phase2
    mid_stream = [c for c in phase1 if c["batches"] > 0]
    in_sweep = [c for c in phase2 if c["point"][0] == "writing expiry tombstones"
                and c["reached"] and c["tombstones"] == 0]
    assert len(crashes) >= 8
    assert len(mid_stream) >= 5, "too few crashes landed while batches were committing"
    assert final1["consumed"] > 0, "the stream ran out before the last crash point"
    with capsys.disabled():
        print(f"\n[crash test] {len(crashes)} kill -9 points: {len(mid_stream)} after a "
              f"committed batch (phase 1); {len(phase2)} in phase 2, {len(in_sweep)} of them "
              f"after the tombstone transaction began and before it committed; batches per "
              f"killed run {[c['batches'] for c in crashes]} (seconds "
              f"{[c['seconds'] for c in crashes]}); {after2.aborted} store/egress/audit "
              f"records of aborted transactions in the log (kills inside a transaction), "
              f"none visible; "
              f"final runs {final1['consumed']} + {final2['consumed']} records; "
              f"{len(expected)} releases, {after2.tombstones} tombstones, each exactly once")
