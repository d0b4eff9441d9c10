"""`audit integrate`: the Kafka audit chains sequenced into the verifiable audit log.

Each pass reads every audit partition read_committed from the record that holds the
entry after its last integrated one (a batch record holds a transaction's entries, so a
pass that stopped between rounds resumes inside one and skips what it integrated),
unpacks the batches and verifies their entries
(broker/backends/kafka/audit_batch.py, `broker.audit.chain.verify_chain`) as the
continuation of the chain from the stored position (seq and prev_hash from the stored
head, so a topic rewritten after integration is caught where it continues), and appends
those entries to
the integrated log in the data directory (broker.audit.sqlite_integrated): round-robin
by batch over the partitions, one SQLite transaction per round with the positions it
reaches. The embedded backend's sequencer seals them, so the Merkle tree, checkpoints
every N entries / T seconds and the query and subject indexes are the same code. A pass
ends with a signed checkpoint of the whole tree; `--follow` signs when one is due and at
shutdown. A broken chain stops the pass before anything is appended.

A pass costs what is new; `check_integrated` (`audit verify`) reads every partition from
its first entry and checks the whole integrated log against it.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from kafka import TopicPartition

from broker.audit.integrate import (
    ChainPosition,
    ChainRead,
    IntegrationCheck,
    SourceCheck,
    pending_chain,
    rounds,
)
from broker.audit.sequencer import AuditSequencer
from broker.audit.sqlite_integrated import IntegratedAuditDb
from broker.backends.kafka.audit_batch import read_partition
from broker.backends.kafka.event_log import KafkaEventLog
from broker.backends.kafka.io import read_with_ends
from broker.errors import TransientBackendError
from broker.logs import get_logger
from broker.model.schemas import Schema

DEFAULT_BATCH = 500

Chains = dict[int, ChainRead]


@dataclass
class IntegrationReport:
    passes: int = 0
    integrated: int = 0  # entries appended by this run
    size: int = 0  # entries in the integrated log afterwards
    checkpoint: int | None = None  # size of the latest signed checkpoint afterwards
    partitions: dict[int, int] = field(default_factory=dict)  # entries integrated, per chain


def read_chains(log: KafkaEventLog, positions: dict[int, ChainPosition] | None = None
                ) -> Chains:
    """The committed entries of every audit partition, each chain verified: all of them,
    or (with `positions`) those after each stored position, verified as the continuation
    of its chain, so a pass reads and holds only what is new."""
    tps = [TopicPartition(log.layout.names.audit, p) for p in range(log.cfg.audit_partitions)]
    start = {p: ChainPosition(p, 0) for p in range(len(tps))} if positions is None \
        else positions
    records, ends = read_with_ends(log.reader, {tp: start[tp.partition].next_offset
                                                for tp in tps})
    return {tp.partition: chain_read(log.audit_schema, start[tp.partition], records[tp],
                                     ends[tp]) for tp in tps}


def chain_read(schema: Schema, pos: ChainPosition, records: list[Any], end: int) -> ChainRead:
    """One partition's batch records read from `pos.next_offset` to `end`, unpacked and
    verified as the continuation of the chain at `pos`. The first record may hold entries
    `pos` already counts (a pass that stopped between rounds stored a position inside it):
    they are skipped."""
    read = read_partition(schema, records, count=pos.entries, head=pos.head,
                          resume=pos.entries > 0)
    return ChainRead(pos.entries, read.data, read.offsets, end, read.report)


def integrate(store: IntegratedAuditDb, schema: Schema, chains: Chains,
              batch: int = DEFAULT_BATCH) -> tuple[int, dict[int, ChainPosition]]:
    """Append what the verified chains hold after the stored positions, round-robin by
    batch, one transaction a round. Returns (entries appended, positions reached)."""
    positions = store.positions(len(chains))
    pending = [pending_chain(schema, positions[p], read) for p, read in sorted(chains.items())]
    appended = 0
    for taken in rounds(pending, batch):
        appended += store.append([(chain.drafts(lo, hi), chain.position_after(hi))
                                  for chain, lo, hi in taken])
    return appended, {chain.start.partition: chain.position_after(len(chain.records))
                      for chain in pending}


class KafkaAuditIntegrator:
    """The only writer of a data directory's integrated log (it holds the writer lock)."""

    def __init__(self, log: KafkaEventLog, store: IntegratedAuditDb,
                 batch: int = DEFAULT_BATCH) -> None:
        self.log = log
        self.store = store
        self.batch = batch
        self.sequencer: AuditSequencer = store.audit.sequencer
        self.report = IntegrationReport()
        self.stopping = False
        self.logger = get_logger(component="audit-integrator")

    def run_once(self, *, closing: bool = True) -> int:
        """One pass; returns the number of entries appended. `closing`: sign the tree as it
        stands at the end (else only when a checkpoint is due)."""
        stored = self.store.positions(self.log.cfg.audit_partitions)
        appended, positions = integrate(self.store, self.log.audit_schema,
                                        read_chains(self.log, stored), self.batch)
        self.report.passes += 1
        self.report.integrated += appended
        self.report.partitions = {p: pos.entries for p, pos in positions.items()}
        self._sign(closing=closing)
        self.report.size = self.store.audit.audit_size()
        if appended:
            self.logger.info("audit entries integrated", entries=appended,
                             size=self.report.size)
        return appended

    def _sign(self, *, closing: bool) -> None:
        audit = self.store.audit
        latest = audit.latest_checkpoint()
        size = audit.audit_size()
        if self.sequencer.checkpoint_due(size, latest.size if latest else 0,
                                         latest.signed_ms if latest else None,
                                         closing=closing) and \
                audit.checkpoint(only_if_appended=False):
            self.logger.info("audit checkpoint signed", size=size)
            latest = audit.latest_checkpoint()
        self.report.checkpoint = latest.size if latest else None

    def follow(self, interval_s: float) -> IntegrationReport:
        """Pass after pass until SIGTERM/SIGINT; then sign what is unsigned and return."""
        previous = ({sig: signal.signal(sig, self._on_signal)
                     for sig in (signal.SIGTERM, signal.SIGINT)}
                    if threading.current_thread() is threading.main_thread() else {})
        failures = 0
        try:
            while not self.stopping:
                try:
                    self.run_once(closing=False)
                    failures = 0
                except TransientBackendError as exc:  # ride out broker restarts
                    failures += 1
                    self.logger.warning("retrying after a transient failure", error=str(exc))
                    self._sleep(min(60.0, interval_s * 2 ** failures))
                    continue
                self._sleep(interval_s)
            self._sign(closing=True)
            self.report.size = self.store.audit.audit_size()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.report

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, seconds))

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True  # the pass in hand finishes (its rounds are committed)



