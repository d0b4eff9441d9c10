"""Log canaries: personal values planted everywhere never reach a log line.

JSON logs at debug level are captured at the file descriptors (capfd) while the pipeline
ingests good and bad events carrying canaries in every personal field, consumes, switches
themes and verifies the audit log, and while code logs canaries directly at every level,
with exceptions, tracebacks, chained and grouped exceptions, stdlib logging, and uncaught
exceptions in threads. broker/logs.py documents what is and is not guaranteed.
"""

from __future__ import annotations

import ast
import json
import logging
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from broker import cli, logs
from broker.app.service import Broker
from broker.clock import parse_instant
from broker.errors import InvalidEvent
from broker.model.json_input import Limits, convert
from broker.model.schemas import SchemaRegistry
from tests import factories as f

REPO = Path(__file__).resolve().parents[2]
REGISTRY = SchemaRegistry(REPO / "schemas")
NOW = parse_instant("2026-05-10T12:00:00Z")
_RANDOM = uuid.uuid4().hex[:10]
# Never nine digits in a row (a hex tag is all digits there once in ~70 runs): the name
# must be shaped like nothing the patterns know, or the documented-limit test fails.
TAG = f"{_RANDOM[:5]}x{_RANDOM[5:]}"
NAME = f"Kanarie Vogelzang{TAG}"  # shaped like nothing the patterns know
BSN = f"9{int(_RANDOM[:7], 16) % 10**8:08d}"
EMAIL = f"kanarie.{TAG}@voorbeeld.nl"
PHONE = f"+31 6 {int(_RANDOM[:6], 16) % 10**8:08d}"
FREE_TEXT = f"KANARIE-VRIJE-TEKST-{TAG}"
CANARIES = [NAME, BSN, EMAIL, PHONE, FREE_TEXT, TAG]
logs.add_personal_keys(p.rpartition(".")[2] for s in REGISTRY.by_name.values()
                       for p in s.personal_paths)


def _canary_for(path: str) -> str:
    leaf = path.rpartition(".")[2]
    return {"bsn": BSN, "email": EMAIL, "phone": PHONE, "name": NAME}.get(
        leaf, f"{FREE_TEXT}-{leaf}")


def planted(event_type: str, event: dict[str, Any]) -> dict[str, Any]:
    """The event with a canary in every personal string field (dates keep their value)."""
    for path, info in REGISTRY.get(event_type).fields.items():
        if not info.personal or info.avro_type != "string":
            continue
        node = event
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part), dict) else {}
        node[leaf] = _canary_for(path)
    return event


EVENTS: dict[str, Callable[..., dict[str, Any]]] = {
    "politie.woninginbraak": f.woninginbraak, "om.gebiedsverbod": f.gebiedsverbod,
    "om.detentie_uitstroom": f.detentie_uitstroom, "gemeente.boa_waarneming": f.boa_waarneming,
}


@pytest.fixture
def json_logs() -> Iterator[None]:
    logs.configure("debug", "json")
    yield
    logs.unconfigure()


def _lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def _assert_no_canary(*texts: str) -> None:
    for text in texts:
        for canary in CANARIES:
            assert canary not in text, canary


