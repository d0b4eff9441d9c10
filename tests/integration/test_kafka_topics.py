"""Topics are created and checked at start; kafka-python errors become broker errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka import errors as kerr
from kafka.admin import ConfigResource, ConfigResourceType

from broker.backends.kafka.errors import (
    GroupMovedError,
    WriterFencedError,
    kafka_errors,
    retrying,
    translate,
)
from broker.backends.kafka.io import Clients
from broker.config.kafka import KafkaConfig
from broker.errors import ConfigError, StorageError, TransientBackendError
from tests.integration.kafka_support import KafkaEnv, kafka_env, run_cli


def _describe(bootstrap: str, names: list[str]) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        partitions = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
        keys = {"retention.ms": None, "retention.bytes": None, "cleanup.policy": None}
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n, dict(keys)) for n in names],
            config_filter="all")["topic"]
    finally:
        admin.close()
    return partitions, {n: {k: v["value"] for k, v in c.items()} for n, c in configs.items()}


def test_topics_are_created_with_the_documented_layout(kafka_bootstrap: str,
                                                       tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path, partitions=2) as env:
        env.broker().close()  # opening the Kafka backend creates and checks the topics
        p = f"{env.name}."
        names = [f"{p}ingress.politie.woninginbraak", f"{p}store", f"{p}audit",
                 f"{p}egress.boa-hor-noord.surveillance-woninginbraak", f"{p}quarantine",
                 f"{p}control", f"{p}expiry", f"{p}keys", f"{p}revisions"]
        partitions, configs = _describe(kafka_bootstrap, names)
        env.broker().close()  # and a second start accepts them as they are

    assert partitions == {names[0]: 2, names[1]: 2, names[2]: 3, names[3]: 1, names[4]: 2,
                          names[5]: 1, names[6]: 1, names[7]: 1, names[8]: 2}
    for immutable in (names[1], names[2], names[4], names[5], names[8]):
        assert configs[immutable] == {"retention.ms": "-1", "retention.bytes": "-1",
                                      "cleanup.policy": "delete"}, immutable
    # egress: compacted by ref (tombstones remove what they end), deleted after the
    # purpose's retention (surveillance-woninginbraak: 28 days)
    assert configs[names[3]] == {"retention.ms": str(28 * 86_400_000), "retention.bytes": "-1",
                                 "cleanup.policy": "compact,delete"}
    assert configs[names[6]]["cleanup.policy"] == "compact"
    assert configs[names[7]]["cleanup.policy"] == "compact"  # data keys: tombstones shred


def test_a_partition_count_that_does_not_match_the_config_is_refused(
        kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with kafka_env(kafka_bootstrap, tmp_path / "a", partitions=2) as env:
        env.broker().close()
        wrong = KafkaEnv(kafka_bootstrap, tmp_path / "b", partitions=3, name=env.name)
        with pytest.raises(ConfigError) as refused:
            wrong.broker()
        code, _ = run_cli([*wrong.args(), "consume", "--recipient", "preventie"])

    message = str(refused.value)
    assert f"topic {env.name}.store (store) has 2 partitions, the config needs 3" in message
    assert "kafka.partitions" in message
    assert code == 2
    assert "do not match the configuration" in capsys.readouterr().err


def test_serve_needs_the_kafka_backend(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run_cli(["--data-dir", str(tmp_path), "serve", "--until-idle"])
    assert code == 2
    assert "--backend kafka" in capsys.readouterr().err


def test_an_unreachable_broker_is_a_clear_retriable_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = KafkaConfig(bootstrap_servers="127.0.0.1:1", request_timeout_ms=500)
    with pytest.raises(TransientBackendError, match="no Kafka broker reachable"):
        Clients(cfg).admin()

    monkeypatch.setenv("COVENANT_BROKER_KAFKA__RETRIES", "2")
    monkeypatch.setenv("COVENANT_BROKER_KAFKA__REQUEST_TIMEOUT_MS", "500")
    code, _ = run_cli(["--data-dir", str(tmp_path), "--backend", "kafka",
                       "--bootstrap-servers", "127.0.0.1:1", "consume",
                       "--recipient", "preventie"])
    assert code == 2
    assert "no Kafka broker reachable" in capsys.readouterr().err


@pytest.mark.parametrize(("raised", "expected", "retriable"), [
    (kerr.ProducerFencedError(), WriterFencedError, True),
    (kerr.InvalidProducerEpochError(), WriterFencedError, True),
    (kerr.IllegalGenerationError(), GroupMovedError, True),
    (kerr.CommitFailedError(), GroupMovedError, True),
    (kerr.KafkaTimeoutError("request timed out"), TransientBackendError, True),
    (kerr.NotLeaderForPartitionError(), TransientBackendError, True),
    (kerr.TopicAuthorizationFailedError(), StorageError, False),
    (kerr.UnknownError(), StorageError, False),
])
def test_kafka_errors_are_translated_at_the_edge(raised: Exception, expected: type,
                                                 retriable: bool) -> None:
    translated = translate(raised, "doing something")
    assert type(translated) is expected
    assert translated.retriable is retriable
    assert str(translated).startswith("doing something: ")
    with pytest.raises(expected), kafka_errors("doing something"):
        raise raised


def test_retrying_retries_only_what_may_pass() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientBackendError("not yet")
        return "done"

    assert retrying(flaky, attempts=3, backoff_ms=1) == "done"
    assert len(calls) == 3

    def fatal() -> None:
        calls.append(1)
        raise StorageError("no")

    calls.clear()
    with pytest.raises(StorageError):
        retrying(fatal, attempts=5, backoff_ms=1)
    assert len(calls) == 1
