"""The verifiable audit log on a large log: write rate, verify throughput, report latency.

Builds a log of N entries (default one million) through the real sequencer of the embedded
backend (`append_audit`: chain, tree nodes, indexes, checkpoints every 1000 entries), not
through the whole pipeline: the entries are realistic decision, tombstone and access
records drawn from the sample covenant's compiled plans, with keyed subject pseudonyms
of a pool of synthetic BSNs. Then it measures, each in a fresh process where it matters:

  verify       `audit verify`'s core (chain + tree re-derivation + node cache + every
               checkpoint + consistency), entries/s and peak RSS, three ways in one run:
               the exact walk pinned to one core (`verify_log(bulk=False)`, the path that
               names problems), the bulk path pinned to one core, and the bulk path on
               every core (worker processes, one chunk of 32768 entries each)
  report       subject report (index lookup, decode, inclusion proof per item), latency
  prove        one inclusion bundle, latency and size; a consistency bundle's size
  query        `audit query` by recipient (first 100) and by a one-day window
  cli          wall time of `covenant-broker audit verify` and `audit subject-report`

    python bench/audit_bench.py [--entries 1000000] [--data-dir DIR] [--reuse]

Writes bench/results/audit.json (gitignored) and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from broker.app.service import Broker
from broker.audit.entries import Draft, draft
from broker.clock import parse_instant, to_millis
from broker.config import load_settings
from broker.keys import keyed_pseudonym

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
DAY_MS = 86_400_000
START = to_millis(parse_instant("2026-01-01T00:00:00Z"))
MIX = [(0.55, "politie.woninginbraak"), (0.15, "om.gebiedsverbod"),
       (0.10, "om.detentie_uitstroom"), (0.20, "gemeente.boa_waarneming")]
SUBJECTS = {"politie.woninginbraak": [("victim.bsn", 0.6), ("suspect.bsn", 0.2)],
            "om.gebiedsverbod": [("person.bsn", 1.0)],
            "om.detentie_uitstroom": [("person.bsn", 1.0)]}


def bsn_of(number: int) -> str:
    return f"{100_000_000 + number:09d}"


class Synth:
    """Decision records as the decider writes them, for a synthetic stream of events."""

    def __init__(self, broker: Broker, seed: int, people: int) -> None:
        self.rng = random.Random(seed)
        self.plans = {t: broker.plans.plans_for(t) for _, t in MIX}
        self.key = broker.keys.subject_key()
        self.people = people
        self.offset = 0
        self.recent: dict[tuple[str, str], list[list[dict[str, str]]]] = {}
        header = broker.covenant.covenant
        self.covenant = {"covenant_id": header.id, "covenant_version": header.version}
        self.legal = {p: broker.covenant.purposes[p].legal_basis
                      for p in broker.covenant.purposes}

    def subjects(self, event_type: str) -> list[dict[str, str]]:
        out = []
        for role, chance in SUBJECTS.get(event_type, []):
            if self.rng.random() < chance:
                bsn = bsn_of(self.rng.randrange(self.people))
                out.append({"pseudonym": keyed_pseudonym(self.key, f"bsn:{bsn}"),
                            "id_type": "bsn", "role": role})
        return out

    def event(self, now_ms: int) -> list[Draft]:
        pick, total = self.rng.random(), 0.0
        event_type = MIX[-1][1]
        for weight, name in MIX:
            total += weight
            if pick < total:
                event_type = name
                break
        subjects = self.subjects(event_type)
        event_id = f"{self.rng.getrandbits(128):032x}"
        self.offset += 1
        out = []
        for plan in self.plans[event_type]:
            common: dict[str, Any] = {
                **self.covenant, "purpose": plan.purpose, "legal_basis": plan.legal_basis,
                "recipient": plan.recipient, "data_subjects": subjects,
                "policy_hash": plan.policy_hash, "source": event_type.split(".")[0],
                "event_type": event_type, "event_id": event_id, "event_offset": self.offset}
            if self.rng.random() < 0.4:
                out.append(draft("decide", trace_id=None, start_ms=now_ms, decision="release",
                                 fields_released=list(plan.fields_released),
                                 fields_withheld=list(plan.fields_withheld),
                                 egress_offset=self.offset,
                                 delivered_commitment=f"{self.rng.getrandbits(256):064x}",
                                 **common))
                self.recent.setdefault((plan.recipient, plan.purpose), []).append(subjects)
            else:
                out.append(draft("decide", trace_id=None, start_ms=now_ms, decision="withhold",
                                 reason_code="out_of_scope",
                                 reason=f"recipient {plan.recipient} is not in scope of "
                                 f"{plan.purpose}",
                                 fields_withheld=[*plan.fields_released,
                                                  *plan.fields_withheld], **common))
        return out

    def accesses(self, now_ms: int) -> list[Draft]:
        out = []
        for (recipient, purpose), released in self.recent.items():
            subjects: list[dict[str, str]] = []
            for group in released:
                subjects.extend(s for s in group if s not in subjects)
            out.append(draft("access", trace_id=None, start_ms=now_ms, recipient=recipient,
                             purpose=purpose, legal_basis=self.legal[purpose],
                             data_subjects=subjects, **self.covenant,
                             delivered_commitment=f"{self.rng.getrandbits(256):064x}",
                             detail={"count": str(len(released))}))
        self.recent.clear()
        return out


def build(data_dir: Path, entries: int, seed: int) -> dict[str, Any]:
    settings = load_settings(overrides={"data_dir": data_dir}, environ={})
    broker = Broker(settings)
    synth = Synth(broker, seed, people=max(1000, entries // 20))
    written, batch, batches = 0, [], 0
    started = time.perf_counter()
    now_ms = START
    try:
        while written < entries:
            batch.extend(synth.event(now_ms))
            now_ms += 20_000  # ~4300 events a day: the log spans months
            if len(batch) >= 2000:
                batch.extend(synth.accesses(now_ms))
                batch = batch[:entries - written]
                broker.log.append_audit(batch, now_ms)
                written += len(batch)
                batches += 1
                batch = []
                if batches % 50 == 0:
                    rate = written / (time.perf_counter() - started)
                    print(f"  built {written:,} entries ({rate:,.0f}/s)", flush=True)
        if batch:
            broker.log.append_audit(batch[:entries - written], now_ms)
            written += len(batch[:entries - written])
    finally:
        broker.close()
    seconds = time.perf_counter() - started
    return {"entries": written, "seconds": round(seconds, 1),
            "entries_per_s": round(written / seconds), "people": synth.people,
            "first_ms": START, "last_ms": now_ms}


_VERIFY = """
import json, resource, sys, time


