"""Kafka's authorizer denials as audit entries: who was refused what, on which topic.

Kafka does not tell a consumer which principal produced a record, so the broker cannot see
a wrong principal's write (broker/backends/kafka/acl.py): Kafka refuses it before the record
exists. What
Kafka does keep is its authorizer log (logger ``kafka.authorizer.logger``, every denial at
INFO), one line per refused (principal, operation, resource)::

    ... INFO kafka.authorizer.logger - Principal = User:politie is Denied operation =
    DESCRIBE from host = 127.0.0.1 on resource = Topic:LITERAL:covenant.ingress.om.x for
    request = Metadata with resourceRefCount = 1 based on rule DefaultDeny

(the Maven-jar node of deploy/kafka writes it to the node's log with slf4j-simple; a
log4j deployment writes the same message to ``kafka-authorizer.log``). This module turns
those lines into audit drafts:

- a denied WRITE or DESCRIBE on an ingress topic (a producer first asks for the topic's
  metadata, and Kafka refuses the DESCRIBE before any WRITE) is a refused write:
  ``name="write_refused"``, ``source`` the topic's owner, ``reason_code="wrong_principal"``
  when the principal is not the owner's (``not_authorized`` when it is, e.g. ACLs not
  applied);
- a denied WRITE on any other topic of this deployment is a refused write
  (``not_authorized``, ``recipient`` when the principal is one's);
- any other denial on a topic of this deployment (READ or DESCRIBE of an egress, store,
  quarantine, audit, ... topic, or a READ of an ingress topic) is a refused access:
  ``name="access", decision="refused"``, ``recipient`` when the principal is one's;
- denials on topics outside the deployment, on groups or the cluster are not ours: they
  are counted as ignored.

Identical denials in one read (a client retries its metadata request every few hundred
milliseconds) make one entry with their ``count``. The client's host (an IP address) is
left out of the entry: the principal already names the party, and an address can point at
a person's workstation. Lines that mention a denial but do not parse are skipped and
counted (never a crash); all other lines of the log are not denials and pass silently.

`DenialReader` reads a log file from where it stopped the last time: it keeps the byte
offset and the SHA-256 of the last line it read in the data directory, and starts again
from the beginning when that line is no longer there (the log was rotated or truncated).
The state is saved after the entries are appended, so a crash in between audits those
denials again on the next read (at least once, never lost).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from broker.audit.entries import Draft, draft
from broker.backends.kafka.acl import PrincipalMap, covenant_layout
from broker.backends.kafka.topics import Layout
from broker.clock import to_millis
from broker.errors import InputError
from broker.logs import get_logger
from broker.pipeline.core import PipelineCore
from broker.pipeline.ingest import source_of

DENIAL_MARK = "is Denied operation"
_DENIAL = re.compile(
    r"Principal = (?P<principal>\S+) is Denied operation = (?P<operation>[A-Z_]+) "
    r"from host = \S+ on resource = (?P<rtype>[A-Za-z]+):(?P<pattern>[A-Z]+):(?P<name>\S+) "
    r"for request = (?P<request>\S+) with resourceRefCount = \d+ "
    r"based on rule (?P<rule>\S.*?)\s*(?:\(kafka\.authorizer\.logger\))?\s*$"
)
_TIME = re.compile(r"^\[?(?P<time>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?)")
_WRITES = frozenset({"WRITE", "IDEMPOTENT_WRITE"})
_INGRESS_WRITES = _WRITES | {"DESCRIBE"}  # a producer's metadata request comes first
MAX_READ_BYTES = 64 * 1024 * 1024  # one read; the rest waits for the next one


@dataclass(frozen=True)
class Denial:
    """One parsed denial line (the host is parsed over, never kept)."""

    principal: str
    operation: str
    resource_type: str
    pattern_type: str
    resource_name: str
    request: str
    rule: str
    logged_at: str | None  # the line's timestamp as Kafka wrote it (the node's zone)


def parse_denial(line: str) -> Denial | None:
    """The denial of one authorizer log line, or None if it is not one that parses."""
    match = _DENIAL.search(line)
    if match is None:
        return None
    when = _TIME.match(line)
    rule = match.group("rule").strip()
    return Denial(
        match.group("principal"),
        match.group("operation"),
        match.group("rtype").upper(),
        match.group("pattern"),
        match.group("name"),
        match.group("request"),
        rule.split("(", 1)[0] or "unknown",
        when.group("time") if when else None,
    )


@dataclass
class DenialCounts:
    lines: int = 0
    denials: int = 0
    entries: int = 0
    ignored: int = 0  # denials on resources outside this deployment
    unparseable: int = 0
    restarted: bool = False  # the log was rotated or truncated since the last read


class DenialAuditor:
    """Turns denials into audit drafts for one deployment's topics and principals."""

    def __init__(
        self,
        layout: Layout,
        sources: Iterable[str],
        recipients: Iterable[str],
        principals: PrincipalMap,
        covenant_fields: dict[str, Any],
    ) -> None:
        self.names = layout.names
        self.ingress = {self.names.ingress(t): t for t in layout.event_types}
        self.sources = {principals.source(s): s for s in sources}
        self.recipients = {principals.recipient(r): r for r in recipients}
        self.principals = principals
        self.covenant_fields = covenant_fields
        self.prefix = layout.cfg.topic_prefix
        self.fixed = {
            self.names.store,
            self.names.quarantine,
            self.names.revisions,
            self.names.audit,
            self.names.control,
            self.names.expiry,
        }

    def _ours(self, topic: str) -> bool:
        """A topic of this deployment (all of them, when it has a prefix)."""
        if self.prefix:
            return topic.startswith(self.prefix)
        return topic in self.ingress or topic in self.fixed or topic.startswith("egress.")

    def draft_for(self, denial: Denial, count: int, now_ms: int) -> Draft | None:
        if denial.resource_type != "TOPIC" or not self._ours(denial.resource_name):
            return None
        topic = denial.resource_name
        detail = {
            "channel": "kafka",
            "principal": denial.principal,
            "topic": topic,
            "operation": denial.operation,
            "request": denial.request,
            "rule": denial.rule,
            "count": str(count),
        }
        if denial.logged_at:
            detail["kafka_logged_at"] = denial.logged_at
        party = self.sources.get(denial.principal) or self.recipients.get(denial.principal)
        if party:
            detail["party"] = party
        event_type = self.ingress.get(topic)
        refused = f"Kafka refused {denial.operation} on {topic} to {denial.principal}"
        fields: dict[str, Any] = {"recipient": self.recipients.get(denial.principal),
                                  "event_type": event_type, "reason_code": "not_authorized",
                                  "reason": refused}
        name = "access"  # a refused read or describe of one of our topics
        if event_type is not None and denial.operation in _INGRESS_WRITES:
            owner = source_of(event_type)
            detail["owner"] = owner
            name, fields["recipient"], fields["source"] = "write_refused", None, owner
            if denial.principal != self.principals.source(owner):
                fields["reason_code"] = "wrong_principal"
                fields["reason"] = (f"{denial.principal} may not write {topic}: only the "
                                    f"source {owner} may")
            else:
                fields["reason"] = (f"{refused}, the principal of its own source (are the "
                                    "ACLs applied?)")
        elif denial.operation in _WRITES:
            name = "write_refused"
        return draft(name, trace_id=None, start_ms=now_ms, **self.covenant_fields,
                     decision="refused", detail=detail, **fields)


