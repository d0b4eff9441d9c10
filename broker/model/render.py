"""Records to JSON-ready values: instants as ISO-8601 UTC strings, dates as YYYY-MM-DD."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from broker.clock import iso_instant


def to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, datetime):
        return iso_instant(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value
