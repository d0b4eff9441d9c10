"""Structured logs (structlog, JSON lines in production) that never carry a personal value.

The redacting processor is the last guard, not the first: pipeline code logs constant
event names with ids, counts, purposes and reason codes only (a test parses broker/ and
refuses log calls whose event is not a literal or that pass positional arguments).

What the guard makes sure of, for every line (structlog and stdlib `logging` alike, at
every level, uncaught exceptions included):
- the value under a key that names a personal field of the schemas is "[redacted]", at
  any depth of dicts, lists and dataclasses (a dotted key counts by its last part);
- bytes are never rendered (raw input), nor objects of unknown types (only their type
  name): their repr can hold a whole event;
- exceptions, logged with exc_info or as values: frames, source lines and exception
  types are kept; the message and notes of an exception outside the broker's own
  BrokerError family are "[redacted]", because library errors quote the data they choke
  on (fastavro quotes an enum symbol, KeyError its key, json the text). BrokerError
  messages are written never to hold values (InvalidEvent reasons name fields and rules);
- BSN-like numbers, e-mail addresses and phone numbers are masked anywhere in the text.

Stdlib loggers (kafka-python and other libraries) print through the same chain, at warning
and up whatever the broker's level. Only what goes through logging is covered: print()
and writes to sys.stderr are not.

Not guaranteed: a personal value that code puts into the event text or under a key that
is not a personal field name, and that is not BSN, e-mail or phone shaped (a name, a
description), for example `error=str(exc)` or the message of a library's stdlib log
record. Log `error=exc` or `exc_info=True`, never `str(exc)`.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import re
import sys
import threading
import traceback
import uuid
from collections.abc import Iterable, MutableMapping
from datetime import date, datetime, time, timedelta
from pathlib import PurePath
from types import TracebackType
from typing import Any, TextIO, cast

import structlog

from broker.errors import BrokerError

REDACTED = "[redacted]"
_MAX_DEPTH = 12
# The e-mail pattern goes first: a BSN-shaped run inside an address
# ("jan.123456789@example.nl") replaced first broke the address apart, and the rest of it
# was logged.
_PATTERNS = [
    re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"),  # e-mail
    re.compile(r"(?<!\d)\d{9}(?!\d)"),  # BSN
    re.compile(r"(?<![\w])\+?\d[\d\s-]{8,}\d(?![\w])"),  # phone numbers
]
_PLAIN_TYPES = (datetime, date, time, timedelta, uuid.UUID, PurePath, enum.Enum)


def scrub(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


_PERSONAL_KEYS: set[str] = set()


def add_personal_keys(keys: Iterable[str]) -> None:
    """Field names the schemas mark personal; their values are never rendered."""
    _PERSONAL_KEYS.update(keys)


# -- exceptions -------------------------------------------------------------------------------
def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def exception_summary(exc: BaseException) -> str:
    """`Type: message`, the message only for the broker's own (value-free) errors."""
    text = str(exc)
    if text and not isinstance(exc, BrokerError):
        text = REDACTED
    return f"{_type_name(exc)}: {scrub(text)}" if text else _type_name(exc)


def format_exception(exc: BaseException) -> str:
    """A traceback like Python's, with messages redacted as `exception_summary` does."""
    return "".join(_exception_lines(exc, set()))


def _exception_lines(exc: BaseException, seen: set[int]) -> list[str]:
    seen.add(id(exc))
    lines: list[str] = []
    cause, context = exc.__cause__, exc.__context__
    if cause is not None and id(cause) not in seen:
        lines += _exception_lines(cause, seen)
        lines.append("\nThe above exception was the direct cause of the following "
                     "exception:\n\n")
    elif context is not None and not exc.__suppress_context__ and id(context) not in seen:
        lines += _exception_lines(context, seen)
        lines.append("\nDuring handling of the above exception, another exception "
                     "occurred:\n\n")
    if exc.__traceback__ is not None:
        lines.append("Traceback (most recent call last):\n")
        lines += traceback.format_tb(exc.__traceback__)
    lines.append(exception_summary(exc) + "\n")
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list) and notes:
        trusted = isinstance(exc, BrokerError)
        lines += [(scrub(str(n)) if trusted else REDACTED) + "\n" for n in notes]
    if isinstance(exc, BaseExceptionGroup):
        for number, sub in enumerate(exc.exceptions, 1):
            if id(sub) not in seen:
                lines.append(f"+---------------- {number} ----------------\n")
                lines += _exception_lines(sub, seen)
    return lines


