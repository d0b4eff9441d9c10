"""Integration-test fixtures: a real Apache Kafka 4.x broker.

`kafka_bootstrap` uses KAFKA_BOOTSTRAP_SERVERS when set (e.g. a broker from the official
`apache/kafka` Docker image in CI); otherwise it starts a single-node KRaft Kafka from its
Maven jars via deploy/kafka/launcher.py for the whole session. A missing `java` or `mvn`
fails the session loudly: integration tests are never skipped silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.kafka_launcher import load_launcher

HERE = Path(__file__).resolve().parent


def _load_launcher() -> ModuleType:
    try:
        return load_launcher()
    except ImportError as exc:
        pytest.fail(str(exc), pytrace=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item of the session, so only mark the ones in this folder.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers ("host:port") of a running Kafka broker."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    launcher = _load_launcher()
    node = launcher.KafkaNode()
    try:
        node.start()
    except launcher.MissingToolError as exc:
        pytest.fail(
            f"integration tests need a Kafka broker and cannot start one: {exc}",
            pytrace=False,
        )
    except launcher.KafkaLauncherError as exc:
        pytest.fail(f"could not start Kafka for the integration tests: {exc}", pytrace=False)
    try:
        yield node.bootstrap_servers
    finally:
        node.stop()