def check_integrated(log: KafkaEventLog, store: IntegratedAuditDb) -> IntegrationCheck:
    """Every integrated entry is a Kafka chain entry, each once and in chain order, and the
    stored positions agree; what Kafka holds beyond them is pending.

    One SQLite snapshot, taken before Kafka is read: an integrator running meanwhile
    appends only entries that this check does not see.
    """
    with store.snapshot():
        positions = store.positions(log.cfg.audit_partitions)
        chains = read_chains(log)
        reports = {p: read.report for p, read in chains.items()}
        check = SourceCheck(log.audit_schema, {p: read.data for p, read in chains.items()})
        problem = next((f"audit partition {p}: {r.problem}" for p, r in reports.items()
                        if not r.ok), None)
        for seq, data in store.audit.audit_entries():
            found = check.check(seq, data)
            if found is not None:
                return IntegrationCheck(reports, check.integrated,
                                        problem or f"integrated log {found}")
    wrong = [p for p, pos in positions.items() if pos.entries != check.integrated[p]]
    if wrong and problem is None:
        p = wrong[0]
        problem = (f"integrated log: the stored position of partition {p} says "
                   f"{positions[p].entries} entries, the log holds {check.integrated[p]}")
    return IntegrationCheck(reports, check.integrated, problem)
