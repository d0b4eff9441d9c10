"""The Kafka launcher's pure helpers (no JVM needed)."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from tests.kafka_launcher import load_launcher


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xf8 encodes to base64url '-' as its first character: the storage tool would read
    # such an id as an option. The launcher must draw again, as Kafka's Uuid.randomUuid does.
    dash_first = uuid.UUID(bytes=b"\xf8" + bytes(15))
    plain = uuid.UUID(bytes=b"\x10" + bytes(15))
    assert base64.urlsafe_b64encode(dash_first.bytes).decode().startswith("-")
    draws = iter([dash_first, dash_first, plain])
    launcher = load_launcher()
    monkeypatch.setattr(launcher.uuid, "uuid4", lambda: next(draws))
    cluster_id = launcher.new_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")
    assert len(cluster_id) == 22


def test_cluster_ids_are_22_base64url_characters() -> None:
    launcher = load_launcher()
    ids = {launcher.new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert set(cluster_id) <= alphabet
        assert not cluster_id.startswith("-")


def test_property_overrides_come_last_and_bad_keys_are_refused(tmp_path: Path) -> None:
    launcher = load_launcher()
    target = tmp_path / "server.properties"
    launcher.render_properties(target, broker_port=1, controller_port=2,
                               log_dir=Path("/x"),
                               overrides={"log.retention.check.interval.ms": "1000"})
    lines = target.read_text().splitlines()
    assert lines[-1] == "log.retention.check.interval.ms=1000"  # the last value wins
    with pytest.raises(launcher.KafkaLauncherError, match="overrides"):
        launcher.render_properties(target, broker_port=1, controller_port=2,
                                   log_dir=Path("/x"), overrides={"a=b": "c"})
