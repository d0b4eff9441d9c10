"""Replay (`broker.app.lifecycle`) over a large store: throughput and peak RSS at growing sizes.

The store is built fast, not through the whole pipeline: the sample covenant's event mix
from a pool of synthetic events (each stored copy with its own event_id), sealed by the
broker's own Sealer (personal fields under their subjects' data keys, as ingest stores
them) and appended with the embedded backend's `append_ingest`, in ingest batches spread
over about three months. No decisions or audit entries are written while building.

Then, at each size (default 100k, 300k and 1M stored events), each measurement in a fresh
process pinned to one core:
  stream   `replay_into`, the streaming form the CLI uses: events/s scanned, records/s
           rebuilt, peak RSS; memory must stay flat as the store grows
  collect  `replay`, which returns the whole stream in memory (the tests' form), at the
           smaller sizes only, to show what streaming saves

    python bench/replay_bench.py [--sizes 100000,300000,1000000] [--recipient preventie]

Writes bench/results/replay.json (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from broker.app.demo import DAY
from broker.app.service import Broker
from broker.clock import to_millis
from broker.config import load_settings
from broker.logs import configure
from broker.pipeline.port import NewEvent

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_bench import make_inputs

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
BATCH = 1000
EVENTS_PER_DAY = 10_000


def grow(data_dir: Path, target: int, pool_size: int, seed: int) -> dict[str, Any]:
    """Append stored events until the store holds `target`; returns build figures."""
    broker = Broker(load_settings(overrides={"data_dir": data_dir}, environ={}))
    rng = random.Random(seed)
    try:
        pool = []
        for source, event_type, data in make_inputs(broker, pool_size, seed):
            schema, record = broker.registry.decode_single_object(data)
            pool.append((source, event_type, schema, record))
        have = broker.log.read_store(-1, 1)
        row = broker.log.db.execute("SELECT COUNT(*) FROM store").fetchone()  # type: ignore[attr-defined]
        size = int(row[0]) if have else 0
        started = time.perf_counter()
        built = 0
        while size < target:
            ingested = DAY + timedelta(seconds=size * 86_400 // EVENTS_PER_DAY)
            until = broker.sealer.retention_until
            events = []
            for _ in range(min(BATCH, target - size)):
                source, event_type, schema, base = pool[rng.randrange(len(pool))]
                record = dict(base)
                record["event_id"] = uuid.UUID(int=rng.getrandbits(128), version=4)
                event_id = str(record["event_id"])
                sealed = broker.sealer.seal(schema, record, event_id,
                                            until(event_type, ingested))
                events.append(NewEvent(event_type, source, event_id, sealed, uuid.uuid4().hex))
                size += 1
            broker.sealer.flush()
            broker.log.append_ingest(events, [], [], to_millis(ingested))
            built += len(events)
            if size % 100_000 == 0:
                print(f"  stored {size:,} events", flush=True)
        seconds = time.perf_counter() - started
    finally:
        broker.close()
    return {"size": size, "built": built, "seconds": round(seconds, 1),
            "events_per_s": round(built / seconds) if built else None}


_MEASURE = """
import json, resource, sys, time


def peak_rss_mib():
    # VmHWM of this process image: ru_maxrss would include the parent's at fork time
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


from broker.config import load_settings
from broker.logs import configure
from broker.app.service import Broker
from broker.app import lifecycle
configure("warning")
data_dir, recipient, api = sys.argv[1], sys.argv[2], sys.argv[3]
broker = Broker(load_settings(overrides={"data_dir": data_dir}, environ={}))
scanned = broker.log.db.execute("SELECT COUNT(*) FROM store").fetchone()[0]
rss_before = peak_rss_mib()
started = time.perf_counter()
if api == "stream":
    result = lifecycle.replay_into(broker, recipient, None, 1, None, lambda record, view: None)
    count, digest = result.count, result.digest
else:
    result = lifecycle.replay(broker, recipient, None, 1, None)
    count, digest = len(result.records), result.digest
seconds = time.perf_counter() - started
broker.close()
print(json.dumps({"scanned": scanned, "records": count, "seconds": seconds, "digest": digest,
                  "rss_before_mib": rss_before,
                  "peak_rss_mib": peak_rss_mib()}))
"""


def measure(data_dir: Path, recipient: str, api: str, core: int) -> dict[str, Any]:
    done = subprocess.run(["taskset", "-c", str(core), sys.executable, "-c", _MEASURE,
                           str(data_dir), recipient, api],
                          check=True, capture_output=True, text=True, cwd=REPO)
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out["events_per_s"] = round(out["scanned"] / out["seconds"])
    out["records_per_s"] = round(out["records"] / out["seconds"])
    out["seconds"] = round(out["seconds"], 1)
    out["rss_before_mib"] = round(out["rss_before_mib"], 1)
    out["peak_rss_mib"] = round(out["peak_rss_mib"], 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--collect-up-to", type=int, default=300_000,
                        help="measure the in-memory `replay` too, up to this size")
    parser.add_argument("--recipient", default="preventie")
    parser.add_argument("--pool", type=int, default=4000, help="distinct synthetic events")
    parser.add_argument("--data-dir", type=Path, help="keep the store here (default: temp)")
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "replay.json")
    args = parser.parse_args()
    configure("warning")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-replay-"))
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rows = []
    for size in sizes:
        print(f"growing the store to {size:,} events in {data_dir}", flush=True)
        build = grow(data_dir, size, args.pool, seed=20260512 + size)
        row: dict[str, Any] = {"size": size, "build": build,
                               "stream": measure(data_dir, args.recipient, "stream", args.core)}
        if size <= args.collect_up_to:
            row["collect"] = measure(data_dir, args.recipient, "collect", args.core)
            assert row["collect"]["digest"] == row["stream"]["digest"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    db = data_dir / "broker.db"
    result = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                          "pinned_core": args.core},
              "recipient": args.recipient, "db_bytes": db.stat().st_size,
              "keystore_bytes": (data_dir / "keystore.db").stat().st_size, "sizes": rows,
              "bench_peak_rss_mib": round(
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(f"\n{'stored events':>14} {'api':>8} {'events/s':>10} {'records/s':>10} "
          f"{'records':>9} {'peak RSS MiB':>13}")
    for row in rows:
        for api in ("stream", "collect"):
            if api in row:
                m = row[api]
                print(f"{row['size']:>14,} {api:>8} {m['events_per_s']:>10,} "
                      f"{m['records_per_s']:>10,} {m['records']:>9,} {m['peak_rss_mib']:>13}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
