"""`covenant-broker serve`: the Kafka pipeline as one member of the consumer group.

The member subscribes to every ingress topic in the group ``kafka.group_id`` (default
``covenant-broker``, read_committed). The group assigns partition indices
(broker/backends/kafka/group.py); for each index it holds, the member runs a
PartitionWorker, the only writer of that index's store, quarantine and audit partitions
(broker/backends/kafka/pipeline.py). One loop, one thread:

    poll -> open/close workers for the current assignment -> one transaction per index
         -> expiry sweep and ingress purge (the member holding index 0)
         -> until stopped or idle

Rebalances: the listener only records the new assignment; workers change in the loop
between batches, so no transaction is ever open while partitions move. A new worker runs
init_transactions() (fencing any zombie of the previous owner and completing its open
transaction), then recovers its chain head and stored ids. The consumer reads its start
offsets with require_stable (read_committed), so it never starts behind a transaction that
is still committing.

Failures: a retriable failure in a batch (fenced, rebalanced, timed out) aborts the
transaction, closes the worker and pauses its partitions; after a backoff the worker
re-opens (init_transactions completes any in-doubt commit) and the partitions resume from
the group's committed offsets. Fatal errors stop serve with exit code 2.

SIGTERM/SIGINT: the current batch finishes and commits, then serve exits 0.

Process entries (issue 15.11): once its first writer is open a member appends one
broker_start (version, covenant hash, config hash), and on a clean stop (SIGTERM or
--until-idle) one broker_stop with the same trace_id, each in a transaction of the lowest
partition it writes at that moment. That partition's transactional id is held by this
member alone, so members do not fence each other (the commands id would: every member and
command shares it), and the chain keeps its one writer. A crash writes no stop.

Metrics (broker/metrics.py) are counted per committed batch; with --metrics-listen the
member serves /metrics, /healthz and /readyz (ready: an assignment and a working poll).
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaAdminClient, TopicPartition

from broker.audit.entries import new_trace_id
from broker.backends.kafka.acl import PrincipalMap
from broker.backends.kafka.acl_denials import DenialAuditor, audit_denials, auditor_for
from broker.backends.kafka.commands import ControlWatch
from broker.backends.kafka.errors import kafka_errors, retrying
from broker.backends.kafka.event_log import KafkaEventLog
from broker.backends.kafka.group import CoPartitionedAssignor
from broker.backends.kafka.io import end_offsets, wait_visible
from broker.backends.kafka.pipeline import BatchCounts, PartitionWorker, group_by_index
from broker.backends.kafka.purge import PurgeState, purge_consumed
from broker.clock import local_date, now_utc
from broker.errors import InputError, StorageError, TransientBackendError
from broker.metrics import Health, MetricsServer
from broker.pipeline.core import PipelineCore
from broker.pipeline.port import QuarantineNote
from broker.policy.control import ControlState

JOIN_TIMEOUT_S = 120.0
IDLE_SWEEP_INTERVAL_S = 5.0
LAG_INTERVAL_S = 5.0


@dataclass
class ServeReport:
    batches: int = 0
    consumed: int = 0
    stored: int = 0
    quarantined: int = 0
    forwarded: int = 0
    released: int = 0
    withheld: int = 0
    tombstones: int = 0
    retries: int = 0
    purged_partitions: int = 0  # ingress partitions purged up to their committed offsets
    denials_audited: int = 0  # audit entries from Kafka's authorizer log
    revised: int = 0  # corrections and withdrawals accepted (broker/backends/kafka/revisions.py)
    retractions: int = 0  # their tombstones (cause rectified or withdrawn)
    partitions: list[int] = field(default_factory=list)
    # Kept by an --until-idle run only (a bounded one): a service that runs for months
    # would hold a note for every input it ever quarantined.
    quarantine_notes: list[QuarantineNote] = field(default_factory=list)
    dropped_fields: list[tuple[str, list[str]]] = field(default_factory=list)

    def add(self, counts: BatchCounts, *, notes: bool = False) -> None:
        self.batches += 1
        self.consumed += counts.consumed
        self.stored += counts.stored
        self.quarantined += counts.quarantined
        self.forwarded += counts.forwarded
        self.released += counts.decided.released
        self.withheld += counts.decided.withheld
        self.revised += counts.revised
        self.retractions += counts.retractions
        if notes:
            self.quarantine_notes += counts.quarantine_notes
            self.dropped_fields += counts.dropped_fields


# An empty assignment counts as idle only after this long (see Server._idle); meanwhile the
# consumer asks for fresh metadata every EMPTY_ASSIGNMENT_REFRESH_S, which makes the group
# rebalance as soon as the ingress topics' partitions are known.
EMPTY_ASSIGNMENT_GRACE_S = 30.0
EMPTY_ASSIGNMENT_REFRESH_S = 2.0


@dataclass(frozen=True)
class DenialTail:
    """--authorizer-log: the log to audit denials from, and the parties' principals."""

    log_file: Path
    principals: PrincipalMap


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    def __init__(self) -> None:
        self.assigned: set[TopicPartition] | None = None  # None until the first assignment
        self.changed = False

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.assigned = set()
        self.changed = True

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned = set(assigned)
        self.changed = True