def audit_lines(
    auditor: DenialAuditor, lines: Iterable[str], now_ms: int, counts: DenialCounts
) -> list[Draft]:
    """Drafts for the denials among `lines`; identical denials collapse into one."""
    seen: dict[tuple[str, ...], int] = {}
    first: dict[tuple[str, ...], Denial] = {}
    logger = get_logger(component="acl-denials")
    for line in lines:
        counts.lines += 1
        if DENIAL_MARK not in line:
            continue
        denial = parse_denial(line)
        if denial is None:
            counts.unparseable += 1
            logger.warning("authorizer line not understood", line_in_read=counts.lines)
            continue
        counts.denials += 1
        key: tuple[str, ...] = (
            denial.principal,
            denial.operation,
            denial.resource_type,
            denial.resource_name,
            denial.request,
            denial.rule,
        )
        seen[key] = seen.get(key, 0) + 1
        first.setdefault(key, denial)
    drafts: list[Draft] = []
    for key, n in seen.items():
        made = auditor.draft_for(first[key], n, now_ms)
        if made is None:
            counts.ignored += n
        else:
            drafts.append(made)
    counts.entries = len(drafts)
    return drafts


@dataclass
class ReadState:
    """Where the last read stopped: the offset after the last whole line, and that line."""

    path: str = ""
    offset: int = 0
    line_start: int = 0
    line_sha256: str = ""


