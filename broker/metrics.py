"""Prometheus metrics, and the /metrics, /healthz and /readyz endpoints of `serve`.

Every broker owns one `BrokerMetrics` on its own CollectorRegistry (not the process-global
one), so two brokers in one process, or two tests, never share counters.

Labels carry names from the covenant and the code only: event types, purposes, recipients,
reason codes, topics and partition numbers. Never an event id, a field value or a reason
text (reason texts can quote input). The hot path pays per batch: the callers hand over a
committed batch and its decide time, and this module counts it in a few increments.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

# Decide time of one event: tens of microseconds (embedded) to tens of milliseconds (a
# slow key store); the upper buckets catch stalls.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)


class _Release(Protocol):
    @property
    def purpose(self) -> str: ...
    @property
    def recipient(self) -> str: ...
    @property
    def kind(self) -> str: ...


class Decisions(Protocol):
    """What the metrics read of a committed decide batch (broker/pipeline/port.py's
    DecisionBatch); named here so the ground does not import the pipeline."""

    @property
    def egress(self) -> Sequence[_Release]: ...
    @property
    def audits(self) -> Sequence[Mapping[str, Any]]: ...


class BrokerMetrics:
    """The broker's metrics on a dedicated registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_in = Counter("covenant_events_in", "raw input records received",
                                 ["event_type"], registry=r)
        self.released = Counter("covenant_released", "records released to a recipient "
                                "(tombstones included, kind=tombstone)",
                                ["purpose", "recipient", "kind"], registry=r)
        self.withheld = Counter("covenant_withheld", "(event, purpose, recipient) decisions "
                                "withheld", ["reason_code"], registry=r)
        self.quarantined = Counter("covenant_quarantined", "input records quarantined",
                                   ["reason_code"], registry=r)
        self.decide_latency = Histogram(
            "covenant_decide_latency_seconds", "decide time per stored event (the batch's "
            "decide time spread over its events)", buckets=LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge("covenant_consumer_lag", "ingress records not yet "
                                  "consumed (high watermark - position)",
                                  ["topic", "partition"], registry=r)
        self.bad_traceparents = Counter(
            "covenant_bad_traceparent", "inputs and requests whose W3C traceparent was "
            "invalid and was ignored (they went on in a trace of the broker's own)",
            registry=r)
        self.audit_entries = Counter("covenant_audit_entries", "audit entries written",
                                     registry=r)
        self.checkpoint_signed_at: float | None = None  # unix seconds of the latest
        self.checkpoint_age = Gauge("covenant_audit_checkpoint_age_seconds",
                                    "seconds since the latest signed audit checkpoint "
                                    "(NaN: none seen yet)", registry=r)
        self.checkpoint_age.set_function(self._checkpoint_age)

    def _checkpoint_age(self) -> float:
        signed = self.checkpoint_signed_at
        return float("nan") if signed is None else max(0.0, time.time() - signed)

    # -- what the callers report --------------------------------------------------------------
    def observe_input(self, event_type: str, count: int) -> None:
        if count:
            self.events_in.labels(event_type).inc(count)

    def observe_quarantine(self, reason_codes: Iterable[str]) -> None:
        for code, n in Tally(reason_codes).items():
            self.quarantined.labels(code).inc(n)

    def observe_decisions(self, batch: Decisions, events: int, seconds: float) -> None:
        """A committed decide batch: releases, withholds, their audit entries and latency."""
        for (purpose, recipient, kind), n in Tally(
                (eg.purpose, eg.recipient, eg.kind) for eg in batch.egress).items():
            self.released.labels(purpose, recipient, kind).inc(n)
        withheld = Tally(str(a.get("reason_code") or "unknown") for a in batch.audits
                         if a.get("decision") == "withhold")
        for code, n in withheld.items():
            self.withheld.labels(code).inc(n)
        self.audit_entries.inc(len(batch.egress) + len(batch.audits))
        if events:
            per_event = seconds / events
            for _ in range(events):
                self.decide_latency.observe(per_event)

    def observe_bad_traceparents(self, count: int) -> None:
        if count:
            self.bad_traceparents.inc(count)

    def observe_audit(self, entries: int) -> None:
        if entries:
            self.audit_entries.inc(entries)

    def observe_checkpoint(self, signed_ms: int | None) -> None:
        if signed_ms is not None:
            self.checkpoint_signed_at = signed_ms / 1000

    def observe_lag(self, lags: dict[tuple[str, int], int]) -> None:
        for (topic, partition), lag in lags.items():
            self.consumer_lag.labels(topic, str(partition)).set(lag)


@dataclass
class Health:
    """What /readyz reports: the consumer holds an assignment and its last poll worked."""

    assigned: bool = False
    last_poll_ok: bool = False

    def ready(self) -> tuple[bool, str]:
        if not self.assigned:
            return False, "no partitions assigned"
        if not self.last_poll_ok:
            return False, "the last poll failed"
        return True, "ready"


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT (the host may be omitted: 127.0.0.1)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return (host.strip("[]") or "127.0.0.1"), int(port)


Start = Callable[[str, list[tuple[str, str]]], Any]


def wsgi_app(metrics: BrokerMetrics, health: Health) -> Callable[[dict[str, Any], Start],
                                                                   Iterable[bytes]]:
    scrape = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start: Start) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _text(start, 200, "ok")
        if path == "/readyz":
            ready, why = health.ready()
            return _text(start, 200 if ready else 503, why)
        if path == "/metrics":
            result: Iterable[bytes] = scrape(environ, start)
            return result
        return _text(start, 404, "not found: /metrics, /healthz, /readyz")

    return app


def _text(start: Start, status: int, body: str) -> Iterator[bytes]:
    phrase = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
    start(f"{status} {phrase}", [("Content-Type", "text/plain; charset=utf-8")])
    yield body.encode() + b"\n"


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every few seconds would flood stderr; serve logs what matters


class MetricsServer:
    """The HTTP endpoint on a daemon thread; `close()` stops it."""

    def __init__(self, listen: str, metrics: BrokerMetrics, health: Health) -> None:
        host, port = parse_listen(listen)
        self.httpd = make_server(host, port, wsgi_app(metrics, health),
                                 server_class=_ThreadingServer, handler_class=_QuietHandler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http",
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
