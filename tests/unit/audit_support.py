"""Shared by the audit tests: a real log built through the pipeline, and tampering tools."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.app.service import Broker
from broker.audit.checkpoint import CheckpointSigner
from broker.audit.service import AuditLog
from broker.audit.sqlite_store import AUDIT_TABLES
from broker.audit.verify import AuditReport
from broker.clock import parse_instant
from broker.config import Settings, load_settings
from tests import factories as f

NOW = parse_instant("2026-05-10T12:00:00Z")
VICTIMS = ["100000001", "100000002", "100000003"]
BANNED = "200000001"
RETURNEE = "300000001"
STRANGER = "999999990"
EVERY = 8  # checkpoint every 8 entries, so a small log has several


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    return load_settings(overrides={"data_dir": data_dir,
                                    "audit_checkpoint_every_entries": EVERY, **overrides},
                         environ={})


def build_log(data_dir: Path) -> None:
    """Decisions of every kind, a quarantine, a theme switch, accesses and tombstones."""
    broker = Broker(settings_for(data_dir))
    try:
        burglaries = [f.woninginbraak(victim={"bsn": bsn, "name": f"Slachtoffer {i}"},
                                      suspect=None, address={"wijk": wijk})
                      for i, (bsn, wijk) in enumerate(zip(VICTIMS, ["noord", "oost", "zuid"],
                                                          strict=True))]
        broker.ingest("politie", "politie.woninginbraak", f.lines(*burglaries, "not json"), NOW)
        broker.switch_theme("woninginbraak", True, NOW)
        broker.ingest("om", "om.gebiedsverbod",
                      f.lines(f.gebiedsverbod(person={"bsn": BANNED},
                                              valid_until="2026-05-20")), NOW)
        broker.ingest("om", "om.detentie_uitstroom",
                      f.lines(f.detentie_uitstroom(person={"bsn": RETURNEE})), NOW)
        broker.ingest("gemeente", "gemeente.boa_waarneming", f.lines(f.boa_waarneming()), NOW)
        broker.consume("boa-hor-noord", None, 0, NOW)
        broker.consume("preventie", "slachtoffer-preventieadvies", 0, NOW)
        later = NOW + timedelta(days=12)  # the area ban has ended: tombstones
        broker.consume("boa-hor-oost", None, 0, later)
        broker.consume("casusregisseur-dt", None, 0, later)
    finally:
        broker.close()


def copy_log(template: Path, target: Path) -> Path:
    shutil.copytree(template, target)
    return target


@contextmanager
def open_broker(data_dir: Path, **overrides: Any) -> Iterator[Broker]:
    broker = Broker(settings_for(data_dir, **overrides))
    try:
        yield broker
    finally:
        broker.close()


def audit_of(broker: Broker) -> AuditLog:
    assert broker.audit is not None
    return broker.audit


def verify(data_dir: Path, **kwargs: Any) -> AuditReport:
    with open_broker(data_dir) as broker:
        return audit_of(broker).verify(**kwargs)


@contextmanager
def tampering(data_dir: Path) -> Iterator[sqlite3.Connection]:
    """A connection as an operator with database access has it: triggers dropped."""
    db = sqlite3.connect(data_dir / "broker.db", isolation_level=None)
    for table in ("audit", *AUDIT_TABLES):
        for action in ("update", "delete"):
            db.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
    try:
        yield db
    finally:
        db.close()


def entries(db: sqlite3.Connection) -> list[tuple[int, bytes]]:
    return [(int(r[0]), bytes(r[1])) for r in db.execute("SELECT seq, entry FROM audit "
                                                         "ORDER BY seq")]


def checkpoint_sizes(db: sqlite3.Connection) -> list[int]:
    return [int(r[0]) for r in db.execute("SELECT size FROM audit_checkpoint ORDER BY size")]


def other_signer(name: str) -> CheckpointSigner:
    return CheckpointSigner(Ed25519PrivateKey.generate(), name)
