"""How a line too large for the broker travels on an ingress topic.

`ingest --backend kafka` reads its input with the bounded line reader and never holds a
line over max_event_bytes whole (issue 15 item 7): such a line is produced as what the
quarantine keeps of it (`Oversized.bounded_form`) with a header giving the whole line's
length and SHA-256; `serve` turns that back into the `Oversized` input triage judges.
"""

from __future__ import annotations

import re

from broker.pipeline.ingest import Oversized

OVERSIZED_HEADER = "cb-oversized"  # "LENGTH SHA256" of a line sent in its bounded form
_OVERSIZED = re.compile(rb"([0-9]{1,15}) ([0-9a-f]{64})")


def oversized_of(header_value: bytes | None, value: bytes) -> Oversized | None:
    """The oversized line a record stands for, from its cb-oversized header and its value
    (`Oversized.bounded_form`); None without the header. A header that does not parse is
    taken at its word all the same: the line is judged too large, its value kept as the
    prefix (the record is bounded by Kafka's own limit)."""
    if header_value is None:
        return None
    found = _OVERSIZED.fullmatch(header_value)
    if found is None:
        return Oversized.of(value)
    _, sep, prefix = value.partition(b"\n")
    return Oversized(int(found[1]), found[2].decode("ascii"), prefix if sep else value)
