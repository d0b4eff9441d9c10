"""What a long-running backend process needs from the application core.

The Kafka runner, its partition workers, its ingress producer and its authorizer-denial
auditor run the core's use cases but must not import the application (broker/app/): the
layers run downwards only. They depend on this Protocol instead; `broker.app.service.Broker`
satisfies it.

`PipelineRunner` is the other direction: the capability of a backend whose pipeline runs
apart from ingest (Kafka's `serve`), which the application runs until idle to settle what it
published (`Broker.ingest_settled`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol, TypeVar

from broker.audit.entries import Draft
from broker.config import Settings
from broker.crypto.keystore import DataKeyStore, DestroyedKey
from broker.metrics import BrokerMetrics
from broker.model.schemas import SchemaRegistry
from broker.pipeline.decide import Decider
from broker.pipeline.port import EventLog, IngressPublisher, QuarantineNote
from broker.pipeline.triage import Triage
from broker.policy.control import ControlState
from broker.policy.covenant import Covenant
from broker.policy.decision import DecisionContext

T = TypeVar("T")


class AssembledBackend(Protocol):
    """The assembled backend as a backend's own modules see it (broker/app/assembly.py)."""

    @property
    def ingress(self) -> IngressPublisher | None: ...

    def capability(self, kind: type[T]) -> T | None: ...


class PipelineCore(Protocol):
    @property
    def backend(self) -> AssembledBackend: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def covenant(self) -> Covenant: ...

    @property
    def registry(self) -> SchemaRegistry: ...

    @property
    def log(self) -> EventLog: ...  # the audit appender too (append_audit)

    @property
    def data_keys(self) -> DataKeyStore: ...

    @property
    def metrics(self) -> BrokerMetrics: ...

    @property
    def logger(self) -> Any: ...  # a bound structlog logger

    @property
    def triage(self) -> Triage: ...  # raw input to stored-or-quarantined; flush_keys()

    def resolve_type(self, source: str, event_type: str) -> str: ...

    def context(self, now: datetime, control: ControlState | None = None
                ) -> DecisionContext: ...

    def decider_at(self, ctx: DecisionContext, version: int | None = None) -> Decider: ...

    def sweep_expiries(self, now: datetime) -> int: ...

    def destroy_expired_keys(self, now: datetime) -> list[DestroyedKey]: ...

    def observe_checkpoint(self) -> None: ...

    def process_entry(self, name: str, now: datetime, trace_id: str | None = None
                      ) -> Draft: ...  # a broker_start / broker_stop draft

class RunReport(Protocol):
    """What one run of a backend's pipeline settled (the Kafka runner's ServeReport)."""

    @property
    def consumed(self) -> int: ...  # input records read, forwarded copies included

    @property
    def stored(self) -> int: ...

    @property
    def quarantine_notes(self) -> list[QuarantineNote]: ...

    @property
    def dropped_fields(self) -> list[tuple[str, list[str]]]: ...  # (position, fields)

    @property
    def released(self) -> int: ...

    @property
    def withheld(self) -> int: ...

    @property
    def tombstones(self) -> int: ...

    @property
    def revised(self) -> int: ...  # corrections and withdrawals accepted

    @property
    def retractions(self) -> int: ...  # tombstones with cause rectified or withdrawn


class PipelineRunner(Protocol):
    """A backend's pipeline run in this process until nothing published is left undecided:
    stored or quarantined, decided, egress and audit written and visible, the expiry sweep
    done."""

    def run_until_idle(self, core: PipelineCore, now: datetime) -> RunReport: ...