def peak_rss_mib():
    # VmHWM of this process image: ru_maxrss would include the parent's at fork time
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


from broker.audit.checkpoint import parse_verifier_key
from broker.audit.verify import verify_log
from broker.config import load_settings
from broker.app.service import Broker
broker = Broker(load_settings(overrides={"data_dir": sys.argv[1]}, environ={}))
audit = broker.audit
started = time.perf_counter()
report = verify_log(audit.store, audit.schema, parse_verifier_key(audit.verifier_key()),
                    audit.origin, bulk=sys.argv[2] == "bulk")
seconds = time.perf_counter() - started
broker.close()
print(json.dumps({"ok": report.ok, "problem": report.problem, "entries": report.entries,
                  "checkpoints": report.checkpoints, "root": report.root, "seconds": seconds,
                  "peak_rss_mb": peak_rss_mib(),
                  "workers_peak_rss_mb":
                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""
VERIFY_MODES = {"exact_1core": ("exact", "0"), "bulk_1core": ("bulk", "0"),
                "bulk_all_cores": ("bulk", None)}


def measure_verify(data_dir: Path, runs: int) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in VERIFY_MODES}
    for _ in range(runs):  # interleaved, so that load from elsewhere hits every mode alike
        for mode, (path, core) in VERIFY_MODES.items():
            pin = ["taskset", "-c", core] if core is not None else []
            done = subprocess.run([*pin, sys.executable, "-c", _VERIFY, str(data_dir), path],
                                  check=True, capture_output=True, text=True, cwd=REPO)
            results[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
    out: dict[str, Any] = {}
    for mode, got in results.items():
        assert all(r["ok"] for r in got), got[0]["problem"]
        assert len({r["root"] for rs in results.values() for r in rs}) == 1
        best = min(r["seconds"] for r in got)
        median = statistics.median(r["seconds"] for r in got)
        entries = got[0]["entries"]
        out[mode] = {"entries": entries, "checkpoints": got[0]["checkpoints"],
                     "seconds_best": round(best, 2), "seconds_median": round(median, 2),
                     "entries_per_s_best": round(entries / best),
                     "entries_per_s_median": round(entries / median),
                     "peak_rss_mb": round(max(r["peak_rss_mb"] for r in got), 1),
                     "workers_peak_rss_mb": round(max(r["workers_peak_rss_mb"] for r in got),
                                                  1)}
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_reads(data_dir: Path, info: dict[str, Any], samples: int) -> dict[str, Any]:
    from broker.audit.store import QueryFilter  # noqa: PLC0415

    broker = Broker(load_settings(overrides={"data_dir": data_dir}, environ={}))
    audit = broker.audit
    assert audit is not None
    rng = random.Random(7)
    key = broker.keys.subject_key()
    try:
        latencies, sizes, counts = [], [], []
        for _ in range(samples):
            bsn = bsn_of(rng.randrange(info["people"]))
            started = time.perf_counter()
            pseudonym = keyed_pseudonym(key, f"bsn:{bsn}")
            report = audit.subject_report(pseudonym, "bsn", "2026-06-01T00:00:00Z")
            latencies.append((time.perf_counter() - started) * 1000)
            counts.append(sum(report["summary"][s] for s in ("disclosures", "withheld",
                                                             "accesses", "other")))
            sizes.append(len(json.dumps(report)))
        size = audit.store.audit_size()
        prove_ms, bundle_bytes = [], []
        for _ in range(50):
            started = time.perf_counter()
            bundle = audit.prove(rng.randrange(size - 1))
            prove_ms.append((time.perf_counter() - started) * 1000)
            bundle_bytes.append(len(json.dumps(bundle)))
        cps = audit.store.checkpoints()
        consistency = audit.consistency(cps[0].size, cps[-1].size)
        started = time.perf_counter()
        by_recipient = list(audit.query(QueryFilter(recipient="boa-hor-noord"), 100))
        recipient_ms = (time.perf_counter() - started) * 1000
        day = info["first_ms"] + (info["last_ms"] - info["first_ms"]) // 2
        started = time.perf_counter()
        window = list(audit.query(QueryFilter(since_ms=day, until_ms=day + DAY_MS,
                                              recipient="preventie", decision="release")))
        window_ms = (time.perf_counter() - started) * 1000
        example = bsn_of(rng.randrange(info["people"]))
    finally:
        broker.close()
    return {
        "subject_report": {"samples": samples, "items_median": statistics.median(counts),
                           "items_max": max(counts),
                           "latency_ms_median": round(statistics.median(latencies), 2),
                           "latency_ms_p95": round(percentile(latencies, 0.95), 2),
                           "latency_ms_max": round(max(latencies), 2),
                           "json_bytes_median": statistics.median(sizes)},
        "prove": {"latency_ms_median": round(statistics.median(prove_ms), 3),
                  "bundle_bytes_median": statistics.median(bundle_bytes)},
        "consistency_bundle_bytes": len(json.dumps(consistency)),
        "query": {"recipient_first_100_ms": round(recipient_ms, 2),
                  "one_day_window_ms": round(window_ms, 2), "one_day_window_rows": len(window),
                  "recipient_rows": len(by_recipient)},
        "example_bsn": example,
    }


def measure_cli(data_dir: Path, bsn: str) -> dict[str, Any]:
    out = {}
    for name, args in [("verify", ["audit", "verify"]),
                       ("subject_report", ["audit", "subject-report", "--bsn", bsn, "--html",
                                           str(data_dir / "report.html")]),
                       ("public_key", ["audit", "public-key"])]:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "broker.cli", "--data-dir", str(data_dir),
                        *args], check=True, capture_output=True, cwd=REPO)
        out[f"{name}_wall_s"] = round(time.perf_counter() - started, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path, help="keep the log here (default: temp)")
    parser.add_argument("--reuse", action="store_true", help="measure an existing log")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="audit-bench-"))
    info_file = data_dir / "bench-info.json"
    if args.reuse and info_file.exists():
        info = json.loads(info_file.read_text())
        print(f"reusing {info['entries']:,} entries in {data_dir}")
    else:
        print(f"building {args.entries:,} entries in {data_dir}")
        info = build(data_dir, args.entries, seed=20260512)
        info_file.write_text(json.dumps(info))
    db = data_dir / "broker.db"
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "build": info, "db_bytes": db.stat().st_size,
        "bytes_per_entry": round(db.stat().st_size / info["entries"]),
    }
    print("verifying ...", flush=True)
    result["verify"] = measure_verify(data_dir, args.runs)
    print("reads ...", flush=True)
    result.update(measure_reads(data_dir, info, args.samples))
    result["cli"] = measure_cli(data_dir, result.pop("example_bsn"))
    result["build_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                        / 1024, 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "audit.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
