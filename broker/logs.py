"""Structured logs (structlog, JSON in production) that never carry a personal value.

The redacting processor is the last guard, not the first: pipeline code logs ids,
counts, purposes and reason codes only. The guard replaces the value of any key that
names a personal field in the schemas, and masks BSN-like numbers, e-mail addresses and
phone numbers anywhere in the rendered text, tracebacks included.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"
_PATTERNS = [
    re.compile(r"(?<!\d)\d{9}(?!\d)"),  # BSN
    re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"),  # e-mail
    re.compile(r"(?<![\w])\+?\d[\d\s-]{8,}\d(?![\w])"),  # phone numbers
]


def scrub(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


_PERSONAL_KEYS: set[str] = set()


def add_personal_keys(keys: Iterable[str]) -> None:
    """Field names the schemas mark personal; their values are never rendered."""
    _PERSONAL_KEYS.update(keys)


class RedactPersonalData:
    """structlog processor: redact personal keys, then scrub patterns from every string."""

    def __init__(self, personal_keys: Iterable[str] = ()) -> None:
        add_personal_keys(personal_keys)
        self.keys = _PERSONAL_KEYS

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return scrub(value)
        if isinstance(value, dict):
            return {k: REDACTED if k in self.keys else self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return scrub(repr(value))

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = REDACTED if key in self.keys else self._clean(event_dict[key])
        return event_dict


def configure(level: str = "warning", fmt: str = "json",
              personal_keys: Iterable[str] = ()) -> None:
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            RedactPersonalData(personal_keys),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    return structlog.get_logger("covenant-broker").bind(**context)
