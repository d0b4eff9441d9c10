"""Consumer-group assignment by partition index: co-partitioned ingress topics.

Partition index p of every ingress topic goes to the same member. That member alone
writes store partition p, quarantine partition p and audit partition p, under
transactional id ``<prefix>-<p>``. Kafka's range assignor gives the same result only
while every member subscribes to exactly the same topics; this assignor keeps a partition
index on one member even while members disagree (a rolling upgrade that adds an event
type), so two members never ask for the same transactional id and fence each other.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)


def spread(indices: int, members: int) -> list[range]:
    """Split partition indices 0..indices-1 into contiguous ranges, one per member."""
    base, extra = divmod(indices, members)
    out, start = [], 0
    for i in range(members):
        length = base + (1 if i < extra else 0)
        out.append(range(start, start + length))
        start += length
    return out


class CoPartitionedAssignor(AbstractPartitionAssignor):  # type: ignore[misc]  # untyped base
    name = "covenant-copartitioned"
    version = 0

    @classmethod
    def assign(cls, cluster: Any, members: list[Any]) -> dict[str, Any]:
        partitions: dict[str, set[int]] = {}
        for member in members:
            for topic in member.metadata.topics:
                found = cluster.partitions_for_topic(topic)
                if found:
                    partitions[topic] = set(found)
        count = max((max(p) + 1 for p in partitions.values()), default=0)
        # Static members first (stable across restarts), then dynamic ones; like "range".
        ordered = sorted(members, key=lambda m: (m.group_instance_id is None,
                                                 m.group_instance_id or "", m.member_id))
        result: dict[str, Any] = {}
        for member, indices in zip(ordered, spread(count, len(ordered)), strict=True):
            topics: dict[str, list[int]] = defaultdict(list)
            for topic in member.metadata.topics:
                topics[topic] = [i for i in indices if i in partitions.get(topic, ())]
            result[member.member_id] = ConsumerProtocolAssignment(
                cls.version, sorted(topics.items()), b"")
        return result

    @classmethod
    def metadata(cls, topics: Any) -> Any:
        return ConsumerProtocolSubscription(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: Any, generation: int) -> None:
        return None