class Server:
    def __init__(self, broker: PipelineCore, *, now: datetime | None = None,
                 until_idle: bool = False, metrics_listen: str | None = None,
                 denials: DenialTail | None = None) -> None:
        log = broker.backend.capability(KafkaEventLog)
        if log is None:
            raise StorageError("serve runs the Kafka pipeline: pass --backend kafka and "
                               "--bootstrap-servers HOST:PORT (or set backend: kafka)")
        self.broker = broker
        self.log: KafkaEventLog = log
        self.layout = self.log.layout
        self.cfg = self.layout.cfg
        self.now = now
        self.until_idle = until_idle
        self.logger = broker.logger.bind(component="serve", group=self.cfg.group_id)
        self.consumer = self.log.clients.group_consumer(CoPartitionedAssignor)
        self.listener = _Listener()
        self.workers: dict[int, PartitionWorker] = {}
        self.reopen_at: dict[int, float] = {}
        self.report = ServeReport()
        self.stopping = False
        self._last_sweep = 0.0
        self._sweep_owed = False  # batches committed since the last sweep
        self._empty_since: float | None = None
        self._metadata_asked = 0.0
        self.metrics = broker.metrics
        self.health = Health()
        self.metrics_listen = metrics_listen
        self.metrics_server: MetricsServer | None = None
        self._last_lag = 0.0
        self._purge = PurgeState()
        self._last_purge = 0.0
        self._admin: KafkaAdminClient | None = None
        self.denials = denials
        self._denial_auditor: DenialAuditor | None = None
        self._last_denials = 0.0
        self._last_checkpoint_look = 0.0
        self._process_trace = new_trace_id()  # one trace pairs this process's start and stop
        self._started = False  # broker_start written
        self._control: ControlState | None = None  # as of the control reader's position
        self._control_watch: ControlWatch | None = None
        # The expiry sweep's bookkeeping (issue 14.3; _sweep_due): whether the earliest
        # pending expiry is known, the earliest the last sweep's index held, and the earliest
        # of this member's own releases before and since the last sweep began.
        self._expiry_known = False
        self._expiry_index: date | None = None
        self._released: list[date | None] = [None, None]

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> ServeReport:
        previous = ({sig: signal.signal(sig, self._on_signal)
                     for sig in (signal.SIGTERM, signal.SIGINT)}
                    if threading.current_thread() is threading.main_thread() else {})
        started = time.monotonic()
        if self.metrics_listen:
            self.metrics_server = MetricsServer(self.metrics_listen, self.metrics, self.health)
            self.logger.info("metrics endpoint", port=self.metrics_server.port)
        try:
            with kafka_errors("subscribing to the ingress topics"):
                self.consumer.subscribe(self.layout.ingress_topics(), listener=self.listener)
            self._know_ingress()
            self.logger.info("serve started", topics=len(self.layout.ingress_topics()))
            failures = 0
            while not self.stopping:
                try:
                    if self._cycle():
                        break
                    failures = 0
                except TransientBackendError as exc:
                    # A service rides out broker restarts and leader moves; --until-idle
                    # (tests, the demo) gives up after kafka.retries failures in a row.
                    failures += 1
                    self._on_retry(exc)
                    if self.until_idle and failures >= self.cfg.retries:
                        raise
                    self.logger.warning("retrying after a transient failure", error=str(exc))
                    time.sleep(min(10.0, self.cfg.retry_backoff_ms / 1000 * 2 ** failures))
                if self.listener.assigned is None and time.monotonic() - started > \
                        JOIN_TIMEOUT_S:
                    raise TransientBackendError(f"no partitions assigned by group "
                                                f"{self.cfg.group_id} in {JOIN_TIMEOUT_S:.0f}s")
            if self.until_idle:
                self._maybe_sweep(after_batch=True)
                self._maybe_audit_denials(force=True)
            # A clean stop (SIGTERM or idle) only: a crash leaves a start without a stop.
            if self._started and not self._process_entry("broker_stop"):
                self.logger.warning("broker_stop not written: no partition writer open, or its "
                                    "write failed")
            if self.until_idle:
                self._await_visible()
                self._maybe_purge(force=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._shutdown()
        self.report.partitions = sorted(self.workers)
        self.logger.info("serve stopped", batches=self.report.batches,
                         released=self.report.released)
        return self.report

    def _cycle(self) -> bool:
        """One poll and what follows from it; True when --until-idle has nothing left."""
        try:
            with kafka_errors("polling the ingress topics"):
                records = self.consumer.poll(timeout_ms=self.cfg.poll_timeout_ms)
        except Exception:
            # Not ready until a poll works again. (Cleared only on failure: cleared before
            # every poll, /readyz answered 503 for most of each poll_timeout_ms.)
            self.health.last_poll_ok = False
            raise
        self.health.last_poll_ok = True
        opened = self._follow_assignment()
        self.health.assigned = bool(self.listener.assigned)
        records = {tp: r for tp, r in records.items() if tp.partition not in opened}
        if records:
            self._process(records)
        elif self.workers:
            self._control_state()  # while idle too: the watch's fetches keep going
        self._observe_lag()
        self._maybe_sweep(after_batch=bool(records))
        self._maybe_purge()
        self._maybe_audit_denials()
        self._maybe_observe_checkpoint()
        if not self.until_idle:
            self._refresh_while_empty()
        return self.until_idle and not records and self._idle()

    def _know_ingress(self) -> None:
        """Fetch the ingress topics' metadata before the first poll joins the group.

        A new consumer's first JoinGroup left before its metadata knew the subscribed
        topics: as the group's leader it assigned itself nothing (kafka-python's metadata
        snapshot was empty), and only the metadata update after it made it rejoin and take
        the partitions. Every `--until-idle` run after the first on a deployment began so
        (19 of 20 back-to-back settling ingests: an empty generation, then a second
        rebalance), and a run whose second rebalance came late ended in the empty-
        assignment wait with nothing consumed. One metadata request now; topics Kafka does
        not know yet (a fresh cluster) are still left to _refresh_while_empty."""
        with kafka_errors("fetching the ingress topics' metadata"):
            self.consumer.topics()

    def _refresh_while_empty(self) -> float | None:
        """While the assignment is empty, ask for fresh metadata every few seconds, so
        that a rebalance onto partitions the consumer did not know yet is not left to the
        five-minute metadata age. How long it has been empty; None when it is not."""
        assigned = self.listener.assigned
        if assigned is None or assigned or self.listener.changed or self.reopen_at:
            if assigned:
                self._empty_since = None
            return None
        now = time.monotonic()
        if self._empty_since is None:
            self._empty_since = self._metadata_asked = now
        elif now - self._metadata_asked > EMPTY_ASSIGNMENT_REFRESH_S:
            self._metadata_asked = now
            # kafka-python has no public call for this; its cluster metadata object does.
            self.consumer._client.cluster.request_update()
        return now - self._empty_since

    def _await_visible(self) -> None:
        """Before --until-idle returns: what it committed is visible to readers (a commit
        returns before Kafka has written its markers; the next command reads at once)."""
        written: dict[TopicPartition, int] = {}
        for worker in self.workers.values():
            written.update(worker.written)
        if written and not wait_visible(self.log.reader, written):
            self.logger.warning("committed batches not yet visible", partitions=len(written))

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True  # the loop finishes and commits the batch in hand, then exits

    def _shutdown(self) -> None:
        for worker in self.workers.values():
            worker.close()
        with kafka_errors("leaving the consumer group"):
            self.consumer.close()
        if self._admin is not None:
            with kafka_errors("closing the admin client"):
                self._admin.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self._control_watch is not None:
            self._control_watch.close()

    # -- assignment ------------------------------------------------------------------------
    def _follow_assignment(self) -> set[int]:
        """Open and close workers for the current assignment; return the indices opened.

        An index opened now was re-positioned to its committed offsets, so the records
        polled for it before are dropped (they come again from those offsets).
        """
        opened: set[int] = set()
        if self.listener.changed:
            self.listener.changed = False
            wanted = {tp.partition for tp in self.listener.assigned or ()}
            self._expiry_known = False  # another member may release meanwhile
            for index in sorted(set(self.workers) - wanted):
                self.workers.pop(index).close()
                self.reopen_at.pop(index, None)
            for index in sorted(wanted - set(self.workers)):
                self.workers[index] = PartitionWorker(index, self.broker, self.layout,
                                                      self.log.clients)
                self.reopen_at[index] = 0.0
            self.logger.info("assigned", partitions=sorted(wanted))
        due = [i for i, when in sorted(self.reopen_at.items()) if time.monotonic() >= when]
        if due:
            self._open(due)
            opened.update(due)
            self._started = self._started or self._process_entry("broker_start")
        return opened

    def _process_entry(self, name: str) -> bool:
        """This process's broker_start/broker_stop, on the chain of the lowest partition it
        writes (its transactional id is this member's alone, unlike the commands id every
        member shares); False when none is open or the write failed (a start is retried
        when a writer opens next)."""
        index = min((i for i, w in self.workers.items()
                     if w.is_open and i not in self.reopen_at), default=None)
        if index is None:
            return False
        try:
            self.workers[index].append_audit(
                [self.broker.process_entry(name, self._now(), self._process_trace)], name)
        except TransientBackendError as exc:
            self._on_retry(exc)
            self.logger.warning("process entry not written", entry=name, partition=index,
                                error=str(exc))
            self._suspend(index, self._tps(index))
            return False
        self.logger.info("process entry audited", entry=name, partition=index)
        return True

    def _open(self, indices: list[int]) -> None:
        """Open the writers of `indices` side by side (each fences, then recovers its
        chain head and stored ids), then move their partitions to the committed offsets.
        The consumer is used from this thread only."""
        def open_one(index: int) -> TransientBackendError | None:
            try:
                retrying(self.workers[index].open, attempts=self.cfg.retries,
                         backoff_ms=self.cfg.retry_backoff_ms, on_retry=self._on_retry)
            except TransientBackendError as exc:
                return exc
            return None

        with ThreadPoolExecutor(max_workers=len(indices),
                                thread_name_prefix="open-writer") as pool:
            results = dict(zip(indices, pool.map(open_one, indices), strict=True))
        for index, failed in results.items():
            tps = self._tps(index)
            try:
                if failed is not None:
                    raise failed
                with kafka_errors(f"resuming partition {index}"):
                    for tp in tps:  # committed offsets are authoritative once the writer is open
                        committed = self.consumer.committed(tp)
                        if committed is None:
                            self.consumer.seek_to_beginning(tp)
                        else:
                            self.consumer.seek(tp, committed)
                    self.consumer.resume(*tps)
            except TransientBackendError as exc:
                self.logger.warning("partition writer not ready", partition=index,
                                    error=str(exc))
                self._suspend(index, tps)
                continue
            self.reopen_at.pop(index, None)
            head = self.workers[index].chain.head
            self.logger.info("partition writer open", partition=index,
                             audit_seq=head.next_seq if head else None)

    def _suspend(self, index: int, tps: list[TopicPartition]) -> None:
        self.workers[index].close()
        with kafka_errors(f"pausing partition {index}"):
            self.consumer.pause(*tps)
        self.reopen_at[index] = time.monotonic() + self.cfg.retry_backoff_ms / 1000 * 5

    def _tps(self, index: int) -> list[TopicPartition]:
        return sorted((tp for tp in self.listener.assigned or () if tp.partition == index),
                      key=lambda tp: tp.topic)

    # -- batches ---------------------------------------------------------------------------
    def _now(self) -> datetime:
        return self.now or now_utc()

    def _control_state(self) -> ControlState:
        """The control state, read again only when the control topic moved (issue 14.3)."""
        if self._control_watch is None:
            self._control_watch = ControlWatch(self.log.clients, self.layout.names.control)
        if self._control is None or self._control_watch.moved(self.log.control.position):
            self._control = ControlState.from_events(self.log.control_events())
        return self._control

    def _process(self, records: dict[TopicPartition, list[Any]]) -> None:
        ctx = self.broker.context(self._now(), self._control_state())
        for index, batch in group_by_index(records):
            worker = self.workers.get(index)
            if worker is None or not worker.is_open or index in self.reopen_at:
                continue  # paused or moving; the committed offsets bring these back
            try:
                counts = worker.process(batch, ctx, self.consumer.group_metadata())
            except TransientBackendError as exc:
                self._on_retry(exc)
                self.logger.warning("batch aborted", partition=index, error=str(exc))
                self._suspend(index, self._tps(index))
                continue
            self.report.add(counts, notes=self.until_idle)
            for eg in counts.decisions.egress if counts.decisions else ():
                if eg.expires_on is not None and eg.tombstone_for is None:
                    self._released[1] = min(eg.expires_on, self._released[1] or date.max)
            self._observe_batch(batch, counts)
            self.logger.info("batch committed", partition=index, consumed=counts.consumed,
                             stored=counts.stored, quarantined=counts.quarantined,
                             released=counts.decided.released,
                             withheld=counts.decided.withheld)

    def _on_retry(self, exc: Exception) -> None:
        self.report.retries += 1

    # -- metrics ---------------------------------------------------------------------------
    def _observe_batch(self, batch: dict[TopicPartition, list[Any]],
                       counts: BatchCounts) -> None:
        """A committed batch. A record forwarded to its home partition is counted in once,
        where it arrives first (the forwarded copy carries a forwarded-from header)."""
        names = self.layout.names
        for tp, records in batch.items():
            fresh = sum(1 for r in records
                        if not any(k == "forwarded-from" for k, _ in r.headers or ()))
            self.metrics.observe_input(names.event_type_of_ingress(tp.topic), fresh)
        self.metrics.observe_quarantine(counts.quarantine_codes)
        self.metrics.observe_bad_traceparents(counts.bad_traceparents)
        self.metrics.observe_audit(len(counts.quarantine_codes))
        if counts.decisions is not None:
            self.metrics.observe_decisions(counts.decisions, counts.decided.events,
                                           counts.decide_seconds)

    def _observe_lag(self) -> None:
        """Consumer lag from the high watermarks the fetches brought (no extra request)
        and the positions of open partitions, every few seconds."""
        if time.monotonic() - self._last_lag < LAG_INTERVAL_S:
            return
        self._last_lag = time.monotonic()
        lags: dict[tuple[str, int], int] = {}
        for tp in self.listener.assigned or ():
            if tp.partition in self.reopen_at or tp.partition not in self.workers:
                continue  # paused or moving: its position is not known here
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            with kafka_errors("reading the consumer position"):
                lags[(tp.topic, tp.partition)] = max(0, high - self.consumer.position(tp))
        self.metrics.observe_lag(lags)

    # -- expiry and idleness ---------------------------------------------------------------
    def _maybe_sweep(self, *, after_batch: bool) -> None:
        """The member holding index 0 sweeps expiries (and destroys data keys past their
        retention) at most every IDLE_SWEEP_INTERVAL_S, and at the first poll that brings
        nothing after batches that were not followed by a sweep (so `--until-idle` never
        returns with one owed). Expiry is by day; a sweep costs three reads of Kafka, which
        after every batch was ~5 % of serve's wall time under load (bench/README.md)."""
        worker = self.workers.get(0)
        if worker is None or not worker.is_open:
            return
        if time.monotonic() - self._last_sweep < IDLE_SWEEP_INTERVAL_S:
            if after_batch:
                self._sweep_owed = True
                return
            if not self._sweep_owed:
                return
        self._last_sweep, self._sweep_owed = time.monotonic(), False
        try:
            now = self._now()
            tombstones = 0
            if self._sweep_due(now):
                self._expiry_known, self._released = False, [self._released[1], None]
                tombstones = self.broker.sweep_expiries(now)
                self._expiry_index = self.log.earliest_expiry()
                self._expiry_known = set(self.workers) == set(range(self.cfg.partitions)) \
                    and not self.reopen_at
            self.broker.destroy_expired_keys(now)  # as the embedded ingest does
        except TransientBackendError as exc:
            self._on_retry(exc)
            self.logger.warning("expiry sweep failed; retrying later", error=str(exc))
            return
        if tombstones:
            self.report.tombstones += tombstones
            self.logger.info("expiry tombstones committed", tombstones=tombstones)

    def _sweep_due(self, now: datetime) -> bool:
        """Whether an expiry can be due. A member that has held every partition since its
        last sweep has seen every release since: the earliest pending expiry is the one
        that sweep's index held or one of its own releases since the sweep before (those
        may not have been visible to that sweep yet). Otherwise it cannot know: sweep."""
        if not self._expiry_known:
            return True
        earliest = min((d for d in (self._expiry_index, *self._released) if d is not None),
                       default=None)
        return earliest is not None and earliest < local_date(now, self.broker.covenant.zone)

    def _maybe_observe_checkpoint(self) -> None:
        """Every member reports the age of the latest signed checkpoint of the integrated
        audit log (written by `audit integrate --follow` in the same data directory)."""
        if time.monotonic() - self._last_checkpoint_look < IDLE_SWEEP_INTERVAL_S:
            return
        self._last_checkpoint_look = time.monotonic()
        try:
            self.broker.observe_checkpoint()
        except StorageError as exc:  # a metric is not worth stopping the service for
            self.logger.warning("reading the latest audit checkpoint failed", error=str(exc))

    def _maybe_audit_denials(self, *, force: bool = False) -> None:
        """The member holding index 0 audits new authorizer denials every few seconds (on
        the commands chain, as the expiry sweep writes). A failure is retried later: the
        read position moves only after the entries are written."""
        worker = self.workers.get(0)
        if self.denials is None or worker is None or not worker.is_open:
            return
        if not force and time.monotonic() - self._last_denials < IDLE_SWEEP_INTERVAL_S:
            return
        self._last_denials = time.monotonic()
        if self._denial_auditor is None:
            self._denial_auditor = auditor_for(self.broker, self.denials.principals)
        try:
            counts = audit_denials(self.broker, self.denials.log_file, self.denials.principals,
                                   self._now(), self._denial_auditor)
        except (TransientBackendError, InputError) as exc:
            self._on_retry(exc)
            self.logger.warning("auditing authorizer denials failed; retrying later",
                                error=str(exc))
            return
        self.report.denials_audited += counts.entries

    def _maybe_purge(self, *, force: bool = False) -> None:
        """The member holding index 0 deletes the ingress records the group has committed
        (every kafka.ingress_purge_interval_ms; broker/backends/kafka/purge.py). A failure
        is retried at the next interval; the records stay until then."""
        worker = self.workers.get(0)
        interval = self.cfg.ingress_purge_interval_ms
        if worker is None or not worker.is_open or interval == 0:
            return
        if not force and time.monotonic() - self._last_purge < interval / 1000:
            return
        self._last_purge = time.monotonic()
        try:
            if self._admin is None:
                with kafka_errors("connecting the admin client"):
                    self._admin = self.log.clients.admin()
            purged = purge_consumed(self._admin, self.layout, self._purge)
        except (TransientBackendError, StorageError) as exc:
            self._on_retry(exc)
            self.logger.warning("ingress purge failed; retrying later", error=str(exc))
            return
        if purged:
            self.report.purged_partitions += len(purged)
            self.logger.info("ingress purged", partitions=len(purged),
                             below_offsets=sum(purged.values()))

    def _idle(self) -> bool:
        """Every assigned partition is open and read up to its last stable offset."""
        assigned = self.listener.assigned
        if assigned is None or self.listener.changed or self.reopen_at:
            return False
        waited = self._refresh_while_empty()
        if waited is not None:
            # An empty assignment is idle only when it lasts: on a fresh cluster the first
            # join can come back empty before the consumer's metadata knows the topics, and
            # the group rebalances once it does. Treating that as idle ended --until-idle
            # with nothing processed. Under heavy load the join can also outlast a session
            # timeout (the member is dropped and joins again).
            return waited > EMPTY_ASSIGNMENT_GRACE_S
        ends = end_offsets(self.consumer, sorted(assigned, key=str))
        with kafka_errors("checking for more input"):
            return all(self.consumer.position(tp) >= ends[tp] for tp in assigned)


def serve(broker: PipelineCore, *, now: datetime | None, until_idle: bool,
          metrics_listen: str | None = None, denials: DenialTail | None = None) -> ServeReport:
    return Server(broker, now=now, until_idle=until_idle, metrics_listen=metrics_listen,
                  denials=denials).run()


class UntilIdle:
    """The PipelineRunner capability (broker/pipeline/core.py) of the Kafka backend: serve
    as one member of the group until idle, as `serve --until-idle` does."""

    def run_until_idle(self, core: PipelineCore, now: datetime) -> ServeReport:
        return serve(core, now=now, until_idle=True)
