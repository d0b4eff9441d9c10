"""Issue 15 item 13 on Kafka: four `ingest --backend kafka` started at once on a fresh data
dir all succeed and share one key set (before: one failed reading a half-written
checkpoint signing key, "not an unencrypted PEM private key")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from broker.keys import CORE_KEYS, KeyStore
from tests import factories as f
from tests.integration.kafka_support import REPO, jsonl, kafka_env, lines_file

NOW = "2026-05-10T12:00:00Z"


def test_four_kafka_ingests_on_a_fresh_data_dir_share_one_key_set(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path) as env:
        feed = lines_file(tmp_path / "feed.jsonl", jsonl([f.woninginbraak()]))
        procs = [subprocess.Popen(
            [sys.executable, "-m", "broker.cli", *env.args(), "--now", NOW, "ingest",
             "--source", "politie", "--type", "politie.woninginbraak", str(feed)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)]
        outcomes = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outcomes]
        keys = env.data_dir / "keys"
        manifest = json.loads((keys / "manifest.json").read_text())["keys"]
        assert set(CORE_KEYS) <= set(manifest)
        KeyStore(keys, [env.data_dir / "audit-kafka.db"]).initialise()  # the recorded ones
