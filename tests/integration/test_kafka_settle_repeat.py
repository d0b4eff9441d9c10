"""Settling ingests back to back on one deployment, as the covenant and correction
scenarios run them on Kafka: each publishes, then runs `serve --until-idle` as a new member
of the group, which must take the ingress partitions at its first join and consume its own
input (Broker.ingest_settled raises when the run consumed less than it published)."""

from __future__ import annotations

import logging

import pytest

from broker.app.service import Broker
from broker.clock import parse_instant
from tests import factories as f

NOW = parse_instant("2026-05-10T12:00:00Z")
RUNS = 8
EMPTY_ASSIGNMENT = "Setting newly assigned partitions set()"  # kafka-python, at INFO


def test_back_to_back_settling_ingests_each_take_the_partitions_and_their_input(
        kafka_broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    """Before the fix every run after the first joined before its consumer's metadata
    knew the ingress topics, assigned itself nothing and waited for a second rebalance;
    when that came late the run ended idle with nothing consumed."""
    caplog.set_level(logging.INFO, logger="kafka.coordinator.consumer")
    for run in range(RUNS):
        caplog.clear()
        report = kafka_broker.ingest_settled("politie", "politie.woninginbraak",
                                             f.numbered(f.woninginbraak()), NOW)
        assert report.accepted == 1, f"run {run}: {report}"
        empty = [r for r in caplog.records if r.getMessage().startswith(EMPTY_ASSIGNMENT)]
        assert not empty, f"run {run}: the member's first generation assigned it nothing"
