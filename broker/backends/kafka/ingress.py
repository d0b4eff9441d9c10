"""`ingest` on Kafka: produce input lines to the ingress topic of their event type and return.

Each line becomes one record, keyed by its event_id when the line is JSON that has one (so
it lands on the partition whose worker judges duplicates of that id); the ``source``
header names the producing source and ``line`` its line number, and ``action`` marks a
correction or withdrawal (keyed by the event_id it revises: the original's partition); a
line's signature, if given, goes in ``cb-sig`` (broker/pipeline/signatures.py).
Validation, storing and deciding happen in `serve`.

The lines come from the bounded line reader (`read_lines`, as the embedded ingest reads
them), so a huge line or file never sits in memory (issue 15 item 7). A line over
max_event_bytes is produced as what the quarantine keeps of it (`Oversized.bounded_form`:
its length, SHA-256 and first bytes), with the ``cb-oversized`` header giving its length
and hash; `serve` then quarantines that bounded record, never the whole line (which no
Kafka record could hold anyway: message.max.bytes is 1 MB by default).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from broker.backends.kafka.errors import kafka_errors
from broker.backends.kafka.framing import OVERSIZED_HEADER
from broker.backends.kafka.io import close_quietly, headers
from broker.backends.kafka.revisions import ACTION_HEADER, home_partition
from broker.errors import StorageError
from broker.pipeline.core import PipelineCore
from broker.pipeline.ingest import Oversized
from broker.pipeline.port import IngressReport
from broker.pipeline.signatures import SIGNATURE_HEADER

if TYPE_CHECKING:  # the event log imports this module when it publishes
    from broker.backends.kafka.event_log import KafkaEventLog

SEND_TIMEOUT_S = 60.0

ProduceReport = IngressReport  # the name this module's callers know


def event_id_of(line: bytes) -> str | None:
    """The event_id of a JSON line (lowercased, as ingest stores it), or None."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    event_id = value.get("event_id") if isinstance(value, dict) else None
    return event_id.lower() if isinstance(event_id, str) and event_id else None


def produce_lines(broker: PipelineCore, source: str, event_type: str,
                  lines: Iterable[tuple[int, bytes | Oversized]],
                  signatures: Mapping[int, bytes] | None = None,
                  traceparent: str | None = None, action: str | None = None) -> ProduceReport:
    publisher = broker.backend.ingress
    if publisher is None:
        raise StorageError("produce_lines needs the Kafka backend")
    return publisher.publish(source, broker.resolve_type(source, event_type), lines,
                             signatures, traceparent, action)


def produce(log: KafkaEventLog, source: str, full: str,
            lines: Iterable[tuple[int, bytes | Oversized]],
            signatures: Mapping[int, bytes] | None = None,
            traceparent: str | None = None, action: str | None = None) -> ProduceReport:
    """KafkaEventLog.publish: the lines of a resolved event type to its ingress topic.
    `action` ("correction", "withdrawal"): the lines revise earlier events, each keyed by
    the event_id of the event it revises (broker/backends/kafka/revisions.py)."""
    topic = log.layout.names.ingress(full)
    report = ProduceReport(source, full, topic)
    producer = log.clients.producer()
    try:
        futures = []
        with kafka_errors(f"producing to {topic}"):
            for number, line in lines:
                over = line if isinstance(line, Oversized) else None
                value = line.bounded_form() if isinstance(line, Oversized) else line
                event_id = event_id_of(value) if over is None else None
                sig = (signatures or {}).get(number)
                partition = (home_partition(event_id, log.cfg.partitions)
                             if event_id else None)
                futures.append(producer.send(
                    topic, value=value, key=event_id.encode() if event_id else None,
                    partition=partition, headers=[
                        *headers(source=source, line=number, traceparent=traceparent,
                                 **{ACTION_HEADER: action}),
                        *([(OVERSIZED_HEADER, f"{over.length} {over.sha256}".encode())]
                          if over is not None else []),
                        *([(SIGNATURE_HEADER, sig)] if sig is not None else [])]))
                report.oversized += over is not None
            producer.flush(timeout=SEND_TIMEOUT_S)
            for future in futures:
                meta = future.get(timeout=SEND_TIMEOUT_S)
                report.partitions[meta.partition] = report.partitions.get(meta.partition, 0) + 1
                report.produced += 1
    finally:
        close_quietly(producer)
    return report
