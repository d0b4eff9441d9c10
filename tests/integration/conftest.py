"""Integration-test fixtures: a real Apache Kafka 4.x broker.

`kafka_bootstrap` uses KAFKA_BOOTSTRAP_SERVERS when set (e.g. a broker from the official
`apache/kafka` Docker image in CI); otherwise it starts a single-node KRaft Kafka from its
Maven jars via deploy/kafka/launcher.py for the whole session. A missing `java` or `mvn`
fails the session loudly: integration tests are never skipped silently.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LAUNCHER_PATH = REPO / "deploy" / "kafka" / "launcher.py"


def _load_launcher() -> ModuleType:
    name = "covenant_kafka_launcher"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, LAUNCHER_PATH)
    if spec is None or spec.loader is None:
        pytest.fail(f"cannot load the Kafka launcher from {LAUNCHER_PATH}", pytrace=False)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


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
