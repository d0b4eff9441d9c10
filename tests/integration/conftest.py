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

from broker.app.service import Broker
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


# The session node deletes log segments within seconds, not minutes, so the erasure test
# (test_kafka_erasure.py) can show purged input leave the log directory: a retention check
# every second from 1 s after start (not 30 s), and files removed 1 s after deletion.
# Production keeps Kafka's defaults (5 minutes, 1 minute): deploy/kafka/README.md gives
# the window.
NODE_OVERRIDES = {"log.retention.check.interval.ms": "1000",
                  "log.initial.task.delay.ms": "1000",
                  "log.segment.delete.delay.ms": "1000",
                  # the log cleaner looks for compactable egress logs every second, not 15 s
                  "log.cleaner.backoff.ms": "1000"}


@pytest.fixture(scope="session")
def kafka_node(kafka_bootstrap: str) -> object | None:
    """The launcher's node of this session (its ``workdir`` holds Kafka's log directory),
    or None when KAFKA_BOOTSTRAP_SERVERS points at a broker started elsewhere."""
    return _NODES.get(kafka_bootstrap)


_NODES: dict[str, object] = {}


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers ("host:port") of a running Kafka broker."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    launcher = _load_launcher()
    node = launcher.KafkaNode(overrides=NODE_OVERRIDES)
    try:
        node.start()
    except launcher.MissingToolError as exc:
        pytest.fail(
            f"integration tests need a Kafka broker and cannot start one: {exc}",
            pytrace=False,
        )
    except launcher.KafkaLauncherError as exc:
        pytest.fail(f"could not start Kafka for the integration tests: {exc}", pytrace=False)
    _NODES[node.bootstrap_servers] = node
    try:
        yield node.bootstrap_servers
    finally:
        _NODES.pop(node.bootstrap_servers, None)
        node.stop()


@pytest.fixture
def kafka_broker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Broker]:
    """A Broker on a fresh one-partition Kafka deployment (the scenario suites take it
    through their `broker` fixture; a module may define its own)."""
    from tests.integration.kafka_support import KafkaEnv

    env = KafkaEnv(kafka_bootstrap, tmp_path / "kafka", partitions=1)
    built = env.broker()
    try:
        yield built
    finally:
        built.close()
        env.cleanup()
