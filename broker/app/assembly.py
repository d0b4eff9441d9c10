"""Assembly: a backend built by name, handed to the application as its capabilities.

One factory per backend (the way eventsourcing's `InfrastructureFactory.construct` picks a
persistence module by name). The embedded factory is the default and needs no Kafka; the
Kafka factory imports broker.backends.kafka only when chosen. Everything else asks the
assembled `Backend` for a capability (`backend.ingress is None`: this backend decides
synchronously) instead of asking which backend it is; this module is the one place that
knows the backend classes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TypeVar

from broker.audit.service import AuditLog, AuditSetup
from broker.audit.sqlite_integrated import IntegratedAuditDb
from broker.backends.embedded.event_log import SqliteEventLog
from broker.backends.embedded.writer_lock import WriterLock
from broker.config import Settings
from broker.crypto.kek import FileKek
from broker.crypto.keystore import DataKeyStore, SqliteKeyStore
from broker.errors import ConfigError
from broker.keys import KeyStore
from broker.model.schemas import SchemaRegistry
from broker.pipeline.core import PipelineRunner
from broker.pipeline.port import (
    AuditChain,
    DecisionSink,
    EventLog,
    IngressPublisher,
    IngressPurge,
    PartitionChains,
    RevisionLog,
    RevisionReader,
    StoreWriter,
)
from broker.policy.plan import PlanSet

T = TypeVar("T")


@dataclass
class Backend:
    """An assembled backend: the event log's capabilities, its key store and audit log.

    `log` is what every backend implements (broker.pipeline.port.EventLog); the optional
    capabilities are None where the backend does not have them.
    """

    name: str
    log: EventLog
    data_keys: DataKeyStore
    audit: AuditLog  # the verifiable audit log's reading side
    writer: StoreWriter | None = None  # ingest stores synchronously (embedded)
    decisions: DecisionSink | None = None  # decide runs in the caller, exactly once
    chain: AuditChain | None = None  # one audit hash chain
    partition_chains: PartitionChains | None = None  # one audit chain per partition (Kafka)
    ingress: IngressPublisher | None = None  # ingest publishes; `serve` decides (Kafka)
    purge: IngressPurge | None = None  # raw input kept until purged (Kafka)
    integrated: IntegratedAuditDb | None = None  # the chains sequenced by `audit integrate`
    runner: PipelineRunner | None = None  # `serve` run here until idle (Kafka)
    # Whether releases carry a sealed copy for the backend to hold at rest (the embedded
    # egress table). Kafka egress is the view itself, ended by tombstones and compaction.
    seal_egress: bool = True
    revisions: RevisionLog | None = None  # corrections and withdrawals, applied in the caller
    # the stored corrections and withdrawals, read (Kafka: written by `serve`)
    revision_reader: RevisionReader | None = None
    # A pipeline step (ingest, decide, sweep, erasure) runs inside this: the embedded data
    # directory's one-writer lock across processes (broker/backends/embedded/writer_lock.py);
    # nothing on Kafka, whose transactional producer fences a second decider.
    exclusive: Callable[[], AbstractContextManager[None]] = nullcontext

    @property
    def audit_is_live(self) -> bool:
        """Whether `audit` reads the log as written (embedded), not an integration of it
        that is only as recent as the last `audit integrate` (Kafka)."""
        return self.integrated is None

    def capability(self, kind: type[T]) -> T | None:
        """The part of this backend that is a `kind`, for a backend's own modules that need
        their concrete parts (serve needs the Kafka clients and topic layout)."""
        for part in (self.log, self.data_keys, self.integrated, self.runner):
            if isinstance(part, kind):
                return part
        return None

    def close(self) -> None:
        try:
            self.log.close()
        finally:
            try:
                self.data_keys.close()
            finally:
                if self.integrated is not None:
                    self.integrated.close()


@dataclass(frozen=True)
class Parts:
    """What a factory builds a backend from."""

    settings: Settings
    registry: SchemaRegistry
    plans: PlanSet
    keys: KeyStore
    audit: AuditSetup


def embedded(parts: Parts) -> Backend:
    """One SQLite database for the event log and audit log, one for the data keys."""
    log = SqliteEventLog(parts.settings.data_dir / "broker.db",
                         parts.registry.get("records.audit_entry"), parts.audit.sequencer)
    try:
        keys = SqliteKeyStore(parts.settings.data_dir / "keystore.db", FileKek(parts.keys),
                              parts.settings.data_key_cache)
    except BaseException:
        log.close()
        raise
    return Backend("embedded", log, keys, parts.audit.audit_log(log.audit), writer=log,
                   decisions=log, chain=log, revisions=log,
                   revision_reader=log,
                   # the keys cached here are checked again when the pipeline is taken:
                   # the step before may have been another process's erasure
                   exclusive=WriterLock(parts.settings.data_dir,
                                        on_acquire=keys.revalidate).hold)


def kafka(parts: Parts) -> Backend:
    """The Kafka topics, the compacted key topic, and the integrated audit log file."""
    # imported only when chosen: the embedded default needs no kafka-python
    from broker.backends.kafka.egress import LINK_KEY  # noqa: PLC0415 - Kafka only
    from broker.backends.kafka.event_log import KafkaEventLog  # noqa: PLC0415 - Kafka only
    from broker.backends.kafka.keys import KafkaKeyStore  # noqa: PLC0415 - Kafka only
    from broker.backends.kafka.runner import UntilIdle  # noqa: PLC0415 - Kafka only

    log = KafkaEventLog(parts.settings.kafka, parts.registry, parts.plans,
                        parts.keys.secret(LINK_KEY))
    try:  # the compacted key topic, shared by every process of the deployment
        keys = KafkaKeyStore(log.clients, log.layout.names.keys,
                             parts.registry.get("records.data_key"), FileKek(parts.keys),
                             parts.settings.data_key_cache)
    except BaseException:
        log.close()
        raise
    try:
        # The audit chains sequenced into one verifiable log (broker/backends/kafka/
        # audit_integrator.py): prove, query and subject-report read it.
        integrated = IntegratedAuditDb(parts.settings.data_dir, parts.audit.sequencer)
    except BaseException:
        keys.close()
        log.close()
        raise
    return Backend("kafka", log, keys, parts.audit.audit_log(integrated.audit),
                   partition_chains=log, ingress=log, purge=log, integrated=integrated,
                   runner=UntilIdle(), seal_egress=False, revision_reader=log)


@dataclass(frozen=True)
class BackendFactory:
    build: Callable[[Parts], Backend]
    # The optional capabilities the built backend has, known before building it, so a
    # command can refuse a backend without connecting to it (tests/unit/test_port_contract.py
    # holds this to the event log class's bases).
    optional: frozenset[type]


FACTORIES: dict[str, BackendFactory] = {
    "embedded": BackendFactory(embedded, frozenset({StoreWriter, DecisionSink, AuditChain})),
    "kafka": BackendFactory(kafka, frozenset({IngressPublisher, IngressPurge,
                                              PartitionChains})),
}


def factory(name: str) -> BackendFactory:
    try:
        return FACTORIES[name]
    except KeyError:
        raise ConfigError(f"backend: unknown backend {name!r}; known: "
                          f"{', '.join(FACTORIES)}") from None


def declares(name: str, capability: type) -> bool:
    """Whether the backend of this name has an optional capability (without building it)."""
    return capability in factory(name).optional


def assemble(parts: Parts) -> Backend:
    return factory(parts.settings.backend).build(parts)