# -- the pipeline -----------------------------------------------------------------------------
@pytest.mark.usefixtures("json_logs")
def test_the_pipeline_logs_no_canary_and_writes_json_lines_with_context(
        broker: Broker, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    for event_type, make in EVENTS.items():
        source = event_type.partition(".")[0]
        good = planted(event_type, make())
        schema = broker.registry.get(event_type)
        avro = schema.encode(convert(schema.raw, planted(event_type, make()), Limits()).record)
        bad_type = planted(event_type, make(event_id=12))
        too_long = planted(event_type, make())
        too_long["event_id"] = FREE_TEXT * 2000
        extra = planted(event_type, make(opmerking=FREE_TEXT, contact=EMAIL))
        inputs = [("good", json.dumps(good).encode()), ("avro", avro),
                  ("wrong type", json.dumps(bad_type).encode()),
                  ("too long", json.dumps(too_long).encode()),
                  ("extra", json.dumps(extra).encode()),
                  ("broken", json.dumps(good).encode()[:-9]),
                  ("surrogate", json.dumps(planted(event_type, make(
                      event_id="\ud800" + NAME))).encode()),
                  ("resent", json.dumps(good).encode())]
        report = broker.ingest(source, event_type, inputs, NOW)
        assert report.accepted == 3
        assert len(report.quarantined) == 5
        other = next(s for s in ("politie", "om", "gemeente") if s != source)
        assert broker.ingest(other, event_type, inputs[:1], NOW).accepted == 0
    broker.switch_theme("woninginbraak", True, NOW)
    for recipient in broker.covenant.recipients:
        broker.consume(recipient, None, 0, NOW)
    broker.switch_theme("woninginbraak", False, NOW)
    broker.sweep_expiries(parse_instant("2027-01-10T12:00:00Z"))
    assert broker.verify_audit().ok

    out, err = capfd.readouterr()
    _assert_no_canary(out, err)
    lines = _lines(err)
    ingested = [line for line in lines if line["event"] == "ingested"]
    assert len(ingested) == 2 * len(EVENTS)
    for line in ingested:
        assert line["covenant"] == broker.covenant.covenant.id
        assert line["covenant_version"] == broker.covenant.covenant.version
        assert line["event_type"] in EVENTS
        assert {"source", "accepted", "quarantined", "level", "timestamp"} <= set(line)


@pytest.mark.usefixtures("json_logs")
def test_the_command_line_at_debug_level_logs_no_canary(
        tmp_path: Path, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVENANT_BROKER_LOG_LEVEL", "debug")
    data = tmp_path / "in.jsonl"
    good = planted("politie.woninginbraak", f.woninginbraak())
    data.write_bytes(f.jsonl(good, planted("politie.woninginbraak", f.woninginbraak(
        attempt=NAME))) + b"{" + FREE_TEXT.encode() + b"\n")
    base = ["--data-dir", str(tmp_path / "data"), "--now", "2026-05-10T12:00:00Z"]
    capfd.readouterr()
    assert cli.main([*base, "ingest", "--source", "politie", "--type", "woninginbraak",
                     str(data)]) == 0
    assert cli.main([*base, "control", "theme", "on", "woninginbraak"]) == 0
    assert cli.main([*base, "audit", "verify"]) == 0
    out, err = capfd.readouterr()
    _assert_no_canary(out, err)
    assert "1 accepted, 2 quarantined" in out  # one good, one wrong type, one broken line
    assert any(line["event"] == "ingested" for line in _lines(err))


# -- direct calls at every level ---------------------------------------------------------------
@dataclass
class Carrier:
    """A value object that holds personal data, as a careless log call might pass."""

    name: str
    bsn: str
    remark: str


LEVELS = ["debug", "info", "warning", "error", "critical"]


def _personal_kwargs() -> dict[str, Any]:
    return {
        "name": NAME, "bsn": BSN, "email": EMAIL, "phone": PHONE, "description": FREE_TEXT,
        "victim": {"name": NAME, "email": EMAIL, "phone": PHONE},
        "people": [{"person": {"bsn": BSN, "name": NAME}}], "victim.name": NAME,
        "note": f"bel {PHONE} of mail {EMAIL}, bsn {BSN}", "blob": FREE_TEXT.encode(),
        "carrier": Carrier(NAME, BSN, f"mail {EMAIL}"), "error": ValueError(NAME),
        "opaque": object(), "nan": float("nan"),
    }


def _raise_chained() -> None:
    message = f"victim {NAME} bsn {BSN} email {EMAIL} phone {PHONE}"
    try:
        {}[NAME]  # a KeyError quotes its key
    except KeyError as exc:
        error = ValueError(message)
        error.add_note(f"while handling {FREE_TEXT}")
        raise error from exc


@pytest.mark.usefixtures("json_logs")
@pytest.mark.parametrize("level", LEVELS)
def test_direct_log_calls_at_every_level_redact_every_canary(
        level: str, capfd: pytest.CaptureFixture[str]) -> None:
    logger = logs.get_logger(covenant="c1", event_type="politie.woninginbraak")
    capfd.readouterr()
    getattr(logger, level)("canary probe", **_personal_kwargs())
    getattr(logger.bind(name=NAME, purpose="p", recipient="r"), level)(f"bound {level}")
    structlog.contextvars.bind_contextvars(bsn=BSN, trace_id="t-1")
    try:
        getattr(logger, level)("with context vars")
    finally:
        structlog.contextvars.clear_contextvars()
    out, err = capfd.readouterr()
    _assert_no_canary(out, err)
    probe, bound, context = _lines(err)
    assert probe["level"] == level
    assert probe["victim"] == {"name": "[redacted]", "email": "[redacted]",
                               "phone": "[redacted]"}
    assert probe["carrier"] == {"name": "[redacted]", "bsn": "[redacted]",
                                "remark": "mail [redacted]"}
    assert probe["error"] == "ValueError: [redacted]"
    assert probe["blob"] == f"[{len(FREE_TEXT)} bytes redacted]"
    assert probe["opaque"] == "[object]"
    assert probe["nan"] == "nan"
    assert (probe["covenant"], probe["event_type"]) == ("c1", "politie.woninginbraak")
    assert (bound["purpose"], bound["recipient"], bound["name"]) == ("p", "r", "[redacted]")
    assert (context["trace_id"], context["bsn"]) == ("t-1", "[redacted]")


@pytest.mark.usefixtures("json_logs")
def test_exceptions_and_tracebacks_keep_frames_and_types_but_not_messages(
        capfd: pytest.CaptureFixture[str]) -> None:
    logger = logs.get_logger()
    capfd.readouterr()
    try:
        _raise_chained()
    except ValueError as exc:
        logger.exception("failed", name=NAME)
        logger.error("failed again", exc_info=exc)
        logger.warning("as a tuple", exc_info=sys.exc_info())
        logger.debug("and at debug", exc_info=True)
    try:
        raise ExceptionGroup(f"group {NAME}", [KeyError(BSN), InvalidEvent(
            "wrong_type", "victim.name: expected a string")])
    except ExceptionGroup:
        logger.critical("grouped", exc_info=True)
    out, err = capfd.readouterr()
    _assert_no_canary(out, err)
    lines = _lines(err)
    assert [line["level"] for line in lines] == ["error", "error", "warning", "debug",
                                                 "critical"]
    trace = lines[0]["exception"]
    assert lines[0]["name"] == "[redacted]"
    assert "Traceback (most recent call last):" in trace
    assert "in _raise_chained" in trace
    assert "test_log_redaction.py" in trace
    assert "KeyError: [redacted]" in trace
    assert "The above exception was the direct cause" in trace
    assert trace.rstrip().endswith("ValueError: [redacted]\n[redacted]".rstrip())
    grouped = lines[4]["exception"]
    assert "ExceptionGroup: [redacted]" in grouped
    # the broker's own errors are written without values: their message stays readable
    assert ("broker.errors.InvalidEvent: wrong_type: victim.name: expected a string"
            in grouped)


@pytest.mark.usefixtures("json_logs")
def test_stdlib_logging_and_uncaught_exceptions_go_through_the_same_guard(
        capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    library = logging.getLogger("kafka.conn")
    library.warning("send to %s failed, reply to %s bsn %s", PHONE, EMAIL, BSN)
    library.info("below the level for libraries: not shown %s", NAME)
    try:
        _raise_chained()
    except ValueError:
        library.error("library failure", exc_info=True)

    def crash() -> None:
        raise RuntimeError(NAME)

    thread = threading.Thread(target=crash, name="worker-1")
    thread.start()
    thread.join()
    try:
        _raise_chained()
    except ValueError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    out, err = capfd.readouterr()
    _assert_no_canary(out, err)
    lines = _lines(err)
    assert [(line["event"], line["level"]) for line in lines] == [
        ("send to [redacted] failed, reply to [redacted] bsn [redacted]", "warning"),
        ("library failure", "error"),
        ("uncaught exception in thread", "critical"),
        ("uncaught exception", "critical"),
    ]
    assert lines[0]["logger"] == "kafka.conn"
    assert "ValueError: [redacted]" in lines[1]["exception"]
    assert lines[2]["thread"] == "worker-1"
    assert "RuntimeError: [redacted]" in lines[2]["exception"]


def test_console_format_redacts_the_same(capfd: pytest.CaptureFixture[str]) -> None:
    logs.configure("debug", "console")
    try:
        capfd.readouterr()
        try:
            _raise_chained()
        except ValueError:
            logs.get_logger().exception("console probe", **_personal_kwargs())
        out, err = capfd.readouterr()
    finally:
        logs.unconfigure()
    _assert_no_canary(out, err)
    assert "console probe" in err


@pytest.mark.usefixtures("json_logs")
def test_a_value_that_cannot_be_rendered_withholds_the_line_and_never_crashes(
        capfd: pytest.CaptureFixture[str]) -> None:
    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError(NAME)

    capfd.readouterr()
    logs.get_logger().error("hostile", data={Hostile(): NAME})
    out, err = capfd.readouterr()
    _assert_no_canary(out, err)
    [line] = _lines(err)
    assert line["event"] == "log line withheld: redaction failed"
    assert line["error"] == "RuntimeError"


@pytest.mark.usefixtures("json_logs")
def test_the_documented_limit_a_name_under_a_non_personal_key_is_not_recognised(
        capfd: pytest.CaptureFixture[str]) -> None:
    """Why pipeline code never logs values: the guard cannot tell a name from a word."""
    capfd.readouterr()
    logs.get_logger().info("limit", remark=NAME)
    _, err = capfd.readouterr()
    assert NAME in err


# -- the code itself ---------------------------------------------------------------------------
_LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "msg"}


def _is_logger(node: ast.expr) -> bool:
    if isinstance(node, ast.Call):
        node = node.func
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return name in {"get_logger", "logger", "log", "_log", "LOG", "LOGGER"} or \
        name.endswith("logger")


def _log_calls() -> Iterator[tuple[str, ast.Call]]:
    for path in sorted((REPO / "broker").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in _LOG_METHODS and _is_logger(node.func.value)):
                yield f"{path.relative_to(REPO)}:{node.lineno}", node


def test_broker_code_logs_constant_event_names_and_no_formatted_values() -> None:
    calls = list(_log_calls())
    assert any("app/service.py" in where for where, _ in calls)  # the scan finds the calls
    for where, call in calls:
        assert len(call.args) == 1, f"{where}: positional arguments are formatted into text"
        first = call.args[0]
        assert isinstance(first, ast.Constant), f"{where}: the event must be a literal"
        assert isinstance(first.value, str), where
        for keyword in call.keywords:
            assert not isinstance(keyword.value, ast.JoinedStr), \
                f"{where}: {keyword.arg}= is an f-string; log the fields, not text"


def test_an_address_holding_a_bsn_shaped_run_is_redacted_whole() -> None:
    """CI of 2026-12-02 14:38: the canary address was kanarie.d812866007@voorbeeld.nl (its
    random tag happened to end in nine digits); the BSN pattern replaced the digits first
    and the rest of the address was logged: "kanarie.d[redacted]@voorbeeld.nl"."""
    assert logs.scrub("reply to kanarie.d812866007@voorbeeld.nl now") == "reply to [redacted] now"
    assert logs.scrub("123456789@example.nl, 123456789") == "[redacted], [redacted]"


@given(before=st.text(alphabet="abcdefghij.", max_size=8),
       digits=st.integers(min_value=0, max_value=10**9 - 1),
       after=st.text(alphabet="klmnop.+-", max_size=8),
       domain=st.sampled_from(["voorbeeld.nl", "amstelveen.nl", "politie.example.org"]))
def test_an_address_is_redacted_whole_whatever_its_local_part_holds(
        before: str, digits: int, after: str, domain: str) -> None:
    address = f"x{before}{digits:09d}{after}@{domain}"
    assert logs.scrub(f"reply to {address} now") == f"reply to {logs.REDACTED} now"
