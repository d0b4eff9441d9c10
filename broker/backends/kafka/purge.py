"""Purging consumed raw input from the ingress topics.

The ingress topics hold what the sources sent, in plaintext (BSNs included), until their
retention ends. Once serve has ingested a batch, its offsets are committed in the batch's
transaction, and the stored event (sealed) is what the broker works from; the raw input is
needed no longer. `purge_consumed` moves each ingress partition's log start offset up to
the group's committed offset (DeleteRecords), so nothing below it can be read again.

What Kafka does with the bytes (4.x): records below the log start offset are invisible at
once, but they stay in their segment file. A segment is deleted by the log retention
thread (every ``log.retention.check.interval.ms``, default 5 minutes) once the *next*
segment starts at or below the log start offset, so never the active segment; the active
segment rolls when a record is appended after ``segment.ms`` (``kafka.ingress_segment_ms``)
has passed, or is rolled and deleted when its newest record is older than
``retention.ms`` (``kafka.ingress_retention_ms``). A deleted segment is renamed
``*.deleted`` and removed ``file.delete.delay.ms`` later (broker default
``log.segment.delete.delay.ms``, 1 minute). deploy/kafka/README.md spells out the window.

Only committed offsets are used: a transactional offset commit becomes visible to
OffsetFetch when its transaction commits, so input is never purged before the batch that
stored it is durable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kafka import KafkaAdminClient, TopicPartition

from broker.backends.kafka.errors import kafka_errors
from broker.backends.kafka.io import Clients
from broker.backends.kafka.topics import Layout


@dataclass
class PurgeState:
    """Up to which offset each ingress partition was purged (by this process)."""

    purged: dict[TopicPartition, int] = field(default_factory=dict)


def committed_ingress(admin: KafkaAdminClient, layout: Layout) -> dict[TopicPartition, int]:
    """The group's committed offset of every ingress partition that has one."""
    topics = set(layout.ingress_topics())
    with kafka_errors(f"reading the committed offsets of group {layout.cfg.group_id}"):
        found = admin.list_group_offsets({layout.cfg.group_id: None})
    offsets = found.get(layout.cfg.group_id, {})
    return {tp: int(meta.offset) for tp, meta in offsets.items()
            if tp.topic in topics and meta.offset is not None and meta.offset > 0}


def purge_consumed(admin: KafkaAdminClient, layout: Layout,
                   state: PurgeState | None = None) -> dict[TopicPartition, int]:
    """Delete the ingress records below the group's committed offsets; return the
    partitions purged now, with the offset each was purged up to."""
    state = state if state is not None else PurgeState()
    todo = {tp: offset for tp, offset in committed_ingress(admin, layout).items()
            if offset > state.purged.get(tp, 0)}
    if not todo:
        return {}
    with kafka_errors("deleting consumed ingress records"):
        admin.delete_records(todo, timeout_ms=layout.cfg.request_timeout_ms)
    state.purged.update(todo)
    return todo


def purge_once(clients: Clients, layout: Layout) -> dict[TopicPartition, int]:
    """One purge with an admin client of its own (`subject erase` on Kafka: the consumed
    input becomes unreadable now rather than at serve's next interval)."""
    with kafka_errors("connecting the admin client"):
        admin = clients.admin()
    try:
        return purge_consumed(admin, layout)
    finally:
        with kafka_errors("closing the admin client"):
            admin.close()
