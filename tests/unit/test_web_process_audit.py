"""Issue 15 item 11: `web` writes one broker_start and one broker_stop entry."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from broker.app.service import Broker
from broker.audit.store import QueryFilter
from broker.config import load_settings
from broker.web.app import WebOptions, create_app
from tests.unit.web_support import NOW, Clock, seed


def test_web_start_and_stop_write_one_entry_each(tmp_path: Path) -> None:
    settings = load_settings(overrides={"data_dir": tmp_path / "data"}, environ={})
    app = create_app(settings, WebOptions(clock=Clock(NOW), poll_seconds=0.02))
    app.state.worker.run(lambda b: seed(b, NOW))
    with TestClient(app) as client:
        assert client.get("/console/login").status_code == 200
    broker = Broker(settings)
    try:
        assert broker.audit is not None
        found = {name: list(broker.audit.query(QueryFilter(name=name)))
                 for name in ("broker_start", "broker_stop")}
        assert [len(found["broker_start"]), len(found["broker_stop"])] == [1, 1]
        start, stop = found["broker_start"][0], found["broker_stop"][0]
        assert start["seq"] < stop["seq"]
        for entry in (start, stop):
            assert set(entry["detail"]) == {"broker_version", "covenant_hash", "config_hash"}
            assert entry["detail"]["covenant_hash"] == broker.plans.policy_hash
        assert broker.audit.verify().ok
    finally:
        broker.close()
