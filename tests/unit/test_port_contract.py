"""The port contract (tests/port_contract.py) on the embedded backend, and the rule that
each backend implements every method of each capability it declares, raising nothing of
the "not supported" kind."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest

from broker.app import assembly
from broker.app.service import Broker
from broker.backends.embedded.event_log import SqliteEventLog
from broker.backends.kafka.event_log import KafkaEventLog
from broker.pipeline import port as port_module
from tests import factories as f
from tests.port_contract import NOW, PortContract, PortUnderTest, source_and_type

CAPABILITIES = {value for value in vars(port_module).values()
                if inspect.isclass(value) and getattr(value, "_is_protocol", False)}
OPTIONAL = {port_module.StoreWriter, port_module.DecisionSink, port_module.AuditChain,
            port_module.IngressPublisher, port_module.IngressPurge,
            port_module.PartitionChains}
BACKENDS = {"embedded": SqliteEventLog, "kafka": KafkaEventLog}


class TestEmbeddedPort(PortContract):
    @pytest.fixture
    def port(self, make_broker: Callable[..., Broker]) -> PortUnderTest:
        broker = make_broker()

        def release(events: list[dict[str, Any]]) -> None:
            by_type: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for event in events:
                by_type.setdefault(source_and_type(event), []).append(event)
            for (source, kind), batch in by_type.items():
                broker.ingest(source, kind, f.lines(*batch), NOW)

        return PortUnderTest(broker, release)


def _declared(cls: type) -> set[type]:
    return {base for base in cls.__mro__ if base in CAPABILITIES}


def _members(capability: type) -> set[str]:
    return {name for name, value in vars(capability).items()
            if callable(value) and not name.startswith("_")}


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_each_backend_implements_every_method_it_declares(name: str) -> None:
    cls = BACKENDS[name]
    declared = _declared(cls)
    # every backend has the core; the optional capabilities it declares are the ones its
    # factory hands out (so a command may refuse a backend without building it)
    core = _declared(port_module.EventLog) | {port_module.EventLog}
    assert core - {port_module.EventLog} <= declared, f"{name} lacks core capabilities"
    assert declared & OPTIONAL == set(assembly.FACTORIES[name].optional)
    for capability in declared:
        for method in _members(capability):
            impl = getattr(cls, method)
            assert impl is not getattr(capability, method), (
                f"{name}: {capability.__name__}.{method} is declared but not implemented")
            source = inspect.getsource(impl)
            assert not re.search(r"NotImplementedError|not supported|SERVE_DECIDES", source), (
                f"{name}: {cls.__name__}.{method} refuses")


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_no_backend_keeps_a_refusing_method(name: str) -> None:
    # the methods Kafka used to refuse (append_ingest, duplicate_ids, position,
    # commit_decisions, audit_rows) exist only on a backend that declares their capability
    cls = BACKENDS[name]
    declared = _declared(cls)
    for capability in OPTIONAL - declared:
        for method in _members(capability):
            assert not hasattr(cls, method), (
                f"{name} has {method} but does not declare {capability.__name__}")


def test_the_assembled_embedded_backend_hands_out_its_capabilities(
        make_broker: Callable[..., Broker]) -> None:
    backend = make_broker().backend
    # one SQLite event log behind every embedded capability
    assert {id(backend.writer), id(backend.decisions), id(backend.chain)} == {id(backend.log)}
    assert (backend.ingress, backend.purge, backend.partition_chains,
            backend.integrated) == (None, None, None, None)
    assert backend.audit_is_live
    assert backend.capability(SqliteEventLog) is backend.log
    assert backend.capability(KafkaEventLog) is None
    assert assembly.declares("kafka", port_module.IngressPublisher)
    assert not assembly.declares("embedded", port_module.IngressPublisher)


def test_an_unknown_backend_name_is_refused_naming_the_known_ones() -> None:
    from broker.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown backend 'nats'; known: embedded, kafka"):
        assembly.factory("nats")