def _exception_of(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        return exc_info[1] if isinstance(exc_info[1], BaseException) else None
    if exc_info:
        return sys.exc_info()[1]
    return None


def render_exception(logger: Any, name: str, event_dict: MutableMapping[str, Any]
                     ) -> MutableMapping[str, Any]:
    """structlog processor in place of format_exc_info: exc_info -> a redacted traceback."""
    exc = _exception_of(event_dict.pop("exc_info", None))
    if exc is not None:
        event_dict["exception"] = format_exception(exc)
    return event_dict


# -- values -----------------------------------------------------------------------------------
def _is_personal(key: Any) -> bool:
    return isinstance(key, str) and key.rpartition(".")[2] in _PERSONAL_KEYS


class RedactPersonalData:
    """structlog processor: redact personal keys, then scrub patterns from every string."""

    def __init__(self, personal_keys: Iterable[str] = ()) -> None:
        add_personal_keys(personal_keys)
        self.keys = _PERSONAL_KEYS

    def _clean(self, value: Any, depth: int = 0) -> Any:
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if isinstance(value, str):
            return scrub(value)
        if depth > _MAX_DEPTH:
            return "[too deep]"
        if isinstance(value, dict):
            return {scrub(str(k)): REDACTED if _is_personal(k) else self._clean(v, depth + 1)
                    for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(v, depth + 1) for v in value]
        if isinstance(value, bytes | bytearray | memoryview):
            return f"[{len(value)} bytes redacted]"
        if isinstance(value, BaseException):
            return exception_summary(value)
        if isinstance(value, _PLAIN_TYPES):
            return scrub(str(value))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self._clean({f.name: getattr(value, f.name)
                                for f in dataclasses.fields(value)}, depth + 1)
        return f"[{type(value).__name__}]"

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
        try:
            for key in list(event_dict):
                event_dict[key] = (REDACTED if _is_personal(key)
                                   else self._clean(event_dict[key]))
        except Exception as exc:  # noqa: BLE001 - a log line is never worth a crash or a leak
            event_dict.clear()
            event_dict.update(event="log line withheld: redaction failed",
                              error=_type_name(exc), level=name)
        return event_dict


# -- configuration ----------------------------------------------------------------------------
class _CurrentStderr:
    """Writes to whatever sys.stderr is now (test capture swaps it), not the one at start."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _BrokerHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stdlib root handler `configure` installs (and replaces when called again)."""


FOREIGN_MIN_LEVEL = logging.WARNING  # libraries (kafka-python) log warnings and up


def configure(level: str = "warning", fmt: str = "json",
              personal_keys: Iterable[str] = ()) -> None:
    """One chain for structlog, stdlib logging and uncaught exceptions; JSON to stderr."""
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    numeric = logging.getLevelNamesMapping()[level.upper()]
    redact = RedactPersonalData(personal_keys)
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            render_exception,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=False,
    )
    handler = _BrokerHandler(cast(TextIO, _CurrentStderr()))
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.contextvars.merge_contextvars,
                           structlog.stdlib.add_logger_name,
                           structlog.processors.add_log_level, stamp],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    render_exception, redact, renderer]))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _BrokerHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, FOREIGN_MIN_LEVEL))
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], value: BaseException,
                  tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    get_logger().critical("uncaught exception", exc_info=value)


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or isinstance(args.exc_value, SystemExit):
        return
    get_logger().critical("uncaught exception in thread", exc_info=args.exc_value,
                          thread=args.thread.name if args.thread else None)


def unconfigure() -> None:
    """Undo `configure` (tests): structlog defaults, no root handler, Python's hooks."""
    structlog.reset_defaults()
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _BrokerHandler)]:
        root.removeHandler(old)
    sys.excepthook = sys.__excepthook__
    threading.excepthook = threading.__excepthook__


def get_logger(**context: Any) -> Any:
    return structlog.get_logger("covenant-broker").bind(**context)