class DenialReader:
    """Reads new whole lines of one log file; remembers its place in `state_file`."""

    def __init__(self, log_file: Path, state_file: Path) -> None:
        self.log_file = log_file
        self.state_file = state_file

    def load(self) -> ReadState:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            return ReadState(
                str(data["path"]),
                int(data["offset"]),
                int(data["line_start"]),
                str(data["line_sha256"]),
            )
        except FileNotFoundError:
            return ReadState(str(self.log_file))
        except (OSError, ValueError, KeyError, TypeError):
            get_logger(component="acl-denials").warning(
                "authorizer read state unreadable; reading the log from its start",
                state_file=str(self.state_file),
            )
            return ReadState(str(self.log_file))

    def read(self) -> tuple[list[str], ReadState, bool]:
        """(new whole lines, the state after them, whether the log restarted)."""
        state = self.load()
        try:
            handle = self.log_file.open("rb")
        except OSError as exc:
            raise InputError(
                f"{self.log_file}: cannot read the authorizer log: {exc.strerror}"
            ) from None
        with handle:
            restarted = False
            if state.path != str(self.log_file) or not self._still_there(handle, state):
                restarted = state.offset > 0
                state = ReadState(str(self.log_file))
            handle.seek(state.offset)
            chunk = handle.read(MAX_READ_BYTES)
        end = chunk.rfind(b"\n")
        if end < 0:
            return [], state, restarted  # no whole new line yet
        whole = chunk[: end + 1]
        last_start = whole.rfind(b"\n", 0, end) + 1
        new = ReadState(
            str(self.log_file),
            state.offset + end + 1,
            state.offset + last_start,
            hashlib.sha256(whole[last_start:]).hexdigest(),
        )
        lines = whole.decode("utf-8", errors="replace").splitlines()
        return lines, new, restarted

    @staticmethod
    def _still_there(handle: Any, state: ReadState) -> bool:
        if state.offset == 0:
            return True
        handle.seek(state.line_start)
        line = handle.read(state.offset - state.line_start)
        return hashlib.sha256(line).hexdigest() == state.line_sha256

    def save(self, state: ReadState) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "path": state.path,
                    "offset": state.offset,
                    "line_start": state.line_start,
                    "line_sha256": state.line_sha256,
                }
            ),
            encoding="utf-8",
        )
        os.replace(tmp, self.state_file)


def state_file_for(data_dir: Path, log_file: Path) -> Path:
    """One read state per log file, in the data directory."""
    digest = hashlib.sha256(str(log_file.resolve()).encode()).hexdigest()[:16]
    return data_dir / "authorizer" / f"{digest}.json"


def auditor_for(broker: PipelineCore, principals: PrincipalMap) -> DenialAuditor:
    covenant = broker.covenant
    layout = covenant_layout(broker.settings.kafka, covenant, broker.registry.event_types())
    header = covenant.covenant
    return DenialAuditor(
        layout,
        covenant.sources,
        covenant.recipients,
        principals,
        {"covenant_id": header.id, "covenant_version": header.version},
    )


def audit_denials(
    broker: PipelineCore,
    log_file: Path,
    principals: PrincipalMap,
    now: datetime,
    auditor: DenialAuditor | None = None,
) -> DenialCounts:
    """Read the new lines of `log_file`, append an audit entry per refused write or access,
    then remember how far it read (in the data directory)."""
    reader = DenialReader(log_file, state_file_for(broker.settings.data_dir, log_file))
    lines, state, restarted = reader.read()
    counts = DenialCounts(restarted=restarted)
    now_ms = to_millis(now)
    drafts = audit_lines(auditor or auditor_for(broker, principals), lines, now_ms, counts)
    if drafts:
        broker.log.append_audit(drafts, now_ms)
        broker.metrics.observe_audit(len(drafts))
    reader.save(state)
    if restarted:
        broker.logger.warning("authorizer log restarted; read from its start")
    if drafts or counts.unparseable:
        broker.logger.info(
            "authorizer denials audited",
            entries=counts.entries,
            denials=counts.denials,
            unparseable=counts.unparseable,
            ignored=counts.ignored,
        )
    return counts
