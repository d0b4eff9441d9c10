"""The port contract (tests/port_contract.py) on the Kafka backend: a real Kafka, one
isolated deployment per test; `release` publishes to ingress and runs `serve` until idle."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.backends.kafka.runner import serve
from tests.integration.kafka_support import kafka_env
from tests.port_contract import NOW, PortContract, PortUnderTest, source_and_type


class TestKafkaPort(PortContract):
    @pytest.fixture
    def port(self, kafka_bootstrap: str, tmp_path: Path) -> Iterator[PortUnderTest]:
        with kafka_env(kafka_bootstrap, tmp_path, partitions=2) as env:
            broker = env.broker()

            def release(events: list[dict[str, Any]]) -> None:
                ingress = broker.backend.ingress
                assert ingress is not None
                for number, event in enumerate(events, 1):
                    source, event_type = source_and_type(event)
                    ingress.publish(source, event_type,
                                    [(number, json.dumps(event).encode())])
                report = serve(broker, now=NOW, until_idle=True)
                assert report.consumed == len(events), report  # serve stopped early

            try:
                yield PortUnderTest(broker, release)
            finally:
                broker.close()
