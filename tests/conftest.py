"""Shared fixtures: a broker on the embedded backend in a fresh data directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.app.service import Broker
from broker.config import load_settings


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    opened: list[Broker] = []

    def make(**overrides: object) -> Broker:
        settings = load_settings(overrides={"data_dir": tmp_path / "data", **overrides},
                                 environ={})
        broker = Broker(settings)
        opened.append(broker)
        return broker

    yield make
    for broker in opened:
        broker.close()


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    return make_broker()
